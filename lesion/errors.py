"""The one error type for bad user input, and how entry points report it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

_WORKER_MARK = "LesionError: "


class LesionError(Exception):
    """Bad input a person can fix: names the file or field, the problem and what to do.

    Entry points print it as one line ``lesion: error: …`` and exit with status 2.

    Args:
        where: the file, folder or config field at fault.
        problem: what is wrong with it.
        fix: what the user should do.
    """

    def __init__(self, where: str | Path, problem: str | None = None, fix: str | None = None):
        self.where, self.problem, self.fix = where, problem, fix
        if problem is None:
            # Rebuilt from a message alone: unpickling, or a DataLoader worker re-raising it with
            # the worker's traceback prepended; keep only the original line.
            message = str(where).rstrip().splitlines()[-1]
            message = message.split(_WORKER_MARK, 1)[-1]
        else:
            message = f"{where}: {problem} — {fix}" if fix else f"{where}: {problem}"
        super().__init__(message)


class EchoedError(LesionError):
    """The failure another DDP rank reports, re-raised on this rank so it stops too: it exits with
    status 2 without printing the line again."""


def exit_with(error: LesionError) -> NoReturn:
    """Print ``error`` as one ``lesion: error:`` line on stderr (in one write, so ranks sharing stderr cannot
    interleave it; an :class:`EchoedError` is left to the rank that reports it) and exit with status 2."""
    if not isinstance(error, EchoedError):
        sys.stderr.write(f"lesion: error: {error}\n")
        sys.stderr.flush()
    raise SystemExit(2)
