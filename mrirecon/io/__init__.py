"""Raw k-space readers and writers: ISMRMRD/MRD v1, fastMRI, Siemens twix, BART ``.cfl``, NumPy ``.npy``.

``read(path)`` picks the format from the file's content (HDF5 signature, then which groups and
datasets exist; twix VB/VD header signatures; NumPy magic; a BART ``.hdr``/``.cfl`` pair); the extension is only a hint.
Anything unreadable raises ``InputError(path, problem)``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from ..data import KSpace
from ..errors import InputError
from .bart import CflFile, cfl_pair, read_cfl, write_cfl
from .base import RawFile
from .fastmri import FastMriFile, write_fastmri
from .mrd import MrdFile, find_mrd_group
from .mrd_writer import write_ismrmrd
from .npy import NpyFile
from .twix import TwixFile, is_twix

FORMATS = ("ismrmrd", "fastmri", "twix", "cfl", "npy")
_ALIASES = {"mrd": "ismrmrd", "bart": "cfl", "siemens": "twix"}
_READERS = {"ismrmrd": MrdFile, "fastmri": FastMriFile, "twix": TwixFile, "cfl": CflFile}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048)  # the superblock may follow a user block
_NPY_MAGIC = b"\x93NUMPY"
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".mrd")


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        for offset in _HDF5_OFFSETS:
            fh.seek(offset)
            if fh.read(8) == _HDF5_SIGNATURE:
                return True
    return False


def _hdf5_kind(path: Path) -> str:
    """'fastmri' or 'ismrmrd' by which datasets/groups the HDF5 file holds."""
    try:
        with h5py.File(path, "r") as h5:
            if isinstance(h5.get("kspace"), h5py.Dataset):
                return "fastmri"
            if find_mrd_group(h5) is not None:
                return "ismrmrd"
            found = sorted(h5.keys())
    except OSError as exc:
        raise InputError(path, f"corrupt or truncated HDF5 file ({exc})") from None
    raise InputError(path, f"HDF5 file is neither MRD (a group with 'xml' and 'data') nor fastMRI ('kspace'); it holds {found}")


def detect_format(path: str | os.PathLike) -> str:
    """The format name of ``path`` from its content; ``InputError`` when missing or unrecognised."""
    p = Path(path)
    hdr, cfl = cfl_pair(p)
    if p.suffix in (".cfl", ".hdr") or (not p.exists() and (hdr.exists() or cfl.exists())):
        return "cfl"
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a directory, expected a raw data file")
    try:
        if _is_hdf5(p):
            return _hdf5_kind(p)
        with open(p, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except PermissionError:
        raise InputError(p, "permission denied") from None
    if head == _NPY_MAGIC:
        return "npy"
    if is_twix(p):
        return "twix"
    if not head:
        raise InputError(p, "file is empty")
    if p.suffix.lower() in _HDF5_SUFFIXES:
        raise InputError(p, f"has a {p.suffix} suffix but is not an HDF5 file (no HDF5 signature)")
    if hdr.exists() and cfl.exists():
        return "cfl"
    raise InputError(p, "unrecognised format: not HDF5 (MRD, fastMRI), Siemens twix, NumPy .npy or a BART .hdr/.cfl pair")


def open_raw(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    dims: Sequence[str] | None = None,
    sha256: str | None = None,
    sequence: str | os.PathLike | None = None,
) -> RawFile:
    """Open a raw k-space file for ``info()`` and (lazy) ``read(slices)``; use as a context manager.

    ``sha256``: the file's checksum when the caller already knows it (a pipeline task reading one
    slice of a large file), so that it is not recomputed over the whole file.

    ``format`` forces a reader ("ismrmrd"/"mrd", "fastmri", "twix"/"siemens", "cfl"/"bart", "npy"); ``dims`` names the
    axes of a ``.npy`` array (default ("coil", "ky", "kx") for 3-D, ("slice", "coil", "ky", "kx") for 4-D).
    ``sequence``: the Pulseq ``.seq`` file of a Pulseq twix scan, which holds its k-space order and trajectory.
    """
    p = Path(path)
    if format is not None:
        fmt = _ALIASES.get(format.lower(), format.lower())
        if fmt not in FORMATS:
            raise InputError(p, f"unknown format {format!r}: use one of {list(FORMATS)}")
        if fmt != "cfl" and not p.is_file():
            raise InputError(p, "is a directory, expected a raw data file" if p.is_dir() else "no such file")
    else:
        fmt = detect_format(p)
    if dims is not None and fmt != "npy":
        raise InputError(p, f"dims apply to .npy arrays only; this is a {fmt} file with its own layout")
    if sequence is not None and fmt != "twix":
        raise InputError(p, f"a Pulseq sequence ({Path(sequence).name}) applies to Siemens twix files only; this is a {fmt} file")
    if fmt == "npy":
        raw = NpyFile(p, dims)
    elif fmt == "twix":
        raw = TwixFile(p, sequence=sequence)
    else:
        raw = _READERS[fmt](p)
    raw._sha256 = sha256
    return raw


def read(
    path: str | os.PathLike,
    *,
    slices: Sequence[int] | int | None = None,
    dims: Sequence[str] | None = None,
    format: str | None = None,
    include_ignored: bool = False,
    sequence: str | os.PathLike | None = None,
) -> KSpace:
    """Read k-space from a raw file (all slices, or only ``slices``); see ``open_raw``."""
    with open_raw(path, format=format, dims=dims, sequence=sequence) as raw:
        return raw.read(slices, include_ignored=include_ignored)


__all__ = [
    "FORMATS",
    "RawFile",
    "detect_format",
    "open_raw",
    "read",
    "read_cfl",
    "write_cfl",
    "write_fastmri",
    "write_ismrmrd",
]
