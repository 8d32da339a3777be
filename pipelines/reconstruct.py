"""One raw file -> tasks (one per slice, slab or volume) -> embedded Dask -> Zarr series (+ NIfTI).

The client (this process) plans the tasks from the file's header alone, creates or reopens the
output series, runs the tasks not yet done, records each one as done once its chunk is written,
and marks the series complete only after the last one. Tasks read their own slice from the file
(a slab task: the volume, then the readout FFT), reconstruct it and write their own chunk, so they
can run on any Dask worker. ``prepare_series`` and ``run_task`` are shared with ``batch``, which
runs the same tasks in units of several for many files.

Default scheduler: Dask's local threaded scheduler on a small thread pool (the methods release the
GIL in FFTs and Numba kernels). Pass ``client=`` (a ``distributed.Client``) to run elsewhere.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback
from tqdm import tqdm

from mrirecon import __version__
from mrirecon.data import SPATIAL_KDIMS, Geometry, KSpace, KSpaceHeader, Provenance
from mrirecon.errors import InputError
from mrirecon.io import open_raw
from mrirecon.io.base import file_sha256
from mrirecon.kernels.backend import get_array_module, resolve_device, to_numpy
from mrirecon.kernels.fft import ifftc_planes
from mrirecon.kernels.threads import limit_cpu_threads, thread_share
from mrirecon.reconstruction import bind_params, crop_box, recon

from .nifti import nifti_suffix, write_nifti
from .planner import FallbackReport, run_with_fallback, slab_width
from .store import Series, TaskIndex, header_from_dict, is_complete, open_series, series_name

DEFAULT_WORKERS = 2
# Raw-file reads run one at a time per process: concurrent h5py reads of MRD tables (vlen + compound
# fields) from two threads segfault with h5py 3.16 / HDF5 2.0, even through separate file handles.
# Reading is a small part of a task; the reconstructions still run in parallel.
_READ_LOCK = threading.Lock()

DoneFn = Callable[["TaskOutcome"], None]  # the client's record of a finished unit


@dataclass
class ReconResult:
    """What a file reconstruction produced (the image itself stays in the store: ``open_series``)."""

    store: Path
    series: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    tasks_total: int
    tasks_run: int
    wall_s: float
    nifti: Path | None = None

    @property
    def tasks_skipped(self) -> int:
        """Tasks already done by an earlier (interrupted) run of the same recipe."""
        return self.tasks_total - self.tasks_run


def plan_series(
    info: dict[str, Any], method: str = ""
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[int, ...]]:
    """Image dims, image shape, task dims and task widths of a raw file, from its ``RawFile.info()`` alone.

    Image = the k-space batch dims + the spatial k-space shape cropped to the recon matrix exactly
    as ``mrirecon.recon`` crops it; one task per slice when the file has a ``slice`` dim, one per slab
    of readout positions for a 3D volume that ``method`` can run as slabs (``planner.slab_width``),
    else the whole file is one task.
    """
    dims, shape = list(info["dims"]), [int(s) for s in info["shape"]]
    batch = dims[: dims.index("coil")]
    kspatial = [n for d, n in zip(dims, shape) if d in SPATIAL_KDIMS]
    if kspatial:  # Cartesian: the k-space matrix, cropped to the recon matrix
        crop = crop_box(tuple(kspatial), tuple(info["recon_matrix"]))
        spatial_dims = tuple(d[1:] for d in dims if d in SPATIAL_KDIMS)
        spatial_shape = tuple(len(range(n)[c]) for n, c in zip(kspatial, crop))
    else:  # non-Cartesian: the recon matrix itself ((y, x) when it has one partition)
        nz, ny, nx = (int(n) for n in info["recon_matrix"])
        spatial_dims, spatial_shape = (("z", "y", "x"), (nz, ny, nx)) if nz > 1 else (("y", "x"), (ny, nx))
    image_dims = tuple(batch) + spatial_dims
    image_shape = tuple(shape[: len(batch)]) + spatial_shape
    if "slice" in batch:
        return image_dims, image_shape, ("slice",), (1,)
    width = slab_width(info, method)
    return (image_dims, image_shape, ("x",), (width,)) if width else (image_dims, image_shape, (), ())


def header_from_info(info: dict[str, Any]) -> KSpaceHeader:
    """The PHI-free header of a raw file, rebuilt from its ``RawFile.info()`` (no k-space read)."""
    return header_from_dict({
        "encoded_matrix": info["encoded_matrix"],
        "recon_matrix": info["recon_matrix"],
        "kspace_centre": info["kspace_centre"],
        "acceleration": info["acceleration"],
        "calibration_shape": info["calibration"]["shape"],
        "geometry": info["geometry"],
        "sequence": info["sequence"],
        "source": info["file"],
        "source_format": info["format"],
        "source_sha256": info["sha256"],
    })


@dataclass
class TaskOutcome:
    """What one unit of tasks produced, for the client's records: its chunks are already written."""

    indices: tuple[TaskIndex, ...]
    provenance: dict[str, Any]
    devices: tuple[str, ...]
    timings_s: dict[str, float]
    fallback: FallbackReport
    worker: str


def run_task(
    path: Path,
    series: Series,
    indices: Sequence[TaskIndex],
    method: str,
    params: dict[str, Any],
    device: str,
    sha256: str | None = None,
    sequence: str | os.PathLike | None = None,
    threads: int | None = None,
) -> TaskOutcome:
    """Reconstruct a unit of tasks (consecutive slices or slabs of the file) and write their chunks.

    The k-space of the unit is read once; out-of-memory errors split the unit and fall back to the
    CPU (``planner.run_with_fallback``). Every chunk is written before this returns, so the client
    may record all ``indices`` done once it has the outcome. ``sequence``: the Pulseq ``.seq`` of a
    Pulseq twix scan (``mrirecon.io.open_raw``). ``threads``: the CPU threads this unit's FFTs and
    kernels may use (``kernels.threads``; None: the worker thread's own budget), so that units running
    side by side share the cores instead of each taking them all.
    """
    def budget() -> Any:
        return limit_cpu_threads(threads) if threads else nullcontext()

    indices = tuple(tuple(i) for i in indices)
    axis = series.dims.index(series.task_dims[0]) if series.task_dims else None
    regions = [series.task_slices(i)[axis] for i in indices] if axis is not None else []
    t0 = time.perf_counter()
    with _READ_LOCK, open_raw(path, sha256=sha256, sequence=sequence) as raw:  # known checksum: no re-hash per task
        ksp = raw.read(slices=[i[0] for i in indices]) if "slice" in series.task_dims else raw.read()
    if "x" in series.task_dims:
        with budget():
            ksp = readout_planes(ksp, regions)
    # positions of each task along the unit's batch ("slice") dim: one slice, or a slab's readout planes
    spans, start = [], 0
    for region in regions:
        n = len(range(series.shape[axis])[region])
        spans.append(list(range(start, start + n)))
        start += n
    t_read = time.perf_counter() - t0

    def attempt(positions: Sequence[int], where: str) -> Any:
        part = ksp.select(slice=[p for k in positions for p in spans[k]]) if series.task_dims else ksp
        return recon(part, method, device=where, **params)

    report = FallbackReport()
    t0 = time.perf_counter()
    with budget():
        pieces = run_with_fallback(attempt, len(indices), device, report)
    t_recon = time.perf_counter() - t0
    t0 = time.perf_counter()
    for positions, image in pieces:
        data = _in_series_order(image, series, method)
        offset = 0
        for k in positions:
            part = data if axis is None else np.take(data, range(offset, offset + len(spans[k])), axis=axis)
            series.write_task(indices[k], part)
            offset += len(spans[k])
    t_write = time.perf_counter() - t0
    return TaskOutcome(
        indices=indices,
        provenance=pieces[0][1].provenance.to_dict(),
        devices=tuple(report.devices),
        timings_s={"read": t_read, "recon": t_recon, "write": t_write},
        fallback=report,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )


def readout_planes(ksp: KSpace, slabs: Sequence[slice]) -> KSpace:
    """3D k-space (coil, kz, ky, kx) -> the 2D (kz, ky) planes at the readout positions of ``slabs``.

    Inverse centred FFT along the readout, crop to the recon matrix along x (as ``recon`` crops the
    volume), keep the slabs' positions; they become a leading ``slice`` dim of 2D k-space whose
    dims (ky, kx) stand for (kz, ky), with the recon matrix and mask to match.
    """
    xp = get_array_module(ksp.data)
    positions = np.arange(ksp.data.shape[-1])[crop_box(ksp.spatial_shape, ksp.header.recon_matrix)[-1]]
    planes = ifftc_planes(ksp.data, -1, np.concatenate([positions[s] for s in slabs]))
    mask = None if ksp.mask is None else xp.asarray(ksp.mask).astype(bool).any(axis=-1)
    rz, ry, _ = ksp.header.recon_matrix
    header = dataclasses.replace(ksp.header, recon_matrix=(1, rz, ry))
    return dataclasses.replace(ksp, data=planes, dims=("slice", "coil", "ky", "kx"), mask=mask, header=header)


def _in_series_order(image: Any, series: Series, method: str) -> np.ndarray:
    """A reconstructed piece as a NumPy array in the series' dim order (slab planes (x, z, y) -> z, y, x)."""
    data = to_numpy(image.data)
    if "x" in series.task_dims:
        return np.moveaxis(data, 0, -1)
    if set(image.dims) != set(series.dims):
        raise RuntimeError(f"method {method!r} returned dims {image.dims}, expected {series.dims}")
    return np.transpose(data, [image.dims.index(d) for d in series.dims])


AUTO_METHOD = "auto"  # reconstruct_file's default: the method follows the file's sampling (resolve_method)


def resolve_method(method: str, info: dict[str, Any]) -> str:
    """``method``, or for ``auto`` the file's sensible default from its ``info()``: CG-SENSE for Cartesian
    k-space, NUFFT CG-SENSE for k-space with a trajectory (radial, spiral)."""
    if method != AUTO_METHOD:
        return method
    return "sense" if any(d in SPATIAL_KDIMS for d in info["dims"]) else "nufft_sense"


def check_recipe(method: str, params: dict[str, Any], device: str) -> str:
    """Fail early, before anything is written: unknown method or parameter, or an absent device.

    Returns the resolved device ("auto" -> "cuda" or "cpu" on this machine). Method ``auto`` is
    resolved per file (``prepare_series``), and its parameters are checked there.
    """
    if method != AUTO_METHOD:
        bind_params(method, params)
    try:
        return resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", str(exc)) from None


def prepare_series(
    path: Path, out_zarr: str | os.PathLike, method: str, params: dict[str, Any], *, resume: bool = True,
    sequence: str | os.PathLike | None = None,
) -> tuple[Series, dict[str, Any]]:
    """Client side: read the file's header, plan its series and create (or reopen, to resume) the group.

    ``method`` ``auto`` becomes the file's default (``resolve_method``), checked with ``params`` before
    anything is written. Returns the series and the file's ``info()``; ``resume=False`` starts the series afresh;
    ``sequence``: the Pulseq ``.seq`` of a Pulseq twix scan. The ``.seq`` the file was read with (this
    one, or the one the reader found beside the file) is part of the recipe: its sha256 goes into the
    series name and its name and sha256 into the series metadata. A ``.seq`` that is missing,
    unreadable or does not fit the file raises ``InputError`` naming both files.
    """
    try:
        with _READ_LOCK, open_raw(path, sequence=sequence) as raw:
            info = raw.info()
            used = getattr(raw, "sequence", None)  # twix: the PulseqSequence it was read with, or None
    except InputError as exc:
        if sequence is not None and exc.source and Path(exc.source).resolve() == Path(sequence).resolve():
            # a problem of the .seq itself (missing, unreadable): name the raw file too
            raise InputError(path, f"its Pulseq sequence {sequence}: {exc.problem}") from None
        raise
    method = resolve_method(method, info)
    bind_params(method, params)
    seq_sha256 = None if used is None else file_sha256(used.path)
    dims, shape, task_dims, task_chunks = plan_series(info, method)
    series = Series.create(
        out_zarr, series_name(path.name, Provenance(method, params), seq_sha256), dims=dims, shape=shape,
        task_dims=task_dims, geometry=Geometry.from_dict(info["geometry"]), method=method, parameters=params,
        header=header_from_info(info), resume=resume, task_chunks=task_chunks,
        sequence=None if used is None else {"file": used.path.name, "sha256": seq_sha256},
    )
    return series, info


def reconstruct_file(
    path: str | os.PathLike,
    out_zarr: str | os.PathLike,
    *,
    method: str = AUTO_METHOD,
    params: dict[str, Any] | None = None,
    device: str = "auto",
    nifti: str | os.PathLike | None = None,
    progress: bool = True,
    client: Any = None,
    workers: int = DEFAULT_WORKERS,
    sequence: str | os.PathLike | None = None,
) -> ReconResult:
    """Reconstruct every slice of a raw file into series ``<stem>_<method>_<key>`` of ``out_zarr``.

    ``method`` ``auto``: CG-SENSE for Cartesian k-space, NUFFT CG-SENSE for a trajectory.
    Resumes an interrupted run of the same recipe (finished tasks are skipped). Bad input, method or
    parameters raise ``InputError`` before anything is written; an unwritable output or a full disk
    raises ``OutputError`` and leaves the series not complete. ``nifti`` also writes a NIfTI file.
    ``sequence``: the Pulseq ``.seq`` of a Pulseq twix scan (k-space order and trajectory).
    """
    start = time.perf_counter()
    path = Path(path)
    params = dict(params or {})
    device = check_recipe(method, params, device)
    if nifti is not None:
        nifti_suffix(Path(nifti))
    series, info = prepare_series(path, out_zarr, method, params, sequence=sequence)
    method = resolve_method(method, info)
    requested = Provenance(method, params)
    pending = series.pending()
    results: list[dict[str, Any]] = []
    if not pending and is_complete(out_zarr, series.name):  # the same recipe ran to the end before
        return _result(series, 0, start, nifti)
    with tqdm(total=len(series.tasks()), initial=len(series.tasks()) - len(pending), unit="task",
              desc=series.name, disable=not progress, file=sys.stderr) as bar:

        def done(outcome: TaskOutcome) -> None:
            series.mark_done(*outcome.indices)
            results.append(outcome.provenance)
            bar.update(len(outcome.indices))

        # tasks side by side share this thread's cores; one task alone gets them all
        threads = None if client is not None else thread_share(min(workers, len(pending)))
        tasks = [dask.delayed(run_task, pure=False)(path, series, [t], method, params, device, info["sha256"],
                                                     sequence, threads)
                 for t in pending]
        if client is not None:
            _run_distributed(client, tasks, done)
        else:
            _run_threaded(tasks, done, workers)
    series.finalize(final_provenance(requested, results, info["sha256"], device, time.perf_counter() - start))
    return _result(series, len(results), start, nifti)


def _result(series: Series, tasks_run: int, start: float, nifti: str | os.PathLike | None) -> ReconResult:
    """Summary of a finished series, writing the NIfTI file when one was asked for."""
    written = write_nifti(open_series(series.store, series.name), nifti) if nifti is not None else None
    return ReconResult(
        series.store, series.name, series.dims, series.shape, len(series.tasks()), tasks_run,
        time.perf_counter() - start, written,
    )


def _run_threaded(tasks: list[Any], done: DoneFn, workers: int) -> None:
    """Local threaded scheduler; ``done`` runs in this thread as each task finishes.

    The pool is ours so that leaving the ``with`` waits for tasks still running after a failure:
    nothing writes into the store once this returns or raises.
    """
    keys = {t.key for t in tasks}

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in keys:
            done(result)

    with ThreadPoolExecutor(max(1, workers)) as pool, Callback(posttask=posttask):
        dask.compute(*tasks, scheduler="threads", pool=pool)


def _run_distributed(client: Any, tasks: list[Any], done: DoneFn) -> None:
    """A ``distributed.Client``: results come back as they finish, in any order; a failure cancels the rest."""
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        for future in as_completed(futures):
            done(future.result())
    except BaseException:
        client.cancel(futures)
        raise


def final_provenance(
    requested: Provenance, results: list[dict[str, Any]], sha256: str, device: str, wall_s: float
) -> Provenance:
    """Provenance of the series: the method's resolved parameters, summed task timings, wall time."""
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.get("timings_s", {}).items():
            timings[k] = timings.get(k, 0.0) + float(v)
    timings["wall"] = wall_s
    first = results[0] if results else {}
    return Provenance(
        method=requested.method,
        parameters=first.get("parameters", bind_params(requested.method, requested.parameters)),
        software_version=__version__,
        input_sha256=sha256,
        device=device,
        timings_s=timings,
    )
