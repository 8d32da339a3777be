"""The memory-bandwidth floor of a task: the bytes its algorithm must move, over the device's bandwidth.

Where ``bench_timing``'s floor times the FFTs and passes on this machine, this one counts bytes: an
iteration cannot be faster than reading and writing the arrays it must touch once each at the
device's streaming bandwidth. The bandwidth is measured in the same run: the best of ``FLOOR_RUNS``
copies of a 512 MiB array (CPU: every core copies its share; GPU: one CuPy copy), counting the read
and the write. Traffic models, with ``B`` the bytes of one complex64 coil array of the task:

- ``A^H A`` of Cartesian SENSE (a CG-SENSE or FISTA iteration), ``6 B``: expand + FFT (read the maps,
  write the coil k-space), weight + inverse FFT (read it, write it back), combine (read the coil images
  and the maps). The FFTs count as one read and one write each, as if every pass ran in cache;
  image-sized vectors (CG updates, the wavelet) are left out.
- A PDHG (TV) iteration, ``11 B``: ``A`` and ``A^H`` as above (4 B) plus the data dual step, which reads
  the coil k-space, the data and the dual and writes the dual and the weighted k-space (5 B), and the
  inverse FFT's read and write (2 B).
- Zero-filled + RSS, ``3 B``: the inverse FFT reads and writes the coil array, the RSS reads it.
- A readout FFT of the whole volume, ``2 B``: read and write.
- Toeplitz (NUFFT) CG-SENSE iteration: ``6 B`` with ``B`` the coil array on the doubled grid.

A time at 1x this floor would be a perfect streaming machine; real FFTs make several passes, so the
issue's GPU target is "within 2x" of it.
"""
from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

from bench_timing import FLOOR_RUNS, timed
from mrirecon.kernels.threads import cpu_threads, parallel_map

COPY_BYTES = 512 * 2**20
COMPLEX64 = 8


@functools.cache
def memory_bandwidth(xp: ModuleType, repeats: int = FLOOR_RUNS) -> float:
    """Streaming bandwidth of the device (bytes/s, read + write): the best of ``repeats`` large copies
    (measured once per process)."""
    n = COPY_BYTES // 4
    src = xp.ones(n, dtype=xp.float32)
    dst = xp.empty_like(src)
    if xp is np:
        edges = np.linspace(0, n, cpu_threads() + 1).astype(int)
        bounds = list(zip(edges[:-1], edges[1:]))

        def copy() -> None:
            parallel_map(lambda b: np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]]), bounds)
    else:

        def copy() -> None:
            xp.copyto(dst, src)

    copy()  # first touch of dst
    best = min(timed(copy, xp)[1] for _ in range(max(repeats, FLOOR_RUNS)))
    return 2 * COPY_BYTES / best


def coil_bytes(n_coils: int, shape: tuple[int, ...]) -> int:
    """Bytes of one complex64 coil array (coil, *shape)."""
    return n_coils * int(np.prod(shape)) * COMPLEX64


# coil-array passes per unit of work (module doc)
PASSES = {"normal": 6, "pdhg": 11, "zerofill": 3, "readout": 2}


def bandwidth_floor(xp: ModuleType, n_coils: int, shape: tuple[int, ...], work: str, count: int = 1) -> float:
    """Seconds to move ``count`` x the bytes of ``work`` (a key of ``PASSES``) on (coil, *shape) arrays."""
    return PASSES[work] * coil_bytes(n_coils, shape) * count / memory_bandwidth(xp)
