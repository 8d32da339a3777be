"""``mrirecon convert RAW -o OUT.h5``: any readable raw file (Siemens twix included) to ISMRMRD/MRD v1.

The conversion goes through the same ``KSpace`` that reconstruction uses, so the MRD file holds
the k-space as this package interprets it: lines placed by their counters, REFLECT lines reversed,
readout oversampling removed, EPI ghost correction applied, noise scans and ACS lines kept, slice
positions and read/phase/slice directions in every acquisition header.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mrirecon.errors import OutputError


def convert_file(source: str | Path, target: str | Path, *, sequence: str | Path | None = None) -> Path:
    """Read ``source`` (format from its content) and write it as an MRD v1 file at ``target``.

    ``sequence``: the Pulseq ``.seq`` file of a Pulseq twix scan (k-space order and trajectory).
    """
    from mrirecon.io import read, write_ismrmrd
    from mrirecon.io.twix import TwixFile

    target = Path(target)
    if not target.parent.is_dir():
        raise OutputError(target, "the folder to write into does not exist")
    if sequence is None:
        ksp = read(source)
    else:
        with TwixFile(Path(source), sequence=sequence) as raw:
            ksp = raw.read()
    write_ismrmrd(target, ksp)
    return target


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert one raw file to ISMRMRD."""
    out = convert_file(args.path, args.output, sequence=args.seq)
    print(f"wrote {out} (ISMRMRD v1)")
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``convert`` with the CLI."""
    p = add("convert", cmd_convert, "Convert a raw file (Siemens twix .dat, MRD, fastMRI, ...) to ISMRMRD/MRD v1 HDF5.")
    p.add_argument("path", help="raw file, e.g. meas_MID00042.dat")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="MRD file to write")
    p.add_argument("--seq", metavar="FILE.seq", help="Pulseq sequence of a Pulseq twix scan (k-space order, trajectory); "
                                                     "default: a .seq beside the raw file with the same name")
