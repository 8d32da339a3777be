"""Errors that the CLI turns into one clear line and an exit code instead of a traceback."""
from __future__ import annotations

import os


class MriReconError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class InputError(MriReconError):
    """Bad input: unreadable file, wrong shapes, NaN k-space, unknown method or parameter (exit 2).

    ``source`` names the file (or argument) and ``problem`` says what is wrong with it.
    """

    exit_code = 2

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class OutputError(MriReconError):
    """The output cannot be written (unwritable path, full disk); exit 2, nothing left looking complete."""

    exit_code = 2

    def __init__(self, target: str | os.PathLike, problem: str):
        self.target = str(target)
        self.problem = problem
        super().__init__(f"{self.target}: {problem}")
