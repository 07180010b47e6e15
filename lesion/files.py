"""Output files: written atomically (a reader never sees a half-written file), to paths checked
before any work (nothing in the way is a file)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lesion.errors import LesionError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling of ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_safe(value):
    """NaN → ``None`` (valid JSON ``null``), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> Path:
    """Atomically write ``data`` as indented JSON, with undefined (NaN) figures as ``null``."""
    return write_atomic(path, json.dumps(_json_safe(data), indent=2) + "\n")


def _refuse_a_file_above(where: str, path: Path, wanted: str) -> None:
    """Refuse ``path`` if the nearest path above it that exists is not a folder (nothing can be made in it)."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise LesionError(where, f"{path} is inside {parent}, which is a file, not a folder",
                                  f"pass {where}=<{wanted} outside it>")
            return


def output_folder(where: str, path: str | Path) -> Path:
    """``path`` as a folder to write into (made if missing), refused before any work if it or a path
    above it is a file."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise LesionError(where, f"{path} is a file, not a folder", f"pass {where}=<a new or existing folder>")
    _refuse_a_file_above(where, path, "a folder")
    return path


def output_file(where: str, path: str | Path, example: str) -> Path:
    """``path`` as a file to write (replaced if it exists), refused before any work if it is a folder
    or a path above it is a file; ``example``: a file name to suggest for a folder."""
    path = Path(path)
    if path.is_dir():
        raise LesionError(where, f"{path} is a folder", f"pass a file name, e.g. {where}={path / example}")
    _refuse_a_file_above(where, path, "a file")
    return path
