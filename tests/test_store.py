"""The beads store: lenient reads, surgical atomic rewrites, locking across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cyntra.clock import VirtualClock, use_clock
from cyntra.state.events import EventLog
from cyntra.state.issue import Issue
from cyntra.state.store import (
    BeadsStore,
    Dep,
    IssueNotFoundError,
    IssueSet,
    ParseProblem,
    _fast_dep,
    _fast_issue,
    _loads_line,
    _quick_row,
    escalation_fields,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T0_Z = "2026-01-02T03:04:05.678901Z"


def _write(ws: Path, lines: list[str] | bytes, name: str = "issues.jsonl") -> Path:
    path = ws / ".beads" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        lines if isinstance(lines, bytes) else "".join(x + "\n" for x in lines).encode()
    )
    return path


def _row(i: int | str, **extra: Any) -> str:
    row: dict[str, Any] = {
        "id": str(i),
        "title": f"Issue {i}",
        "status": "open",
        "created": "2025-12-24T04:07:55.285993Z",
        "updated": "2025-12-24T04:07:55.285993Z",
        "tags": ["asset:world"],
        "dk_priority": "P1",
        "dk_risk": "high",
        "dk_size": "M",
    }
    row.update(extra)
    return json.dumps(row)


MESSY = [
    _row(1, dk_attempts="3", owner={"team": "art"}),  # 1
    "",  # 2: blank
    '{"id": "2", "title": "broken", ',  # 3: invalid JSON
    _row(3, dk_risk="banana"),  # 4: unusable value
    json.dumps({"id": "4", "priority": "P0", "risk": "low", "size": "XS", "tool_hint": "codex"}),
    json.dumps({"id": "5", "dk_speculate": "false", "dk_apply_patch": "true"}),  # 6
    json.dumps({"id": "6", "dk_estimated_tokens": None, "dk_attempts": "abc"}),  # 7: unusable
    json.dumps({"id": "7", "title": "[ESCALATION] x", "tags": ["escalation", "needs-human"]}),
    "   ",  # 9: whitespace only
    "[1, 2]",  # 10: not an object
    _row(8, dk_estimated_tokens=None, dk_attempts="2"),  # 11
]


# --- reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["issues.jsonl", "issues.early.jsonl"])
def test_reads_upstream_files_without_problems(
    upstream_dir: Path, tmp_path: Path, name: str
) -> None:
    raw = (upstream_dir / ".beads" / name).read_bytes()
    _write(tmp_path, raw)
    loaded = BeadsStore(tmp_path).load()
    assert loaded.problems == []
    assert list(loaded.issues) == [str(json.loads(x)["id"]) for x in raw.decode().splitlines()]
    assert loaded.deps == []


def test_upstream_rewrite_touches_only_the_changed_row(upstream_dir: Path, tmp_path: Path) -> None:
    raw = (upstream_dir / ".beads" / "issues.jsonl").read_bytes()
    path = _write(tmp_path, raw)
    with use_clock(VirtualClock(T0)):
        BeadsStore(tmp_path).set_status("10", "done")
    before, after = raw.decode().splitlines(), path.read_text().splitlines()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        if json.loads(old)["id"] != "10":
            assert old == new
            continue
        old_row, new_row = json.loads(old), json.loads(new)
        assert list(new_row) == list(old_row)  # key order kept
        assert new_row["dk_attempts"] == "2"  # untouched string number stays a string
        assert (new_row["status"], new_row["updated"]) == ("done", T0_Z)
        assert {k: v for k, v in new_row.items() if k not in ("status", "updated")} == {
            k: v for k, v in old_row.items() if k not in ("status", "updated")
        }


def test_messy_rows_parse_leniently(tmp_path: Path) -> None:
    _write(tmp_path, MESSY)
    loaded = BeadsStore(tmp_path).load()
    assert list(loaded.issues) == ["1", "4", "5", "7", "8"]
    one, four, five, seven, eight = (loaded.issues[i] for i in ["1", "4", "5", "7", "8"])
    assert one.dk_attempts == 3 and one.extra_fields == {"owner": {"team": "art"}}
    assert (four.dk_priority, four.dk_risk, four.dk_size, four.dk_tool_hint) == (
        "P0",
        "low",
        "XS",
        "codex",
    )
    assert five.dk_speculate is False and five.dk_apply_patch is True
    assert (seven.dk_risk, seven.dk_size) == ("medium", "M")
    assert eight.dk_estimated_tokens == 50000 and eight.dk_attempts == 2


def test_unusable_lines_are_reported_with_path_line_field(tmp_path: Path) -> None:
    path = _write(tmp_path, MESSY)
    problems = BeadsStore(tmp_path).load().problems
    by_line = {p.line: p for p in problems}
    assert sorted(by_line) == [3, 4, 7, 10]
    assert by_line[3].field == "<json>" and by_line[3].reason.startswith("invalid JSON")
    assert by_line[4].field == "dk_risk" and "'banana'" in by_line[4].reason
    assert by_line[7].field == "dk_attempts" and "'abc'" in by_line[7].reason
    assert by_line[10].field == "<row>"
    assert str(by_line[4]) == f"{path}:4: dk_risk: {by_line[4].reason}"
    err = by_line[7].to_error()
    assert (err.path, err.line, err.field) == (str(path), 7, "dk_attempts")


def test_invalid_utf8_and_deep_nesting_are_problems_not_crashes(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"id": "1"}\n{"id": "2\xff"}\n' + b"[" * 100000 + b"\n")
    loaded = BeadsStore(tmp_path).load()
    assert list(loaded.issues) == ["1"]
    assert [(p.line, p.field) for p in loaded.problems] == [(2, "<json>"), (3, "<json>")]
    BeadsStore(tmp_path).set_status("1", "done")
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"id": "2\xff"}' and lines[2] == b"[" * 100000


def test_integer_too_long_to_convert_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    huge = "9" * 5000  # beyond Python's int-from-string limit (4,300 digits)
    _write(tmp_path, ['{"id": "1"}', f'{{"id": "2", "n": {huge}}}'])
    _write(tmp_path, [f'{{"from": "1", "to": "2", "n": {huge}}}'], name="deps.jsonl")
    s = BeadsStore(tmp_path).load()
    assert list(s.issues) == ["1"] and s.deps == []
    assert [(p.line, p.field) for p in s.problems] == [(2, "<json>"), (1, "<json>")]
    assert "digits" in s.problems[0].reason


def test_missing_files_mean_an_empty_workspace(tmp_path: Path) -> None:
    loaded = BeadsStore(tmp_path).load()
    assert (loaded.issues, loaded.deps, loaded.problems) == ({}, [], [])


# --- rewriting ------------------------------------------------------------------------------


def test_rewrite_keeps_bad_lines_verbatim_and_in_place(tmp_path: Path) -> None:
    path = _write(tmp_path, MESSY)
    with use_clock(VirtualClock(T0)):
        BeadsStore(tmp_path).update_issue("8", status="done", dk_attempts=3)
    after = path.read_text().split("\n")
    kept = [x for x in MESSY if x.strip()]  # blank lines are dropped, nothing else
    assert after[-1] == "" and len(after) - 1 == len(kept)
    for old, new in zip(kept, after, strict=False):
        if old is MESSY[-1]:
            row = json.loads(new)
            assert (row["status"], row["dk_attempts"], row["updated"]) == ("done", 3, T0_Z)
            assert row["dk_estimated_tokens"] is None  # untouched null stays null
        else:
            assert old == new


def test_unknown_fields_and_key_order_survive(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1, zeta=1, owner={"team": "art"}, dk_attempts="3")])
    store = BeadsStore(tmp_path)

    def touch(s: IssueSet) -> None:
        issue = s.get("1")
        issue.tags.append("seen")  # in-place edits are changes too
        issue.note = "new unknown field"  # type: ignore[attr-defined]  # an unknown field

    store.update(touch)
    row = json.loads(path.read_text())
    original = json.loads(_row(1, zeta=1, owner={"team": "art"}, dk_attempts="3"))
    assert list(row)[: len(original)] == list(original) and list(row)[-1] == "note"
    assert row["owner"] == {"team": "art"} and row["zeta"] == 1 and row["dk_attempts"] == "3"
    assert row["tags"] == ["asset:world", "seen"]

    store.update(lambda s: delattr(s.get("1"), "zeta"))
    assert "zeta" not in json.loads(path.read_text())


def test_updated_is_stamped_from_the_clock_unless_the_caller_stamped_it(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1), _row(2)])
    store = BeadsStore(tmp_path)
    earlier = T0 - timedelta(hours=1)

    def change(s: IssueSet) -> None:
        s.get("1").status = "running"
        s.get("2").status = "running"
        s.get("2").updated = earlier  # e.g. a batched simulator write, stamped when it happened

    with use_clock(VirtualClock(T0)):
        store.update(change)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["updated"] for r in rows] == [T0_Z, "2026-01-02T02:04:05.678901Z"]


def test_changed_alias_field_is_renamed_in_place(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"id": "1", "priority": "P3", "x": 1})])
    BeadsStore(tmp_path).update_issue("1", dk_priority="P0")
    assert list(json.loads(path.read_text()).items())[:3] == [
        ("id", "1"),
        ("dk_priority", "P0"),
        ("x", 1),
    ]


def test_noop_and_failed_updates_do_not_write(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1, dk_attempts="3")])
    before = path.stat()
    store = BeadsStore(tmp_path)
    # assigning an equal value (even in another spelling) is not a change
    store.update(lambda s: setattr(s.get("1"), "dk_attempts", "3"))
    with pytest.raises(RuntimeError):
        store.update(_done_then_raise)
    with pytest.raises(ValidationError):
        store.update_issue("1", dk_risk="banana")
    with pytest.raises(IssueNotFoundError, match="'9'"):
        store.set_status("9", "done")
    with pytest.raises(ValueError, match="never deletes"):
        store.update(lambda s: s.issues.pop("1"))
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _done_then_raise(s: IssueSet) -> None:
    s.get("1").status = "done"
    raise RuntimeError("boom")


def test_duplicate_ids_later_row_wins_both_kept(tmp_path: Path) -> None:
    first, second = _row(1, title="old"), _row(1, title="new", extra=True)
    path = _write(tmp_path, [first, _row(2), second])
    loaded = BeadsStore(tmp_path).load()
    assert loaded.issues["1"].title == "new"
    assert [(p.line, p.field) for p in loaded.problems] == [(3, "id")]
    assert "line 1" in loaded.problems[0].reason
    BeadsStore(tmp_path).set_status("1", "done")
    lines = path.read_text().splitlines()
    assert lines[:2] == [first, _row(2)]
    assert json.loads(lines[2])["status"] == "done" and json.loads(lines[2])["extra"] is True


def test_later_unusable_duplicate_shadows_the_id(tmp_path: Path) -> None:
    _write(tmp_path, [_row(1), _row(1, dk_risk="banana")])
    loaded = BeadsStore(tmp_path).load()
    assert "1" not in loaded.issues
    assert {p.field for p in loaded.problems} == {"dk_risk", "id"}
    assert loaded.next_id() == "2"  # the id of an unusable row is never reused


def test_add_issue_assigns_next_numeric_id(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1), _row(12), _row(3, dk_risk="banana")])
    store = BeadsStore(tmp_path)
    assert store.next_id() == "13"
    with use_clock(VirtualClock(T0)):
        issue = store.add_issue({"title": "New", "priority": "P0", "owner": "ana"})
    assert issue.id == "13" and issue.dk_priority == "P0"
    row = json.loads(path.read_text().splitlines()[-1])
    assert row == {
        "id": "13",
        "title": "New",
        "status": "open",
        "created": T0_Z,
        "updated": T0_Z,
        "dk_priority": "P0",
        "owner": "ana",
    }
    assert list(row) == list(row.keys())
    with pytest.raises(ValueError, match="already exists"):
        store.add_issue({"id": "3", "title": "taken by an unusable row"})


def test_many_adds_in_one_update(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1), _row(2, dk_risk="banana")])

    def add_many(s: IssueSet) -> list[str]:
        ids = [s.add({"title": "a"}).id, s.add({"title": "b"}).id]
        s.issues["20"] = Issue(id="20", title="inserted directly")
        return [*ids, s.add({"title": "c"}).id]

    assert BeadsStore(tmp_path).update(add_many) == ["3", "4", "21"]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "20", "21"]
    assert rows[4]["created"] == rows[4]["updated"]  # stamped by the store


def test_add_issue_with_non_numeric_ids(tmp_path: Path) -> None:
    _write(tmp_path, [_row("bd-a1"), _row("bd-b2"), _row(7)])
    store = BeadsStore(tmp_path)
    ids = {store.add_issue({"title": f"n{i}"}).id for i in range(5)}
    assert len(ids) == 5 and all(i.startswith("bd-") for i in ids)
    assert set(store.load().issues) == {"bd-a1", "bd-b2", "7", *ids}


def test_escalation_row_mirrors_upstream(upstream_dir: Path, tmp_path: Path) -> None:
    early = (upstream_dir / ".beads" / "issues.early.jsonl").read_text().splitlines()
    upstream_rows = [
        json.loads(x) for x in (upstream_dir / ".beads" / "issues.jsonl").read_text().splitlines()
    ]
    expected = next(r for r in upstream_rows if r["title"] == "[ESCALATION] World jibglr")
    path = _write(tmp_path, early)
    store = BeadsStore(tmp_path)
    store.update_issue("3", dk_attempts=3)
    with use_clock(VirtualClock(T0)):
        created = store.escalate("3", "Gate failures: test, typecheck, lint")
    row = json.loads(path.read_text().splitlines()[-1])
    assert list(row) == list(expected)
    for key in ("title", "status", "dk_priority", "description", "tags"):
        assert row[key] == expected[key], key
    assert row["dk_parent"] == "3" and row["created"] == row["updated"] == T0_Z
    assert created.id == row["id"] == "5"
    loaded = store.load()
    assert loaded.issues["3"].status == "escalated"
    # idempotent: a second escalation returns the same issue and writes nothing
    assert store.escalate("3", "again").id == "5"
    assert len(store.load().issues) == 5


def test_escalation_fields_inside_a_larger_update(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(1, dk_attempts="3"), _row(2)])

    def fail_and_escalate(s: IssueSet) -> str:
        s.get("2").status = "done"
        s.get("1").status = "escalated"
        return s.add(escalation_fields(s.get("1"), "boom")).id

    assert BeadsStore(tmp_path).update(fail_and_escalate) == "3"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [
        ("1", "escalated"),
        ("2", "done"),
        ("3", "escalated"),
    ]
    assert rows[2]["title"] == "[ESCALATION] Issue 1" and rows[2]["dk_parent"] == "1"


def test_escalation_without_description(tmp_path: Path) -> None:
    _write(tmp_path, [_row(1, dk_attempts="3", tags=["b", "a"])])
    new = BeadsStore(tmp_path).escalate("1", "Gate failures: status:failed")
    assert new.description is not None
    assert new.description.startswith(
        "Automated processing failed after 3 attempts.\n\n## Original Issue #1\n(no description)\n"
    )
    assert new.tags == ["a", "b", "escalation", "needs-human"]
    assert new.status == "escalated"


# --- deps -----------------------------------------------------------------------------------


def test_deps_parse_and_append(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        b'{"from": "1", "to": "2", "type": "blocks"}\n'
        b'{"from": 2, "to": "3", "type": "related", "note": "x"}\n'
        b'{"from": "3"}\n'
        b'{"from": "4", "to": "5"}',  # no trailing newline
        name="deps.jsonl",
    )
    store = BeadsStore(tmp_path)
    loaded = store.load()
    assert [(d.from_, d.to, d.type, d.blocks) for d in loaded.deps] == [
        ("1", "2", "blocks", True),
        ("2", "3", "related", False),
        ("4", "5", "blocks", True),
    ]
    assert loaded.deps[1].to_row() == {"from": "2", "to": "3", "type": "related", "note": "x"}
    assert [(p.line, p.field) for p in loaded.problems] == [(3, "to")]
    store.add_dep("5", "6")
    store.add_dep("5", "6")  # an identical edge is not appended twice
    lines = path.read_text().splitlines()
    assert lines[3:] == ['{"from": "4", "to": "5"}', '{"from": "5", "to": "6", "type": "blocks"}']


@given(
    st.dictionaries(
        st.sampled_from(["from", "to", "type", "x"]),
        st.one_of(st.text(max_size=3), st.integers(-2, 2), st.none(), st.booleans()),
    )
)
def test_fast_dep_agrees_with_validation(row: dict[str, Any]) -> None:
    fast = _fast_dep(row)
    try:
        slow = Dep.model_validate(row)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert fast == slow and fast.model_fields_set == slow.model_fields_set


def _same_json(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (a != a and b != b)
    if type(a) is list:
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(_same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def _parse_both(text: str) -> None:
    """orjson never reads a line json rejects; a row it reads that a fast path then accepts is
    exactly json's reading (what the store relies on); ``_loads_line`` is ``json.loads``."""
    quick = _quick_row(text)
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError) as exc:
        assert quick is None
        with pytest.raises(type(exc)):
            _loads_line(text)
        return
    assert _same_json(_loads_line(text), expected)
    if type(quick) is dict and (_fast_issue(dict(quick), False) is not None or _fast_dep(quick) is not None):
        assert _same_json(quick, expected)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(_json_values, st.sampled_from(["", " ", "\r", " \t"]))
def test_orjson_fast_path_reads_what_json_reads(value: Any, pad: str) -> None:
    _parse_both(pad + json.dumps(value) + pad)
    quick = _quick_row(json.dumps(value))
    assert quick is None or _same_json(quick, value) or _has_huge_int(value)


def _has_huge_int(value: Any) -> bool:
    if type(value) is int:
        return not -(2**63) <= value < 2**64
    if type(value) is list:
        return any(map(_has_huge_int, value))
    if type(value) is dict:
        return any(map(_has_huge_int, value.values()))
    return False


@given(st.fixed_dictionaries({"id": st.just("1")}, optional={
    "title": st.text(max_size=5), "dk_attempts": st.integers() | st.floats(allow_nan=False),
    "dk_estimated_tokens": st.integers(), "tags": st.lists(st.text(max_size=3), max_size=2),
    "x": _json_values | st.integers()}))
def test_orjson_fast_path_on_issue_rows(row: dict[str, Any]) -> None:
    _parse_both(json.dumps(row))


@given(st.text(alphabet='{}[]":,0123456789.eE+-truefalsnNIinfyaxb \\u\r\t', max_size=30))
def test_orjson_fast_path_fails_where_json_fails(text: str) -> None:
    _parse_both(text)


@pytest.mark.parametrize("text", [
    '{"a": NaN, "b": -Infinity}', '{"x": 1e400}', '"\\ud800"', '{"a": 1, "a": 2}', "-0.0",
    "[" * 2000 + "]" * 2000, '{"id": "1"} x', "\ufeff{}", "18446744073709551616",
    "-9223372036854775809", "[1.2345678901234567890123]",
])
def test_orjson_fast_path_edge_cases(text: str) -> None:
    _parse_both(text)


def test_huge_integers_are_read_exactly(tmp_path: Path) -> None:
    """orjson reads an integer beyond 64 bits as a float; the store reads such rows with json."""
    big = 2**70
    _write(tmp_path, [f'{{"id": "1", "n": {big}}}', f'{{"id": "2", "m": -{big}}}',
                      f'{{"id": {big}}}', f'{{"id": "3", "dk_attempts": {big}}}'])
    s = BeadsStore(tmp_path).load()
    assert s.issues["1"].n == big and s.issues["2"].m == -big and not s.problems
    assert s.issues[str(big)].id == str(big) and s.issues["3"].dk_attempts == big


# --- concurrency and crash safety -----------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from cyntra.state.store import BeadsStore
    ws, issue_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = BeadsStore(ws)

    def bump(s):
        issue = s.get(issue_id)
        issue.counter = int(getattr(issue, "counter", 0)) + 1
        shared = s.get("shared")
        shared.counter = int(getattr(shared, "counter", 0)) + 1

    for _ in range(n):
        store.update(bump)
    """
)


def test_two_processes_lose_no_updates(tmp_path: Path) -> None:
    _write(tmp_path, [_row("a"), _row("b"), _row("shared")])
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), issue_id, "50"])
        for issue_id in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    loaded = BeadsStore(tmp_path).load()
    assert loaded.problems == []
    counters = {k: v.extra_fields["counter"] for k, v in loaded.issues.items()}
    assert counters == {"a": 50, "b": 50, "shared": 100}


def test_failed_write_leaves_the_original_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, MESSY)
    before = path.read_bytes()

    def no_rename(src: Any, dst: Any) -> None:
        assert Path(src).read_bytes() != before  # the temp file was fully written
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        BeadsStore(tmp_path).set_status("1", "done")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["issues.jsonl", "issues.jsonl.lock"]


def test_killed_writer_never_corrupts_the_file(tmp_path: Path) -> None:
    _write(tmp_path, [_row(i) for i in range(2000)] + [_row("a"), _row("b"), _row("shared")])
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), "a", "100000"])
    deadline = time.monotonic() + 30
    store = BeadsStore(tmp_path)
    while time.monotonic() < deadline:  # wait until it has written a few times
        if store.load().issues["a"].extra_fields.get("counter", 0) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    loaded = store.load()
    assert loaded.problems == [] and len(loaded.issues) == 2003
    counter = loaded.issues["a"].extra_fields["counter"]
    assert counter >= 3 and loaded.issues["shared"].extra_fields["counter"] == counter


# --- the fast path equals validation ----------------------------------------------------------

_FIELDS = [
    "id",
    "title",
    "status",
    "created",
    "updated",
    "description",
    "tags",
    "dk_priority",
    "dk_risk",
    "dk_size",
    "dk_tool_hint",
    "dk_speculate",
    "dk_attempts",
    "dk_max_attempts",
    "dk_estimated_tokens",
    "dk_parent",
    "dk_apply_patch",
    "dk_quality_gates",
    "dk_sampling",
    "dk_forbidden_paths",
    "priority",
    "risk",
]
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(
        [
            *("open", "P1", "high", "M", "3", " 2", "false", "", "  ", "x"),
            *("2025-12-24T04:07:55.285993Z", "2025-12-24T04:07:55Z", "2025-12-24Z"),
            "2025-12-24T04:07:55+05:00",
        ]
    ),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


_TRICKY: list[Any] = [
    *(None, True, False, 0, 1, -1, 1.0, "", "  ", "\t", " 3", "3", "03", "3.0", "²", "-1", "x"),
    *("open", "Open", "P1", "p1", "high", "M", "false", "[]", "a,b", ["a"], [1], {}, {"a": None}),
    *("2025-12-24T04:07:55.285993Z", "2025-12-24T04:07:55Z", "2025-12-24Z", "2025-12-24"),
    *("2025-12-24T04:07:55+05:00", " 2025-12-24T04:07:55Z", "2025-12-24T04:07:55.285993z"),
]
_CANONICAL = {
    **json.loads(_row(1, description="d", dk_attempts="2", dk_speculate=True)),
    **{"dk_tool_hint": "codex", "dk_parent": "0", "dk_forbidden_paths": [], "dk_max_attempts": 3},
}


@settings(max_examples=400, deadline=None)
@given(
    st.sets(st.sampled_from(sorted(_CANONICAL))),
    st.dictionaries(
        st.sampled_from([*_FIELDS, "owner", "_x"]),
        st.one_of(st.sampled_from(_TRICKY), _json_values),
        max_size=3,
    ),
)
def test_fast_issue_agrees_with_validation(drop: set[str], override: dict[str, Any]) -> None:
    # start from a canonical row so the fast path is taken often, then perturb it
    row = {k: v for k, v in _CANONICAL.items() if k not in drop} | override
    fast = _fast_issue(row)
    try:
        slow = Issue.model_validate(row)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert fast.__dict__ == slow.__dict__
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__
        assert fast.model_fields_set == slow.model_fields_set
        assert [type(v) for v in fast.__dict__.values()] == [
            type(v) for v in slow.__dict__.values()
        ]


@pytest.mark.parametrize("key", sorted(_CANONICAL))
@pytest.mark.parametrize("value", _TRICKY, ids=repr)
def test_fast_issue_agrees_on_every_tricky_value(key: str, value: Any) -> None:
    row = {**_CANONICAL, key: value}
    fast = _fast_issue(row)
    try:
        slow = Issue.model_validate(row)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert (fast.__dict__, fast.model_extra) == (slow.__dict__, slow.model_extra)
        assert [type(v) for v in fast.__dict__.values()] == [
            type(v) for v in slow.__dict__.values()
        ]


def test_fast_path_covers_canonical_upstream_rows(upstream_dir: Path) -> None:
    for line in (upstream_dir / ".beads" / "issues.jsonl").read_text().splitlines():
        assert _fast_issue(json.loads(line)) is not None, line


# --- property: mutated files never crash, never lose a line -------------------------------------

_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([*_FIELDS, "owner", "zz"]), _json_values),
    st.tuples(st.just("drop"), st.sampled_from(_FIELDS)),
    st.tuples(st.just("truncate"), st.integers(0, 300)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("blank")),
)


def _base(i: int) -> dict[str, Any]:
    return {
        **json.loads(_row(i % 7, dk_attempts=str(i % 3))),  # i % 7: some duplicate ids
        "owner": {"name": f"o{i}", "n": [i]},
        "zz": i,
    }


def _mutate(row: dict[str, Any], mutations: list[tuple[Any, ...]]) -> bytes:
    line = json.dumps(row).encode()
    for m in mutations:
        if m[0] == "set":
            row[m[1]] = m[2]
            line = json.dumps(row).encode()
        elif m[0] == "drop":
            row.pop(m[1], None)
            line = json.dumps(row).encode()
        elif m[0] == "truncate":
            line = line[: m[1]]
        elif m[0] == "garbage":
            at = len(line) // 2
            line = line[:at] + m[1].replace(b"\n", b"?") + line[at:]
        else:
            line = b"  "
    return line


def _usable(raw: bytes, first: bool) -> dict[str, Any] | None:
    """The independent oracle: the row if Issue.model_validate accepts the line."""
    try:
        text = raw.decode("utf-8")
        if first:
            text = text.removeprefix("\ufeff")
        obj = json.loads(text)
        Issue.model_validate(obj)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


_KNOWN = {*Issue.model_fields, "priority", "risk", "size", "tool_hint"}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.lists(_mutation, max_size=3), min_size=1, max_size=8), st.data())
def test_mutated_files_round_trip(
    mutations: list[list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    raws = [_mutate(_base(i), m) for i, m in enumerate(mutations)]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        path = _write(ws, b"".join(r + b"\n" for r in raws))
        store = BeadsStore(ws)
        loaded = store.load()
        rows = [_usable(r, i == 0) for i, r in enumerate(raws)]
        problem_lines = {p.line for p in loaded.problems}
        for i, (raw, row) in enumerate(zip(raws, rows, strict=True)):
            if row is None and raw.strip():
                assert i + 1 in problem_lines, (raw, loaded.problems)
        # every issue is the last usable row carrying its id
        for issue_id, issue in loaded.issues.items():
            last = max(i for i, r in enumerate(rows) if r is not None and str(r["id"]) == issue_id)
            assert issue == Issue.model_validate(rows[last])

        chosen = data.draw(
            st.sets(st.sampled_from(sorted(loaded.issues))) if loaded.issues else st.just(set())
        )

        def touch(s: IssueSet) -> None:
            for issue_id in chosen:
                s.issues[issue_id].status = (
                    "done" if s.issues[issue_id].status != "done" else "open"
                )
                s.issues[issue_id].touched = True  # type: ignore[attr-defined]

        with use_clock(VirtualClock(T0)):
            store.update(touch)
        after = path.read_bytes().split(b"\n")
        assert after[-1] == b""
        after = after[:-1]
        # unusable lines survive verbatim, in order
        unusable = [r for r, row in zip(raws, rows, strict=True) if row is None and r.strip()]
        it = iter(after)
        assert all(any(line == raw for line in it) for raw in unusable)
        reloaded = store.load()
        assert len(reloaded.problems) == len(loaded.problems)
        assert set(reloaded.issues) == set(loaded.issues)
        for issue_id, issue in reloaded.issues.items():
            old = loaded.issues[issue_id]
            new_extra = dict(issue.extra_fields)
            if issue_id in chosen:
                assert new_extra.pop("touched") is True and issue.updated == T0
            assert new_extra == old.extra_fields
            skip = {"status", "updated", "touched"}
            assert issue.model_dump(exclude=skip) == old.model_dump(exclude=skip)


# --- events ---------------------------------------------------------------------------------


def test_event_log_appends_and_reads(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    clk = VirtualClock(T0)
    with use_clock(clk):
        log.emit("issue.dispatched", issue_id="3", workcell_id="wc-1", toolchain="codex")
        clk.advance(timedelta(seconds=5))
        log.emit("kernel.idle")
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write("not json\n")
        fh.write('{"timestamp": "2026-01-01T00:00:00Z"}\n')
    problems: list[ParseProblem] = []
    events = list(log.read(problems))
    assert [(e.type, e.issue_id, e.data) for e in events] == [
        ("issue.dispatched", "3", {"toolchain": "codex"}),
        ("kernel.idle", None, {}),
    ]
    assert events[1].timestamp - events[0].timestamp == timedelta(seconds=5)
    first = json.loads(log.path.read_text().splitlines()[0])
    assert first["timestamp"] == T0_Z and first["workcell_id"] == "wc-1"
    assert [(p.line, p.field) for p in problems] == [(3, "<json>"), (4, "type")]
    assert list(EventLog(tmp_path / "nowhere").read()) == []


def test_rows_share_fields_set_and_extra_until_written(tmp_path: Path) -> None:
    """Loaded rows with the same keys share one fields-set (and one empty extra dict); writing
    an attribute gives that issue its own copies, and nothing leaks to the other rows."""
    from cyntra.state.issue import NO_EXTRA, SharedFieldsSet

    rows = [{"id": str(i), "title": f"t{i}", "status": "open", "tags": ["a"]} for i in range(3)]
    _write(tmp_path, [json.dumps(r) for r in rows])
    a, b, c = BeadsStore(tmp_path).load().issues.values()
    assert a.model_fields_set is b.model_fields_set and type(a.model_fields_set) is SharedFieldsSet
    assert a.__pydantic_extra__ is NO_EXTRA
    shared = set(a.model_fields_set)
    a.dk_risk = "high"  # validated assignment: pydantic adds to the fields-set
    a.owner = "me"  # an unknown field goes to extra
    assert "dk_risk" in a.model_fields_set and a.model_fields_set is not b.model_fields_set
    assert set(b.model_fields_set) == shared == set(c.model_fields_set) and "dk_risk" not in shared
    assert a.model_extra == {"owner": "me"} and b.model_extra == {} and NO_EXTRA == {}
    d = b.model_copy(update={"dk_size": "XL"})
    assert "dk_size" in d.model_fields_set and set(b.model_fields_set) == shared
    assert b == Issue.model_validate(rows[1]) and a.dk_risk == "high" and b.dk_risk == "medium"
