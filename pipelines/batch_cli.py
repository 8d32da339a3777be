"""``mrirecon batch``: reconstruct many raw files into one Zarr store on a Dask cluster.

Options not given on the command line come from ``--job`` (a TOML job file or a preset name), then
from the ``Job`` defaults. Exit code 0 when every input completed, 2 for bad input (also when only
some inputs were bad: the others still complete) or an unwritable store, 1 for other task failures.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

AddFn = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
# CLI destinations that map one to one onto ``Job`` fields when given
_JOB_FIELDS = ("method", "device", "workers", "threads_per_worker", "scheduler", "retries", "max_batch", "pacs")


def cmd_batch(args: argparse.Namespace) -> int:
    """Build the job from the job file and the options, run it and print the summary."""
    from mrirecon.cli import _show_progress

    from .batch import Job, job_file_options, run_job
    from .joblog import log_path

    options: dict[str, Any] = job_file_options(args.job) if args.job else {}
    if args.inputs:
        options["inputs"] = args.inputs
    if args.output is not None:
        options["output"] = args.output
    options["params"] = {**options.get("params", {}), **dict(args.param)}
    options.update({k: getattr(args, k) for k in _JOB_FIELDS if getattr(args, k) is not None})
    if args.seq is not None:  # one sequence for every input: it replaces the job file's seq and [sequences]
        options.update(seq=args.seq, sequences={})
    if args.no_resume:
        options["resume"] = False
    if args.in_process:
        options["processes"] = False
    if "output" not in options:
        print("mrirecon batch: error: -o/--output is required (or 'output' in the job file)", file=sys.stderr)
        return 2
    summary = run_job(Job(**{"inputs": [], **options}), progress=_show_progress(args))
    for name, reason in summary.failures:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    print(f"batch: {summary.tasks_done} task(s) done, {summary.tasks_failed} failed, {summary.tasks_skipped} "
          f"skipped (already done); {summary.inputs_complete} series complete, {len(summary.failures)} input(s) "
          f"failed; {summary.wall_s:.1f} s, {summary.slices_per_s:.2f} slices/s; log {log_path(options['output'])}")
    return summary.exit_code


def add_commands(add: AddFn) -> None:
    """Register ``batch`` with the main parser (see ``COMMAND_MODULES`` in ``mrirecon.cli``)."""
    from mrirecon.cli import _positive_int, parse_param

    p = add("batch", cmd_batch, "Reconstruct many raw files into one Zarr store on a Dask cluster (resumable).")
    p.add_argument("inputs", nargs="*", metavar="INPUTS", help="raw files, folders or glob patterns")
    p.add_argument("-o", "--output", metavar="OUT.zarr", help="Zarr store (created if missing)")
    p.add_argument("--job", metavar="JOB.toml", help="TOML job file, or the name of a shipped preset")
    p.add_argument("--method", help="reconstruction method (see 'mrirecon methods'); default sense")
    p.add_argument("--param", action="append", type=parse_param, default=[], metavar="NAME=VALUE",
                   help="method parameter (repeatable); overrides the job file's")
    p.add_argument("--seq", metavar="FILE.seq",
                   help="Pulseq sequence of every input (Pulseq twix scans); replaces the job file's seq and "
                        "[sequences]; an input it does not fit fails alone")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where tasks compute; default auto")
    p.add_argument("--workers", type=_positive_int, help="local workers; default one per core (per GPU with dask-cuda)")
    p.add_argument("--threads-per-worker", type=_positive_int, help="threads per local worker; default 1")
    p.add_argument("--scheduler", metavar="ADDRESS", help="join a running Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--retries", type=int, help="retries of a failed task before its input fails; default 2")
    p.add_argument("--max-batch", type=_positive_int, help="most slices per task (memory permitting); default 8")
    p.add_argument("--no-resume", action="store_true", help="recompute series that an earlier run finished")
    p.add_argument("--in-process", action="store_true", help="workers as threads of this process (no worker processes)")
    p.add_argument("--pacs", metavar="URL", help="send each completed series to this PACS (needs the PACS sink)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
