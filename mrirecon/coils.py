"""Coil tools: root-sum-of-squares, calibration-region detection and ESPIRiT sensitivity maps.

ESPIRiT (Uecker et al., MRM 71:990, 2014): the fully sampled k-space centre gives a calibration
(Casorati) matrix whose dominant right singular vectors span the k-space kernels consistent with the
data. In image space those kernels become, at every pixel r, a coil x coil operator
``W(r) = N/K * sum_j g_j(r) g_j(r)^H``; where there is signal its top eigenvalue is ~1 and the
eigenvector is the coil sensitivity profile at r.

The calibration decomposition and the kernel cross-correlations are small (a few hundred rows and
columns) and run on the host; the per-pixel work (one image-size FFT per coil pair to form ``W``,
power iteration for its top eigenvector) runs on the array's device.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .kernels.backend import get_array_module, to_numpy
from .kernels.fft import ifftc


def rss(x, axis: int = 0):
    """Root-sum-of-squares over ``axis`` (the coil axis): real float32 for complex64 input."""
    xp = get_array_module(x)
    return xp.sqrt(xp.sum(x.real**2 + x.imag**2, axis=axis))


def sampled_mask(kspace, mask=None):
    """Bool array over the spatial dims, on the k-space's device: ``mask`` broadcast to the matrix, or,
    when None, the samples that are non-zero in any coil (zero-filled data marks skipped samples with 0).
    """
    xp = get_array_module(kspace)
    if mask is None:
        return xp.any(kspace != 0, axis=0)
    return xp.broadcast_to(xp.asarray(mask).astype(bool), tuple(kspace.shape[1:]))


def centred_box(shape: tuple[int, ...], size: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of a ``size`` box around the k-space centre (index n//2, as after a centred FFT)."""
    return tuple(slice(n // 2 - s // 2, n // 2 - s // 2 + s) for n, s in zip(shape, size))


def fully_sampled_centre(mask: np.ndarray) -> tuple[int, ...]:
    """Size of the largest centred box of ``mask`` (bool over spatial dims) in which every sample is set.

    Grows one axis at a time by one sample while the box stays fully sampled, so rectangular
    calibration regions (e.g. ACS lines with a fully sampled readout) are found as well as squares.
    """
    mask = np.asarray(mask, dtype=bool)
    size = [1] * mask.ndim
    if not mask[centred_box(mask.shape, size)].all():
        return (0,) * mask.ndim
    grown = True
    while grown:
        grown = False
        for ax in range(mask.ndim):
            if size[ax] == mask.shape[ax]:
                continue
            trial = size.copy()
            trial[ax] += 1
            if mask[centred_box(mask.shape, tuple(trial))].all():
                size = trial
                grown = True
    return tuple(size)


def calibration_region(kspace, size: int | tuple[int, ...] | None = None, mask=None):
    """The centred calibration block of ``kspace`` (coil, *spatial) -> (coil, *calib_shape).

    ``size``: an int (same on every spatial axis) or one size per axis, clipped to the matrix;
    None takes the whole fully sampled centre, found from ``mask`` (bool over the spatial dims) or,
    without a mask, from the samples that are non-zero.
    """
    spatial = tuple(kspace.shape[1:])
    if size is None:
        size = fully_sampled_centre(to_numpy(sampled_mask(kspace, mask)))
    elif isinstance(size, (int, np.integer)):
        size = (int(size),) * len(spatial)
    if len(size) != len(spatial):
        raise InputError(None, f"calibration size {tuple(size)} does not match the {len(spatial)} spatial dims")
    size = tuple(min(int(s), n) for s, n in zip(size, spatial))
    return kspace[(slice(None),) + centred_box(spatial, size)]


def _casorati(calib: np.ndarray, kernel: int) -> np.ndarray:
    """Calibration matrix: one row per kernel position, columns = coil x kernel window (C order)."""
    ndim = calib.ndim - 1
    windows = np.lib.stride_tricks.sliding_window_view(calib, (kernel,) * ndim, axis=tuple(range(1, ndim + 1)))
    # windows: (coil, *positions, *window) -> (*positions, coil, *window)
    windows = np.moveaxis(windows, 0, ndim)
    n_rows = int(np.prod(windows.shape[:ndim]))
    return windows.reshape(n_rows, -1)


def _kernel_correlations(kernels: np.ndarray) -> np.ndarray:
    """``r_cd(D) = sum_j sum_w h_jc(w + D) conj(h_jd(w))`` for kernels (j, coil, *window), D centred.

    The per-pixel ESPIRiT operator is the inverse DFT of these cross-correlations,
    ``W_cd(r) = (N/K) sum_j g_jc(r) conj(g_jd(r))`` with ``g_j`` the image-space kernels, so one
    FFT per coil pair over the image replaces one FFT per kernel and coil plus a per-pixel product.
    Computed on the host with FFTs of size 2*kernel-1 (no circular wrap).
    """
    ndim = kernels.ndim - 2
    size = tuple(2 * k - 1 for k in kernels.shape[2:])
    axes = tuple(range(2, 2 + ndim))
    spectra = np.fft.fftn(kernels, s=size, axes=axes)  # (j, coil, *size)
    cross = np.einsum("jc...,jd...->cd...", spectra, spectra.conj())
    return np.fft.fftshift(np.fft.ifftn(cross, axes=tuple(range(2, 2 + ndim))), axes=tuple(range(2, 2 + ndim))).astype(
        np.complex64
    )


def espirit_maps(
    kspace,
    calib: int = 24,
    kernel: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 30,
    mask=None,
) -> Any:
    """ESPIRiT coil sensitivity maps (coil, *spatial) complex64 from k-space (coil, *spatial), 2D or 3D.

    calib: edge of the calibration box, shrunk to the fully sampled centre found from ``mask`` (or
        from the non-zero samples when ``mask`` is None).
    kernel: edge of the k-space kernel window.
    thresh: singular values above ``thresh * sigma_max`` span the signal subspace.
    crop: maps are zero where the top eigenvalue is <= crop (no signal / outside the object).
    max_iter: power iterations per pixel for the top eigenvector.

    Maps are phase-normalised to coil 0 and have sum_c |S_c|^2 = 1 where not cropped. 3D runs natively;
    its per-pixel coil x coil operators need pixels x coil^2 complex64 of memory.
    """
    xp = get_array_module(kspace)
    n_coils, *spatial = kspace.shape
    spatial = tuple(spatial)
    ndim = len(spatial)
    box = tuple(min(calib, d) for d in fully_sampled_centre(to_numpy(sampled_mask(kspace, mask))))
    if min(box) < kernel:
        raise InputError(
            None, f"fully sampled k-space centre {box} is smaller than the ESPIRiT kernel ({kernel}): cannot calibrate"
        )
    if min(spatial) < 2 * kernel - 1:
        raise InputError(None, f"matrix {spatial} is too small for an ESPIRiT kernel of {kernel}")
    casorati = _casorati(to_numpy(calibration_region(kspace, box)).astype(np.complex128), kernel)
    # Right singular vectors and squared singular values from the (small) Gram matrix A^H A, formed in
    # complex128 and decomposed in complex64: the float32 LAPACK path is as accurate for the kept
    # (> thresh^2 * max) eigenvalues and does not stall when BLAS threads compete for busy cores.
    sing2, v = np.linalg.eigh((casorati.conj().T @ casorati).astype(np.complex64))
    keep = v[:, sing2 > thresh**2 * sing2[-1]][:, ::-1]
    kernels = keep.conj().T.reshape((-1, n_coils) + (kernel,) * ndim)

    n_pix = int(np.prod(spatial))
    corr = _kernel_correlations(kernels) * np.float32(np.sqrt(n_pix) / kernel**ndim)
    grid = xp.zeros((n_coils, n_coils) + spatial, dtype=xp.complex64)
    grid[(slice(None), slice(None)) + centred_box(spatial, corr.shape[2:])] = xp.asarray(corr)
    gram = ifftc(grid, tuple(range(-ndim, 0))).reshape(n_coils * n_coils, n_pix)
    gram = xp.ascontiguousarray(gram.T).reshape(n_pix, n_coils, n_coils)  # W(r), one coil x coil per pixel

    vec = gram.sum(axis=2)  # W @ ones: a start vector with weight on the dominant direction
    eig = xp.zeros(n_pix, dtype=xp.float32)
    for _ in range(max_iter):
        norm = xp.linalg.norm(vec, axis=1)
        vec = vec / xp.maximum(norm, np.float32(1e-30))[:, None]
        w_vec = xp.matmul(gram, vec[:, :, None])[:, :, 0]
        eig = xp.sum(vec.conj() * w_vec, axis=1).real
        vec = w_vec
    vec = vec / xp.maximum(xp.linalg.norm(vec, axis=1), np.float32(1e-30))[:, None]
    ref = vec[:, :1]
    vec = vec * (ref.conj() / xp.maximum(xp.abs(ref), np.float32(1e-30)))
    vec = vec * (eig > crop)[:, None]
    return xp.ascontiguousarray(vec.T.reshape((n_coils,) + spatial).astype(xp.complex64))
