"""BART ``.cfl``/``.hdr`` pairs: complex64 samples in Fortran order plus a text line of dims.

As k-space, BART's dims map as READ -> kx, PHS1 -> ky, PHS2 -> kz, COIL -> coil, TE -> echo,
TIME -> time, SLICE -> slice, AVG -> average; other BART dims must have size 1.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from .array import ArrayFile

N_BART_DIMS = 16
# BART dim index -> KSpace dim name, in canonical KSpace order.
BART_TO_KSPACE = ((13, "slice"), (5, "echo"), (10, "time"), (14, "average"), (3, "coil"), (2, "kz"), (1, "ky"), (0, "kx"))


def cfl_pair(base: str | os.PathLike) -> tuple[Path, Path]:
    """(``.hdr``, ``.cfl``) paths for a base name given with or without either suffix."""
    p = Path(base)
    if p.suffix in (".cfl", ".hdr"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".hdr"), p.with_name(p.name + ".cfl")


def _read_dims(hdr: Path, cfl: Path) -> tuple[int, ...]:
    for f in (hdr, cfl):
        if not f.is_file():
            raise InputError(f, "BART file missing (a .hdr and a .cfl are both needed)")
    try:
        lines = [ln.strip() for ln in hdr.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(hdr, f"cannot read BART header ({exc})") from None
    try:
        at = lines.index("# Dimensions")
        dims = tuple(int(v) for v in lines[at + 1].split())
    except (ValueError, IndexError):
        raise InputError(hdr, "not a BART header: no '# Dimensions' line followed by integers") from None
    if not dims or min(dims) < 0:
        raise InputError(hdr, f"invalid BART dims {dims}")
    expected = 8 * int(np.prod(dims, dtype=np.int64))
    if cfl.stat().st_size != expected:
        raise InputError(cfl, f"holds {cfl.stat().st_size} bytes but the header dims {dims} need {expected} (truncated?)")
    return dims


def _map_cfl(base: str | os.PathLike) -> np.ndarray:
    hdr, cfl = cfl_pair(base)
    dims = _read_dims(hdr, cfl)
    if 0 in dims:
        return np.zeros(dims, dtype=np.complex64, order="F")
    return np.memmap(cfl, dtype=np.complex64, mode="r", shape=dims, order="F")


def read_cfl(base: str | os.PathLike) -> np.ndarray:
    """Read a BART array (complex64, the dims of the ``.hdr``) into memory."""
    return np.array(_map_cfl(base), order="F")


def write_cfl(base: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a BART ``.hdr``/``.cfl`` pair (complex64, Fortran order)."""
    hdr, cfl = cfl_pair(base)
    array = np.asarray(array)
    dims = array.shape or (1,)
    try:
        hdr.write_text("# Dimensions\n" + " ".join(str(n) for n in dims) + "\n")
        np.asarray(array, dtype=np.complex64).ravel(order="F").tofile(cfl)
    except OSError as exc:
        raise OutputError(cfl, f"cannot write BART file ({exc.strerror or exc})") from None


class CflFile(ArrayFile):
    """A BART pair read as k-space; the ``.cfl`` is memory-mapped (slices read on demand)."""

    format = "cfl"

    def __init__(self, base: str | os.PathLike) -> None:
        hdr, cfl = cfl_pair(base)
        array = _map_cfl(base)
        if array.ndim > N_BART_DIMS:
            raise InputError(hdr, f"{array.ndim} dims; BART has at most {N_BART_DIMS}")
        array = array.reshape(array.shape + (1,) * (N_BART_DIMS - array.ndim), order="F")
        used = {i for i, _ in BART_TO_KSPACE}
        extra = [i for i in range(N_BART_DIMS) if i not in used and array.shape[i] > 1]
        if extra:
            raise InputError(cfl, f"BART dims {extra} have size > 1; only READ, PHS1, PHS2, COIL, TE, TIME, SLICE, AVG can be k-space")
        keep = [(i, name) for i, name in BART_TO_KSPACE
                if name in ("coil", "ky", "kx") or array.shape[i] > 1 or (name == "slice" and array.shape[2] == 1)]
        index = tuple(slice(None) if i in {j for j, _ in keep} else 0 for i in range(N_BART_DIMS))
        squeezed_axes = [i for i in range(N_BART_DIMS) if index[i] != 0]
        view = array[index].transpose([squeezed_axes.index(i) for i, _ in keep])
        super().__init__(cfl, view, tuple(name for _, name in keep), [])
