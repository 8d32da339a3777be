"""Where batch tasks run: an embedded Dask cluster sized to the machine, an existing one, or HPC jobs.

- Default: ``distributed.LocalCluster`` with one single-threaded worker process per CPU core (the
  methods parallelise inside a task with Numba/SciPy threads only as far as ``threads_per_worker``
  allows, so workers do not oversubscribe the cores).
- ``device="cuda"`` with dask-cuda installed: ``dask_cuda.LocalCUDACluster``, one worker per GPU
  (each worker sees only its own GPU, so "cuda" means that GPU). Without dask-cuda: one worker
  (unless ``workers`` asks for more), all on the first GPU.
- ``scheduler="tcp://host:8786"``: join a running cluster (``dask scheduler`` + ``dask worker``,
  or one started by dask-jobqueue or Kubernetes); the cluster is not ours to close.
- ``jobqueue={"kind": "slurm", ...}``: submit workers as SLURM or PBS jobs through dask-jobqueue
  (see ``jobqueue_cluster`` and docs/batch.md).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mrirecon.errors import InputError

JOBQUEUE_KINDS = ("slurm", "pbs")
# A free port: the default 8787 clashes with any other Dask on the machine. The dashboard itself needs
# bokeh; without it the scheduler serves only its health and metrics endpoints there.
DASHBOARD_ADDRESS = ":0"


def machine_cpus() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_size(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """(workers, threads per worker) for a local CPU cluster: unset values fill the machine's cores."""
    cpus = machine_cpus()
    threads = threads_per_worker or 1
    return workers or max(1, cpus // threads), threads


def jobqueue_cluster(spec: dict[str, Any]) -> Any:
    """A dask-jobqueue cluster from a job file's ``[cluster]`` table, scaled to ``jobs`` batch jobs.

    ``kind`` is "slurm" or "pbs"; ``jobs`` (default 1) is how many batch jobs to submit; every other
    key goes to ``SLURMCluster``/``PBSCluster`` (``queue``, ``account``, ``cores``, ``processes``,
    ``memory``, ``walltime``, ``job_extra_directives``, ``job_script_prologue``, ...).
    """
    spec = dict(spec)
    kind = str(spec.pop("kind", "")).lower()
    jobs = int(spec.pop("jobs", 1))
    if kind not in JOBQUEUE_KINDS:
        raise InputError("[cluster]", f"kind must be one of {list(JOBQUEUE_KINDS)}, got {kind!r}")
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError("[cluster]", "HPC clusters need dask-jobqueue: pip install dask-jobqueue") from None
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    try:
        cluster = cls(**spec)
    except (TypeError, ValueError) as exc:
        raise InputError("[cluster]", f"bad {kind} settings: {exc}") from None
    cluster.scale(jobs=jobs)
    return cluster


@contextmanager
def connect(
    *,
    scheduler: str | None = None,
    device: str = "cpu",
    workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool = True,
    jobqueue: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """A ``distributed.Client`` for the job; clusters started here are closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise InputError("--scheduler", f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    if jobqueue:
        cluster = jobqueue_cluster(jobqueue)
    elif device.startswith("cuda") and importlib.util.find_spec("dask_cuda") is not None:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(threads_per_worker=threads_per_worker or 1, dashboard_address=DASHBOARD_ADDRESS)
    else:
        n, threads = local_size((workers or 1) if device.startswith("cuda") else workers, threads_per_worker)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=threads, processes=processes, dashboard_address=DASHBOARD_ADDRESS,
            **({"env": {"NUMBA_NUM_THREADS": str(threads), "MRIRECON_FFT_WORKERS": str(threads)}} if processes else {}),
        )
    with cluster, Client(cluster) as client:
        yield client
