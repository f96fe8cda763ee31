"""Atomic writes: the target is replaced whole, a temp file left by a dead process is never
reused or overwritten, and a failed write leaves the old file and no temp file behind."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from cyntra import fsutil


def test_atomic_write_replaces_whole_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.json"
    fsutil.atomic_write_json(target, {"x": 1})
    fsutil.atomic_write_json(target, {"x": 2, "y": [1, 2]})
    assert target.read_text() == fsutil.dumps_json({"x": 2, "y": [1, 2]})
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_a_leftover_temp_file_with_the_same_name_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "_tmp_serial", itertools.count())
    leftover = tmp_path / f".f.txt.{os.getpid()}.0.tmp"
    leftover.write_text("a dead writer's half file")
    fsutil.atomic_write_text(tmp_path / "f.txt", "new")
    assert (tmp_path / "f.txt").read_text() == "new"
    assert leftover.read_text() == "a dead writer's half file"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("durable", [True, False])
def test_durable_and_fast_modes_write_the_same_bytes(tmp_path: Path, durable: bool) -> None:
    previous = fsutil.set_durable(durable)
    try:
        fsutil.atomic_write_bytes(tmp_path / "b.bin", bytes(range(256)) * 300)
    finally:
        fsutil.set_durable(previous)
    assert (tmp_path / "b.bin").read_bytes() == bytes(range(256)) * 300


def test_dumps_compact_reads_back_as_json_would_write_it() -> None:
    import dataclasses
    import json
    from datetime import UTC, datetime

    @dataclasses.dataclass
    class Point:
        x: int

    cases = [
        {"b": 1, "a": [1.5, 1e-07, 1e16, -0.0, True, None], "é": "ünïcode ✓"},
        {"when": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "p": Point(1)},  # through str, as json's default=str
        {"big": 2**70},  # orjson refuses: json writes it
        {2: "int keys", 1: {3: 4}},  # non-string keys: json's conversion
        "\ud800 lone surrogate",
    ]
    for obj in cases:
        line = fsutil.dumps_compact(obj)
        assert "\n" not in line
        assert json.loads(line) == json.loads(json.dumps(obj, sort_keys=True, default=str)), obj
    assert fsutil.dumps_compact({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert fsutil.dumps_compact({"x": float("nan")}) == '{"x":null}'
