"""Atomic, locked file writes: a crash mid-write or a second kernel process never corrupts a file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_durable = True


def set_durable(durable: bool) -> bool:
    """Turn fsync on/off (returns the previous setting). Writes stay atomic either way (rename);
    only a simulated history (which can be replayed from its seed) turns fsync off for speed."""
    global _durable
    previous, _durable = _durable, durable
    return previous


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via temp file in the same directory + fsync + rename (+ fsync of the directory)."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except FileNotFoundError:  # create parents only when missing (mkdir is a syscall per write)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if _durable:
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not _durable:
        return
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Stable JSON: sorted keys, UTF-8 kept, trailing newline (byte-identical across runs)."""
    return json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write JSON atomically: indented for people in real runs; compact (the C encoder, ~10x
    faster) while a simulated history runs with durability off and writes tens of thousands."""
    atomic_write_text(path, dumps_json(obj, indent=indent if _durable else None))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>`` (a dedicated ``.lock`` file), across processes."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_line(path: str | Path, line: str) -> None:
    """Append one line: a single write() under an flock on the file itself (+ fsync when durable)."""
    p = Path(path)
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        if _durable:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON object as a line (see :func:`append_line`)."""
    append_line(path, json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str))
