"""Noise pre-whitening: make the receiver noise white and unit-variance across coils before reconstruction.

Receive channels share noise (mutual inductance, shared preamplifier paths), so their noise covariance
``C`` is not diagonal. With the Cholesky factor ``C = L L^H`` the whitening matrix ``W = L^-1`` gives
``W C W^H = I``: every method that assumes i.i.d. noise (SENSE least squares, GRAPPA fits, the data
terms of compressed sensing) is then statistically correct, and images come out in SNR units
(Kellman and McVeigh, MRM 54:1439, 2005). ``C`` comes from noise scans (``KSpace.noise``) or from a
region of the image or k-space that holds noise only.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.linalg

from .coils import coil_covariance, transform_coils
from .data import KSpace
from .errors import InputError
from .kernels.backend import get_array_module, to_numpy
from .kernels.fft import ifftc

NOISE_DOMAINS = ("image", "kspace")


def noise_covariance(samples: Any, coil_axis: int = 0) -> np.ndarray:
    """Noise covariance (coil, coil), complex128 on the host, from noise-only samples (e.g. (coil, n))."""
    n_coils = samples.shape[coil_axis]
    n_samples = samples.size // max(n_coils, 1)
    if n_samples < n_coils:
        raise InputError(None, f"{n_samples} noise samples per coil cannot estimate a {n_coils}-coil covariance")
    return coil_covariance(samples, coil_axis)


def whitening_matrix(covariance: Any) -> np.ndarray:
    """``W = L^-1`` (coil, coil) complex64 with ``L L^H = covariance``, so that ``W C W^H = I``.

    ``InputError`` when the covariance is not square, not Hermitian or not positive definite (for
    example a channel that recorded no noise: a dead or disconnected element).
    """
    cov = np.asarray(to_numpy(covariance), dtype=np.complex128)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise InputError(None, f"noise covariance must be square (coil, coil), got shape {cov.shape}")
    scale = float(np.abs(cov).max()) if cov.size else 0.0
    if not np.allclose(cov, cov.conj().T, rtol=1e-6, atol=1e-9 * scale):
        raise InputError(None, "noise covariance is not Hermitian")
    try:
        factor = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise InputError(None, "noise covariance is not positive definite (a channel without noise?)") from None
    inverse = scipy.linalg.solve_triangular(factor, np.eye(cov.shape[0]), lower=True)
    return inverse.astype(np.complex64)


def region_noise(ksp: KSpace, region: tuple[slice, ...], domain: str = "image") -> Any:
    """Noise samples (coil, n) from a ``region`` (one slice per spatial dim) that holds no signal.

    domain "image": the region of the zero-filled coil images (e.g. a corner outside the body), scaled
    by sqrt(matrix / acquired) so that the samples have the k-space noise level at any undersampling.
    domain "kspace": the acquired samples of the region (e.g. the outer corner of k-space).
    Batch dims (slices, echoes) all contribute.
    """
    if domain not in NOISE_DOMAINS:
        raise InputError(None, f"noise region domain must be one of {NOISE_DOMAINS}, got {domain!r}")
    spatial = len(ksp.spatial_dims)
    if len(region) != spatial or not all(isinstance(r, slice) for r in region):
        raise InputError(None, f"noise region needs one slice per spatial dim ({spatial}), got {region!r}")
    xp = get_array_module(ksp.data)
    data = xp.moveaxis(ksp.data, ksp.axis("coil"), 0)  # (coil, *batch, *spatial)
    window = (Ellipsis,) + tuple(region)
    sampled = ksp.sampling_mask()
    if domain == "image":
        fraction = float(xp.broadcast_to(sampled, ksp.spatial_shape).mean())
        samples = ifftc(data, tuple(range(-spatial, 0)))[window] / np.float32(np.sqrt(fraction))
    else:
        keep = xp.broadcast_to(sampled, ksp.spatial_shape)[tuple(region)].ravel()
        block = data[window]
        samples = block.reshape(block.shape[: -spatial] + (-1,))[..., keep]
    samples = samples.reshape(ksp.n_coils, -1)
    if samples.shape[1] < ksp.n_coils:
        raise InputError(
            ksp.header.source or None,
            f"noise region {region!r} holds {samples.shape[1]} samples per coil; need at least {ksp.n_coils}",
        )
    return samples


def with_region_noise(ksp: KSpace, region: tuple[slice, ...], domain: str = "image") -> KSpace:
    """A copy of ``ksp`` whose noise samples (used by ``whiten`` and ``recon``) come from ``region``."""
    return dataclasses.replace(ksp, noise=region_noise(ksp, region, domain))


def whitener(ksp: KSpace) -> np.ndarray:
    """The whitening matrix (coil, coil) of ``ksp``'s noise samples (``KSpace.noise``, (coil, n))."""
    if ksp.noise is None:
        raise InputError(
            ksp.header.source or None,
            "no noise samples to whiten with: the file has no noise scans (see with_region_noise)",
        )
    if ksp.noise.ndim != 2 or ksp.noise.shape[0] != ksp.n_coils:
        raise InputError(
            ksp.header.source or None,
            f"noise samples {tuple(ksp.noise.shape)} are not (coil, n) for {ksp.n_coils} coils",
        )
    return whitening_matrix(noise_covariance(ksp.noise))


def whiten(ksp: KSpace, covariance: Any = None) -> KSpace:
    """Pre-whitened copy of ``ksp``: data, calibration and noise samples multiplied by ``W`` along coils.

    covariance: (coil, coil) noise covariance; None estimates it from ``ksp.noise``.
    """
    matrix = whitener(ksp) if covariance is None else whitening_matrix(covariance)
    if matrix.shape[0] != ksp.n_coils:
        raise InputError(None, f"noise covariance is {matrix.shape}, k-space has {ksp.n_coils} coils")
    return transform_coils(ksp, matrix)
