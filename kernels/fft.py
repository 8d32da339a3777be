"""Centred, orthonormal FFTs: scipy.fft (multi-threaded) on the CPU, cuFFT through CuPy on a GPU."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.fft

from .backend import get_array_module

FFT_WORKERS = int(os.environ.get("MRIRECON_FFT_WORKERS", os.cpu_count() or 1))


def _centred(x, axes: Sequence[int], inverse: bool):
    xp = get_array_module(x)
    axes = tuple(axes)
    x = xp.fft.ifftshift(x, axes=axes)
    if xp is np:
        fn = scipy.fft.ifftn if inverse else scipy.fft.fftn
        y = fn(x, axes=axes, norm="ortho", workers=FFT_WORKERS)
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
