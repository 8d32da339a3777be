"""Task planning: split an input into units of work sized to the device, and survive out-of-memory.

Tasks: one per slice for multi-slice data; for a 3D Cartesian volume, one per *slab* of ``SLAB_WIDTH``
readout positions when the method can work plane by plane (``SLAB_METHODS``): after an inverse FFT
along the always fully sampled readout, every readout position is an independent 2D (kz, ky) problem;
otherwise the whole volume is one task.

A *unit* is a run of consecutive task indices of one series (e.g. slices 4-7) that one worker
reads, reconstructs and writes in one go. Units amortise the scheduler and file-open overhead;
their size is capped by the device memory the planner expects them to need, so that a unit fits.

Memory model (bytes), from the shapes alone: a unit's k-space and image live on the device for the
whole unit, and the method's workspace for one task on top (``recon`` runs one task at a time; on a
GPU a method with a batched form solves the whole unit at once, ``BATCHED_WORKSPACE`` per byte of it)::

    unit_bytes = n * (K + I) + a * K + b * C * K + c * H

with K = coils x spatial samples x 8 (complex64 k-space of one task), I = the complex64 image, C =
coils and H = 16 x rows x columns of the complex128 Hankel calibration matrix of methods that take
``calib``/``kernel`` parameters (ESPIRiT): rows = (calib - kernel + 1)^d, columns = C x kernel^d.
``a``, ``b``, ``c`` are per method (``WORKSPACE``), fitted to ``tracemalloc`` peaks on the CPU:
zerofill peaks at 1.06-1.25 K (one out-of-place inverse FFT of the coil images, then the fused RSS
kernel writes the image; 2.06 K for a single coil, under-estimated: the fallback below covers it); sense
(max_iter 2) at 6.8 K (96x96, 4 coils), 7.4 K (128x128, 8), 10.8 K (96x96, 12), 11.4 K (128x128, 16),
17.8 K (64x64, 8), 29.4 K (48x48, 6): ESPIRiT's calibration (Casorati and Gram matrices) dominates and
does not scale with the image, and its per-pixel matrices are packed Hermitian (C (C + 1) / 2 entries).
The model is 1.07-1.44x those peaks (re-measured 2026-11-28 after the packed ESPIRiT, the fused SENSE
operators and the fused zero-filled RSS). tv and l1wavelet peak as sense does at 2 iterations; other
methods take ``DEFAULT_WORKSPACE``, which adds a coil-sized buffer for dual variables.

When the estimate is wrong anyway, ``run_with_fallback`` catches the out-of-memory error, splits the
unit in halves and retries them, and runs a single task that still does not fit on the CPU.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mrirecon.data import SPATIAL_KDIMS
from mrirecon.methods import get_method

from .store import TaskIndex

BYTES_PER_SAMPLE = 8  # complex64
# (a, b, c) of the workspace a * K + b * C * K + c * H; measured peaks in the module docstring.
WORKSPACE: dict[str, tuple[float, float, float]] = {"zerofill": (1.4, 0.0, 0.0), "sense": (1.0, 0.45, 2.5)}
DEFAULT_WORKSPACE = (2.0, 0.6, 2.6)  # other methods: an ESPIRiT-based iterative method with a coil-sized dual
DEVICE_FRACTION = 0.8  # share of the free device memory a unit may plan to use (allocator slack)
DEFAULT_MAX_BATCH = 8
# Methods whose 3D result may be built from 2D (kz, ky) planes after the readout FFT: zerofill exactly;
# sense with 2D ESPIRiT maps per plane (as 3D CG-SENSE is commonly run).
SLAB_METHODS = ("zerofill", "sense")
# Workspace per byte of a unit's k-space when its entries are solved as one batch (sense_batch): the
# stacked data, maps, folded maps and coil buffer; tracemalloc peaks of sense_batch (max_iter 2, 8 coils):
# 5.04 K (64x64, 16 entries), 5.03 K (96x96, 12), 5.03 K (128x128, 8).
BATCHED_WORKSPACE = 5.5
SLAB_WIDTH = 8  # readout positions per slab task

T = TypeVar("T")


@dataclass(frozen=True)
class TaskShape:
    """What the memory model needs of one task: coils, spatial k-space shape, batch entries per task."""

    coils: int
    spatial: tuple[int, ...]
    per_task: int = 1  # entries of other batch dims (echoes, ...) inside one task

    @property
    def kspace_bytes(self) -> int:
        """K: the task's complex64 k-space."""
        return self.per_task * self.coils * math.prod(self.spatial) * BYTES_PER_SAMPLE

    @property
    def image_bytes(self) -> int:
        """I: the task's complex64 image (before cropping, an upper bound)."""
        return self.per_task * math.prod(self.spatial) * BYTES_PER_SAMPLE


@dataclass(frozen=True)
class Unit:
    """Consecutive task indices of one series that one worker runs together, and where."""

    indices: tuple[TaskIndex, ...]
    device: str
    estimate_bytes: int


@dataclass
class FallbackReport:
    """What ``run_with_fallback`` had to do: out-of-memory errors met, splits made, CPU fallbacks."""

    oom_errors: int = 0
    splits: int = 0
    cpu_fallbacks: int = 0
    devices: list[str] = field(default_factory=list)


def slab_width(info: dict[str, Any], method: str) -> int | None:
    """Readout positions per task when a file runs as slabs after a readout FFT, else None.

    Slabs need a 3D Cartesian volume with no batch dims (no slices, echoes...), no separate
    calibration scan (it would need the same readout FFT) and a method in ``SLAB_METHODS``.
    """
    dims = list(info["dims"])
    cartesian = info.get("trajectory") in (None, "", "cartesian")
    if dims[0] != "coil" or "kz" not in dims or not cartesian or method not in SLAB_METHODS:
        return None
    return None if info["calibration"]["mode"] == "separate" else SLAB_WIDTH


def task_shape(info: dict[str, Any], task_dims: Sequence[str], task_chunks: Sequence[int] = ()) -> TaskShape:
    """The per-task shape of a raw file from its ``RawFile.info()`` (dims and shape of its k-space).

    A slab task (task dim ``x``, ``task_chunks`` readout positions) is that many 2D (kz, ky) problems.
    """
    dims, shape = list(info["dims"]), [int(s) for s in info["shape"]]
    if "x" in task_dims:
        spatial = tuple(n for d, n in zip(dims, shape) if d in ("kz", "ky"))
        return TaskShape(coils=int(info["coils"]), spatial=spatial, per_task=int(task_chunks[0]))
    batch = dims[: dims.index("coil")]
    per_task = math.prod(n for d, n in zip(batch, shape) if d not in task_dims)
    spatial = tuple(n for d, n in zip(dims, shape) if d in SPATIAL_KDIMS)
    return TaskShape(coils=int(info["coils"]), spatial=spatial, per_task=per_task)


def estimate_bytes(
    method: str, shape: TaskShape, n_tasks: int = 1, params: dict[str, Any] | None = None, batched: bool = False
) -> int:
    """Peak device memory of a unit of ``n_tasks`` tasks of ``shape`` run with ``method`` (see module doc).

    ``params`` are the method's parameters; ``calib`` and ``kernel`` among them size the calibration term.
    ``batched``: the unit's entries are solved at once (``recon`` on a GPU with a method that has a
    batched form): the workspace is the larger of one task's and ``BATCHED_WORKSPACE`` x the unit's k-space.
    """
    workspace = _workspace(method, shape, params)
    if batched:
        workspace = max(workspace, int(BATCHED_WORKSPACE * n_tasks * shape.kspace_bytes))
    return int(n_tasks * (shape.kspace_bytes + shape.image_bytes) + workspace)


def _workspace(method: str, shape: TaskShape, params: dict[str, Any] | None) -> float:
    """One task's workspace ``a * K + b * C * K + c * H`` (module doc)."""
    a, b, c = WORKSPACE.get(method, DEFAULT_WORKSPACE)
    k = shape.kspace_bytes
    hankel = 0
    params = params or {}
    if isinstance(params.get("calib"), int) and isinstance(params.get("kernel"), int):
        d = len(shape.spatial)
        rows = max(1, params["calib"] - params["kernel"] + 1) ** d
        hankel = 16 * rows * shape.coils * params["kernel"] ** d
    return a * k + b * shape.coils * k + c * hankel


def device_budget(device: str) -> int:
    """Bytes one unit may use on ``device``: a share of the GPU's free memory, or of available RAM."""
    if device.startswith("cuda"):
        import cupy

        index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(index):
            free, _total = cupy.cuda.runtime.memGetInfo()
    else:
        import psutil

        free = psutil.virtual_memory().available
    return int(free * DEVICE_FRACTION)


def plan_units(
    pending: Sequence[TaskIndex],
    shape: TaskShape,
    method: str,
    device: str,
    *,
    budget: int,
    params: dict[str, Any] | None = None,
    parallelism: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> list[Unit]:
    """Group pending task indices into units that fit ``budget`` bytes on ``device``.

    ``params`` are the method's parameters with defaults filled in (``MethodInfo.bind``).
    A unit holds at most ``max_batch`` tasks, as many as fit the budget, and no more than needed to
    give each of ``parallelism`` workers work; only consecutive indices are grouped (a unit reads
    one contiguous run of the file). A single task that does not fit a GPU goes to the CPU.
    """
    batched = device != "cpu" and get_method(method).batch_fn is not None  # recon solves a GPU unit at once

    def estimate(n: int) -> int:
        return estimate_bytes(method, shape, n, params, batched and device != "cpu")

    if device != "cpu" and estimate(1) > budget:
        device = "cpu"
    fit = 1
    while fit < max_batch and estimate(fit + 1) <= budget:
        fit += 1
    size = max(1, min(fit, math.ceil(len(pending) / max(1, parallelism))))
    units: list[Unit] = []
    run: list[TaskIndex] = []
    for index in pending:
        if run and (len(run) == size or not _follows(run[-1], index)):
            units.append(Unit(tuple(run), device, estimate(len(run))))
            run = []
        run.append(index)
    if run:
        units.append(Unit(tuple(run), device, estimate(len(run))))
    return units


def _follows(previous: TaskIndex, index: TaskIndex) -> bool:
    """Whether ``index`` is the next slice after ``previous`` (volume tasks never group)."""
    return bool(index) and previous[:-1] == index[:-1] and index[-1] == previous[-1] + 1


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error: ``MemoryError`` (CuPy's ``OutOfMemoryError`` is
    one), a cuFFT allocation failure or a CUDA driver ``CUDA_ERROR_OUT_OF_MEMORY`` from numba.cuda."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "CUFFT_ALLOC_FAILED" in text or "CUDA_ERROR_OUT_OF_MEMORY" in text or "out of memory" in text.lower()


def run_with_fallback(
    attempt: Callable[[Sequence[int], str], T], n: int, device: str, report: FallbackReport
) -> list[tuple[Sequence[int], T]]:
    """Run ``attempt(positions, device)`` on positions ``0..n-1``, splitting on out-of-memory.

    An out-of-memory error halves the positions and retries each half; a single position that
    still does not fit a GPU is retried on the CPU. Only an out-of-memory error on the CPU for a
    single task (or any other error) propagates. Returns (positions, result) pairs in order.
    """

    def go(positions: Sequence[int], where: str) -> list[tuple[Sequence[int], T]]:
        try:
            result = attempt(positions, where)
            report.devices.append(where)
            return [(positions, result)]
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            report.oom_errors += 1
            if len(positions) > 1:
                report.splits += 1
                half = len(positions) // 2
                return go(positions[:half], where) + go(positions[half:], where)
            if where == "cpu":
                raise MemoryError(f"one task needs more memory than the CPU has free ({exc})") from exc
            report.cpu_fallbacks += 1
            return go(positions, "cpu")

    return go(list(range(n)), device)
