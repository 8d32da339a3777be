#!/usr/bin/env python
"""Batch throughput: slices per second for 1 and 2 CPU workers (and 1 GPU when there is one), and the
per-task scheduler overhead that limits how small tasks may be on a large cluster (a script, not a test).

    .venv/bin/python scripts/bench_batch.py                           # sense, 16 slices 128x128x8, 1 and 2 workers
    .venv/bin/python scripts/bench_batch.py --method zerofill --slices 64 --json out.json
    .venv/bin/python scripts/bench_batch.py --gpu                     # adds the 1-GPU row (needs CuPy)

Each configuration starts its cluster first and runs one untimed warm-up job (worker start-up, imports,
JIT compilation), then times ``run_job`` with ``resume=False`` (every task recomputed). Reported:
- slices/s = slices / (submission to last result), the batch runner's own figure;
- slice s = in-task time (read + reconstruct + write, from the job log) per slice;
- overhead/task = (workers x compute time - in-task time) / tasks: what each Dask task (a unit of up
  to ``--max-batch`` slices) costs beyond its own work (scheduling, transfer of the result, the client
  recording its slices in the store and the log);
- the bare Dask overhead: ``--noop`` empty tasks through ``client.map`` on one worker, per task.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster

from mrirecon.cli import phantom_kspace, write_phantom
from mrirecon.kernels.backend import gpu_available
from mrirecon.pipelines.batch import Job, run_job
from mrirecon.pipelines.cluster import DASHBOARD_ADDRESS
from mrirecon.pipelines.joblog import log_path, read_log


def _noop(i: int) -> int:
    return i


def bare_overhead_s(client: Client, n: int) -> float:
    """Seconds per empty task submitted with ``client.map`` and gathered (one worker thread busy)."""
    client.gather(client.map(_noop, range(50), pure=False))  # warm the path
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return (time.perf_counter() - t0) / n


def timed_job(client: Client, job: Job, workers: int) -> dict[str, Any]:
    """Run ``job`` once untimed, once timed; figures from the summary and the job log of the timed run."""
    run_job(job, client=client)
    summary = run_job(Job(**{**job.__dict__, "resume": False}), client=client)
    events = [e for e in read_log(log_path(job.output)) if e["event"] == "task_done"]
    last_run = events[-1]["run"]
    tasks = [e for e in events if e["run"] == last_run]
    in_task_s = sum(sum(e["timings_s"].values()) for e in tasks)
    return {
        "workers": workers,
        "device": tasks[0]["devices"][0],
        "tasks": len(tasks),
        "slices": summary.slices_done,
        "compute_s": summary.compute_s,
        "slices_per_s": summary.slices_per_s,
        "slice_s": in_task_s / summary.slices_done,
        "overhead_per_task_s": (workers * summary.compute_s - in_task_s) / len(tasks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sense")
    parser.add_argument("--param", action="append", default=["max_iter=30"], help="method parameter k=v")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="CPU worker counts to time")
    parser.add_argument("--max-batch", type=int, default=1, help="slices per task (1: one task per slice)")
    parser.add_argument("--noop", type=int, default=2000, help="empty tasks for the bare Dask overhead")
    parser.add_argument("--gpu", action="store_true", help="also time 1 GPU worker (needs CuPy and a GPU)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    params = {}
    for kv in args.param if args.method == "sense" else []:
        k, v = kv.split("=")
        params[k] = int(v) if v.isdigit() else float(v)

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    raw = work / "scan.h5"
    write_phantom(raw, phantom_kspace(matrix=args.matrix, slices=args.slices, coils=args.coils, accel=2,
                                      calib=24, noise=1e-3), "ismrmrd")
    configs: list[tuple[int, str]] = [(int(w), "cpu") for w in args.workers.split(",")]
    if args.gpu:
        if not gpu_available():
            print("no GPU with CuPy here: the 1-GPU row is skipped", file=sys.stderr)
        else:
            configs.append((1, "cuda"))
    rows = []
    bare = None
    for workers, device in configs:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=DASHBOARD_ADDRESS,
                          env={"NUMBA_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
            job = Job(inputs=[str(raw)], output=work / f"out_{device}_{workers}.zarr", method=args.method,
                      params=params, device=device, max_batch=args.max_batch)
            rows.append(timed_job(client, job, workers))
            if bare is None and workers == 1:
                bare = bare_overhead_s(client, args.noop)
        r = rows[-1]
        print(f"{r['workers']} {r['device']} worker(s): {r['slices_per_s']:.2f} slices/s ({r['slices']} slices in "
              f"{r['tasks']} tasks, {r['compute_s']:.2f} s), {r['slice_s'] * 1e3:.1f} ms per slice in the task, "
              f"overhead {r['overhead_per_task_s'] * 1e3:.1f} ms per task", flush=True)
    if bare is not None:
        print(f"bare Dask overhead: {bare * 1e3:.2f} ms per empty task ({args.noop} tasks, 1 worker)")
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "problem": {"method": args.method, "params": params, "slices": args.slices, "matrix": args.matrix,
                    "coils": args.coils, "max_batch": args.max_batch},
        "rows": rows,
        "bare_dask_overhead_s": bare,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
