"""SVD coil compression: many receive channels -> a few virtual coils that keep most of the signal.

The coil Gram matrix ``G = sum x x^H`` of the calibration region (or of all acquired samples) has
eigenvectors ``U``; the virtual coils are ``U_N^H x`` for the N largest eigenvalues (Buehrer et al.,
MRM 57:1131, 2007; Huang et al., MRI 26:133, 2008). Reconstruction time falls roughly with the coil
count. The same matrix maps the data, the separate calibration (ACS) scan and the noise samples, so
GRAPPA kernels, coil maps and whitening all see one consistent set of virtual coils. Compress after
pre-whitening: the Gram matrix then ranks signal against white noise.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .coils import centred_box, coil_covariance, fully_sampled_centre, transform_coils
from .data import KSpace
from .errors import InputError
from .kernels.backend import get_array_module, to_numpy

SOURCES = ("calibration", "data")


def compression_matrix(x: Any, n_virtual: int, coil_axis: int = 0) -> tuple[np.ndarray, float]:
    """(matrix (n_virtual, coil) complex64, fraction of the signal energy kept) from samples ``x``.

    The rows are orthonormal: the conjugated dominant eigenvectors of the coil Gram matrix of ``x``.
    """
    n_coils = x.shape[coil_axis]
    if not 1 <= n_virtual <= n_coils:
        raise InputError(None, f"cannot compress {n_coils} coils to {n_virtual} virtual coils (need 1..{n_coils})")
    energy, vectors = np.linalg.eigh(coil_covariance(x, coil_axis))
    energy, vectors = energy[::-1], vectors[:, ::-1]
    kept = float(energy[:n_virtual].sum() / max(energy.sum(), np.finfo(float).tiny))
    return vectors[:, :n_virtual].conj().T.astype(np.complex64), kept


def _calibration_samples(ksp: KSpace) -> tuple[Any, int]:
    """(samples, coil axis) that the compression is fitted to: the separate calibration scan, else the
    fully sampled k-space centre over all batch entries, else (no such centre) all the data.
    """
    coil = ksp.axis("coil")
    if ksp.calibration is not None:
        return ksp.calibration, coil if ksp.calibration.ndim == ksp.data.ndim else 0
    xp = get_array_module(ksp.data)
    if ksp.mask is None:
        sampled = xp.any(ksp.data != 0, axis=tuple(range(ksp.data.ndim - len(ksp.spatial_dims))))
    else:
        sampled = xp.broadcast_to(ksp.sampling_mask(), ksp.spatial_shape)
    box = fully_sampled_centre(to_numpy(sampled))
    if min(box) == 0:
        return ksp.data, coil
    return ksp.data[(Ellipsis,) + centred_box(ksp.spatial_shape, box)], coil


def fit_compression(ksp: KSpace, n_virtual: int, source: str = "calibration") -> tuple[np.ndarray, float]:
    """``compression_matrix`` of ``ksp``'s calibration samples (see ``compress`` for ``source``)."""
    if source not in SOURCES:
        raise InputError(None, f"coil compression source must be one of {SOURCES}, got {source!r}")
    samples, axis = (ksp.data, ksp.axis("coil")) if source == "data" else _calibration_samples(ksp)
    return compression_matrix(samples, n_virtual, axis)


def compress(ksp: KSpace, n_virtual: int, *, source: str = "calibration") -> KSpace:
    """``ksp`` with ``n_virtual`` SVD virtual coils; data, calibration scan and noise samples all mapped.

    source: "calibration" fits the compression to the calibration scan or fully sampled centre (falls
        back to all data when there is none); "data" to every acquired sample.
    The header's ``extra["coil_compression"]`` records the coil counts and the signal energy kept.
    """
    matrix, kept = fit_compression(ksp, n_virtual, source)
    out = transform_coils(ksp, matrix)
    extra = {**ksp.header.extra, "coil_compression": {"coils": ksp.n_coils, "virtual": n_virtual, "energy": kept}}
    return dataclasses.replace(out, header=dataclasses.replace(ksp.header, extra=extra))
