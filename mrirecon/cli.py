"""The ``mrirecon`` command line: info, recon, methods, phantom, make-sample-data.

Thin over the core and ``mrirecon.pipelines``. Exit codes scripts can trust: 0 success, 2 bad input
or usage (``InputError``, ``OutputError``, argparse), 1 internal error. User errors print one line
``mrirecon: error: <message>`` on stderr; a traceback only with ``--debug`` or ``MRIRECON_DEBUG=1``.
Patient fields are never printed unless ``info --show-phi`` asks for them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data import KSpace
from .errors import MriReconError, OutputError

PHANTOM_KINDS = ("shepp-logan", "brain")
PHANTOM_FORMATS = ("ismrmrd", "fastmri")
MASKS = ("equispaced", "poisson")
SLICE_GAP_MM = 1.0  # gap between simulated slices, added to the slice thickness
_SEQ_HELP = ("Pulseq sequence of a Pulseq twix scan (k-space order, trajectory); "
             "default: a .seq beside the raw file with the same name")


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` -> (k, v) with v as bool (true/false), None (none), int, float, else str."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    value = raw.strip()
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    if lowered == "none":
        return key.strip(), None
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on an interactive terminal and when not switched off."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


# --- commands --------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    """Describe a raw file without reconstructing it."""
    from .io import open_raw

    with open_raw(args.path, sequence=args.seq) as raw:
        info = raw.info(include_phi=args.show_phi)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    shape = ", ".join(f"{d}={n}" for d, n in zip(info["dims"], info["shape"]))
    lines = [
        f"file:          {info['file']}",
        f"format:        {info['format']}",
        f"k-space:       {shape}",
        f"coils:         {info['coils']}",
        f"slices:        {info['slices']}",
        f"encoded:       {' x '.join(map(str, info['encoded_matrix']))} (z x y x x)",
        f"recon matrix:  {' x '.join(map(str, info['recon_matrix']))}",
        f"FOV (mm):      {' x '.join(f'{v:g}' for v in info['fov_mm'])}",
        f"trajectory:    {info['trajectory']}",
        f"acceleration:  {' x '.join(map(str, info['acceleration']))}",
        f"calibration:   {info['calibration']['mode']} {info['calibration']['shape'] or ''}".rstrip(),
        f"sequence:      {info['sequence'].get('sequence_name') or '-'}",
        f"scanner:       {info['sequence'].get('scanner') or '-'}",
        f"software:      {info['sequence'].get('software_version') or '-'}",
        f"sha256:        {info['sha256']}",
    ]
    if info["uninterpreted"]:
        lines.append(f"not used:      {'; '.join(info['uninterpreted'])}")
    if args.show_phi:
        lines += [f"patient.{k}: {v}" for k, v in info["patient"].items() if v not in ("", None)]
    print("\n".join(lines))
    return 0


def _recon_params(args: argparse.Namespace) -> dict[str, Any]:
    """Method parameters plus the preprocessing flags (``recon``'s whiten / coil_compression) when given."""
    params = dict(args.param)
    if args.whiten is not None:
        params["whiten"] = args.whiten
    if args.coils is not None:
        params["coil_compression"] = args.coils
    return params


def cmd_recon(args: argparse.Namespace) -> int:
    """Reconstruct one raw file into a Zarr store (and optionally a NIfTI file)."""
    from .pipelines.reconstruct import reconstruct_file

    result = reconstruct_file(
        args.path, args.output, method=args.method, params=_recon_params(args), device=args.device,
        nifti=args.nifti, progress=_show_progress(args), sequence=args.seq,
    )
    shape = ", ".join(f"{d}={n}" for d, n in zip(result.dims, result.shape))
    skipped = f", {result.tasks_skipped} already done" if result.tasks_skipped else ""
    print(f"wrote {result.store}/{result.series} ({shape}) in {result.wall_s:.1f} s "
          f"({result.tasks_run} task(s) run{skipped})")
    if result.nifti is not None:
        print(f"wrote {result.nifti}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """List the reconstruction methods with their parameters and defaults."""
    from .methods import list_methods

    methods = [
        {
            "name": m.name,
            "summary": m.summary,
            "reference": m.reference,
            "parameters": [
                {"name": p.name, "type": p.type_name, "default": p.default, "doc": p.doc} for p in m.params
            ],
        }
        for m in list_methods()
    ]
    if args.json:
        print(json.dumps(methods, indent=2, default=repr))
        return 0
    for m in methods:
        print(f"{m['name']}: {m['summary']}")
        if m["reference"]:
            print(f"    reference: {m['reference']}")
        for p in m["parameters"]:
            print(f"    {p['name']} ({p['type']}, default {p['default']!r}): {p['doc']}")
    return 0


def phantom_kspace(
    kind: str = "shepp-logan",
    *,
    matrix: int = 128,
    slices: int = 1,
    coils: int = 8,
    accel: float = 1.0,
    calib: int = 24,
    mask: str = "equispaced",
    noise: float = 0.0,
    seed: int = 0,
) -> KSpace:
    """Simulated multi-slice, multi-coil k-space ``(slice, coil, ky, kx)`` of a phantom.

    Slices are axial, centred on the isocentre, ``thickness + SLICE_GAP_MM`` apart; every slice
    shares one sampling mask (equispaced along ky with ``calib`` full lines, or Poisson-disc)
    and gets its own noise draw (seed + slice index).
    """
    from . import sim

    shape = (matrix, matrix)
    if kind == "shepp-logan":
        # the central half of a 3D phantom: its outer planes would be empty
        centre = slice(slices // 2, slices // 2 + slices)
        volume = sim.shepp_logan((2 * slices, matrix, matrix))[centre] if slices > 1 else sim.shepp_logan(shape)[None]
    else:
        positions = np.linspace(0.4, 0.6, slices) if slices > 1 else [0.5]
        volume = np.stack([sim.brain(shape, slice_position=float(p)) for p in positions])
    if accel <= 1:
        sampling = None
    elif mask == "poisson":
        sampling = sim.poisson_disc_mask(shape, accel, calib=calib, seed=seed)
    else:
        sampling = sim.equispaced_mask(shape, int(round(accel)), calib=calib)
    maps = sim.birdcage_maps(coils, shape)
    per_slice = [sim.simulate(img, maps, sampling, noise_sigma=noise, seed=seed + k) for k, img in enumerate(volume)]
    first = per_slice[0]
    geometry = first.header.geometry
    spacing = geometry.fov_mm[0] + SLICE_GAP_MM
    offsets = (np.arange(slices) - (slices - 1) / 2) * spacing
    geometry = dataclasses.replace(
        geometry,
        position=geometry.position[0] + np.outer(offsets, geometry.slice_dir),
        slice_spacing_mm=spacing if slices > 1 else None,
    )
    header = dataclasses.replace(first.header, geometry=geometry, source=f"phantom-{kind}")
    data = np.stack([k.data for k in per_slice])
    return dataclasses.replace(first, data=data, dims=("slice", *first.dims), header=header)


def write_phantom(path: Path, ksp: KSpace, fmt: str) -> None:
    """Write simulated k-space as an ISMRMRD or fastMRI file; ``OutputError`` when it cannot be written."""
    from .io import write_fastmri, write_ismrmrd

    if not path.parent.is_dir():
        raise OutputError(path, "the folder to write into does not exist")
    (write_fastmri if fmt == "fastmri" else write_ismrmrd)(path, ksp)


def cmd_phantom(args: argparse.Namespace) -> int:
    """Simulate a phantom acquisition and write it as a raw file."""
    ksp = phantom_kspace(
        args.kind, matrix=args.matrix, slices=args.slices, coils=args.coils, accel=args.accel,
        calib=args.calib, mask=args.mask, noise=args.noise, seed=args.seed,
    )
    write_phantom(Path(args.output), ksp, args.format)
    print(f"wrote {args.output} ({args.format}, {args.kind}, {args.slices} slice(s), {args.coils} coils, "
          f"{args.matrix}x{args.matrix}, R={args.accel:g})")
    return 0


# Sizes keep sample_data/ under 4 MB (the raw files are uncompressed: 2.5 MB + 1.35 MB).
SAMPLE_DATA: dict[str, tuple[str, dict[str, Any]]] = {
    "phantom_ismrmrd.h5": (
        "ismrmrd",
        dict(kind="shepp-logan", matrix=128, slices=4, coils=8, accel=2, calib=16, mask="equispaced", noise=1e-3),
    ),
    "brain_fastmri.h5": (
        "fastmri",
        dict(kind="brain", matrix=144, slices=1, coils=8, accel=4, calib=24, mask="poisson", noise=1e-3),
    ),
}


def cmd_make_sample_data(args: argparse.Namespace) -> int:
    """Write the small generated raw files that ship in ``sample_data/``."""
    folder = Path(args.directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create folder: {exc.strerror or exc}") from exc
    for name, (fmt, spec) in SAMPLE_DATA.items():
        path = folder / name
        write_phantom(path, phantom_kspace(**spec, seed=0), fmt)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


# --- parser ----------------------------------------------------------------------------------------
# Modules that contribute sub-commands: each has ``add_commands(add)``, where ``add(name, func, help)``
# returns the new sub-parser. Keep their top-level imports light: the handler imports what it needs.
COMMAND_MODULES: tuple[str, ...] = ("mrirecon.pipelines.batch_cli", "mrirecon.pipelines.export_cli", "mrirecon.pipelines.convert_cli")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; each sub-command's function is stored as ``func``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors (also: MRIRECON_DEBUG=1)")
    parser = argparse.ArgumentParser(
        prog="mrirecon", description="MRI reconstruction on CPU and GPU, from raw scanner files to images.",
    )
    parser.add_argument("--version", action="version", version=f"mrirecon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("info", cmd_info, "Describe a raw k-space file (format, dims, matrix, sampling, geometry).")
    p.add_argument("path", help="raw file (ISMRMRD/MRD .h5, fastMRI .h5, BART .cfl, .npy)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--show-phi", action="store_true", help="also print patient/study identifiers")
    p.add_argument("--seq", metavar="FILE.seq", help=_SEQ_HELP)

    p = add("recon", cmd_recon, "Reconstruct a raw file into a Zarr store (one series per file and recipe).")
    p.add_argument("path", help="raw file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="Zarr store (created if missing)")
    p.add_argument("--method", default="auto",
                   help="reconstruction method (see 'mrirecon methods'); default auto: sense for Cartesian k-space, "
                        "nufft_sense for a trajectory")
    p.add_argument("--param", action="append", type=parse_param, default=[], metavar="NAME=VALUE",
                   help="method parameter (repeatable); values parsed as int, float, true/false, none or text")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="where to compute; default auto")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="pre-whiten with the file's noise scans (default: when it has them)")
    p.add_argument("--coils", type=_positive_int, metavar="N", help="SVD-compress to N virtual coils first")
    p.add_argument("--nifti", metavar="OUT.nii.gz", help="also write the magnitude image as NIfTI")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seq", metavar="FILE.seq", help=_SEQ_HELP)

    p = add("methods", cmd_methods, "List reconstruction methods with their parameters and defaults.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    p = add("phantom", cmd_phantom, "Simulate a multi-coil phantom acquisition and write it as a raw file.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="file to write")
    p.add_argument("--kind", choices=PHANTOM_KINDS, default="shepp-logan", help="object; default shepp-logan")
    p.add_argument("--format", choices=PHANTOM_FORMATS, default="ismrmrd", help="file format; default ismrmrd")
    p.add_argument("--matrix", type=_positive_int, default=128, help="in-plane matrix N (N x N); default 128")
    p.add_argument("--slices", type=_positive_int, default=1, help="number of slices; default 1")
    p.add_argument("--coils", type=_positive_int, default=8, help="number of coils; default 8")
    p.add_argument("--accel", type=float, default=1.0, help="acceleration R (1 = fully sampled); default 1")
    p.add_argument("--calib", type=_positive_int, default=24, help="fully sampled centre lines; default 24")
    p.add_argument("--mask", choices=MASKS, default="equispaced",
                   help="sampling pattern when R > 1; default equispaced")
    p.add_argument("--noise", type=float, default=0.0, help="complex noise standard deviation; default 0")
    p.add_argument("--seed", type=int, default=0, help="random seed (mask, noise); default 0")

    p = add("make-sample-data", cmd_make_sample_data, "Write the generated files that ship in sample_data/.")
    p.add_argument("directory", help="folder to write into (created if missing)")

    for module_name in COMMAND_MODULES:
        import_module(module_name).add_commands(add)
    return parser


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    """Warnings as one line ``mrirecon: warning: <message>`` on stderr (no source location)."""
    print(f"mrirecon: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    debug = args.debug or os.environ.get("MRIRECON_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return args.func(args)
    except MriReconError as exc:
        if debug:
            traceback.print_exc()
        print(f"mrirecon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mrirecon: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: say what, and how to see more
        if debug:
            traceback.print_exc()
        print(f"mrirecon: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return 1
