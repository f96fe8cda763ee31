"""``telemetry.jsonl``: one JSON object per line for everything that happens during a candidate run.

Each event is ``{type, timestamp, issue_id, workcell_id, toolchain, data}``; the timestamp comes
from :mod:`cyntra.clock` so simulated runs carry virtual time. Lines are appended under a lock
with a single write, so concurrent writers never interleave half-lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from cyntra import clock
from cyntra.fsutil import append_jsonl

TELEMETRY_FILE: Final = "telemetry.jsonl"

# Event types the adapters emit; others (e.g. "tool_call", "gate") may be written by the kernel.
STARTED: Final = "started"
COMPLETED: Final = "completed"
TIMEOUT: Final = "timeout"
ERROR: Final = "error"
TOOL_CALL: Final = "tool_call"
EVENT_TYPES: Final = (STARTED, COMPLETED, TIMEOUT, ERROR, TOOL_CALL)


class TelemetryWriter:
    """Appends telemetry events for one workcell to ``path`` (usually ``<workcell>/telemetry.jsonl``)."""

    def __init__(
        self,
        path: Path,
        *,
        issue_id: str | None = None,
        workcell_id: str | None = None,
        toolchain: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.issue_id = issue_id
        self.workcell_id = workcell_id
        self.toolchain = toolchain

    def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        issue_id: str | None = None,
        workcell_id: str | None = None,
        toolchain: str | None = None,
    ) -> dict[str, Any]:
        """Write one event; ids default to the writer's. Returns the event as written."""
        event: dict[str, Any] = {
            "type": event_type,
            "timestamp": clock.now_iso(),
            "issue_id": issue_id if issue_id is not None else self.issue_id,
            "workcell_id": workcell_id if workcell_id is not None else self.workcell_id,
            "toolchain": toolchain if toolchain is not None else self.toolchain,
            "data": dict(data or {}),
        }
        append_jsonl(self.path, event)
        return event
