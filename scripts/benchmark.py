#!/usr/bin/env python
"""Benchmark mrirecon against SigPy and BART on identical, seeded problems (a script, not a test).

For every task it prints the median time over ``--repeats`` runs (after one untimed warm-up), the
ratio to the fastest peer, the NRMSE against the ground truth (same metric for every tool) and the
floor: the FFTs and array passes the algorithm cannot avoid, measured on this machine in this run.

    .venv/bin/python scripts/benchmark.py                      # P1, P2 and P3, CPU, all peers found
    .venv/bin/python scripts/benchmark.py --problems P1 --repeats 5 --json results.json
    .venv/bin/python scripts/benchmark.py --quick --device cuda  # on a GPU: SigPy on CuPy too, and P2L1
    .venv/bin/python scripts/benchmark.py --problems P2L1 --quick --no-peers  # the 3D L1-wavelet exam

``--quick`` solves P2 on 16 contiguous central slices and extrapolates the per-slice part to all 160
(the readout FFT always runs on the whole volume); such rows are labelled "extrapolated".
P2L1 (``scripts/bench_exam3d.py``) is P2's volume as one 3D L1-wavelet problem, 100 FISTA iterations;
its peers are SigPy on CuPy with ``--device cuda``, SigPy and BART on the CPU; runs too long to repeat
(SigPy on CuPy, slow CPU peers, mrirecon with ``--quick`` on the CPU) do 10 iterations, x10, "extrapolated".
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_exam3d  # noqa: E402
from bench_bandwidth import bandwidth_floor  # noqa: E402
import bench_nufft  # noqa: E402
from bench_peers import Bart, SigPy, bart_executable, sigpy_device, sigpy_module  # noqa: E402
from bench_problems import (  # noqa: E402
    CS_ITERS,
    CS_LAM,
    ESPIRIT,
    ITERS,
    LAM,
    Problem2D,
    Problem3D,
    make_p1,
    make_p2,
    maps_nrmse,
    nrmse,
)
from bench_timing import (  # noqa: E402
    Runner,
    readout_fft_floor,
    sense_iteration_floor,
    single_stage,
    synchronize,
    timed,
    transfer_floor,
    zerofill_floor,
)
from mrirecon.kernels.backend import gpu_available, to_device, to_numpy  # noqa: E402
from mrirecon.kernels.fft import ifftc_planes  # noqa: E402

import mrirecon  # noqa: E402
from mrirecon import KSpace, KSpaceHeader  # noqa: E402
from mrirecon.coils import espirit_maps  # noqa: E402
from mrirecon.sim import radial  # noqa: E402

QUICK_SLICES = 16
MRIRECON = "mrirecon"


@dataclasses.dataclass
class Task:
    """One benchmark task: its runners by tool, how to score an output, and its floor."""

    problem: str
    name: str
    score: Callable[[np.ndarray], float]
    floor_s: float | None
    note: str = ""
    # factories by tool name: building a runner (a peer writing its input files) may fail
    runners: dict[str, Callable[[], Runner]] = dataclasses.field(default_factory=dict)
    stage_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # extrapolation factors
    bandwidth_s: float | None = None  # memory-bandwidth floor (bench_bandwidth)


@dataclasses.dataclass
class Row:
    """One (task, tool) result."""

    problem: str
    task: str
    tool: str
    median_s: float | None = None
    times_s: list[float] = dataclasses.field(default_factory=list)
    stages_s: dict[str, float] = dataclasses.field(default_factory=dict)  # medians, not extrapolated
    nrmse: float | None = None
    floor_s: float | None = None
    vs_fastest_peer: float | None = None
    note: str = ""
    bandwidth_s: float | None = None


def checksum_header(header: KSpaceHeader, data: np.ndarray, name: str) -> KSpaceHeader:
    """``header`` with the input's checksum recorded once, as a reader does for a file.

    ``mrirecon.recon`` hashes the k-space for provenance only when the header has no checksum; the
    benchmark's inputs stand for files that were read (and hashed) before the timed reconstruction.
    """
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    return dataclasses.replace(header, source=name, source_sha256=digest)


def _array_module(device: str) -> ModuleType:
    if device == "cpu":
        return np
    import cupy

    return cupy


# -- mrirecon runners ----------------------------------------------------------------------------


def mrirecon_espirit(p: Problem2D, device: str, xp: ModuleType) -> Runner:
    """``mrirecon.coils.espirit_maps`` with the matched ESPIRiT parameters, host to host."""
    return single_stage(lambda: to_numpy(espirit_maps(to_device(p.kspace.data, device), mask=p.mask, **ESPIRIT)), xp)


def mrirecon_sense(ksp: KSpace, maps: np.ndarray, device: str) -> Any:
    """``mrirecon.recon(..., "sense")`` with the given maps, exactly ``ITERS`` CG iterations (tol 0)."""
    return mrirecon.recon(ksp, "sense", device=device, lam=LAM, max_iter=ITERS, tol=0.0, maps=maps).data


def mrirecon_sense_slices(p: Problem3D, maps_by_slice: np.ndarray, slices: range, device: str, xp: ModuleType) -> Runner:
    """P2 with mrirecon: readout inverse FFT of the whole volume on ``device``, then one ``recon`` call
    on the slices as a batch dim (the CPU runs slices side by side, one core each: ``kernels.threads``)."""
    header = checksum_header(KSpaceHeader(), p.kspace, "benchmark-P2")
    chosen = slice(slices.start, slices.stop)

    def run() -> tuple[np.ndarray, dict[str, float]]:
        def readout() -> Any:
            return ifftc_planes(to_device(p.kspace, device), 1)  # (readout, coil, ky, kx), contiguous

        hybrid, t_readout = timed(readout, xp)

        def solve() -> np.ndarray:
            ksp = KSpace(hybrid[chosen], ("slice", "coil", "ky", "kx"), header=header, mask=p.mask)
            return to_numpy(mrirecon_sense(ksp, maps_by_slice[chosen], device))

        images, t_solve = timed(solve, xp)
        return images, {"readout": t_readout, "solve": t_solve}

    return run


# -- tasks ---------------------------------------------------------------------------------------


def _peers(args: argparse.Namespace, bart: Bart | None) -> dict[str, Any]:
    """Peer tools available for this run, by table name (missing ones are reported, not fatal)."""
    peers: dict[str, Any] = {}
    if args.no_peers:
        return peers
    if args.device == "cuda":  # the GPU figures stand beside SigPy on the same card; CPU peers would eat the time
        gpu = sigpy_device(True)
        if gpu is not None:
            peers["sigpy-cupy"] = SigPy(gpu)
        return peers
    cpu = sigpy_device(False)
    if cpu is not None:
        peers["sigpy"] = SigPy(cpu)
    if bart is not None:
        peers["bart"] = bart
    return peers


def p1_tasks(p: Problem2D, args: argparse.Namespace, peers: dict[str, Any], xp: ModuleType) -> list[Task]:
    """P1: ESPIRiT; CG-SENSE 30 it; L1-wavelet and TV 100 it (true maps, absolute lambda); zero-filled + RSS."""
    ksp = p.kspace.data
    n_coils, *shape = ksp.shape
    repeats = max(args.repeats, 5)
    support = np.abs(p.truth) > 0
    shape = tuple(shape)
    with_maps = transfer_floor(xp, ksp.size + p.maps.size, p.truth.size, repeats)  # host <-> device, 0 on the CPU
    without_maps = transfer_floor(xp, ksp.size, p.truth.size, repeats)
    sense_floor = ITERS * sense_iteration_floor(xp, n_coils, shape, repeats) + with_maps
    zf_floor = zerofill_floor(xp, n_coils, shape, repeats) + without_maps

    espirit = Task("P1", "ESPIRiT calibration", lambda m: maps_nrmse(m, p.maps, support), None,
                   note="NRMSE of the maps inside the object after per-pixel phase alignment; no floor defined")
    espirit.runners[MRIRECON] = lambda: mrirecon_espirit(p, args.device, xp)
    sense = Task("P1", f"CG-SENSE {ITERS} it", lambda x: nrmse(x, p.truth), sense_floor,
                 note="true coil maps given to every tool",
                 bandwidth_s=bandwidth_floor(xp, n_coils, shape, "normal", ITERS) + with_maps)
    sense.runners[MRIRECON] = lambda: single_stage(lambda: to_numpy(mrirecon_sense(p.kspace, p.maps, args.device)), xp)
    zerofill = Task("P1", "zero-filled + RSS", lambda x: nrmse(np.abs(x), np.abs(p.truth)), zf_floor,
                    bandwidth_s=bandwidth_floor(xp, n_coils, shape, "zerofill") + without_maps)
    zerofill.runners[MRIRECON] = lambda: single_stage(
        lambda: to_numpy(mrirecon.recon(p.kspace, "zerofill", device=args.device).data), xp
    )
    regularised = {}
    for kind, label, work in (("l1wavelet", "L1-wavelet", "normal"), ("tv", "TV", "pdhg")):
        task = Task("P1", f"{label} {CS_ITERS} it, lam {CS_LAM:g}", lambda x: nrmse(x, p.truth), None,
                    note="true coil maps, absolute lambda (mrirecon relative=False, BART -w 1); no FFT floor "
                         "defined, bandwidth floor without the regulariser's image passes",
                    bandwidth_s=bandwidth_floor(xp, n_coils, shape, work, CS_ITERS) + with_maps)
        task.runners[MRIRECON] = lambda kind=kind: single_stage(lambda: to_numpy(mrirecon.recon(
            p.kspace, kind, device=args.device, lam=CS_LAM, relative=False, max_iter=CS_ITERS, maps=p.maps).data), xp)
        regularised[kind] = task
    for name, peer in peers.items():
        espirit.runners[name] = lambda peer=peer: peer.espirit(ksp)
        sense.runners[name] = lambda peer=peer: peer.sense(ksp, p.maps, p.mask)
        zerofill.runners[name] = lambda peer=peer: peer.zerofill(ksp)
        for kind, task in regularised.items():
            task.runners[name] = lambda peer=peer, kind=kind: peer.regularised(ksp, p.maps, p.mask, kind)
    return [espirit, sense, *regularised.values(), zerofill]


def p2_task(p: Problem3D, args: argparse.Namespace, peers: dict[str, Any], xp: ModuleType) -> Task:
    """P2: readout FFT then CG-SENSE 30 iterations slice by slice (a central block with ``--quick``)."""
    n_slices = p.n_slices
    if args.quick:
        start = (n_slices - QUICK_SLICES) // 2
        slices = range(start, start + QUICK_SLICES)
    else:
        slices = range(n_slices)
    maps_by_slice = np.ascontiguousarray(p.maps.transpose(1, 0, 2, 3))
    n_coils, _, ny, nx = p.kspace.shape
    repeats = max(args.repeats, 5)
    transfers = transfer_floor(xp, p.kspace.size + p.maps.size, p.truth.size, repeats)
    floor = (
        readout_fft_floor(xp, p.kspace.shape, 1, repeats)
        + n_slices * ITERS * sense_iteration_floor(xp, n_coils, (ny, nx), repeats)
        + transfers
    )
    bandwidth = (
        bandwidth_floor(xp, n_coils, p.kspace.shape[1:], "readout")
        + bandwidth_floor(xp, n_coils, (ny, nx), "normal", n_slices * ITERS)
        + transfers
    )
    extrapolated = len(slices) != n_slices
    task = Task(
        "P2",
        f"readout FFT + CG-SENSE {ITERS} it x {n_slices} slices",
        lambda x: nrmse(x, p.truth[slices.start : slices.stop]),
        floor,
        stage_weights={"solve": n_slices / len(slices)},
        note=(f"extrapolated: slices {slices.start}-{slices.stop - 1} solved, x{n_slices / len(slices):g}; "
              if extrapolated else "") + "true coil maps given to every tool",
        bandwidth_s=bandwidth,
    )
    task.runners[MRIRECON] = lambda: mrirecon_sense_slices(p, maps_by_slice, slices, args.device, xp)
    for name, peer in peers.items():
        task.runners[name] = lambda peer=peer: peer.sense_slices(p.kspace, maps_by_slice, p.mask, slices)
    return task


def p3_rows(args: argparse.Namespace) -> list[Row]:
    """P3 (golden-angle radial 402 x 256, 8 coils, 256^2) through ``scripts/bench_nufft.py``'s own runs.

    NUFFT forward/adjoint: mrirecon, SigPy and BART, scored by the relative error against mrirecon's
    high-accuracy NUFFT (in the NRMSE column; BART's after a least-squares complex scale, since its
    NUFFT scaling differs); CG-SENSE 30 it: mrirecon, SigPy, BART, NRMSE of |x|, with the floor of
    Toeplitz CG-SENSE (30 x ``bench_timing.toeplitz_sense_iteration_floor``, measured in this run).
    bench_nufft times with one warm-up and the median of ``--repeats``; the NUFFT rows have no floor.
    """
    options = argparse.Namespace(device=args.device, repeats=args.repeats, threads=args.threads,
                                 no_bart=args.no_peers)
    found: list[dict[str, Any]] = []  # bench_nufft runs SigPy whenever it is installed, even with --no-peers
    bench_nufft.bench_nufft("NUFFT 402x256 256^2", radial(402, 256, matrix=256), (256, 256), [8], options, found)
    bench_nufft.bench_sense(options, found)
    rows = []
    for r in found:
        tool = {"sigpy-cpu": "sigpy", "sigpy-cuda": "sigpy-cupy", "bart-cpu": "bart"}.get(r["tool"], r["tool"])
        note = "NRMSE column: relative error vs high-accuracy NUFFT" if "rel_err" in r else r.get("note", "")
        if "rel_err" in r and tool == "bart":
            note += "; BART after a least-squares complex scale"
        rows.append(Row("P3", r["task"], tool, median_s=r["seconds"], nrmse=r.get("rel_err", r.get("nrmse")),
                        floor_s=r.get("floor_s"), bandwidth_s=r.get("bandwidth_s"), note=note))
    return rows


# -- measuring -----------------------------------------------------------------------------------


SHORT_RUN_S = 0.05  # runs shorter than this are repeated until SHORT_TOTAL_S of timed runs (at most SHORT_MAX)
SHORT_TOTAL_S = 1.0
SHORT_MAX = 50


def measure(task: Task, tool: str, repeats: int, warmup: int) -> Row:
    """``warmup`` untimed runs, then ``repeats`` timed; the last output is scored. A failure is a noted row.

    A tool whose first timed run is shorter than ``SHORT_RUN_S`` gets more runs, up to ``SHORT_TOTAL_S`` of
    runs (at most ``SHORT_MAX``), as ``timeit`` does: a median of 3 millisecond runs measures the
    allocator's and page cache's warm-up more than the tool. The same rule holds for every tool.
    """
    row = Row(task.problem, task.name, tool, floor_s=task.floor_s, bandwidth_s=task.bandwidth_s)
    try:
        runner = task.runners[tool]()
        for _ in range(warmup):
            runner()
        runs = [runner() for _ in range(repeats)]
        first = sum(runs[0][1].values()) if runs else 1.0
        if first < SHORT_RUN_S:
            runs += [runner() for _ in range(min(SHORT_MAX, int(SHORT_TOTAL_S / max(first, 1e-4))) - len(runs))]
    except Exception as exc:  # a peer's failure is a result to report, not a reason to stop
        row.note = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        return row
    totals = [sum(t * task.stage_weights.get(stage, 1.0) for stage, t in stages.items()) for _, stages in runs]
    row.times_s = totals
    row.median_s = statistics.median(totals)
    row.stages_s = {stage: statistics.median(r[1][stage] for r in runs) for stage in runs[0][1]}
    row.nrmse = task.score(runs[-1][0])
    row.note = task.note
    return row


def _fill_ratios(rows: list[Row]) -> None:
    """Each row's time over the fastest peer's (not mrirecon) on the same task."""
    for task in {(r.problem, r.task) for r in rows}:
        same = [r for r in rows if (r.problem, r.task) == task and r.median_s is not None]
        peer_times = [r.median_s for r in same if r.tool != MRIRECON]
        if peer_times:
            for r in same:
                r.vs_fastest_peer = r.median_s / min(peer_times)


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash padded to the same width."""
    if value is None:
        return "-".rjust(int(spec.split(".")[0] or 0))
    return format(value, spec)


def print_table(rows: list[Row]) -> None:
    """The results as a fixed-width table; notes under it."""
    head = (f"{'task':<46} {'tool':<11} {'median s':>9} {'/fastest peer':>13} {'NRMSE':>8} {'floor s':>8} {'x floor':>8}"
            f" {'BW s':>8} {'x BW':>6}")
    print(head)
    print("-" * len(head))
    notes: list[str] = []
    for r in rows:
        x_floor = r.median_s / r.floor_s if r.median_s is not None and r.floor_s else None
        x_bw = r.median_s / r.bandwidth_s if r.median_s is not None and r.bandwidth_s else None
        print(
            f"{r.problem + ' ' + r.task:<46} {r.tool:<11} {_fmt(r.median_s, '9.3f')} "
            f"{_fmt(r.vs_fastest_peer, '13.2f')} {_fmt(r.nrmse, '8.4f')} {_fmt(r.floor_s, '8.3f')} "
            f"{_fmt(x_floor, '8.2f')} {_fmt(r.bandwidth_s, '8.3f')} {_fmt(x_bw, '6.2f')}"
        )
        if r.note and r.note not in notes:
            notes.append(r.note)
    for note in notes:
        print(f"  note: {note}")


# -- environment ---------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


def environment(args: argparse.Namespace, bart: str | None) -> dict[str, Any]:
    """Machine, versions, date and command line, for the JSON output and the docs."""
    import scipy

    sp = sigpy_module()
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "device": args.device,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "mrirecon": mrirecon.__version__,
        "sigpy": sp.__version__ if sp else None,
        "bart": subprocess.run([bart, "version"], capture_output=True, text=True).stdout.strip() if bart else None,
        "bart_threads": args.threads,
    }
    if args.device == "cuda":
        import cupy

        env["cupy"] = cupy.__version__
        env["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return env


def write_json(path: Path, env: dict[str, Any], skipped: list[str], rows: list[Row]) -> None:
    """Results so far as JSON (rewritten after every row, so a run cut short still leaves its figures)."""
    _fill_ratios(rows)
    doc = {"environment": env, "skipped": skipped, "results": [dataclasses.asdict(r) for r in rows]}
    path.write_text(json.dumps(doc, indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", help="comma-separated subset of P1,P2,P3,P2L1 (default P1,P2,P3; "
                                           "with --device cuda also P2L1)")
    parser.add_argument("--quick", action="store_true", help=f"P2 on {QUICK_SLICES} central slices; P2L1 on the "
                        f"CPU: mrirecon {bench_exam3d.SHORT_ITERS} iterations; extrapolated")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where mrirecon (and SigPy-CuPy) run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool and task (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (JIT, plans, caches)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS for BART")
    parser.add_argument("--json", type=Path, help="write machine-readable results here")
    parser.add_argument("--no-peers", action="store_true", help="time mrirecon alone")
    parser.add_argument("--tasks", default="", help="P1/P2/P2L1 tasks whose name contains one of these comma-separated "
                                                    "words (e.g. 'zero,TV'; default every task)")
    args = parser.parse_args(argv)
    if args.problems is None:
        args.problems = "P1,P2,P3" + (",P2L1" if args.device == "cuda" else "")
    args.problems = [p.strip().upper() for p in args.problems.split(",") if p.strip()]
    unknown = set(args.problems) - {"P1", "P2", "P3", bench_exam3d.PROBLEM}
    if unknown or not args.problems:
        parser.error(f"--problems takes P1, P2, P3 and/or P2L1, got {sorted(unknown) or 'nothing'}")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    if args.device == "cuda" and not gpu_available():
        parser.error("--device cuda: no CUDA GPU with CuPy on this machine")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    xp = _array_module(args.device)
    bart_path = None if args.no_peers or args.device == "cuda" else bart_executable()
    skipped = []
    if not args.no_peers:
        if sigpy_module() is None:
            skipped.append("sigpy (not installed)")
        elif args.device == "cuda" and sigpy_device(True) is None:
            skipped.append("sigpy-cupy (SigPy cannot use CuPy here)")
        if args.device == "cuda":
            skipped.append("CPU peers (SigPy on NumPy, BART): --device cuda compares with SigPy on CuPy")
        elif bart_path is None:
            skipped.append("bart (not on PATH)")
    env = environment(args, bart_path)
    print(f"# {env['date_utc']}  {env['cpu']} x{env['cores']}  device={args.device}"
          + (f" ({env['gpu']})" if "gpu" in env else "")
          + f"  numpy {env['numpy']}  sigpy {env['sigpy']}  bart {env['bart']}  repeats={args.repeats}")
    for s in skipped:
        print(f"# skipped peer: {s}")

    bart = Bart(args.threads) if bart_path else None
    rows: list[Row] = []
    try:
        peers = _peers(args, bart)
        tools = [MRIRECON, *peers]
        for name in args.problems:
            if name == "P3":
                rows += p3_rows(args)
                if args.json:
                    write_json(args.json, env, skipped, rows)
                continue
            if name == "P1":
                p1 = make_p1()
                header = checksum_header(p1.kspace.header, p1.kspace.data, "benchmark-P1")
                p1 = dataclasses.replace(p1, kspace=dataclasses.replace(p1.kspace, header=header))
                tasks = p1_tasks(p1, args, peers, xp)
            elif name == bench_exam3d.PROBLEM:
                p2 = make_p2()
                header = checksum_header(KSpaceHeader(), p2.kspace, "benchmark-P2L1")
                tasks = [Task(name, **bench_exam3d.exam_task(p2, header, peers, args.device, xp, quick=args.quick,
                                                             repeats=args.repeats))]
            else:
                tasks = [p2_task(make_p2(), args, peers, xp)]
            words = [w.strip().lower() for w in args.tasks.split(",") if w.strip()]
            for task in (t for t in tasks if not words or any(w in t.name.lower() for w in words)):
                for tool in (t for t in tools if t in task.runners):  # P2L1 uses some peers only
                    rows.append(measure(task, tool, args.repeats, args.warmup))
                    synchronize(xp)
                    if args.json:
                        write_json(args.json, env, skipped, rows)
                    print(f"  ... {task.problem} {task.name} {tool}: {_fmt(rows[-1].median_s, '.3f')} s",
                          file=sys.stderr, flush=True)
    finally:
        if bart is not None:
            bart.close()

    _fill_ratios(rows)
    print_table(rows)
    return 1 if any(r.tool == MRIRECON and r.median_s is None for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
