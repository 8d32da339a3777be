"""Fused kernels of the Toeplitz-embedded SENSE normal operator ``S^H (A^H A) S`` (A a NUFFT).

``A^H A`` is a convolution with the trajectory's point-spread function, run as a circular convolution
on a grid of twice the image size: put the coil image ``S_c x`` in the grid's corner (indices
[0, N) per axis, zeros elsewhere), FFT, multiply by the real kernel spectrum, inverse FFT, keep the
corner. (Any placement works, as long as the crop reads where the image was written: the convolution
is shift-equivariant and 2N leaves no wrap-around for offsets in [-(N-1), N-1].)

- ``expand_into_grid``: ``grid[c, corner] = maps[c] * x`` and zeros on the rest of the grid, one pass
  that writes every grid point once (no ``zeros`` then copy).
- ``toeplitz_convolve``: pruned FFT, kernel multiply and pruned inverse FFT, all in place in the grid.
  The forward FFT runs its 1D passes along axes 0, 1, ..., each only over the lines whose later axes
  lie in the corner (the other lines are still zero); the inverse runs them in the reverse order, each
  only over the lines whose later axes lie in the corner (the crop keeps no other). Measured for
  8 x 512^2 complex64 on 2 shared cores (FFT pair, in place): unpruned 10.7 ms, pruned with the passes
  the other way round (last axis first) 9.1 ms, pruned in this order 7.2 ms.
- ``crop_combine``: ``out = sum_c conj(maps[c]) * grid[c, corner]``, the crop fused into the combine.

The grid is (coil, *grid_shape) with grid_shape >= image shape per axis, 2D or 3D. CPU: Numba kernels
over contiguous runs, the image rows (the run helpers are ``kernels.coil``'s, whose import also sets
``OMP_WAIT_POLICY`` before Numba's pool starts); GPU: numba.cuda twins on CuPy arrays (one thread per
grid point or image pixel, coils in a loop), dispatched by ``get_array_module``; the GPU FFTs are
cuFFT's, unpruned and out of place.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft
from numba import cuda, njit, prange

from .backend import get_array_module
from .coil import _combine_run, _expand_run, _launch_gpu, apply_weight
from .threads import cpu_threads

_THREADS = 256  # CUDA threads per block


@njit(cache=True)
def _zero_run(out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        out[i] = 0


@njit(parallel=True, nogil=True, cache=True)
def expand_into_grid_cpu(image: np.ndarray, maps: np.ndarray, grid: np.ndarray) -> None:
    """``grid[c, :N0, :N1, :N2] = maps[c] * image``, zeros elsewhere: image (N0, N1, N2), maps
    (C, N0, N1, N2), grid (C, G0, G1, G2) with G >= N per axis (2D: N0 = G0 = 1). One work item per
    grid row (c, a, b): a corner row gets the product and zeros beyond N2, any other row zeros."""
    n_coils, g0, g1 = grid.shape[:3]
    n0, n1, n2 = image.shape
    for k in prange(n_coils * g0 * g1):
        c = k // (g0 * g1)
        a = (k // g1) % g0
        b = k % g1
        row = grid[c, a, b]
        if a < n0 and b < n1:
            _expand_run(row[:n2], maps[c, a, b], image[a, b])
            _zero_run(row[n2:])
        else:
            _zero_run(row)


@njit(parallel=True, nogil=True, cache=True)
def crop_combine_cpu(grid: np.ndarray, maps: np.ndarray, out: np.ndarray) -> None:
    """``out[a, b, :] = sum_c conj(maps[c, a, b, :]) * grid[c, a, b, :N2]`` over the image rows (a, b)
    (shapes as ``expand_into_grid_cpu``, out (N0, N1, N2)): the crop to the corner fused into the combine."""
    n_coils = maps.shape[0]
    n0, n1, n2 = out.shape
    for k in prange(n0 * n1):
        a = k // n1
        b = k % n1
        for c in range(n_coils):
            _combine_run(out[a, b], maps[c, a, b], grid[c, a, b, :n2], c == 0)


@cuda.jit
def _expand_into_grid_cuda(image, maps, grid):
    p = cuda.grid(1)
    n_coils, g0, g1, g2 = grid.shape
    n0, n1, n2 = image.shape
    if p >= g0 * g1 * g2:
        return
    a = p // (g1 * g2)
    b = (p // g2) % g1
    d = p % g2
    if a < n0 and b < n1 and d < n2:
        x = image[a, b, d]
        for c in range(n_coils):
            grid[c, a, b, d] = maps[c, a, b, d] * x
    else:
        for c in range(n_coils):
            grid[c, a, b, d] = 0


@cuda.jit
def _crop_combine_cuda(grid, maps, out):
    i = cuda.grid(1)
    n0, n1, n2 = out.shape
    if i >= n0 * n1 * n2:
        return
    a = i // (n1 * n2)
    b = (i // n2) % n1
    d = i % n2
    acc = maps[0, a, b, d].conjugate() * grid[0, a, b, d]
    for c in range(1, maps.shape[0]):
        acc += maps[c, a, b, d].conjugate() * grid[c, a, b, d]
    out[a, b, d] = acc


def expand_into_grid_cuda(image: Any, maps: Any, grid: Any, stream: Any = 0) -> None:
    """GPU twin of ``expand_into_grid_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    n = math.prod(grid.shape[1:])
    _expand_into_grid_cuda[(n + _THREADS - 1) // _THREADS, _THREADS, stream](image, maps, grid)


def crop_combine_cuda(grid: Any, maps: Any, out: Any, stream: Any = 0) -> None:
    """GPU twin of ``crop_combine_cpu``."""
    n = math.prod(out.shape)
    _crop_combine_cuda[(n + _THREADS - 1) // _THREADS, _THREADS, stream](grid, maps, out)


def _as3d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 2D shape with a leading axis of size 1, a 3D shape as it is."""
    return (1,) * (3 - len(shape)) + tuple(shape)


def expand_into_grid(image: Any, maps: Any, grid: Any) -> Any:
    """Write ``maps * image`` into the corner of ``grid`` and zeros everywhere else; returns ``grid``.

    image (*N) and maps (coil, *N) complex64 (maps C-contiguous), grid (coil, *G) C-contiguous
    complex64 with G >= N per axis, 2D or 3D.
    """
    xp = get_array_module(grid)
    spatial = tuple(image.shape)
    x = xp.ascontiguousarray(image, dtype=xp.complex64).reshape(_as3d(spatial))
    m = maps.reshape((maps.shape[0],) + _as3d(spatial))
    g = grid.reshape((grid.shape[0],) + _as3d(grid.shape[1:]))
    if xp is np:
        expand_into_grid_cpu(x, m, g)
    else:
        _launch_gpu(xp, expand_into_grid_cuda, x, m, g)
    return grid


def crop_combine(grid: Any, maps: Any, out: Any = None) -> Any:
    """``sum_c conj(maps[c]) * grid[c, corner]``: grid (coil, *G), maps (coil, *N) -> (*N) complex64.

    ``out``: a C-contiguous complex64 array of the image shape to write into, else a new one.
    """
    xp = get_array_module(grid)
    spatial = tuple(maps.shape[1:])
    if out is None:
        out = xp.empty(spatial, dtype=xp.complex64)
    m = maps.reshape((maps.shape[0],) + _as3d(spatial))
    g = grid.reshape((grid.shape[0],) + _as3d(grid.shape[1:]))
    o = out.reshape(_as3d(spatial))
    if xp is np:
        crop_combine_cpu(g, m, o)
    else:
        _launch_gpu(xp, crop_combine_cuda, g, m, o)
    return out


def _line_block(image_shape: tuple[int, ...], axis: int) -> tuple[slice, ...]:
    """The grid block (coil axis first) whose lines along ``axis`` a pruned pass transforms: axes
    after ``axis`` restricted to the image corner, the others whole."""
    ndim = len(image_shape)
    return (slice(None),) * (axis + 2) + tuple(slice(0, n) for n in image_shape[axis + 1:ndim])


def toeplitz_fft(grid: Any, image_shape: tuple[int, ...], inverse: bool, prune: bool = True) -> Any:
    """Unnormalised FFT (or inverse FFT, a plain sum) of every coil's grid over its spatial axes,
    for an image in the corner: use the result (in place in ``grid`` on the CPU).

    ``prune`` (CPU): forward, passes along axes 0, 1, ... each over the lines whose later axes lie
    in the corner (outside it the grid is still zero); inverse, passes in the reverse order over the
    same lines (outside them the result is not needed). The forward output is the full spectrum; the
    inverse output is right in the corner only. Unpruned or on a GPU: the full n-D transform.
    """
    xp = get_array_module(grid)
    ndim = len(image_shape)
    norm = "forward" if inverse else "backward"  # no 1/n either way: the scale lives in the kernel
    if xp is not np:
        fn = xp.fft.ifftn if inverse else xp.fft.fftn
        return fn(grid, axes=tuple(range(1, ndim + 1)), norm=norm)
    if not prune:
        full = scipy.fft.ifftn if inverse else scipy.fft.fftn
        return full(grid, axes=tuple(range(1, ndim + 1)), norm=norm, workers=cpu_threads(), overwrite_x=True)
    fn = scipy.fft.ifft if inverse else scipy.fft.fft
    for axis in reversed(range(ndim)) if inverse else range(ndim):
        block = grid[_line_block(image_shape, axis)]
        out = fn(block, axis=axis + 1, norm=norm, workers=cpu_threads(), overwrite_x=True)
        if not np.may_share_memory(out, block):  # overwrite_x allows, not promises, in place (scipy 1.17 is)
            block[...] = out
    return grid


def toeplitz_convolve(grid: Any, weights: Any, image_shape: tuple[int, ...], prune: bool = True) -> Any:
    """Circular convolution of every coil's grid (coil, *G) with the kernel whose spectrum, FFT
    normalisation folded in, is ``weights`` (*G), real float32; the image sits in the corner and only
    the corner of the result is right. In place on the CPU; use the result."""
    spectrum = toeplitz_fft(grid, image_shape, inverse=False, prune=prune)
    apply_weight(spectrum, weights)
    return toeplitz_fft(spectrum, image_shape, inverse=True, prune=prune)
