"""Batch reconstruction: many raw files -> one Zarr store, over a Dask cluster, resumable and fault tolerant.

A ``Job`` (from the CLI, a TOML job file or a shipped preset) names the inputs, the recipe, the Pulseq
``.seq`` files of Pulseq twix inputs (``seq`` for every input, ``sequences`` by file name or glob) and
where to run. ``run_job`` is the client:

1. expands the inputs (files, folders, globs); plans every input from its header alone and creates or
   reopens its series (``reconstruct.prepare_series``) -- an unreadable input is reported and skipped;
2. asks a worker which device it will use and how much memory a unit may take there, and groups each
   input's pending slices into units that fit (``planner.plan_units``);
3. submits the units; each worker reads its slices, reconstructs them (splitting and falling back to
   the CPU on out-of-memory) and writes its own chunks (``reconstruct.run_task``);
4. records each unit done in the store as its result arrives (only the client writes metadata), retries
   failed units up to ``retries`` times, finalises each series when its last task is recorded, and logs
   every event to the JSON-lines job log beside the store.

Worker processes that die are handled by Dask (their tasks run again elsewhere). A killed client loses
only the units whose results it had not recorded: the rerun skips every task recorded done. A store
that cannot be written (disk full, permissions) stops the job with ``OutputError``.
"""
from __future__ import annotations

import fnmatch
import glob
import importlib.util
import os
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mrirecon.data import Provenance
from mrirecon.errors import InputError, MriReconError, OutputError
from mrirecon.kernels.backend import resolve_device
from mrirecon.reconstruction import bind_params

from .cluster import connect, local_size
from .joblog import JobLog, describe_error, log_path
from .planner import DEFAULT_MAX_BATCH, Unit, device_budget, plan_units, task_shape
from .reconstruct import AUTO_METHOD, TaskOutcome, check_recipe, final_provenance, prepare_series, run_task
from .store import Series, is_complete, series_name

PRESETS_DIR = Path(__file__).parent / "presets"
RAW_SUFFIXES = (".h5", ".hdf5", ".mrd", ".cfl", ".npy", ".dat")  # what a folder contributes (.dat: twix)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class Job:
    """Everything a batch run needs; the CLI options and the TOML keys have the same names.

    ``seq``: the Pulseq ``.seq`` of every input; ``sequences``: file name or glob pattern of inputs ->
    their ``.seq`` (``sequence_for``). Inputs with neither are read as they are (a twix reader still
    uses a ``.seq`` beside the raw file with the same name).
    """

    inputs: list[str]
    output: Path
    method: str = "sense"
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    retries: int = 2
    resume: bool = True
    processes: bool = True
    max_batch: int = DEFAULT_MAX_BATCH
    pacs: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)
    seq: Path | None = None
    sequences: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.inputs = [str(i) for i in self.inputs]
        if not self.inputs:
            raise InputError("inputs", "no inputs given (files, folders or glob patterns)")
        if self.method == AUTO_METHOD:  # one method per job: the planner sizes every input for it
            raise InputError("method", "a batch job needs a method (auto chooses per file for 'mrirecon recon' only)")
        if self.retries < 0 or self.max_batch < 1:
            raise InputError("job", "retries must be >= 0 and max_batch >= 1")
        if self.seq is not None and not isinstance(self.seq, (str, os.PathLike)):
            raise InputError("seq", f"must be the path of a .seq file, got {self.seq!r}")
        if not isinstance(self.sequences, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in self.sequences.items()):
            raise InputError("sequences", "must map input file names or glob patterns to .seq paths")
        paths = [k for k in self.sequences if "/" in k or os.sep in k]
        if paths:
            raise InputError("sequences", f"keys match input file names, not paths: {paths}")
        # absolute, so that workers with another working directory open the same file
        self.seq = None if self.seq is None else Path(self.seq).absolute()
        self.sequences = {k: Path(v).absolute() for k, v in self.sequences.items()}

    def sequence_for(self, path: Path) -> Path | None:
        """The ``.seq`` of input ``path``: a ``sequences`` key equal to its file name, else the first key
        (in file order) whose glob pattern matches the name, else ``seq``."""
        if path.name in self.sequences:
            return self.sequences[path.name]
        matches = (seq for pattern, seq in self.sequences.items() if fnmatch.fnmatchcase(path.name, pattern))
        return next(matches, self.seq)


def job_file_options(name: str | os.PathLike) -> dict[str, Any]:
    """Options from a TOML job file, or from the shipped preset of that name (``list_presets()``).

    Relative ``inputs``/``output``/``seq`` and ``[sequences]`` paths in a job file are taken relative to
    the file's folder.
    """
    path = Path(name)
    if not path.is_file():
        preset = PRESETS_DIR / f"{name}.toml"
        if not preset.is_file():
            raise InputError(name, f"no such job file or preset (presets: {', '.join(list_presets())})")
        path = preset
    try:
        options = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"not a readable TOML job file: {exc}") from None
    options.pop("description", None)
    known = {f.name for f in fields(Job)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(path, f"unknown job option(s) {unknown} (valid: {sorted(known)})")
    base = path.parent
    if "inputs" in options:
        options["inputs"] = [str(base / p) for p in options["inputs"]]
    if "output" in options:
        options["output"] = base / options["output"]
    if isinstance(options.get("seq"), str):
        options["seq"] = base / options["seq"]
    if isinstance(options.get("sequences"), dict):
        options["sequences"] = {k: base / v if isinstance(v, str) else v for k, v in options["sequences"].items()}
    return options


def list_presets() -> list[str]:
    """Names of the shipped presets (``pipelines/presets/*.toml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def expand_inputs(patterns: Iterable[str]) -> list[Path]:
    """Files from files, folders (recursively, raw-file suffixes only) and glob patterns, in order.

    A name that matches nothing is kept as it is, so that it is reported as a failed input.
    """
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RAW_SUFFIXES)
        elif not path.exists() and glob.has_magic(pattern):
            found += sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    return list(unique)


@dataclass
class InputState:
    """The client's view of one input while the job runs."""

    path: Path
    series: Series | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sequence: Path | None = None  # the Pulseq .seq every task opens the file with
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed_tasks: int = 0
    error: str | None = None
    bad_input: bool = False
    complete: bool = False
    provenances: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.total - self.skipped - self.done - self.failed_tasks


@dataclass
class JobSummary:
    """What a batch run did: per-task counts, per-input failures, timings."""

    tasks_done: int
    tasks_failed: int
    tasks_skipped: int
    inputs_complete: int
    failures: list[tuple[str, str]]
    slices_done: int
    wall_s: float
    compute_s: float
    series: list[str]
    bad_input: bool

    @property
    def slices_per_s(self) -> float:
        """Slices reconstructed per second of the compute phase (submission to last result)."""
        return self.slices_done / self.compute_s if self.compute_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every input completed; 2 when an input was bad; 1 for other failures."""
        if not self.failures:
            return EXIT_OK
        return EXIT_BAD_INPUT if self.bad_input else EXIT_FAILED


def _probe_device(device: str) -> tuple[str, int]:
    """Runs on a worker: the device it resolves ``device`` to and the bytes free for units there."""
    try:
        resolved = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", f"on the workers: {exc}") from None
    return resolved, device_budget(resolved)


def _slices_per_task(series: Series) -> float:
    """Image slices (z planes) in one task: 1 for slice tasks, the z extent for a volume task, its share
    of the z extent for a slab task."""
    if "slice" in series.task_dims:
        return 1
    planes = series.shape[series.dims.index("z")] if "z" in series.dims else 1
    return planes / len(series.tasks())


def run_job(job: Job, *, client: Any = None, progress: bool = False) -> JobSummary:
    """Run ``job`` on ``client`` (or on the cluster ``job`` describes); see the module docstring.

    Raises ``InputError`` for a bad recipe or device before anything is written, ``OutputError``
    when the store cannot be written (completed tasks stay recorded).
    """
    start = time.perf_counter()
    local_device = check_recipe(job.method, job.params, "cpu" if job.scheduler or job.cluster else job.device)
    log = JobLog(log_path(job.output))
    paths = expand_inputs(job.inputs)
    log.write("job_start", inputs=len(paths), method=job.method, params=job.params, device=job.device,
              resume=job.resume, retries=job.retries)
    owners: dict[str, Path] = {}
    states = []
    for path in paths:
        name = series_name(path.name, Provenance(job.method, job.params))
        if name in owners:  # two inputs with one file name would overwrite each other's series
            error = InputError(path, f"has the same file name as {owners[name]}; rename one (series {name})")
            states.append(_failed(path, error, log))
            continue
        owners[name] = path
        states.append(_prepare(path, job, log))
    if client is None:
        with connect(scheduler=job.scheduler, device=local_device, workers=job.workers,
                     threads_per_worker=job.threads_per_worker, processes=job.processes,
                     jobqueue=job.cluster or None) as own:
            return _run(job, states, own, log, start, progress)
    return _run(job, states, client, log, start, progress)


def _prepare(path: Path, job: Job, log: JobLog) -> InputState:
    """Plan one input and create/reopen its series; a bad input becomes a failed state, not an error."""
    state = InputState(path, sequence=job.sequence_for(path))
    try:
        state.series, state.info = prepare_series(path, job.output, job.method, job.params, resume=job.resume,
                                                  sequence=state.sequence)
    except OutputError:
        raise
    except MriReconError as exc:
        return _failed(path, exc, log)
    state.total = len(state.series.tasks())
    state.skipped = state.total - len(state.series.pending())
    state.complete = state.skipped == state.total and is_complete(job.output, state.series.name)
    return state


def _failed(path: Path, exc: MriReconError, log: JobLog) -> InputState:
    """The state of an input that cannot be planned (unreadable, corrupt, clashing name), logged."""
    log.write("input_failed", input=path.name, error=describe_error(exc, path))
    return InputState(path, error=str(exc), bad_input=True)


def _run(job: Job, states: list[InputState], client: Any, log: JobLog, start: float, progress: bool) -> JobSummary:
    """Submit the units of every input and record their results as they arrive."""
    from distributed import as_completed

    dashboard = getattr(client, "dashboard_link", None)
    if progress and dashboard and client.scheduler_info().get("services", {}).get("dashboard"):
        print(f"Dask dashboard: {dashboard}", file=sys.stderr)
    device, free = client.submit(_probe_device, job.device, pure=False).result()
    nthreads = client.nthreads().values()
    parallelism = max(1, sum(nthreads))
    # units running at once share the memory: all threads share RAM (assumed: one host), a worker's
    # threads share its GPU
    budget = free // (parallelism if device == "cpu" else max(nthreads, default=1))
    params = bind_params(job.method, job.params)
    meta: dict[Any, tuple[InputState, Unit, int]] = {}
    compute_start = time.perf_counter()

    # a local cluster's tasks use threads_per_worker CPU threads each (in-process workers too); the
    # workers of a remote scheduler or HPC jobs keep their own settings (NUMBA_NUM_THREADS, MRIRECON_FFT_WORKERS)
    threads = None if job.scheduler or job.cluster else local_size(job.workers, job.threads_per_worker)[1]

    def submit(state: InputState, unit: Unit, attempt: int) -> Any:
        future = client.submit(run_task, str(state.path), state.series, list(unit.indices), job.method,
                               job.params, unit.device, state.info["sha256"], state.sequence, threads, pure=False)
        meta[future] = (state, unit, attempt)
        return future

    futures = []
    for state in states:
        if state.series is None:
            continue
        if state.skipped == state.total:
            _finish_series(job, state, device, log, start)
            continue
        shape = task_shape(state.info, state.series.task_dims, state.series.task_chunks)
        for unit in plan_units(state.series.pending(), shape, job.method, device, budget=budget, params=params,
                               parallelism=parallelism, max_batch=job.max_batch):
            futures.append(submit(state, unit, 0))
    total = sum(s.pending for s in states if s.series is not None)
    results = as_completed(futures, with_results=False)
    try:
        with tqdm(total=total, unit="task", desc="batch", disable=not progress, file=sys.stderr) as bar:
            for future in results:
                state, unit, attempt = meta.pop(future)
                if future.status == "finished":
                    _record(job, state, future.result(), attempt, device, log, start)
                    bar.update(len(unit.indices))
                    continue
                exc = future.exception()
                if isinstance(exc, OutputError):
                    raise exc
                error = describe_error(exc, state.path)
                if not isinstance(exc, InputError) and attempt < job.retries:
                    log.write("task_retry", input=state.path.name, series=state.series.name,
                              tasks=list(unit.indices), attempt=attempt + 1, error=error)
                    results.add(submit(state, unit, attempt + 1))
                    continue
                state.failed_tasks += len(unit.indices)
                state.error = state.error or error
                state.bad_input = state.bad_input or isinstance(exc, InputError)
                log.write("task_failed", input=state.path.name, series=state.series.name, tasks=list(unit.indices),
                          retries=attempt, error=error)
                bar.update(len(unit.indices))
    except OutputError as exc:
        client.cancel(list(meta))
        log.write("job_aborted", error=describe_error(exc))
        raise
    summary = _summary(states, start, time.perf_counter() - compute_start)
    log.write("job_end", tasks_done=summary.tasks_done, tasks_failed=summary.tasks_failed,
              tasks_skipped=summary.tasks_skipped, inputs_failed=len(summary.failures),
              slices_per_s=round(summary.slices_per_s, 3), wall_s=round(summary.wall_s, 3))
    return summary


def _record(job: Job, state: InputState, outcome: TaskOutcome, attempt: int, device: str, log: JobLog,
            start: float) -> None:
    """Client side: mark a finished unit's tasks done, log them, finalise the series after its last task."""
    state.series.mark_done(*outcome.indices)
    state.done += len(outcome.indices)
    state.provenances.append(outcome.provenance)
    fb = outcome.fallback
    log.write("task_done", input=state.path.name, series=state.series.name, tasks=list(outcome.indices),
              devices=list(outcome.devices), worker=outcome.worker,
              timings_s={k: round(v, 4) for k, v in outcome.timings_s.items()}, retries=attempt,
              oom_errors=fb.oom_errors, splits=fb.splits, cpu_fallbacks=fb.cpu_fallbacks)
    if state.pending == 0 and state.failed_tasks == 0:
        _finish_series(job, state, device, log, start)


def _finish_series(job: Job, state: InputState, device: str, log: JobLog, start: float) -> None:
    """Finalise a series whose every task is done (unless an earlier run did) and push it to PACS then."""
    if not state.complete:
        requested = Provenance(job.method, job.params)
        state.series.finalize(final_provenance(requested, state.provenances, state.info["sha256"], device,
                                               time.perf_counter() - start))
        state.complete = True
        log.write("series_complete", input=state.path.name, series=state.series.name, tasks=state.total,
                  skipped=state.skipped)
        if job.pacs:
            push_to_pacs(job.pacs, state.series, state.path, log)


def push_to_pacs(url: str, series: Series, raw: Path, log: JobLog) -> None:
    """Send a finished series to a PACS through ``pipelines.pacs.push_series`` when that sink is installed.

    ``raw`` is the series' input (the sink takes the patient and study identity from it). Instances the
    PACS did not confirm stay in the sink's outbox (``mrirecon push`` retries them); that is logged,
    not raised: the series is complete in the store.
    """
    if importlib.util.find_spec("mrirecon.pipelines.pacs") is None:
        log.write("pacs_skipped", series=series.name, error="the PACS sink (mrirecon.pipelines.pacs) is not installed")
        return
    from . import pacs

    try:
        result = pacs.push_series(series.store, series.name, url, raw=raw)
        result.raise_for_pending()
    except Exception as exc:  # the sink's own failures must not end the batch
        log.write("pacs_failed", series=series.name, error=describe_error(exc, raw))
    else:
        log.write("pacs_pushed", series=series.name, sent=result.sent, skipped=result.skipped)


def _summary(states: Sequence[InputState], start: float, compute_s: float) -> JobSummary:
    ok = [s for s in states if s.series is not None]
    return JobSummary(
        tasks_done=sum(s.done for s in ok),
        tasks_failed=sum(s.failed_tasks for s in ok),
        tasks_skipped=sum(s.skipped for s in ok),
        inputs_complete=sum(s.complete for s in ok),
        failures=[(s.path.name, s.error) for s in states if s.error],
        slices_done=round(sum(s.done * _slices_per_task(s.series) for s in ok)),
        wall_s=time.perf_counter() - start,
        compute_s=compute_s,
        series=[s.series.name for s in ok],
        bad_input=any(s.bad_input for s in states),
    )
