"""Fused root-sum-of-squares over coils: ``out = sqrt(sum_c |y_c|^2)`` in one read of the coil images.

NumPy's ``sqrt(sum(y.real**2 + y.imag**2, 0))`` makes three coil-sized float temporaries; the fused
kernels read every coil image once and write the (optionally complex64) image once. ``shift`` rolls
the output by ``(sz, sy, sx)`` pixels as it is written (``np.roll`` semantics): the zero-filled
reconstruction folds the output ``fftshift`` of its centred inverse FFT into the write this way.

Twins: a Numba CPU kernel (``@njit(parallel=True, nogil=True)``, rows in parallel, coils accumulated row by row in
float32, the order NumPy sums the coil axis in) and a numba.cuda kernel (one thread per pixel, coils in
a loop) that runs on CuPy arrays through ``__cuda_array_interface__``. ``rss_combine`` dispatches.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from .backend import get_array_module
from .coil import _launch_gpu  # importing coil also sets OMP_WAIT_POLICY before Numba's pool starts

_THREADS = 256  # CUDA threads per block


@njit(parallel=True, nogil=True, fastmath=False, cache=True)
def rss_cpu(y: np.ndarray, shift: tuple[int, int, int], out: np.ndarray) -> None:
    """``out[(z+sz)%nz, (i+sy)%ny, (j+sx)%nx] = sqrt(sum_c |y[c, z, i, j]|^2)`` for (coil, nz, ny, nx) y,
    ``shift = (sz, sy, sx)`` with ``0 <= s < n`` (CPU)."""
    n_coils, nz, ny, nx = y.shape
    sz, sy, sx = shift
    for row in prange(nz * ny):
        z = row // ny
        i = row - z * ny
        acc = np.zeros(nx, dtype=np.float32)
        for c in range(n_coils):
            for j in range(nx):
                v = y[c, z, i, j]
                acc[j] += v.real * v.real + v.imag * v.imag
        zo = (z + sz) % nz
        io = (i + sy) % ny
        for j in range(nx - sx):  # the roll along x as two contiguous runs (no per-pixel modulo)
            out[zo, io, j + sx] = math.sqrt(acc[j])
        for j in range(nx - sx, nx):
            out[zo, io, j + sx - nx] = math.sqrt(acc[j])


@cuda.jit
def _rss_cuda(y, shift, out):
    p = cuda.grid(1)
    sz, sy, sx = shift
    nz, ny, nx = y.shape[1], y.shape[2], y.shape[3]
    if p < nz * ny * nx:
        j = p % nx
        i = (p // nx) % ny
        z = p // (nx * ny)
        v = y[0, z, i, j]
        acc = v.real * v.real + v.imag * v.imag
        for c in range(1, y.shape[0]):
            v = y[c, z, i, j]
            acc += v.real * v.real + v.imag * v.imag
        out[(z + sz) % nz, (i + sy) % ny, (j + sx) % nx] = math.sqrt(acc)


def rss_cuda(y, shift: tuple[int, int, int], out, stream=0) -> None:
    """GPU twin of ``rss_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    n = y.shape[1] * y.shape[2] * y.shape[3]
    _rss_cuda[(n + _THREADS - 1) // _THREADS, _THREADS, stream](y, shift, out)


def rss_combine(y, dtype=np.float32, shift: tuple[int, ...] | None = None):
    """RSS over axis 0 of complex64 ``y`` (coil, *spatial), 1 to 3 spatial dims -> (*spatial) of ``dtype``.

    ``dtype``: float32, or complex64 for an image with zero phase (no later ``astype`` pass).
    ``shift``: per spatial axis, the roll applied to the output as it is written (None: no roll).
    """
    xp = get_array_module(y)
    spatial = tuple(y.shape[1:])
    if not 1 <= len(spatial) <= 3:
        raise ValueError(f"rss_combine needs 1 to 3 spatial dims, got shape {tuple(y.shape)}")
    pad = (1,) * (3 - len(spatial))
    y4 = xp.ascontiguousarray(y, dtype=xp.complex64).reshape((y.shape[0], *pad, *spatial))
    roll = (0,) * len(pad) + tuple(int(s) % n if n else 0 for s, n in zip(shift or (0,) * len(spatial), spatial))
    out = xp.empty(spatial, dtype=dtype)
    out3 = out.reshape(pad + spatial)
    if xp is np:
        rss_cpu(y4, roll, out3)
    else:
        _launch_gpu(xp, rss_cuda, y4, roll, out3)
    return out
