"""Zarr v3 result store: one group per output series, one chunk per task, resumable.

Layout of ``OUT.zarr/<series>/`` (series name = input stem + method + recipe key: the parameters and,
for a Pulseq scan, the sha256 of its ``.seq``)::

    0         float32 image, OME-NGFF multiscale level 0 (what viewers show): the magnitude of a
              complex result, or the values themselves for a real-valued result
    complex   complex64 image, same shape and chunks (kept for phase maps and complex exports);
              only for complex results
    done      bool, one element per task: True once that task's chunks are written; up to
              ``DONE_CHUNK`` flags per chunk, since only the client writes it (one writer, each chunk
              rewritten atomically), so that recording a run of finished tasks is one write

Why both arrays for complex results: NGFF viewers cannot display complex data, while
phase-sensitive exports need it.

Arrays are stored in NGFF axis order (time, then other batch dims, then ``slice``/``z``, ``y``,
``x``); the image's own dim order is kept in the attributes and restored by ``open_series``.
Each task (one index along the task dims, e.g. one slice, or a slab of ``task_chunks`` readout
positions of a 3D volume) owns exactly one chunk of each image array, so tasks can run in parallel without two writers touching one chunk; Zarr writes each chunk
to a temporary file and renames it, so a crash never leaves a half-written chunk.

Only the client writes metadata: group attributes (geometry, affine, header without PHI, dims,
provenance, NGFF ``multiscales``) and the ``done`` flags, each after the task's chunk was written.
``complete`` turns True only in ``Series.finalize``, so an interrupted run never looks complete and
a rerun (``Series.create`` on the same name) resumes with the tasks not yet done.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mrirecon.data import (
    SPATIAL_IDIMS,
    Geometry,
    Image,
    KSpaceHeader,
    Provenance,
    SequenceParams,
)
from mrirecon.errors import InputError, OutputError
from mrirecon.kernels.backend import to_numpy

FORMAT_VERSION = 1
MAGNITUDE = "0"
COMPLEX = "complex"
DONE = "done"
DONE_CHUNK = 4096  # task flags per chunk of ``done``: one write records a run of tasks
NGFF_VERSION = "0.5"

TaskIndex = tuple[int, ...]


def recipe_key(provenance: Provenance, sequence_sha256: str | None = None) -> str:
    """Key of a reconstruction recipe: the parameters key, with the sha256 of the Pulseq ``.seq`` folded in.

    The ``.seq`` decides a Pulseq scan's k-space order and trajectory, so another ``.seq`` (or one vs
    none) is another recipe; without a sequence the key is the parameters key itself, so that the
    names of series made before sequences counted do not change.
    """
    key = provenance.parameters_key()
    if sequence_sha256 is None:
        return key
    return hashlib.sha256(f"{key}:{sequence_sha256}".encode()).hexdigest()[:16]


def series_name(source: str, provenance: Provenance, sequence_sha256: str | None = None) -> str:
    """``<input stem>_<method>_<8 hex of the recipe key>``: same recipe (and .seq) on same file, same name."""
    stem = Path(source).name.split(".")[0] or "series"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)
    return f"{safe}_{provenance.method}_{recipe_key(provenance, sequence_sha256)[:8]}"


def ngff_order(dims: tuple[str, ...]) -> tuple[str, ...]:
    """Dims reordered as OME-NGFF wants them: ``time``, other batch dims, then space (z/slice, y, x)."""
    space = tuple(d for d in dims if d in SPATIAL_IDIMS or d == "slice")
    others = tuple(d for d in dims if d not in space)
    time = tuple(d for d in others if d == "time")
    return time + tuple(d for d in others if d != "time") + space


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z) in mm: lengths of the affine's first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def ngff_metadata(name: str, array_dims: tuple[str, ...], affine: np.ndarray) -> dict[str, Any] | None:
    """OME-NGFF 0.5 ``ome`` attribute for the magnitude array, or None when the dims do not fit NGFF.

    NGFF allows 2-3 space axes, at most one time axis and one other (channel) axis; slice and z are
    both the NGFF ``z`` space axis. Space scales come from the affine's voxel sizes.
    """
    dx, dy, dz = voxel_sizes(affine)
    space_scale = {"x": dx, "y": dy, "z": dz, "slice": dz}
    axes, scale = [], []
    for d in array_dims:
        if d in space_scale:
            axes.append({"name": "z" if d == "slice" else d, "type": "space", "unit": "millimeter"})
            scale.append(space_scale[d])
        elif d == "time":
            axes.append({"name": d, "type": "time"})
            scale.append(1.0)
        else:
            axes.append({"name": d, "type": "channel"})
            scale.append(1.0)
    n_time = sum(a["type"] == "time" for a in axes)
    n_channel = sum(a["type"] == "channel" for a in axes)
    if len(axes) > 5 or n_time > 1 or n_channel > 1:
        return None
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": [
                    {"path": MAGNITUDE, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ],
    }


def open_store(path: str | Path, *, mode: str = "a") -> zarr.Group:
    """Open (or create, mode "a") the root group; unwritable paths become ``OutputError``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "exists and is not a directory (a Zarr store is a directory)")
    if mode == "r" and not path.is_dir():
        raise InputError(path, "no such Zarr store")
    try:
        return zarr.open_group(store=str(path), mode=mode)
    except OSError as exc:
        raise _output_error(path, exc) from exc


def list_series(store: str | Path) -> list[str]:
    """Names of the series groups in a store, sorted."""
    return sorted(open_store(store, mode="r").group_keys())


def _output_error(target: str | Path, exc: OSError) -> OutputError:
    """``OutputError`` with a plain reason (disk full, permission, not a directory)."""
    reasons = {
        errno.ENOSPC: "no space left on device",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.ENOTDIR: "a parent of this path is a file, not a directory",
        errno.EEXIST: "a file is in the way",
    }
    return OutputError(target, f"cannot write: {reasons.get(exc.errno, exc.strerror or str(exc))}")


@dataclass
class Series:
    """One output series in a store: the client creates/finalises it, tasks write their chunks.

    Holds only paths and names so that it pickles to Dask workers; arrays are opened on use.
    """

    store: Path
    name: str
    dims: tuple[str, ...]
    array_dims: tuple[str, ...]
    task_dims: tuple[str, ...]
    shape: tuple[int, ...]
    task_chunks: tuple[int, ...] = ()  # entries of each task dim per task (empty: 1 each)

    @classmethod
    def create(
        cls,
        store: str | Path,
        name: str,
        *,
        dims: tuple[str, ...],
        shape: tuple[int, ...],
        task_dims: tuple[str, ...],
        geometry: Geometry,
        method: str,
        parameters: dict[str, Any],
        header: KSpaceHeader | None = None,
        complex_data: bool = True,
        resume: bool = True,
        task_chunks: tuple[int, ...] | None = None,
        sequence: dict[str, str] | None = None,
    ) -> "Series":
        """Create the series group, or reopen an unfinished compatible one to resume it.

        A series with the same name but other dims/shape/recipe/input/sequence is replaced (the old
        result would be wrong for this input), and so is any existing one when ``resume`` is False.
        ``task_chunks`` gives the entries of each task dim one task covers (default 1 each); a
        spatial task dim (e.g. ``x`` for slabs of a 3D volume) needs it. ``sequence``: the Pulseq
        ``.seq`` the input was read with, ``{"file": name, "sha256": hex}`` (recorded in the
        metadata). Raises ``OutputError`` when the store cannot be written.
        """
        dims, shape, task_dims = tuple(dims), tuple(int(s) for s in shape), tuple(task_dims)
        widths = tuple(int(w) for w in task_chunks) if task_chunks else (1,) * len(task_dims)
        spatial_tasks = set(task_dims) & set(SPATIAL_IDIMS)
        if (len(dims) != len(shape) or not set(task_dims) <= set(dims) or len(widths) != len(task_dims)
                or min(widths, default=1) < 1 or (spatial_tasks and not task_chunks)):
            raise ValueError(f"bad series layout: dims {dims}, shape {shape}, task dims {task_dims} x {widths}")
        root = open_store(store)
        array_dims = ngff_order(dims)
        series = cls(Path(store), name, dims, array_dims, task_dims, shape, widths)
        affine = Image(np.broadcast_to(np.float32(0), shape), dims, geometry).affine
        attrs = {
            "format_version": FORMAT_VERSION,
            "dims": list(dims),
            "array_dims": list(array_dims),
            "task_dims": list(task_dims),
            "task_chunks": list(widths),
            "shape": list(shape),
            "method": method,
            "parameters": parameters,
            "parameters_key": Provenance(method, parameters).parameters_key(),
            "sequence": sequence,
            "geometry": geometry.to_dict(),
            "affine": affine.tolist(),
            "header": None if header is None else header.to_dict(include_phi=False),
            "provenance": None,
            "complete": False,
        }
        try:
            if name in root:
                old = root[name].attrs.asdict().get("mrirecon", {})
                old.setdefault("task_chunks", [1] * len(old.get("task_dims", [])))  # stores before slabs
                keys = ("format_version", "dims", "shape", "task_dims", "task_chunks", "parameters_key", "sequence")
                same = all(old.get(k) == attrs[k] for k in keys) and _same_source(old, attrs)
                if resume and same and (COMPLEX in root[name]) == complex_data:
                    return series
                del root[name]
            group = root.create_group(name)
            array_shape = series._to_array_order(shape)
            width = dict(zip(task_dims, widths))
            chunks = tuple(width.get(d, n) for d, n in zip(array_dims, array_shape))
            group.create_array(MAGNITUDE, shape=array_shape, chunks=chunks, dtype="float32", fill_value=0.0)
            if complex_data:
                group.create_array(COMPLEX, shape=array_shape, chunks=chunks, dtype="complex64", fill_value=0j)
            grid = series.task_grid or (1,)
            done_chunks = (min(grid[0], DONE_CHUNK),) if len(grid) == 1 else (1,) * len(grid)
            group.create_array(DONE, shape=grid, chunks=done_chunks, dtype=bool, fill_value=False)
            ome = ngff_metadata(name, array_dims, affine)
            group.attrs.update({"mrirecon": attrs, **({"ome": ome} if ome else {})})
        except OSError as exc:
            raise _output_error(Path(store) / name, exc) from exc
        return series

    @property
    def task_grid(self) -> tuple[int, ...]:
        """Number of tasks along each task dim (empty: the whole series is one task)."""
        return tuple(-(-self.shape[self.dims.index(d)] // w) for d, w in zip(self.task_dims, self._widths))

    @property
    def _widths(self) -> tuple[int, ...]:
        return self.task_chunks or (1,) * len(self.task_dims)

    def tasks(self) -> list[TaskIndex]:
        """Every task index, in order."""
        return list(itertools.product(*(range(n) for n in self.task_grid)))

    def pending(self) -> list[TaskIndex]:
        """Task indices not yet recorded as done (all of them for a new series)."""
        done = self._group(mode="r")[DONE][...]
        return [t for t in self.tasks() if not done[t if t else (0,)]]

    def write_task(self, index: TaskIndex, data: Any) -> None:
        """Write one task's image (worker side): ``data`` has the series dims, the task's extent along task dims."""
        data = to_numpy(data)
        expected = tuple(len(range(n)[r]) for n, r in zip(self.shape, self.task_slices(index)))
        if data.shape != expected:
            raise ValueError(f"task {index} of {self.name}: image shape {data.shape}, expected {expected}")
        data = np.transpose(data, [self.dims.index(d) for d in self.array_dims])
        region = self._region(index, self.array_dims)
        group = self._group(mode="r+")
        try:
            if COMPLEX in group:
                group[COMPLEX][region] = data.astype(np.complex64)
                data = np.abs(data)
            group[MAGNITUDE][region] = data.astype(np.float32)
        except OSError as exc:
            raise _output_error(self.store / self.name, exc) from exc

    def mark_done(self, *indices: TaskIndex) -> None:
        """Record (client side) that tasks ``indices`` have their chunks written.

        One store open for all of them and one write per run of consecutive tasks: opening the group
        costs more than setting a flag, and the client records every task of a job.
        """
        try:
            done = self._group(mode="r+")[DONE]
            if len(self.task_grid) == 1:
                for start, stop in _runs(sorted(index[0] for index in indices)):
                    done[start:stop] = True
            else:
                for index in indices:
                    done[index if index else (0,)] = True
        except OSError as exc:
            raise _output_error(self.store / self.name, exc) from exc

    def finalize(self, provenance: Provenance) -> None:
        """Attach provenance and mark the series complete; refuses while tasks are missing."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"series {self.name}: {len(missing)} task(s) not done, cannot finalise")
        group = self._group(mode="r+")
        attrs = group.attrs.asdict()
        attrs["mrirecon"].update(provenance=provenance.to_dict(), complete=True)
        try:
            group.attrs.update(attrs)
        except OSError as exc:
            raise _output_error(self.store / self.name, exc) from exc

    def _group(self, mode: str) -> zarr.Group:
        try:
            return zarr.open_group(store=str(self.store), path=self.name, mode=mode)
        except OSError as exc:
            raise _output_error(self.store / self.name, exc) from exc

    def _to_array_order(self, values: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(values[self.dims.index(d)] for d in self.array_dims)

    def task_slices(self, index: TaskIndex) -> tuple[slice, ...]:
        """Slices that cut task ``index`` out of a full array in the series' own dim order."""
        return self._region(index, self.dims)

    def _region(self, index: TaskIndex, order: tuple[str, ...]) -> tuple[slice, ...]:
        where = {d: (i * w, (i + 1) * w) for d, i, w in zip(self.task_dims, index, self._widths)}
        return tuple(slice(*where[d]) if d in where else slice(None) for d in order)


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each run of consecutive integers in sorted ``values``."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v:
            runs[-1] = (runs[-1][0], v + 1)
        else:
            runs.append((v, v + 1))
    return runs


def _same_source(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when both series come from the same input bytes (or either does not know its checksum)."""
    a = (old.get("header") or {}).get("source_sha256", "")
    b = (new.get("header") or {}).get("source_sha256", "")
    return not a or not b or a == b


def is_complete(store: str | Path, name: str) -> bool:
    """Whether series ``name`` exists and was finalised."""
    root = open_store(store, mode="r")
    return name in root and bool(root[name].attrs.asdict().get("mrirecon", {}).get("complete"))


def open_series(store: str | Path, name: str, *, require_complete: bool = True) -> Image:
    """Read a series back as an ``Image`` (complex when stored, else magnitude), in its own dim order.

    Raises ``InputError`` for a missing or (unless ``require_complete=False``) unfinished series.
    """
    root = open_store(store, mode="r")
    if name not in root:
        raise InputError(f"{store}/{name}", "no such series in the store")
    group = root[name]
    meta = group.attrs.asdict().get("mrirecon")
    if meta is None:
        raise InputError(f"{store}/{name}", "not an mrirecon series (no 'mrirecon' attributes)")
    if require_complete and not meta["complete"]:
        raise InputError(f"{store}/{name}", "series is incomplete (an interrupted run); rerun to finish it")
    dims, array_dims = tuple(meta["dims"]), tuple(meta["array_dims"])
    data = group[COMPLEX if COMPLEX in group else MAGNITUDE][...]
    data = np.transpose(data, [array_dims.index(d) for d in dims])
    provenance = None if meta["provenance"] is None else Provenance(**meta["provenance"])
    header = None if meta["header"] is None else header_from_dict(meta["header"])
    return Image(data, dims, Geometry.from_dict(meta["geometry"]), provenance, header)


def header_from_dict(d: dict[str, Any]) -> KSpaceHeader:
    """Inverse of ``KSpaceHeader.to_dict`` for the PHI-free fields the store keeps."""
    seq = dict(d["sequence"])
    seq["te_ms"] = tuple(seq.get("te_ms") or ())
    known = {f.name for f in dataclasses.fields(SequenceParams)}

    def tup(v: list | None) -> tuple | None:
        return None if v is None else tuple(v)

    return KSpaceHeader(
        encoded_matrix=tuple(d["encoded_matrix"]),
        recon_matrix=tuple(d["recon_matrix"]),
        kspace_centre=tup(d["kspace_centre"]),
        acceleration=tuple(d["acceleration"]),
        calibration_shape=tup(d["calibration_shape"]),
        geometry=Geometry.from_dict(d["geometry"]),
        sequence=SequenceParams(**{k: v for k, v in seq.items() if k in known}),
        source=d["source"],
        source_format=d["source_format"],
        source_sha256=d["source_sha256"],
    )


def write_image(store: str | Path, image: Image, name: str | None = None) -> str:
    """Store a whole ``Image`` (e.g. made in a notebook) as a complete series; returns its name.

    Tasks are one per slice when the image has a ``slice`` dim (the layout ``reconstruct_file``
    produces), else the image is one task.
    """
    provenance = image.provenance or Provenance("unknown")
    name = name or series_name(image.header.source if image.header else "image", provenance)
    task_dims = ("slice",) if "slice" in image.dims else ()
    data = to_numpy(image.data)
    series = Series.create(
        store, name, dims=image.dims, shape=data.shape, task_dims=task_dims, geometry=image.geometry,
        method=provenance.method, parameters=provenance.parameters, header=image.header,
        complex_data=bool(np.iscomplexobj(data)),
    )
    for index in series.pending():
        series.write_task(index, data[series.task_slices(index)])
        series.mark_done(index)
    series.finalize(provenance)
    return name
