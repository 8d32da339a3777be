"""Centred, orthonormal FFTs: scipy.fft (multi-threaded) on the CPU, cuFFT through CuPy on a GPU."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import scipy.fft

from .backend import get_array_module
from .threads import cpu_threads, parallel_map



def fft_uncentred(x, axes: Sequence[int], inverse: bool = False, overwrite: bool = True):
    """Orthonormal FFT over ``axes`` without centring, allowed to overwrite ``x`` (use the result).

    For operators that fold the centring into stored arrays once (``linop.SenseNormal``): on the CPU
    the transform runs in place in ``x``'s memory (scipy ``overwrite_x``), so a loop reuses one buffer.
    ``overwrite=False`` keeps ``x`` intact and writes a new array in the same pass (no copy first).
    """
    xp = get_array_module(x)
    axes = tuple(axes)
    if xp is np:
        fn = scipy.fft.ifftn if inverse else scipy.fft.fftn
        return fn(x, axes=axes, norm="ortho", workers=cpu_threads(), overwrite_x=overwrite)
    fn = xp.fft.ifftn if inverse else xp.fft.fftn
    return fn(x, axes=axes, norm="ortho")


@functools.lru_cache(maxsize=32)
def checkerboard(shape: tuple[int, ...], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """±1 factors that replace the shifts of a centred FFT over the last ``ndim`` axes of even ``shape``.

    For even N, ``fftshift(fft(ifftshift(x))) = (-1)**(N/2) c * fft(c * x)`` with ``c[n] = (-1)**n``
    (the same for the inverse FFT), axis by axis. Returns ``(c, s * c)`` over those axes (float32,
    broadcasting against ``(..., *shape[-ndim:])``), ``s`` the product of the per-axis signs.
    """
    spatial = shape[-ndim:]
    c = np.ones((), dtype=np.float32)
    sign = 1.0
    for n in spatial:
        c = np.multiply.outer(c, 1.0 - 2.0 * (np.arange(n) % 2)).astype(np.float32)
        sign *= -1.0 if (n // 2) % 2 else 1.0
    return c, (sign * c).astype(np.float32)


def _centred(x, axes: Sequence[int], inverse: bool):
    """Centred orthonormal FFT. CPU, even sizes over trailing axes: ±1 checkerboards, no shift copies."""
    xp = get_array_module(x)
    axes = tuple(axes)
    ndim = len(axes)
    trailing = ndim > 0 and sorted(a % x.ndim for a in axes) == list(range(x.ndim - ndim, x.ndim))
    if xp is np and trailing and all(n % 2 == 0 for n in x.shape[-ndim:]):
        before, after = checkerboard(tuple(x.shape[-ndim:]), ndim)
        y = fft_uncentred(x * before, axes, inverse)  # the product is a fresh array: the FFT may overwrite it
        y *= after
        return y
    x = xp.fft.ifftshift(x, axes=axes)
    if xp is np:
        fn = scipy.fft.ifftn if inverse else scipy.fft.fftn
        y = fn(x, axes=axes, norm="ortho", workers=cpu_threads())
    else:
        fn = xp.fft.ifftn if inverse else xp.fft.fftn
        y = fn(x, axes=axes, norm="ortho")
    return xp.fft.fftshift(y, axes=axes)


def fftc(x, axes: Sequence[int] = (-2, -1)):
    """Centred orthonormal forward FFT over ``axes`` (image -> k-space). Keeps complex64."""
    return _centred(x, axes, inverse=False)


def ifftc(x, axes: Sequence[int] = (-2, -1)):
    """Centred orthonormal inverse FFT over ``axes`` (k-space -> image). Keeps complex64."""
    return _centred(x, axes, inverse=True)


def ifftc_planes(x, axis: int, keep: Sequence[int] | None = None):
    """``moveaxis(ifftc(x, (axis,)), axis, 0)[keep]``, contiguous: the hybrid-space planes of a volume
    whose readout ``axis`` is fully sampled, one plane per readout position (``keep``: which; all by default).

    For even n the input ``ifftshift`` is a modulation, i.e. a shift of the output, so
    ``ifftc(x)[m] = (-1)**(n/2) (-1)**m ifft(x)[(m + n/2) % n]``: an unshifted inverse FFT, then a copy
    that applies the centring and the transpose. On the CPU this runs in blocks of ~1 MB (copy into a
    scratch array that each thread reuses, FFT in place there, then the signed copy into the result),
    side by side on the cores: the only large
    array is the result (a whole-volume FFT output would be a second one, and on a VM first touching a
    fresh 670 MB array cost up to 2 s). Odd n (no such identity with a real sign) takes the centred FFT
    and then the copy.
    """
    xp = get_array_module(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    wanted = np.arange(n) if keep is None else np.asarray(keep, dtype=np.int64)
    if n % 2:  # odd: the shifts do not reduce to a permutation and a sign
        return xp.ascontiguousarray(xp.moveaxis(ifftc(x, (axis,)), axis, 0)[xp.asarray(wanted)])
    source = (wanted + n // 2) % n
    signs = (((-1.0) ** (n // 2)) * (1 - 2 * (wanted % 2))).astype(np.float32)  # (-1)**(n/2) (-1)**m
    lines = xp.moveaxis(x, axis, 0)  # (n, *rest), a view
    out = xp.empty((wanted.size, *lines.shape[1:]), dtype=xp.complex64)
    if xp is not np:
        y = fft_uncentred(lines, (0,), inverse=True, overwrite=False)
        xp.multiply(y[xp.asarray(source)], xp.asarray(signs).reshape((-1,) + (1,) * (out.ndim - 1)), out=out)
        return out
    sign = signs.reshape((-1,) + (1,) * (out.ndim - 1))
    blocks = _blocks(lines.shape[1:], _PLANE_BLOCK_BYTES // (n * x.itemsize))
    largest = max(lines[(slice(None), *where)].size for where in blocks)

    def run(group: list[tuple]) -> None:
        # two scratch arrays per thread, reused for its blocks: no fresh pages per block
        lines_buf, planes_buf = np.empty(largest, np.complex64), np.empty(largest // n * wanted.size, np.complex64)
        for where in group:
            part = lines[(slice(None), *where)]
            buf = lines_buf[: part.size].reshape(part.shape)
            buf[...] = part
            y = fft_uncentred(buf, (0,), inverse=True)  # in place in the scratch
            picked = planes_buf[: part.size // n * wanted.size].reshape((wanted.size, *part.shape[1:]))
            np.take(y, source, axis=0, out=picked)
            np.multiply(picked, sign, out=out[(slice(None), *where)])

    workers = max(1, min(cpu_threads(), len(blocks)))
    parallel_map(run, [blocks[k::workers] for k in range(workers)])
    return out


# ~1 MB of input lines per block, each thread reusing its scratch: P2 (8x160x256x256, 2 cores, load shared)
# 0.33 s with 1 MB, 0.36 with 2 MB, 0.37 with 4 and 8 MB; the whole-volume out-of-place FFT took 0.43-2.3 s
_PLANE_BLOCK_BYTES = 1 << 20


def _blocks(rest: tuple[int, ...], size: int) -> list[tuple]:
    """Slices cutting an array of shape ``rest`` into blocks of about ``size`` elements (every block keeps
    all dims): one index at a time over the leading axes, ranges over the first axis whose tail fits ``size``."""
    tail = 1
    for k in range(len(rest) - 1, -1, -1):
        if tail * rest[k] > size or k == 0:
            step = max(1, size // tail)
            leads = [tuple(slice(i, i + 1) for i in lead) for lead in np.ndindex(*rest[:k])]
            return [(*lead, slice(j, j + step)) for lead in leads for j in range(0, rest[k], step)]
        tail *= rest[k]
    return [()]
