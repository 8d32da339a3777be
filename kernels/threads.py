"""The CPU thread budget of the calling thread, and running independent problems side by side.

Every CPU FFT (``scipy.fft`` workers) and Numba kernel (``numba.set_num_threads``, thread-local in
Numba) of a thread uses that thread's budget: by default every core (``MRIRECON_FFT_WORKERS`` sets
the FFT default). Several independent problems (slices, readout planes, echoes) run faster side by
side, one thread each, than one after the other on all cores: on 2 cores a CG-SENSE iteration of an
8x256x256 slice took 3.4 ms alone on both cores and 2.56 ms per slice with two slices on one core
each, because the threads no longer meet after every FFT and kernel. ``parallel_map`` does that
split; nested calls split the caller's budget, never more.
"""
from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numba
import numpy as np
from numba import njit, prange

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_THREADS = max(1, int(os.environ.get("MRIRECON_FFT_WORKERS", os.cpu_count() or 1)))
_local = threading.local()


def cpu_threads() -> int:
    """Threads the calling thread's FFTs and Numba kernels may use."""
    return getattr(_local, "threads", DEFAULT_THREADS)


def set_cpu_threads(n: int) -> None:
    """Give the calling thread (e.g. a pool worker, once) a budget of ``n`` threads (at least 1)."""
    n = max(1, int(n))
    _local.threads = n
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


@contextmanager
def limit_cpu_threads(n: int) -> Iterator[int]:
    """Within the block, the calling thread's budget is ``n`` threads; the old budget comes back after."""
    old, old_numba = getattr(_local, "threads", None), numba.get_num_threads()
    set_cpu_threads(n)
    try:
        yield cpu_threads()
    finally:
        if old is None:
            del _local.threads
        else:
            _local.threads = old
        numba.set_num_threads(old_numba)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """BLAS on one thread while the block runs. BLAS pools are process-wide, so blocks running at once in
    several threads (``parallel_map``) share one limit, set by the first to enter and lifted by the last
    to leave (nested ``threadpool_limits`` from two threads would restore each other's limits out of order
    and could leave BLAS on one thread for good)."""
    global _blas_users, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


@njit(parallel=True, nogil=True, cache=True)
def _touch(a: np.ndarray) -> None:
    for i in prange(a.shape[0]):
        a[i] += 1.0


@functools.cache
def concurrent_kernels_safe() -> bool:
    """True when Numba's threading layer lets two threads run parallel kernels at once (OpenMP, TBB);
    its ``workqueue`` fallback aborts the process instead."""
    _touch(np.zeros(2))  # the layer is chosen at the first parallel launch
    return numba.threading_layer() in ("omp", "tbb")


def thread_share(workers: int) -> int:
    """Each thread's budget when ``workers`` threads share the calling thread's budget (at least 1)."""
    return max(1, cpu_threads() // max(1, workers))


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]``, run on up to ``cpu_threads()`` threads that split the budget.

    Each worker thread gets ``thread_share(workers)`` threads of its own. With one item, a budget
    of one thread, or a threading layer that cannot run kernels concurrently, it is the plain loop.
    The first exception raised by ``fn`` propagates after the running calls finish.
    """
    workers = min(len(items), cpu_threads())
    if workers <= 1 or not concurrent_kernels_safe():
        return [fn(item) for item in items]
    share = thread_share(workers)

    def run(item: T) -> R:
        with limit_cpu_threads(share):
            return fn(item)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, items))
