"""The Issue model reads real (messy) beads rows the way upstream means them, and names bad fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cyntra.state.issue import Issue, parse_bool, parse_int


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize("name", ["issues.jsonl", "issues.early.jsonl"])
def test_upstream_rows_all_validate(upstream_dir: Path, name: str) -> None:
    rows = _rows(upstream_dir / ".beads" / name)
    assert rows
    issues = [Issue.model_validate(row) for row in rows]
    assert [i.id for i in issues] == [str(r["id"]) for r in rows]
    for issue, row in zip(issues, rows, strict=True):
        if "dk_attempts" in row:  # stored as strings upstream
            assert issue.dk_attempts == int(row["dk_attempts"])
        assert issue.created is not None and issue.created.tzinfo is not None


def test_upstream_escalation_rows_default_risk_and_size(upstream_dir: Path) -> None:
    rows = _rows(upstream_dir / ".beads" / "issues.jsonl")
    escalations = [r for r in rows if str(r["title"]).startswith("[ESCALATION]")]
    assert escalations
    for row in escalations:
        assert "dk_risk" not in row and "dk_size" not in row
        issue = Issue.model_validate(row)
        assert (issue.dk_risk, issue.dk_size) == ("medium", "M")
        assert issue.has_tag("escalation") and issue.has_tag("needs-human")
        assert issue.dk_parent is not None


def test_plain_aliases_fill_dk_fields() -> None:
    issue = Issue.model_validate(
        {"id": "1", "priority": "p0", "risk": "LOW", "size": "xs", "tool_hint": "claude"}
    )
    assert (issue.dk_priority, issue.dk_risk, issue.dk_size, issue.dk_tool_hint) == (
        "P0",
        "low",
        "XS",
        "claude",
    )
    assert "priority" not in issue.extra_fields


def test_alias_does_not_override_explicit_dk_field() -> None:
    issue = Issue.model_validate({"id": "1", "priority": "P0", "dk_priority": "P3"})
    assert issue.dk_priority == "P3"
    # a null dk_* value falls back to the alias
    assert Issue.model_validate({"id": "1", "risk": "high", "dk_risk": None}).dk_risk == "high"


def test_numbers_stored_as_strings() -> None:
    issue = Issue.model_validate(
        {
            "id": 7,
            "dk_attempts": "3",
            "dk_max_attempts": " 5 ",
            "dk_estimated_tokens": "1200.0",
            "dk_priority": 1,
        }
    )
    assert issue.id == "7"
    assert (issue.dk_attempts, issue.dk_max_attempts, issue.dk_estimated_tokens) == (3, 5, 1200)
    assert issue.dk_priority == "P1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (True, True),
        (0, False),
    ],
)
def test_boolean_strings_parse_properly(raw: Any, expected: bool) -> None:
    issue = Issue.model_validate({"id": "1", "dk_speculate": raw, "dk_apply_patch": raw})
    assert issue.dk_speculate is expected
    assert issue.dk_apply_patch is expected


def test_nulls_become_defaults() -> None:
    issue = Issue.model_validate(
        {
            "id": "1",
            "title": None,
            "dk_estimated_tokens": None,
            "tags": None,
            "dk_attempts": None,
            "dk_speculate": None,
            "dk_risk": None,
        }
    )
    assert issue.dk_estimated_tokens == 50000
    assert issue.title == "" and issue.tags == [] and issue.dk_attempts == 0
    assert issue.dk_speculate is False and issue.dk_risk == "medium"


def test_timestamps_are_utc_aware() -> None:
    issue = Issue.model_validate(
        {"id": "1", "created": "2025-12-18T20:00:11.922264Z", "updated": "2025-12-18T20:00:11"}
    )
    assert issue.created == datetime(2025, 12, 18, 20, 0, 11, 922264, tzinfo=UTC)
    assert issue.updated == datetime(2025, 12, 18, 20, 0, 11, tzinfo=UTC)


def test_unknown_fields_are_kept() -> None:
    issue = Issue.model_validate({"id": "1", "owner": "ana", "nested": {"a": [1, 2]}})
    assert issue.extra_fields == {"owner": "ana", "nested": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "1", "dk_risk": "banana"}, "dk_risk"),
        ({"id": "1", "dk_attempts": "abc"}, "dk_attempts"),
        ({"id": "1", "dk_attempts": -1}, "dk_attempts"),
        ({"id": "1", "dk_max_attempts": 0}, "dk_max_attempts"),
        ({"id": "1", "dk_speculate": "maybe"}, "dk_speculate"),
        ({"id": "1", "dk_size": "XXL"}, "dk_size"),
        ({"id": "1", "status": "weird"}, "status"),
        ({"id": "1", "tags": [1, 2]}, "tags"),
        ({"id": "1", "created": "yesterday"}, "created"),
        ({"id": "  "}, "id"),
        ({"title": "no id"}, "id"),
        ({"id": True}, "id"),
    ],
)
def test_unusable_values_name_the_field(row: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Issue.model_validate(row)
    assert field in {str(e["loc"][0]) for e in info.value.errors() if e["loc"]}


def test_assignment_is_validated() -> None:
    issue = Issue.model_validate({"id": "1"})
    issue.dk_attempts = "4"  # type: ignore[assignment]
    assert issue.dk_attempts == 4
    with pytest.raises(ValidationError):
        issue.dk_risk = "banana"  # type: ignore[assignment]


def test_derived_views() -> None:
    issue = Issue.model_validate({"id": "1", "dk_size": "L", "dk_risk": "critical", "priority": 0})
    assert (issue.size_hours, issue.risk_rank, issue.priority_rank) == (8, 3, 0)


def test_parse_helpers_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        parse_bool("perhaps")
    with pytest.raises(ValueError):
        parse_int(True)
    with pytest.raises(ValueError):
        parse_int("2.5")
    assert parse_int("2.0") == 2
