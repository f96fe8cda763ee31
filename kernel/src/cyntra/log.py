"""Structured logging (structlog, JSON lines). Timestamps come from the kernel clock.

Events go to ``<workspace>/.cyntra/logs/kernel.jsonl``; ``decision_id``/``issue_id`` are bound
from contextvars by the code that makes the decision, so every event of a dispatch carries them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from cyntra.clock import now_iso

_sink: TextIO | None = None
_sink_path: Path | None = None


def _add_clock_timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.setdefault("timestamp", now_iso())
    return event_dict


def configure(log_path: Path | None) -> None:
    """Send JSON events to ``log_path`` (None: discard). Safe to call more than once."""
    global _sink, _sink_path
    if _sink is not None and _sink_path != log_path:
        _sink.close()
        _sink = None
    if log_path is not None and _sink is None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _sink = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
        _sink_path = log_path
    factory: Any = (
        structlog.WriteLoggerFactory(file=_sink) if _sink is not None else structlog.ReturnLoggerFactory()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_clock_timestamp,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "cyntra") -> Any:
    return structlog.get_logger(name)
