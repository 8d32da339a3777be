"""Coil tools: root-sum-of-squares, calibration-region detection, coil-space transforms and coil
sensitivity maps (ESPIRiT, Walsh, Inati).

ESPIRiT (Uecker et al., MRM 71:990, 2014): the fully sampled k-space centre gives a calibration
(Casorati) matrix whose dominant right singular vectors span the k-space kernels consistent with the
data. In image space those kernels become, at every pixel r, a coil x coil operator
``W(r) = N/K * sum_j g_j(r) g_j(r)^H``; where there is signal its top eigenvalue is ~1 and the
eigenvector is the coil sensitivity profile at r.

Walsh (Walsh et al., MRM 43:682, 2000) and Inati (Inati et al., ISMRM 2014, p. 4407) maps come from
low-resolution coil images instead: at every pixel the locally averaged signal correlation matrix
``R(r) = <x x^H>`` has the coil sensitivities as its dominant eigenvector. Walsh decomposes every
``R(r)`` (coil^2 memory per pixel); Inati runs a few power iterations ``v <- <x (x^H v)>`` that never
form ``R`` (coil memory per pixel). Both are vectorised over pixels with the array's namespace.

The calibration decomposition and the kernel cross-correlations are small (a few hundred rows and
columns) and run on the host; the per-pixel work (one image per coil pair ``c <= d`` to form the
Hermitian ``W``, power iteration for its top eigenvector: ``kernels/espirit.py``) runs on the array's
device.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import KSpace
from .errors import InputError
from .kernels.backend import device_of, get_array_module, to_device, to_numpy
from .kernels.fft import ifftc
from .kernels.threads import single_blas_thread

if TYPE_CHECKING:  # the methods package imports this module
    from .methods.params import CoilMapParams


def max_coil_power(maps, batch_ndim: int = 0):
    """``max_r sum_c |S_c(r)|^2`` of coil maps (coil, *spatial): ``||S||^2``, the largest eigenvalue of
    ``S^H S`` (1 for ESPIRiT maps), which scales the SENSE methods' Tikhonov weights and step bounds.

    A float; with ``batch_ndim`` leading batch axes (*batch, coil, *spatial), one value per entry as an
    array on the maps' device (no host round trip per entry).
    """
    xp = get_array_module(maps)
    power = xp.sum(maps.real**2 + maps.imag**2, axis=batch_ndim)
    if not batch_ndim:
        return float(xp.max(power))
    return xp.max(power.reshape(power.shape[:batch_ndim] + (-1,)), axis=-1)


def rss(x, axis: int = 0):
    """Root-sum-of-squares over ``axis`` (the coil axis): real float32 for complex64 input.

    complex64 (coil, *spatial) with 1 to 3 spatial dims and ``axis=0`` goes through the fused kernel
    (one read, no temporaries); other layouts and dtypes through NumPy/CuPy.
    """
    from .kernels.rss import rss_combine

    xp = get_array_module(x)
    if x.dtype == xp.complex64 and 2 <= x.ndim <= 4 and axis % x.ndim == 0:
        return rss_combine(x)
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
    """``r_cd(D) = sum_j sum_w h_jc(w + D) conj(h_jd(w))`` for kernels (j, coil, *window), D centred,
    for the coil pairs ``c <= d`` in row-major order: (n_pairs, *(2*kernel - 1)) complex64.

    The per-pixel ESPIRiT operator is the inverse DFT of these cross-correlations,
    ``W_cd(r) = (N/K) sum_j g_jc(r) conj(g_jd(r))`` with ``g_j`` the image-space kernels, so one
    image per coil pair replaces one per kernel and coil plus a per-pixel product; ``W`` is Hermitian,
    so the pairs ``c > d`` are not needed. Computed on the host with FFTs of size 2*kernel-1 (no
    circular wrap).
    """
    ndim = kernels.ndim - 2
    size = tuple(2 * k - 1 for k in kernels.shape[2:])
    axes = tuple(range(1, 1 + ndim))
    spectra = np.fft.fftn(kernels, s=size, axes=tuple(range(2, 2 + ndim)))  # (j, coil, *size)
    cross = np.einsum("jc...,jd...->cd...", spectra, spectra.conj())[np.triu_indices(kernels.shape[1])]
    return np.fft.fftshift(np.fft.ifftn(cross, axes=axes), axes=axes).astype(np.complex64)


def _signal_subspace(casorati: np.ndarray, thresh: float) -> np.ndarray:
    """Right singular vectors (columns, k) of the calibration matrix with singular values above
    ``thresh * sigma_max``, strongest first.

    From the eigendecomposition of the smaller Gram matrix: ``A^H A`` directly, or ``A A^H = U S^2 U^H``
    and ``V = A^H U / S`` when there are fewer rows than columns (P1's 2D calibration: 361 rows, 576
    columns), the LAPACK cost falling with the cube of its size. Only the span of the kept vectors
    enters the maps.
    """
    rows, cols = casorati.shape
    gram = casorati.conj().T @ casorati if cols <= rows else casorati @ casorati.conj().T
    sing2, vec = np.linalg.eigh(gram)
    keep = sing2 > thresh**2 * sing2[-1]
    sing2, vec = sing2[keep][::-1], vec[:, keep][:, ::-1]
    if cols <= rows:
        return vec
    return (casorati.conj().T @ vec) / np.sqrt(sing2)


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
    its per-pixel coil x coil operators (Hermitian, upper triangle kept) need pixels x coil(coil+1)/2
    complex64 of memory.
    """
    from .kernels.espirit import lag_images, power_maps  # Numba loads on first use, not with coils

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
    # BLAS on one thread: OpenBLAS's pool, beside Numba's, stalls when a core is busy (the 361x361
    # eigh of P1: 0.04 s on one thread, 0.5-5 s on two at load 3) and spins on into the power iteration
    with single_blas_thread():
        casorati = _casorati(to_numpy(calibration_region(kspace, box)).astype(np.complex128), kernel)
        kernels = _signal_subspace(casorati, thresh).conj().T.reshape((-1, n_coils) + (kernel,) * ndim)
        # W(r) = (N/K) * the centred inverse DFT of the correlations, N/K = n_pix / kernel^ndim: the
        # packed upper triangle (pair, *spatial), a direct DFT per axis of the (2*kernel-1)^ndim lags
        lags = _kernel_correlations(kernels) * np.float32(1.0 / kernel**ndim)
        gram = lag_images(xp.asarray(lags), spatial).reshape(len(lags), -1)
    maps = power_maps(gram, n_coils, max_iter, crop)
    return maps.reshape((n_coils,) + spatial)


# --- coil-space transforms -----------------------------------------------------------------------
def coil_covariance(x: Any, coil_axis: int = 0) -> np.ndarray:
    """``sum_n x_n x_n^H / n`` over every sample of ``x`` (all axes but ``coil_axis``): (coil, coil)
    complex128 on the host (accumulated in complex64 so that large data need no double-size copy).
    The noise covariance for noise-only samples, the coil Gram matrix that SVD coil compression
    decomposes, otherwise. Returned exactly Hermitian: a complex64 product rounds its (i, j) and
    (j, i) entries apart by ~1e-7 relative, more than ``whitening_matrix`` accepts.
    """
    xp = get_array_module(x)
    flat = xp.moveaxis(x, coil_axis, 0).reshape(x.shape[coil_axis], -1).astype(xp.complex64)
    gram = to_numpy(flat @ flat.conj().T).astype(np.complex128) / max(flat.shape[1], 1)
    return (gram + gram.conj().T) / 2


def apply_coil_matrix(x: Any, matrix: Any, coil_axis: int = 0) -> Any:
    """``matrix`` (new, old) applied along ``coil_axis`` of ``x``: (.., old, ..) -> (.., new, ..), complex64."""
    xp = get_array_module(x)
    m = to_device(np.asarray(to_numpy(matrix), dtype=np.complex64), device_of(x))
    out = xp.tensordot(m, xp.moveaxis(x, coil_axis, 0).astype(xp.complex64), axes=1)
    return xp.ascontiguousarray(xp.moveaxis(out, 0, coil_axis))


def transform_coils(ksp: KSpace, matrix: Any) -> KSpace:
    """A copy of ``ksp`` whose data, calibration and noise samples are mapped to new (virtual) coils
    by ``matrix`` (new, old): the one step shared by pre-whitening and coil compression.
    """
    matrix = np.asarray(to_numpy(matrix))
    if matrix.ndim != 2 or matrix.shape[1] != ksp.n_coils:
        raise InputError(
            ksp.header.source or None, f"coil matrix {matrix.shape} does not act on {ksp.n_coils} coils (new, old)"
        )
    coil = ksp.axis("coil")
    cal = ksp.calibration
    if cal is not None:
        cal = apply_coil_matrix(cal, matrix, coil if cal.ndim == ksp.data.ndim else 0)
    noise = None if ksp.noise is None else apply_coil_matrix(ksp.noise, matrix, 0)
    return dataclasses.replace(ksp, data=apply_coil_matrix(ksp.data, matrix, coil), calibration=cal, noise=noise)


# --- adaptive maps from coil images ----------------------------------------------------------------
def calibration_kspace(ksp: KSpace) -> tuple[Any, Any]:
    """(k-space, mask) to calibrate coil maps from, for one task (coil, *spatial): the separate
    calibration scan zero-padded to the matrix (mask None: its non-zero samples) when there is one,
    else the data and its mask.
    """
    if ksp.calibration is None:
        return ksp.data, ksp.mask
    xp = get_array_module(ksp.data)
    cal = xp.asarray(ksp.calibration, dtype=xp.complex64)
    if cal.shape[0] != ksp.n_coils or cal.ndim != ksp.data.ndim or any(
        c > n for c, n in zip(cal.shape[1:], ksp.spatial_shape)
    ):
        raise InputError(
            ksp.header.source or None,
            f"calibration data {tuple(cal.shape)} does not fit k-space {tuple(ksp.data.shape)} (coil, *spatial)",
        )
    padded = xp.zeros(ksp.data.shape, dtype=xp.complex64)
    padded[(slice(None),) + centred_box(ksp.spatial_shape, cal.shape[1:])] = cal
    return padded, None


def calibration_images(ksp: KSpace, calib: int = 24) -> Any:
    """Low-resolution coil images (coil, *spatial) from the fully sampled k-space centre (at most
    ``calib`` per axis), zero-padded to the matrix: unaliased at any undersampling of the rest.
    """
    kspace, mask = calibration_kspace(ksp)
    box = tuple(min(calib, d) for d in fully_sampled_centre(to_numpy(sampled_mask(kspace, mask))))
    if min(box) < 2:
        raise InputError(ksp.header.source or None, f"no fully sampled k-space centre to calibrate coil maps from ({box})")
    xp = get_array_module(kspace)
    low = xp.zeros(kspace.shape, dtype=xp.complex64)
    centre = (slice(None),) + centred_box(tuple(kspace.shape[1:]), box)
    low[centre] = kspace[centre]
    return ifftc(low, tuple(range(1, kspace.ndim)))


def align_phase(maps: Any, reference: Any) -> Any:
    """``maps`` (coil, *spatial) with each pixel's phase set so that ``reference^H S(r)`` is real and
    >= 0: the maps' phase (arbitrary for an eigenvector) becomes that of a fixed virtual coil.
    """
    xp = get_array_module(maps)
    ref = xp.asarray(np.asarray(to_numpy(reference), dtype=np.complex64))
    proj = xp.tensordot(ref.conj(), maps, axes=1)
    return maps * (proj.conj() / xp.maximum(xp.abs(proj), np.float32(1e-30)))


def _dominant_coil_vector(images: Any) -> np.ndarray:
    """Unit coil vector (host) that carries most of the signal over the whole image: the phase reference."""
    return np.linalg.eigh(coil_covariance(images))[1][:, -1]


def box_smooth(x: Any, window: int, axes: tuple[int, ...]) -> Any:
    """Moving average over ``window`` samples along each of ``axes`` (edges replicated), from running
    sums: one code path for NumPy and CuPy, cost independent of the window.
    """
    xp = get_array_module(x)
    for ax in axes:
        n = x.shape[ax]
        w = max(1, min(int(window), n))
        pad = [(0, 0)] * x.ndim
        pad[ax] = (w // 2 + 1, w - 1 - w // 2)  # one extra leading sample: the running sum's zero
        csum = xp.cumsum(xp.pad(x, pad, mode="edge"), axis=ax)
        hi = [slice(None)] * x.ndim
        lo = [slice(None)] * x.ndim
        hi[ax], lo[ax] = slice(w, w + n), slice(0, n)
        x = (csum[tuple(hi)] - csum[tuple(lo)]) / np.float32(w)
    return x


def _check_images(images: Any, window: int) -> None:
    if images.ndim not in (3, 4):
        raise InputError(None, f"coil images must be (coil, [z,] y, x), got shape {tuple(images.shape)}")
    if window < 1:
        raise InputError(None, f"smoothing window must be >= 1, got {window}")


def walsh_maps(images: Any, window: int = 7, thresh: float = 1e-3) -> Any:
    """Walsh adaptive coil maps (coil, *spatial) complex64 from coil images (coil, *spatial), 2D or 3D.

    window: edge of the box (pixels) over which the signal correlation matrix is averaged.
    thresh: maps are zero where the local signal energy (top eigenvalue) is below thresh times its
        maximum (background without signal).

    Unit norm over coils where kept; phase relative to the image's dominant coil combination.
    Memory: pixels x coil^2 complex64 for the per-pixel correlation matrices.
    """
    _check_images(images, window)
    xp = get_array_module(images)
    n_coils, *spatial = images.shape
    ndim = len(spatial)
    images = images.astype(xp.complex64)
    corr = box_smooth(images[:, None] * images[None, :].conj(), window, tuple(range(2, 2 + ndim)))
    corr = xp.ascontiguousarray(xp.moveaxis(corr.reshape(n_coils, n_coils, -1), 2, 0))  # (pixel, c, d)
    eigval, eigvec = xp.linalg.eigh(corr)
    energy = eigval[:, -1]
    vec = eigvec[:, :, -1] * (energy > thresh * energy.max())[:, None]
    maps = xp.moveaxis(vec, 0, 1).reshape(images.shape)
    return xp.ascontiguousarray(align_phase(maps, _dominant_coil_vector(images)).astype(xp.complex64))


def inati_maps(images: Any, window: int = 7, thresh: float = 1e-3, n_iter: int = 5) -> Any:
    """Inati's fast adaptive coil maps (coil, *spatial) complex64 from coil images, 2D or 3D.

    Power iteration on the locally averaged correlation matrix without forming it: from the dominant
    coil vector v, repeat ``c = v^H x`` (combined image), ``v = <x conj(c)>`` (local average),
    normalise per pixel.

    window: edge of the averaging box (pixels).
    thresh: maps are zero where the local signal energy is below thresh times its maximum.
    n_iter: power iterations (3-5 converge for smooth coil fields).
    """
    _check_images(images, window)
    if n_iter < 1:
        raise InputError(None, f"n_iter must be >= 1, got {n_iter}")
    xp = get_array_module(images)
    ndim = images.ndim - 1
    images = images.astype(xp.complex64)
    ref = _dominant_coil_vector(images)
    combined = xp.tensordot(xp.asarray(ref.conj().astype(np.complex64)), images, axes=1)
    for _ in range(n_iter):
        maps = box_smooth(images * combined.conj()[None], window, tuple(range(1, ndim + 1)))
        energy = xp.sqrt(xp.sum(maps.real**2 + maps.imag**2, axis=0))
        maps = maps / xp.maximum(energy, np.float32(1e-30))
        combined = xp.sum(maps.conj() * images, axis=0)
    # ||<x x^H v>|| for a unit v converges to the top eigenvalue: the same background test as Walsh's
    maps = maps * (energy > thresh * energy.max())
    return xp.ascontiguousarray(align_phase(maps, ref).astype(xp.complex64))


MAP_METHODS = ("espirit", "walsh", "inati")


def task_maps(ksp: KSpace, coils: CoilMapParams, owner: str) -> Any:
    """Coil maps of one Cartesian task: ``coils.maps`` as given, or estimated as ``coils`` says when None.

    Returned as complex64 on the data's device; ``InputError`` (naming ``owner``) when their shape
    differs from the k-space's (coil, *spatial).
    """
    xp = get_array_module(ksp.data)
    maps = coils.maps
    if maps is None:
        maps = coil_maps(ksp, coils.coil_maps, calib=coils.calib, **coils.estimator_options())
    maps = xp.asarray(maps, dtype=xp.complex64)
    if tuple(maps.shape) != tuple(ksp.data.shape):
        raise InputError(None, f"{owner}: coil maps have shape {tuple(maps.shape)}, k-space has {tuple(ksp.data.shape)}")
    return maps


def coil_maps(ksp: KSpace, method: str = "espirit", *, calib: int = 24, **options: Any) -> Any:
    """Coil maps (coil, *spatial) of one task (dims ``("coil", *spatial)``) by ``method``.

    ESPIRiT calibrates on the separate calibration scan or the data's fully sampled centre (at most
    ``calib``); Walsh and Inati on the low-resolution images of that centre. ``options`` go to
    ``espirit_maps`` / ``walsh_maps`` / ``inati_maps``.
    """
    if method == "espirit":
        kspace, mask = calibration_kspace(ksp)
        return espirit_maps(kspace, calib=calib, mask=mask, **options)
    if method == "walsh":
        return walsh_maps(calibration_images(ksp, calib), **options)
    if method == "inati":
        return inati_maps(calibration_images(ksp, calib), **options)
    raise InputError(None, f"unknown coil map method {method!r} (choose from {', '.join(MAP_METHODS)})")
