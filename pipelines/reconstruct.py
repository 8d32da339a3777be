"""One raw file -> tasks (one per slice, or one per volume) -> embedded Dask -> Zarr series (+ NIfTI).

The client (this process) plans the tasks from the file's header alone, creates or reopens the
output series, runs the tasks not yet done, records each one as done once its chunk is written,
and marks the series complete only after the last one. Tasks read their own slice from the file,
reconstruct it and write their own chunk, so they can run on any Dask worker.

Default scheduler: Dask's local threaded scheduler on a small thread pool (the methods release the
GIL in FFTs and Numba kernels). Pass ``client=`` (a ``distributed.Client``) to run elsewhere.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback
from tqdm import tqdm

from mrirecon import __version__
from mrirecon.data import SPATIAL_KDIMS, Geometry, KSpaceHeader, Provenance
from mrirecon.errors import InputError
from mrirecon.io import open_raw
from mrirecon.kernels.backend import resolve_device, to_numpy
from mrirecon.methods import get_method
from mrirecon.reconstruction import crop_box, recon

from .nifti import nifti_suffix, write_nifti
from .store import Series, TaskIndex, header_from_dict, is_complete, open_series, series_name

DEFAULT_WORKERS = 2
# Raw-file reads run one at a time per process: concurrent h5py reads of MRD tables (vlen + compound
# fields) from two threads segfault with h5py 3.16 / HDF5 2.0, even through separate file handles.
# Reading is a small part of a task; the reconstructions still run in parallel.
_READ_LOCK = threading.Lock()

DoneFn = Callable[[TaskIndex, dict[str, Any]], None]  # the client's record of a finished task


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


def plan_series(info: dict[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Image dims, image shape and task dims of a raw file, from its ``RawFile.info()`` alone.

    Image = the k-space batch dims + the spatial k-space shape cropped to the recon matrix exactly
    as ``mrirecon.recon`` crops it; one task per slice when the file has a ``slice`` dim, else the
    whole file is one task (a 3D volume).
    """
    dims, shape = list(info["dims"]), [int(s) for s in info["shape"]]
    batch = dims[: dims.index("coil")]
    kspatial = [n for d, n in zip(dims, shape) if d in SPATIAL_KDIMS]
    crop = crop_box(tuple(kspatial), tuple(info["recon_matrix"]))
    image_dims = tuple(batch) + tuple(d[1:] for d in dims if d in SPATIAL_KDIMS)
    image_shape = tuple(shape[: len(batch)]) + tuple(len(range(n)[c]) for n, c in zip(kspatial, crop))
    task_dims = ("slice",) if "slice" in batch else ()
    return image_dims, image_shape, task_dims


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


def run_task(
    path: Path, series: Series, index: TaskIndex, method: str, params: dict[str, Any], device: str
) -> tuple[TaskIndex, dict[str, Any]]:
    """Reconstruct one task (its slice of the file) and write its chunk; returns its provenance."""
    with _READ_LOCK, open_raw(path) as raw:
        ksp = raw.read(slices=[index[0]]) if series.task_dims else raw.read()
    image = recon(ksp, method, device=device, **params)
    if set(image.dims) != set(series.dims):
        raise RuntimeError(f"method {method!r} returned dims {image.dims}, expected {series.dims}")
    data = np.transpose(to_numpy(image.data), [image.dims.index(d) for d in series.dims])
    series.write_task(index, data)
    return index, image.provenance.to_dict()


def reconstruct_file(
    path: str | os.PathLike,
    out_zarr: str | os.PathLike,
    *,
    method: str = "sense",
    params: dict[str, Any] | None = None,
    device: str = "auto",
    nifti: str | os.PathLike | None = None,
    progress: bool = True,
    client: Any = None,
    workers: int = DEFAULT_WORKERS,
) -> ReconResult:
    """Reconstruct every slice of a raw file into series ``<stem>_<method>_<key>`` of ``out_zarr``.

    Resumes an interrupted run of the same recipe (finished tasks are skipped). Bad input, method or
    parameters raise ``InputError`` before anything is written; an unwritable output or a full disk
    raises ``OutputError`` and leaves the series not complete. ``nifti`` also writes a NIfTI file.
    """
    start = time.perf_counter()
    path = Path(path)
    params = dict(params or {})
    get_method(method).bind(params)  # unknown method or parameter -> InputError now, not in a task
    try:
        device = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", str(exc)) from None
    if nifti is not None:
        nifti_suffix(Path(nifti))
    with open_raw(path) as raw:
        info = raw.info()
    dims, shape, task_dims = plan_series(info)
    requested = Provenance(method, params)
    series = Series.create(
        out_zarr, series_name(path.name, requested), dims=dims, shape=shape, task_dims=task_dims,
        geometry=Geometry.from_dict(info["geometry"]), method=method, parameters=params,
        header=header_from_info(info),
    )
    pending = series.pending()
    results: list[dict[str, Any]] = []
    if not pending and is_complete(out_zarr, series.name):  # the same recipe ran to the end before
        return _result(series, 0, start, nifti)
    with tqdm(total=len(series.tasks()), initial=len(series.tasks()) - len(pending), unit="task",
              desc=series.name, disable=not progress, file=sys.stderr) as bar:

        def done(index: TaskIndex, prov: dict[str, Any]) -> None:
            series.mark_done(index)
            results.append(prov)
            bar.update(1)

        tasks = [dask.delayed(run_task, pure=False)(path, series, t, method, params, device) for t in pending]
        if client is not None:
            _run_distributed(client, tasks, done)
        else:
            _run_threaded(tasks, done, workers)
    series.finalize(_final_provenance(requested, results, info["sha256"], device, time.perf_counter() - start))
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
            done(*result)

    with ThreadPoolExecutor(max(1, workers)) as pool, Callback(posttask=posttask):
        dask.compute(*tasks, scheduler="threads", pool=pool)


def _run_distributed(client: Any, tasks: list[Any], done: DoneFn) -> None:
    """A ``distributed.Client``: results come back as they finish, in any order; a failure cancels the rest."""
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        for future in as_completed(futures):
            done(*future.result())
    except BaseException:
        client.cancel(futures)
        raise


def _final_provenance(
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
        parameters=first.get("parameters", get_method(requested.method).bind(requested.parameters)),
        software_version=__version__,
        input_sha256=sha256,
        device=device,
        timings_s=timings,
    )
