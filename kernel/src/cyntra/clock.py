"""One clock for every timestamp the kernel writes.

Real runs use :class:`SystemClock`. The simulator installs a :class:`VirtualClock` so months of
history run in seconds; nothing else in the kernel calls ``datetime.now`` directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that only moves when told to (monotonic: it never goes backwards)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            if delta > timedelta(0):
                self._now = self._now + delta
            return self._now

    def advance_to(self, when: datetime) -> datetime:
        with self._lock:
            if when > self._now:
                self._now = when
            return self._now


_clock: Clock = SystemClock()
# A task-local clock: each simulated dispatch runs on its own virtual timeline (asyncio tasks copy
# the context), so concurrent runs in virtual time each stamp their own artifacts correctly.
_local: contextvars.ContextVar[Clock | None] = contextvars.ContextVar("cyntra_task_clock", default=None)


def get_clock() -> Clock:
    local = _local.get()
    return local if local is not None else _clock


@contextlib.contextmanager
def task_clock(clock: Clock) -> Iterator[Clock]:
    """Use ``clock`` for this task/context only (the global clock is untouched)."""
    token = _local.set(clock)
    try:
        yield clock
    finally:
        _local.reset(token)


def set_clock(clock: Clock) -> None:
    global _clock
    _clock = clock


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the duration of a block (the sim and tests use this)."""
    previous = _clock
    set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def now() -> datetime:
    return get_clock().now()


def is_virtual() -> bool:
    return isinstance(get_clock(), VirtualClock)


def isoformat_z(ts: datetime) -> str:
    """Upstream's timestamp format: ISO-8601, microseconds, ``Z`` suffix."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    elif ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if ts.year >= 1000:  # isoformat is ~3x faster than strftime; the same text from year 1000 on
        return ts.isoformat(timespec="microseconds")[:-6] + "Z"
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return isoformat_z(now())


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` or offset); naive values are taken as UTC."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts
