"""Workcells: isolated working copies (git worktrees or plain directories) for candidate runs."""

from cyntra.workcell.ids import MAX_ID_LENGTH, sanitize_issue_id, workcell_id
from cyntra.workcell.manager import (
    ARTIFACT_FILES,
    MARKER_NAME,
    RESERVED_NAMES,
    Archived,
    FileChange,
    MergeConflictError,
    Workcell,
    WorkcellError,
    WorkcellManager,
)

__all__ = [
    "ARTIFACT_FILES",
    "MARKER_NAME",
    "MAX_ID_LENGTH",
    "RESERVED_NAMES",
    "Archived",
    "FileChange",
    "MergeConflictError",
    "Workcell",
    "WorkcellError",
    "WorkcellManager",
    "sanitize_issue_id",
    "workcell_id",
]
