"""ESPIRiT's per-pixel work: the coil x coil operators ``W(r)`` from their k-space lags, and their top
eigenvectors by power iteration, cropped and phase-aligned in the same pass.

``W(r)`` is Hermitian, so only its upper triangle is formed: ``n(n+1)/2`` images, one per coil pair
``c <= d`` in row-major order ("packed", (pair, pixel)). Each image is the inverse DFT of a small
centred lag array (the kernels' cross-correlation, ``2*kernel - 1`` per axis); ``lag_images`` applies
it as one small dense DFT matrix per axis (matrix products, NumPy or CuPy), which costs less than an
FFT of the zero-padded matrix and writes the images in the packed layout directly.

Twins for the power iteration: a Numba CPU kernel (``@njit(parallel=True, nogil=True)``, blocks of pixels in
parallel, each pixel's matrix unpacked once into a split real/imaginary local copy that stays in L1 for
all iterations) and a numba.cuda kernel (one thread per pixel, the matrix read from the packed array,
coalesced across threads, the iterate kept in the output and a scratch array). ``power_maps``
dispatches by ``get_array_module``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import complex64, cuda, float32, njit, prange

from .backend import get_array_module
from .coil import _launch_gpu  # importing coil also sets OMP_WAIT_POLICY before Numba's pool starts

_BLOCK = 256  # pixels per CPU work item
_THREADS = 128  # CUDA threads per block
_TINY = np.float32(1e-30)  # floor of a norm before dividing by it (a zero vector stays zero)


def n_pairs(n_coils: int) -> int:
    """Number of coil pairs ``c <= d``: the packed length of a Hermitian coil x coil matrix."""
    return n_coils * (n_coils + 1) // 2


def _lag_phases(n: int, n_lags: int, xp: Any = np) -> Any:
    """(n, n_lags) complex64 ``exp(2 pi i D (y - n//2) / n)`` for centred lags ``D = k - n_lags//2``.

    The unnormalised centred inverse DFT along one axis (position ``y - n//2``, the ``ifftc``
    convention) of an array that is zero outside ``n_lags`` lags around the k-space centre.
    """
    lags = np.arange(n_lags) - n_lags // 2
    pos = np.arange(n) - n // 2
    phase = np.exp(2j * np.pi * np.outer(pos, lags) / n)  # float64 phases, rounded once
    return xp.asarray(phase.astype(np.complex64))


def lag_images(lags: Any, spatial: tuple[int, ...]) -> Any:
    """Unnormalised centred inverse DFT of small centred lag arrays: (batch, *n_lags) -> (batch, *spatial).

    Equals ``ifftc`` of the lags zero-padded (centred) to ``spatial``, times ``sqrt(prod(spatial))``;
    computed axis by axis as products with ``_lag_phases`` matrices, the last (first axis) writing the
    contiguous output. complex64, on the lags' device.
    """
    xp = get_array_module(lags)
    batch, n_lags = lags.shape[0], lags.shape[1]
    if len(spatial) > 1:
        inner = lag_images(lags.reshape((batch * n_lags,) + tuple(lags.shape[2:])), spatial[1:])
        rest = inner.reshape(batch, n_lags, -1)
    else:
        rest = lags.reshape(batch, n_lags, 1)
    out = xp.matmul(_lag_phases(spatial[0], n_lags, xp), rest.astype(xp.complex64, copy=False))
    return out.reshape((batch,) + tuple(spatial))


@njit(parallel=True, nogil=True, fastmath=False, cache=True)
def power_maps_cpu(gram: np.ndarray, max_iter: int, crop: float, maps: np.ndarray) -> None:
    """Top eigenvector of every pixel's Hermitian coil matrix, cropped and phase-aligned (CPU).

    gram: (n_pairs, n_pix) complex64, the upper triangle ``W[c, d]`` (``c <= d``, row-major) per pixel.
    maps: (n_coils, n_pix) complex64 output. Start ``W @ ones``; ``max_iter`` times normalise ``v``,
    ``w = W v``, ``eig = Re(v^H w)``; then ``w / ||w||``, zero where ``eig <= crop``, times
    ``conj(w_0) / |w_0|`` so that coil 0 is real and >= 0.
    """
    n_coils, n_pix = maps.shape
    for b in prange((n_pix + _BLOCK - 1) // _BLOCK):
        # W stored by columns, split: mr[d * n + c] = Re W[c, d], so that w += W[:, d] v[d] runs over
        # contiguous c (vectorised without reassociating a sum)
        mr = np.empty(n_coils * n_coils, dtype=np.float32)
        mi = np.empty(n_coils * n_coils, dtype=np.float32)
        vr = np.empty(n_coils, dtype=np.float32)
        vi = np.empty(n_coils, dtype=np.float32)
        wr = np.empty(n_coils, dtype=np.float32)
        wi = np.empty(n_coils, dtype=np.float32)
        for i in range(b * _BLOCK, min((b + 1) * _BLOCK, n_pix)):
            p = 0
            for c in range(n_coils):
                for d in range(c, n_coils):
                    g = gram[p, i]
                    mr[d * n_coils + c] = g.real
                    mi[d * n_coils + c] = g.imag
                    mr[c * n_coils + d] = g.real
                    mi[c * n_coils + d] = -g.imag
                    p += 1
            wr[:] = 0.0
            wi[:] = 0.0
            for d in range(n_coils):  # W @ ones
                for c in range(n_coils):
                    wr[c] += mr[d * n_coils + c]
                    wi[c] += mi[d * n_coils + c]
            eig = np.float32(0.0)
            for _ in range(max_iter):
                norm = np.float32(0.0)
                for c in range(n_coils):
                    norm += wr[c] * wr[c] + wi[c] * wi[c]
                scale = np.float32(1.0) / max(np.float32(math.sqrt(norm)), _TINY)
                for c in range(n_coils):
                    vr[c] = wr[c] * scale
                    vi[c] = wi[c] * scale
                    wr[c] = 0.0
                    wi[c] = 0.0
                for d in range(n_coils):
                    a = vr[d]
                    e = vi[d]
                    for c in range(n_coils):
                        wr[c] += mr[d * n_coils + c] * a - mi[d * n_coils + c] * e
                        wi[c] += mr[d * n_coils + c] * e + mi[d * n_coils + c] * a
                eig = np.float32(0.0)
                for c in range(n_coils):
                    eig += vr[c] * wr[c] + vi[c] * wi[c]
            norm = np.float32(0.0)
            for c in range(n_coils):
                norm += wr[c] * wr[c] + wi[c] * wi[c]
            scale = np.float32(1.0) / max(np.float32(math.sqrt(norm)), _TINY)
            if not eig > crop:
                scale = np.float32(0.0)
            # phase of coil 0 removed: w * conj(w_0) / |w_0|, with the same norm floor
            ref = complex(wr[0] * scale, -wi[0] * scale)
            ref = ref * (scale / max(np.float32(abs(ref)), _TINY))
            for c in range(n_coils):
                maps[c, i] = complex(wr[c], wi[c]) * ref


@cuda.jit(device=True)
def _entry_cuda(gram, c, d, n_coils, i):
    """``W[c, d]`` of pixel ``i`` from the packed upper triangle (``conj(W[d, c])`` below the diagonal)."""
    if c <= d:
        return gram[c * (2 * n_coils - c + 1) // 2 + d - c, i]
    return gram[d * (2 * n_coils - d + 1) // 2 + c - d, i].conjugate()


@cuda.jit(device=True)
def _floored_cuda(value):
    """``max(value, _TINY)`` without the builtin (Numba 0.68's own CUDA target cannot type ``max``)."""
    return value if value > _TINY else _TINY  # noqa: FURB136


@cuda.jit
def _power_cuda(gram, max_iter, crop, maps, work):
    i = cuda.grid(1)
    n_coils, n_pix = maps.shape
    if i >= n_pix:
        return
    # maps[:, i] holds the normalised iterate v, work[:, i] the product w = W v; float32 throughout
    for c in range(n_coils):
        acc = complex64(0)
        for d in range(n_coils):
            acc += _entry_cuda(gram, c, d, n_coils, i)
        work[c, i] = acc
    eig = float32(0)
    for _ in range(max_iter):
        norm = float32(0)
        for c in range(n_coils):
            norm += work[c, i].real * work[c, i].real + work[c, i].imag * work[c, i].imag
        scale = float32(1) / _floored_cuda(math.sqrt(norm))
        for c in range(n_coils):
            maps[c, i] = work[c, i] * scale
        eig = float32(0)
        for c in range(n_coils):
            acc = complex64(0)
            for d in range(n_coils):
                acc += _entry_cuda(gram, c, d, n_coils, i) * maps[d, i]
            work[c, i] = acc
            eig += maps[c, i].real * acc.real + maps[c, i].imag * acc.imag
    norm = float32(0)
    for c in range(n_coils):
        norm += work[c, i].real * work[c, i].real + work[c, i].imag * work[c, i].imag
    scale = float32(1) / _floored_cuda(math.sqrt(norm))
    if not eig > crop:
        scale = float32(0)
    ref = work[0, i].conjugate() * scale
    ref = ref * (scale / _floored_cuda(abs(ref)))
    for c in range(n_coils):
        maps[c, i] = work[c, i] * ref


def power_maps_cuda(gram: Any, max_iter: int, crop: float, maps: Any, stream: Any = 0) -> None:
    """GPU twin of ``power_maps_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    work = cuda.device_array(maps.shape, dtype=maps.dtype, stream=stream)  # maps may be a numba view: no xp here
    n_pix = maps.shape[1]
    _power_cuda[(n_pix + _THREADS - 1) // _THREADS, _THREADS, stream](gram, max_iter, np.float32(crop), maps, work)


def power_maps(gram: Any, n_coils: int, max_iter: int, crop: float) -> Any:
    """ESPIRiT maps (coil, n_pix) complex64 from packed per-pixel operators (n_pairs, n_pix), on their device.

    The top eigenvector of each ``W(r)`` by ``max_iter`` power iterations, zero where its Rayleigh
    quotient is <= ``crop``, phase-aligned to coil 0 (see ``power_maps_cpu``).
    """
    xp = get_array_module(gram)
    if gram.ndim != 2 or gram.shape[0] != n_pairs(n_coils):
        raise ValueError(f"packed operators {tuple(gram.shape)} do not fit {n_coils} coils (n_pairs, n_pix)")
    gram = xp.ascontiguousarray(gram, dtype=xp.complex64)
    maps = xp.empty((n_coils, gram.shape[1]), dtype=xp.complex64)
    if xp is np:
        power_maps_cpu(gram, max_iter, np.float32(crop), maps)
    else:
        _launch_gpu(xp, power_maps_cuda, gram, max_iter, crop, maps)
    return maps
