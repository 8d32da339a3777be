"""Array kernels (FFT, fused coil ops, ...) with CPU and GPU twins.

This layer imports only numpy/scipy/numba/cupy; it knows nothing of headers, files or Dask.
"""
from .backend import (
    get_array_module,
    gpu_available,
    resolve_device,
    to_device,
    to_numpy,
)
from .fft import fftc, ifftc

__all__ = [
    "get_array_module",
    "gpu_available",
    "resolve_device",
    "to_device",
    "to_numpy",
    "fftc",
    "ifftc",
]
