"""Atomic, durable JSON and text files: the one writer every package uses for files others read concurrently.

`write_json_atomic(path, obj)` writes a temporary file in the same folder, flushes and fsyncs it, renames it over
`path` (`os.replace`, atomic on POSIX) and fsyncs the folder, so a reader sees the old file or the new one, and a
crash or power cut leaves one of the two, never a torn mix. `read_json(path)` raises `TornFileError` (a
`ConfigError`, naming the file) when a file is not valid JSON, so callers that can rebuild it catch one exception.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from scaling.errors import ConfigError

_MISSING = object()


class TornFileError(ConfigError):
    """A JSON file that exists but cannot be parsed (cut off by a crash, or edited by hand)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        super().__init__(str(path), "a complete JSON file", f"unreadable: {reason}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` atomically and durably (temp file + fsync + rename + fsync of the folder)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: object, *, indent: int | None = 1) -> None:
    """Write `obj` as JSON (one trailing newline) with `write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: str | os.PathLike, default: object = _MISSING) -> object:
    """The parsed JSON of `path`; `default` when it is missing (FileNotFoundError if no default is given).

    Raises TornFileError when the file exists but is not valid JSON (or not UTF-8).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    except UnicodeDecodeError as e:
        raise TornFileError(path, f"not UTF-8 ({e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TornFileError(path, f"{e.msg} at line {e.lineno} column {e.colno}") from None


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. some network mounts)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
