"""Timing for the benchmark, and the floor of each task: the work no implementation can avoid.

The floor of a task is the time of the FFTs and array passes its algorithm must do, measured on this
machine in the same run: batched unshifted FFTs (``scipy.fft`` with every core on the CPU, cuFFT
through CuPy on a GPU, centring folded away) and one memory pass per unavoidable array touch
(``x * maps`` to expand, a read of both coil arrays to combine). On a GPU it also counts the copy of
the inputs to the device and of the result back, since every tool is timed from host to host.
Inputs are seeded random data, never zeros. Each part is the best of at least ``FLOOR_RUNS`` runs (the
least that work takes on this machine; a median moved with the load by up to 4x between runs). The
array passes are NumPy's: a fused kernel that vectorises better can run under them (x floor < 1).
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

# A benchmark runner: one run of a tool on a task -> (host output, {stage name: seconds}).
Runner = Callable[[], tuple[np.ndarray, dict[str, float]]]


def synchronize(xp: ModuleType) -> None:
    """Wait for queued GPU work (CuPy); nothing on the CPU."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def timed(fn: Callable[[], Any], xp: ModuleType = np) -> tuple[Any, float]:
    """``fn()`` and its wall time (s), with queued GPU work finished inside the measurement."""
    start = time.perf_counter()
    out = fn()
    synchronize(xp)
    return out, time.perf_counter() - start


def single_stage(work: Callable[[], np.ndarray], xp: ModuleType = np) -> Runner:
    """A runner with one timed stage: ``work()``, which returns a host array, and its time."""

    def run() -> tuple[np.ndarray, dict[str, float]]:
        out, seconds = timed(work, xp)
        return out, {"all": seconds}

    return run


def median_time(fn: Callable[[], Any], repeats: int, xp: ModuleType = np) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one untimed warm-up (s)."""
    fn()
    synchronize(xp)
    return statistics.median(timed(fn, xp)[1] for _ in range(repeats))


FLOOR_RUNS = 10  # a floor is the best of at least this many runs: the least the work can take here


def best_time(fn: Callable[[], Any], repeats: int, xp: ModuleType = np) -> float:
    """Shortest wall time of ``fn()`` over ``max(repeats, FLOOR_RUNS)`` runs after one untimed warm-up (s)."""
    fn()
    synchronize(xp)
    return min(timed(fn, xp)[1] for _ in range(max(repeats, FLOOR_RUNS)))


def _random(xp: ModuleType, shape: tuple[int, ...], seed: int) -> Any:
    """Seeded complex64 noise on the array module's device."""
    rng = np.random.default_rng(seed)
    host = (rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)).astype(np.complex64)
    return xp.asarray(host)


def _fft_pair(xp: ModuleType) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Forward and inverse n-D FFT over given axes: threaded pocketfft on the CPU, cuFFT on a GPU."""
    if xp is np:
        workers = os.cpu_count() or 1
        return (
            lambda a, axes: scipy.fft.fftn(a, axes=axes, workers=workers, overwrite_x=True),
            lambda a, axes: scipy.fft.ifftn(a, axes=axes, workers=workers, overwrite_x=True),
        )
    return (lambda a, axes: xp.fft.fftn(a, axes=axes), lambda a, axes: xp.fft.ifftn(a, axes=axes))


def _fft_pair_floor(xp: ModuleType, n_coils: int, grid: tuple[int, ...], repeats: int) -> float:
    """FFT and inverse FFT (in place) of every coil on a ``grid``-shaped array (s)."""
    fft, ifft = _fft_pair(xp)
    axes = tuple(range(-len(grid), 0))
    coils = _random(xp, (n_coils, *grid), 3)
    return best_time(lambda: ifft(fft(coils, axes), axes), repeats, xp)


def _coil_passes_floor(xp: ModuleType, n_coils: int, shape: tuple[int, ...], repeats: int) -> float:
    """One expand pass (``maps * image`` into coil images) and one combine pass (a read of the maps and
    the coil images) on (n_coils, *shape) (s)."""
    maps = _random(xp, (n_coils, *shape), 1)
    image = _random(xp, shape, 2)
    coils = _random(xp, (n_coils, *shape), 3)
    t_expand = best_time(lambda: xp.multiply(maps, image, out=coils), repeats, xp)
    t_combine = best_time(lambda: xp.vdot(maps.ravel(), coils.ravel()), repeats, xp)
    return t_expand + t_combine


def sense_iteration_floor(xp: ModuleType, n_coils: int, shape: tuple[int, ...], repeats: int) -> float:
    """One CG-SENSE iteration's floor (s): FFT and inverse FFT of every coil image, expand, combine."""
    return _fft_pair_floor(xp, n_coils, shape, repeats) + _coil_passes_floor(xp, n_coils, shape, repeats)


def toeplitz_sense_iteration_floor(xp: ModuleType, n_coils: int, shape: tuple[int, ...], repeats: int) -> float:
    """One iteration's floor (s) of non-Cartesian CG-SENSE with a Toeplitz-embedded normal operator:
    FFT and inverse FFT (in place) of every coil on the doubled grid (2N per axis), one expand and one
    combine pass on the (n_coils, *shape) coil images.

    Why: each iteration applies ``S^H (A^H A) S`` once. ``A^H A`` is a convolution with the
    trajectory's point-spread function over offsets in [-(N-1), N-1] per axis; done by FFT (the Toeplitz
    method; gridding would instead spread and interpolate every sample of every coil) it is a circular
    convolution of every coil image on a grid of at least 2N - 1 per axis (2N: the one the stored kernel
    is made for), an FFT pair per coil. ``S x`` must write every coil image once and ``S^H`` must read
    each once. Not counted: the zero padding, the kernel multiply and the crop (a fused FFT could absorb
    them), the CG vector updates (image sized, 2^d n_coils times smaller than the grid) and the set-up
    (``A^H y``, once per solve). An implementation that prunes the FFT passes over lines known to be zero
    or not needed (``kernels/toeplitz.py``) does less FFT work than this full pair and can run under
    the floor (x floor < 1).
    """
    grid = tuple(2 * n for n in shape)
    return _fft_pair_floor(xp, n_coils, grid, repeats) + _coil_passes_floor(xp, n_coils, shape, repeats)


def zerofill_floor(xp: ModuleType, n_coils: int, shape: tuple[int, ...], repeats: int) -> float:
    """Zero-filled + RSS floor (s): one inverse FFT of every coil and one read pass over the coils."""
    _, ifft = _fft_pair(xp)
    axes = tuple(range(-len(shape), 0))
    coils = _random(xp, (n_coils, *shape), 4)
    t_fft = best_time(lambda: ifft(coils, axes), repeats, xp)
    t_read = best_time(lambda: xp.vdot(coils.ravel(), coils.ravel()), repeats, xp)
    return t_fft + t_read


def readout_fft_floor(xp: ModuleType, shape: tuple[int, ...], axis: int, repeats: int) -> float:
    """Floor of the 1D inverse FFT along the fully sampled readout ``axis`` of the whole k-space (s)."""
    _, ifft = _fft_pair(xp)
    data = _random(xp, shape, 5)
    return best_time(lambda: ifft(data, (axis,)), repeats, xp)


def transfer_floor(xp: ModuleType, n_in: int, n_out: int, repeats: int) -> float:
    """Host-to-device copy of ``n_in`` and device-to-host copy of ``n_out`` complex64 values (s); 0 on the CPU."""
    if xp is np:
        return 0.0
    host_in = np.asarray(_random(np, (n_in,), 6))
    device_out = _random(xp, (n_out,), 7)
    return best_time(lambda: (xp.asarray(host_in), device_out.get()), repeats, xp)
