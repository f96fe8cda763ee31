"""Issue ids and workcell ids that are safe to use as directory names and git branch names.

An issue id comes from ``.beads/issues.jsonl`` (user data). It ends up in a path
(``.cyntra/workcells/<workcell_id>``) and in a branch name, so it is checked before it touches
either: an id like ``../../x`` must never escape the workspace.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cyntra.errors import InputError

MAX_ID_LENGTH = 64
_ALLOWED = re.compile(r"[A-Za-z0-9._-]+")


def sanitize_issue_id(issue_id: str, *, field: str = "issue_id") -> str:
    """Return ``issue_id`` unchanged if it is a safe path/branch component, else raise InputError.

    Allowed: ``[A-Za-z0-9._-]``, at most 64 characters, not starting with ``-`` or ``.``, and
    nothing git refuses in a branch name (``..``, a trailing ``.`` or ``.lock``).
    """
    if not isinstance(issue_id, str):
        raise InputError(None, f"must be a string, got {type(issue_id).__name__}", field=field)
    shown = repr(issue_id)
    if issue_id == "":
        raise InputError(None, "must not be empty", field=field)
    if issue_id in (".", ".."):
        raise InputError(None, f"{shown} is a path component, not an id", field=field)
    for bad, what in (("/", "a '/'"), ("\\", "a '\\'"), ("\x00", "a NUL byte")):
        if bad in issue_id:
            raise InputError(None, f"{shown} contains {what} (path traversal is refused)", field=field)
    if len(issue_id) > MAX_ID_LENGTH:
        raise InputError(
            None, f"{shown} is {len(issue_id)} characters long (max {MAX_ID_LENGTH})", field=field
        )
    if not _ALLOWED.fullmatch(issue_id):
        bad_chars = sorted({c for c in issue_id if not _ALLOWED.fullmatch(c)})
        raise InputError(
            None,
            f"{shown} contains characters outside [A-Za-z0-9._-]: {''.join(bad_chars)!r}",
            field=field,
        )
    if issue_id[0] in "-.":
        raise InputError(None, f"{shown} must not start with {issue_id[0]!r}", field=field)
    if ".." in issue_id or issue_id.endswith(".") or issue_id.endswith(".lock"):
        raise InputError(
            None, f"{shown} is not usable as a git branch name ('..', trailing '.' or '.lock')",
            field=field,
        )
    return issue_id


def format_timestamp(ts: datetime) -> str:
    """``YYYYmmddTHHMMSSffffff`` in UTC (naive datetimes are taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")


def workcell_id(issue_id: str, ts: datetime, tag: str | None = None) -> str:
    """``wc-<issue>-<YYYYmmddTHHMMSSffffff>[-tag]``; both the issue id and the tag are sanitised."""
    safe_issue = sanitize_issue_id(issue_id)
    wc = f"wc-{safe_issue}-{format_timestamp(ts)}"
    if tag is not None and tag != "":
        wc = f"{wc}-{sanitize_issue_id(tag, field='tag')}"
    return wc
