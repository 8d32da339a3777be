"""What every raw-file reader shares: the ``RawFile`` interface, checksums, slice selection, masks.

A reader subclass only has to say how its file is laid out (``_layout``), what its header says
(``_header``) and how to load k-space for some slices (``_load``); ``info`` and ``read`` are built
here once so that every format answers them the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import BATCH_DIMS, SPATIAL_KDIMS, KSpace, KSpaceHeader
from ..errors import InputError

_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed in 1 MiB chunks so that large raw files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Layout:
    """The shape of what ``read`` returns and the bookkeeping ``info`` reports, known without reading k-space.

    ``counts`` are acquisition (or line) counts by kind; ``uninterpreted`` lists what the reader saw
    in the file but does not use, in words.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    counts: dict[str, int] = field(default_factory=dict)
    calibration: str = "none"  # "none", "separate" (own ACS lines) or "embedded" (ACS inside the data)
    uninterpreted: list[str] = field(default_factory=list)

    def size(self, dim: str) -> int:
        """Length of ``dim`` (1 when absent)."""
        return self.shape[self.dims.index(dim)] if dim in self.dims else 1


class RawFile(ABC):
    """An opened raw k-space file: describe it (``info``) and read all or some slices (``read``)."""

    format: str = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._sha256: str | None = None

    # --- what a format provides -------------------------------------------------------------
    @abstractmethod
    def _layout(self) -> Layout:
        """Dims, shape, counts and notes of the full k-space, from headers only."""

    @abstractmethod
    def _header(self) -> KSpaceHeader:
        """Header of the full file (geometry for all slices), without source fields."""

    @abstractmethod
    def _load(self, slices: np.ndarray | None, include_ignored: bool) -> KSpace:
        """K-space of the given slice positions (None: all), header from ``_header`` narrowed to them."""

    # --- shared behaviour -------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        """Number of slices (1 for a 3D volume)."""
        return self._layout().size("slice")

    @property
    def sha256(self) -> str:
        """Checksum of the file (of the ``.cfl`` for BART), computed once."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def _with_source(self, header: KSpaceHeader) -> KSpaceHeader:
        """``header`` with the file name (no directory: paths can carry PHI), format and checksum."""
        return dataclasses.replace(header, source=self.path.name, source_format=self.format, source_sha256=self.sha256)

    def info(self, include_phi: bool = False) -> dict[str, Any]:
        """JSON-safe summary of the file without reading k-space samples; PHI only when asked for."""
        layout = self._layout()
        header = self._with_source(self._header())
        hd = header.to_dict(include_phi=include_phi)
        coil_axis = layout.dims.index("coil")
        return {
            "format": self.format,
            "file": self.path.name,
            "dims": list(layout.dims),
            "shape": [int(s) for s in layout.shape],
            "coils": int(layout.shape[coil_axis]),
            "encoded_matrix": hd["encoded_matrix"],
            "recon_matrix": hd["recon_matrix"],
            "kspace_centre": hd["kspace_centre"],
            "fov_mm": hd["geometry"]["fov_mm"],
            "trajectory": header.sequence.trajectory,
            "slices": layout.size("slice"),
            "contrasts": layout.size("echo"),
            "acceleration": hd["acceleration"],
            "calibration": {"mode": layout.calibration, "shape": hd["calibration_shape"]},
            "sequence": hd["sequence"],
            "geometry": hd["geometry"],
            "counts": {k: int(v) for k, v in layout.counts.items()},
            "uninterpreted": list(layout.uninterpreted),
            "sha256": header.source_sha256,
            **({"patient": hd["patient"]} if include_phi else {}),
        }

    def read(self, slices: Sequence[int] | int | None = None, *, include_ignored: bool = False) -> KSpace:
        """Read k-space of all slices, or only of the slice positions in ``slices`` (lazy where possible).

        ``include_ignored`` (MRD only) keeps navigator, phase-correction and other non-imaging
        acquisitions as if they were imaging lines.
        """
        picked = self._pick_slices(slices)
        ksp = self._load(picked, include_ignored)
        ksp.header = self._with_source(ksp.header)
        check_kspace(ksp, self.path)
        return ksp

    def _pick_slices(self, slices: Sequence[int] | int | None) -> np.ndarray | None:
        if slices is None:
            return None
        n = self.n_slices
        try:
            picked = np.atleast_1d(np.asarray(slices)).astype(np.int64, casting="safe")
        except (TypeError, ValueError):
            raise InputError(self.path, f"slices must be integers, got {slices!r}") from None
        if picked.ndim != 1 or picked.size == 0:
            raise InputError(self.path, f"slices must be a non-empty list of integers, got {slices!r}")
        if ((picked < -n) | (picked >= n)).any():
            raise InputError(self.path, f"slice index out of range: file has {n} slice(s), asked for {picked.tolist()}")
        return np.unique(picked % n)

    def close(self) -> None:
        """Release the file handle (no-op for formats read in one go)."""

    def __enter__(self) -> "RawFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name!r}, format={self.format!r})"


def check_kspace(ksp: KSpace, path: Path) -> None:
    """Refuse k-space a reconstruction cannot use: zero coils, empty axes, NaN or Inf samples."""
    if ksp.n_coils < 1:
        raise InputError(path, "k-space has zero coils")
    if ksp.data.size == 0:
        raise InputError(path, f"k-space is empty (shape {tuple(ksp.data.shape)})")
    if not np.isfinite(ksp.data).all():
        raise InputError(path, "k-space contains NaN or Inf values")


def mask_from_samples(data: np.ndarray, n_spatial: int) -> np.ndarray | None:
    """Sampling mask over the trailing ``n_spatial`` axes: True where any leading entry is non-zero.

    Exact zeros in every coil (and slice, echo, ...) mean "not acquired", which is how
    zero-filled undersampled k-space is stored. Returns None when everything was acquired.
    """
    lead = tuple(range(data.ndim - n_spatial))
    mask = np.any(data != 0, axis=lead) if lead else data != 0
    return None if mask.all() else mask


def canonical_dims(dims: Sequence[str], path: Path) -> tuple[tuple[str, ...], list[int]]:
    """Check a dims hint and return (dims in canonical order, the transpose that gets there).

    Canonical order: batch dims as listed in ``mrirecon.data.BATCH_DIMS``, then ``coil``, then
    ``kz, ky, kx``; ``ky`` and ``kx`` are required.
    """
    dims = tuple(dims)
    known = (*BATCH_DIMS, "coil", *SPATIAL_KDIMS)
    unknown = [d for d in dims if d not in known]
    if unknown:
        raise InputError(path, f"unknown dim name(s) {unknown}: use {list(known)}")
    if len(set(dims)) != len(dims):
        raise InputError(path, f"repeated dim names in {dims}")
    missing = [d for d in ("coil", "ky", "kx") if d not in dims]
    if missing:
        raise InputError(path, f"dims {dims} lack {missing}")
    order = [dims.index(d) for d in known if d in dims]
    return tuple(dims[i] for i in order), order
