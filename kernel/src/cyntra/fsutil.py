"""Atomic, locked file writes: a crash mid-write or a second kernel process never corrupts a file."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_durable = True


def set_durable(durable: bool) -> bool:
    """Turn fsync on/off (returns the previous setting). Writes stay atomic either way (rename);
    only a simulated history (which can be replayed from its seed) turns fsync off for speed."""
    global _durable
    previous, _durable = _durable, durable
    return previous


_tmp_serial = itertools.count()
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _open_temp(parent: str, name: str) -> tuple[int, str]:
    """An exclusive new temp file next to the target, named by pid and a per-process serial
    (cheaper than ``tempfile.mkstemp``'s random names; a leftover from a dead process with the
    same pid is skipped, never overwritten)."""
    while True:
        tmp = os.path.join(parent, f".{name}.{os.getpid()}.{next(_tmp_serial)}.tmp")
        try:
            return os.open(tmp, _TMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write via temp file in the same directory + fsync + rename (+ fsync of the directory)."""
    target = os.fspath(path)
    parent, name = os.path.split(target)
    parent = parent or "."
    try:
        fd, tmp = _open_temp(parent, name)
    except FileNotFoundError:  # create parents only when missing (mkdir is a syscall per write)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = _open_temp(parent, name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if _durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not _durable:
        return
    dir_fd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Stable JSON: sorted keys, UTF-8 kept, trailing newline (byte-identical across runs)."""
    return json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, default=str) + "\n"


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_compact(obj: Any) -> str:
    """One line of JSON, sorted keys, no spaces: orjson (several times faster than json's C
    encoder), with json's conventions where the two differ -- values json does not know go
    through ``str`` (datetimes and dataclasses included); what orjson refuses (integers over
    64 bits, non-string keys, lone surrogates) is written by json. Floats are written in their
    shortest round-trip form by both, though not always with the same digits' spelling
    (``1e-07`` vs ``1e-7``); NaN and infinities become ``null`` (json would write invalid JSON)."""
    try:
        return orjson.dumps(obj, default=str, option=_ORJSON_OPTIONS).decode("utf-8")
    except TypeError:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def dumps_file(obj: Any, *, indent: int | None = 2) -> str:
    """A JSON file's text: indented for people in real runs, compact (:func:`dumps_compact`)
    while a simulated history runs with durability off and writes tens of thousands."""
    return dumps_json(obj, indent=indent) if _durable else dumps_compact(obj) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write JSON atomically (see :func:`dumps_file` for its form)."""
    atomic_write_text(path, dumps_file(obj, indent=indent))


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


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line: a single write() under an flock on the file itself (+ fsync when durable)."""
    target = os.fspath(path)
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    try:
        fd = os.open(target, _APPEND_FLAGS, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        fd = os.open(target, _APPEND_FLAGS, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        if _durable:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def append_jsonl(path: str | os.PathLike[str], obj: Any) -> None:
    """Append one JSON object as a line (see :func:`append_line` and :func:`dumps_compact`)."""
    append_line(path, dumps_compact(obj))
