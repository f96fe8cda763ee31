"""The kernel event log: ``<workspace>/.cyntra/logs/events.jsonl``, one JSON event per line.

Appends are single locked writes (:func:`cyntra.fsutil.append_jsonl`), so concurrent kernel
processes interleave whole lines. Timestamps come from :mod:`cyntra.clock`, so the simulator's
virtual time shows up here too. Reading never fails on a bad line: it is skipped and reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cyntra import clock
from cyntra.fsutil import append_jsonl
from cyntra.state.store import ParseProblem

_log = structlog.get_logger(__name__)


class Event(BaseModel):
    """One line: ``type``, ``timestamp``, optional ids, and a free-form ``data`` object."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)
    timestamp: datetime
    issue_id: str | None = None
    workcell_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventLog:
    """Append-only kernel events for one workspace."""

    def __init__(self, workspace: str | Path) -> None:
        self.workspace = Path(workspace)
        self.path = self.workspace / ".cyntra" / "logs" / "events.jsonl"

    def emit(
        self,
        event_type: str,
        *,
        issue_id: str | None = None,
        workcell_id: str | None = None,
        **data: Any,
    ) -> dict[str, Any]:
        """Append one event (timestamp = clock now) and return the row written."""
        if not event_type:
            raise ValueError("event type must not be empty")
        row: dict[str, Any] = {"type": event_type, "timestamp": clock.now_iso()}
        if issue_id is not None:
            row["issue_id"] = issue_id
        if workcell_id is not None:
            row["workcell_id"] = workcell_id
        row["data"] = data
        append_jsonl(self.path, row)
        return row

    def read(self, problems: list[ParseProblem] | None = None) -> Iterator[Event]:
        """Events in file order. Bad lines are skipped and appended to ``problems`` (or logged
        as a warning when no list is given)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        spath = str(self.path)

        def report(problem: ParseProblem) -> None:
            if problems is not None:
                problems.append(problem)
            else:
                _log.warning("bad_event_line", problem=str(problem))

        for index, raw in enumerate(data.split(b"\n")):
            lineno = index + 1
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                report(ParseProblem(spath, lineno, "<json>", f"invalid JSON: {exc}"))
                continue
            try:
                yield Event.model_validate(obj)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"]) or "<row>"
                    report(ParseProblem(spath, lineno, loc, err["msg"]))
