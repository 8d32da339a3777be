"""Centred, orthonormal FFTs: scipy.fft (multi-threaded) on the CPU, cuFFT through CuPy on a GPU."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import scipy.fft

from .backend import get_array_module
from .threads import cpu_threads



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

    Two passes instead of four (shift copy, FFT, shift, transposing copy): an out-of-place unshifted
    inverse FFT, then the transposing copy, which applies the centring as it copies. For even n the
    input ``ifftshift`` is a modulation, i.e. a shift of the output, so
    ``ifftc(x)[m] = (-1)**(n/2) (-1)**m ifft(x)[(m + n/2) % n]``. Odd n (no such identity with a real
    sign) takes the centred FFT and then the copy.
    """
    xp = get_array_module(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    wanted = np.arange(n) if keep is None else np.asarray(keep, dtype=np.int64)
    if n % 2:  # odd: the shifts do not reduce to a permutation and a sign
        return xp.ascontiguousarray(xp.moveaxis(ifftc(x, (axis,)), axis, 0)[wanted])
    y = fft_uncentred(x, (axis,), inverse=True, overwrite=False)
    source = (wanted + n // 2) % n
    signs = ((-1.0) ** (n // 2)) * (1 - 2 * (wanted % 2))  # (-1)**(n/2) (-1)**m
    planes = xp.moveaxis(y, axis, 0)
    out = xp.empty((wanted.size, *planes.shape[1:]), dtype=y.dtype)
    for k, (m, sign) in enumerate(zip(source.tolist(), signs.tolist())):
        xp.multiply(planes[m], y.dtype.type(sign), out=out[k])
    return out
