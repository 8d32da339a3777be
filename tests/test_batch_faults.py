"""Batch faults that need real processes: a worker process killed mid-job, the batch process SIGKILLed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from mrirecon.cli import main, phantom_kspace, write_phantom
from mrirecon.io import read
from mrirecon.pipelines import batch
from mrirecon.pipelines.joblog import log_path, read_log
from mrirecon.pipelines.store import is_complete, list_series, open_series
from mrirecon.reconstruction import recon

distributed = pytest.importorskip("distributed")
SLICES = 10
DELAY_S = 0.25  # per reconstruction, so that the job is still running when the fault strikes

# Runs the CLI with every reconstruction slowed down (the batch process stands in for a long job).
SLOW_CLI = f"""
import sys, time
from mrirecon.pipelines import reconstruct
real = reconstruct.recon
def slow(*args, **kwargs):
    time.sleep({DELAY_S})
    return real(*args, **kwargs)
reconstruct.recon = slow
from mrirecon.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "scan.h5"
    write_phantom(path, phantom_kspace(matrix=32, slices=SLICES, coils=4, accel=2, calib=8, noise=1e-3), "ismrmrd")
    return path


def _task_done_count(store: Path) -> int:
    log = log_path(store)
    return sum(e["event"] == "task_done" for e in read_log(log)) if log.exists() else 0


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the job did not get far enough")
        time.sleep(0.02)


@pytest.mark.slow  # ~8 s: two worker processes start and import the package
def test_worker_process_killed_mid_job(raw, tmp_path):
    job = batch.Job(inputs=[str(raw)], output=tmp_path / "multi.zarr", method="zerofill", max_batch=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:

        def slow_down() -> None:  # runs inside each worker process
            from mrirecon.pipelines import reconstruct

            real = reconstruct.recon

            def slow(*args, **kwargs):
                time.sleep(DELAY_S)
                return real(*args, **kwargs)

            reconstruct.recon = slow

        client.run(slow_down)
        victim = next(iter(client.run(os.getpid).values()))
        killed = threading.Event()
        at_kill: list[int] = []

        def kill_after_first_result() -> None:
            _wait_for(lambda: _task_done_count(job.output) >= 1)
            os.kill(victim, signal.SIGKILL)
            at_kill.append(_task_done_count(job.output))
            killed.set()

        killer = threading.Thread(target=kill_after_first_result, daemon=True)
        killer.start()
        summary = batch.run_job(job, client=client)
        killer.join(timeout=10)
    assert killed.is_set() and at_kill[0] < SLICES  # the worker died while the job still had tasks to do
    assert summary.exit_code == 0 and summary.tasks_done == SLICES
    workers = [e["worker"] for e in read_log(log_path(job.output)) if e["event"] == "task_done"]
    victim_done = workers.count(f"{os.uname().nodename}:{victim}")
    assert victim_done <= at_kill[0] and len(set(workers)) >= 2  # nothing came back from the dead worker
    single = batch.Job(inputs=[str(raw)], output=tmp_path / "single.zarr", method="zerofill", max_batch=SLICES)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        batch.run_job(single, client=client)
    (name,) = list_series(job.output)
    assert is_complete(job.output, name)
    for array in ("0", "complex"):
        a = zarr.open_group(job.output, mode="r")[name][array][...]
        b = zarr.open_group(single.output, mode="r")[name][array][...]
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.slow  # ~6 s: a CLI subprocess, killed, then a rerun
def test_batch_process_sigkilled_then_rerun_redoes_only_unrecorded_tasks(raw, tmp_path, capsys):
    store = tmp_path / "out.zarr"
    argv = ["batch", str(raw), "-o", str(store), "--method", "zerofill", "--in-process", "--workers", "1",
            "--max-batch", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _task_done_count(store) >= 2 or proc.poll() is not None)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (name,) = list_series(store)
    assert not is_complete(store, name)
    done = zarr.open_group(store, mode="r")[name]["done"][...]
    recorded = int(done.sum())
    assert 2 <= recorded < SLICES
    run_id = read_log(log_path(store))[-1]["run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ran, skipped = map(int, re.search(r"(\d+) task\(s\) done, 0 failed, (\d+) skipped", out).groups())
    assert (ran, skipped) == (SLICES - recorded, recorded)
    rerun = [e for e in read_log(log_path(store)) if e["event"] == "task_done" and e["run"] != run_id]
    assert sorted(t[0] for e in rerun for t in e["tasks"]) == np.flatnonzero(~done).tolist()
    reference = recon(read(raw), "zerofill", device="cpu")
    np.testing.assert_array_equal(open_series(store, name).data, reference.data)
