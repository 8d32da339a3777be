"""The job log: one JSON object per line beside the store (``OUT.zarr.log.jsonl``), appended per run.

Events: ``job_start``, ``input_failed``, ``task_done``, ``task_retry``, ``task_failed``,
``series_complete``, ``job_end`` (and ``job_aborted``). Every line carries the time, the run id and
the event; task lines name the input by file name only (a folder path can carry patient names),
the series, the task indices, the device(s), the worker, timings, retries, OOM splits and errors.
Nothing from the patient part of a header is ever passed in. Lines are flushed one by one so that
a killed run leaves a log up to its last event; a log that cannot be written (disk full) only warns:
the store, not the log, is the record of what is done.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

MAX_ERROR_CHARS = 500


def log_path(store: str | os.PathLike) -> Path:
    """Where the job log of ``store`` lives: ``<store>.log.jsonl`` next to it."""
    store = Path(store)
    return store.with_name(store.name + ".log.jsonl")


def describe_error(exc: BaseException, path: Path | None = None) -> str:
    """One-line ``Type: message`` of an exception, cut to ``MAX_ERROR_CHARS``; ``path`` shown by name only."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if path is not None:
        text = text.replace(str(path), path.name)
    return text[:MAX_ERROR_CHARS]


class JobLog:
    """Append-only JSON-lines writer for one run of a job."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.run_id = uuid.uuid4().hex[:12]
        self._warned = False

    def write(self, event: str, **fields: Any) -> None:
        """Append one event; an ``OSError`` (full disk, read-only folder) prints one warning instead."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": self.run_id, "event": event, **fields}
        line = json.dumps(record, default=str, sort_keys=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            if not self._warned:
                print(f"mrirecon: warning: cannot write job log {self.path}: {exc.strerror or exc}", file=sys.stderr)
                self._warned = True


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All events of a job log, oldest first (a torn last line from a killed run is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
