"""Atomic file output: write to a temporary name in the target folder, then rename.

A crash, a full disk or an exception never leaves a half-written file under the final name, and a
reader never sees one: ``os.replace`` within one folder is atomic on POSIX file systems.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.h5``) so that writers that choose a
    format by extension still do. Any ``OSError`` becomes ``OutputError(path, "cannot write WHAT: ...")``;
    the temporary file is removed on every failure.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(path, f"cannot write {what}: cannot create a file in {path.parent} (no such folder)")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(path, f"cannot write {what}: cannot create a file in {path.parent} (permission denied)")
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(path, f"cannot write {what}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


__all__ = ["atomic_path"]
