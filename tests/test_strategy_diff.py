"""``cyntra strategy diff`` on the fixed synthetic ledger (tests/fixtures/ledger/): snapshots, formats, edges.

The snapshot masks the workspace path and rounds floats to 6 decimals (bootstrap sums may differ in
the last bits across BLAS builds); a diff in it is a behaviour change to review
(``pytest --snapshot-update``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from cyntra import schemas
from cyntra.clock import VirtualClock, use_clock
from cyntra.strategy.cli_reports import diff_cmd
from cyntra.strategy.diff import NO_CANDIDATE, build_diff

FIX = Path(__file__).parent / "fixtures" / "ledger"
NOW = datetime(2025, 3, 20, 9, 0, tzinfo=UTC)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_fixture_generate", FIX / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()


@pytest.fixture(autouse=True)
def _virtual_clock() -> Iterator[None]:
    with use_clock(VirtualClock(NOW)):
        yield


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def normalise(obj: Any, root: Path) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, str):
        return obj.replace(str(root.resolve()), "<ws>")
    if isinstance(obj, dict):
        return {k: normalise(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v, root) for v in obj]
    return obj


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each scenario's workspace, generated once per module (tests that modify one build their own)."""
    root = tmp_path_factory.mktemp("ledgers")
    return {s: GEN.build(root / s, s) for s in ("better", "worse", "nocandidate")}


def _ws(tmp_path: Path, scenario: str) -> Path:
    return GEN.build(tmp_path / scenario, scenario)  # type: ignore[no-any-return]


@pytest.mark.parametrize("scenario", ["better", "worse", "nocandidate"])
def test_diff_report_snapshot(built: dict[str, Path], scenario: str, snapshot_json: SnapshotAssertion) -> None:
    ws = built[scenario]
    report = build_diff(ws)
    data = report.model_dump(mode="json")
    assert schemas.schema_errors("strategy_diff", data) == []
    assert normalise(data, ws) == snapshot_json


def _raw(ws: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((ws / ".cyntra" / "decisions").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def test_diff_numbers_agree_with_a_recount_of_the_raw_ledger(built: dict[str, Path]) -> None:
    ws = built["better"]
    report = build_diff(ws)
    decisions = [r for r in _raw(ws) if r["kind"] == "decision"]
    paired = [r for r in decisions if r["candidate"] and r["candidate"]["status"] == "ok"]
    same = [r for r in paired if r["heuristic"]["action"] == r["candidate"]["action"]]
    assert report.counts.decisions == len(decisions) == 300
    assert report.counts.candidate_ok == len(paired)
    assert report.agreement.overall == pytest.approx(len(same) / len(paired))
    swarm = next(c for c in report.confusion if c.field == "max_run_minutes")
    for r_i, h in enumerate(swarm.labels):
        for c_i, c in enumerate(swarm.labels):
            expect = sum(1 for r in paired if str(r["heuristic"]["action"]["max_run_minutes"]) == h
                         and str(r["candidate"]["action"]["max_run_minutes"]) == c)
            assert swarm.matrix[r_i][c_i] == expect
    timeouts = sum(1 for r in decisions if r["candidate"]["status"] == "timeout")
    assert [(f.reason, f.count) for f in report.fallbacks] == [("timeout", timeouts)]
    warn_hits = sum(1 for r in decisions for v in r["heuristic"]["clamp"] if v["rule_id"] == "xl-long-runs")
    hit = next(h for h in report.clamp_hits if h.side == "heuristic" and h.rule_id == "xl-long-runs")
    assert hit.count == warn_hits and hit.mode == "warn"
    # Slices come from the archives' manifests: every decision is linked to its issue snapshot.
    assert report.counts.with_issue_snapshot == 300
    assert sum(s.decisions for s in report.slices if s.dimension == "risk") == 300
    # The known world: the candidate's good plans are worth +6 on ~83% of decisions.
    assert report.ope is not None
    cand, heur = report.ope.results["candidate"].dr, report.ope.results["heuristic"].dr
    assert cand.estimate is not None and heur.estimate is not None and cand.lower is not None
    assert cand.lower > heur.estimate
    assert any("not JSON" not in p and ".jsonl:4: <json>" in p for p in report.ledger_problems)


def test_candidate_worse_is_visible(built: dict[str, Path]) -> None:
    report = build_diff(built["worse"])
    assert report.ope is not None
    cand, heur = report.ope.results["candidate"].dr, report.ope.results["heuristic"].dr
    assert cand.upper is not None and heur.estimate is not None and cand.upper < heur.estimate
    assert {f.reason for f in report.fallbacks} == {"error", "timeout"}
    assert any(h.side == "candidate" and h.rule_id == "critical-gets-time" for h in report.clamp_hits)
    assert report.latency_ms["candidate"].p99 is not None and report.latency_ms["candidate"].p99 > 20


@pytest.mark.parametrize("fmt", ["text", "json", "md", "html"])
def test_every_format_writes_files(tmp_path: Path, built: dict[str, Path], fmt: str) -> None:
    ws = built["better"]
    out = tmp_path / f"out-{fmt}"
    res = CliRunner().invoke(diff_cmd, ["-w", str(ws), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    ext = {"text": "txt", "json": "json", "md": "md", "html": "html"}[fmt]
    main = out / f"diff.{ext}"
    assert main.is_file() and f"wrote {main}" in res.output
    text = main.read_text(encoding="utf-8")
    if fmt == "json":
        assert schemas.schema_errors("strategy_diff", json.loads(text)) == []
    else:
        assert "Agreement" in text and "OPE of mean utility" in text and "Clamp hits per rule" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    if fmt in ("md", "html"):
        assert pngs == ["agreement.png", "confusion.png", "latency.png"]
        for p in pngs:
            assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert p in text  # embedded in the document
    else:
        assert pngs == []


@pytest.mark.parametrize("fmt", ["text", "json", "md", "html"])
def test_empty_ledger_every_format(tmp_path: Path, fmt: str) -> None:
    ws = tmp_path / "empty"
    (ws / ".cyntra").mkdir(parents=True)
    runner = CliRunner()
    res = runner.invoke(diff_cmd, ["-w", str(ws), "--format", fmt])
    assert res.exit_code == 0, res.output
    assert "no decisions recorded in" in res.output
    out = tmp_path / "out"
    res = runner.invoke(diff_cmd, ["-w", str(ws), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("diff.*"))) == 1
    assert list(out.glob("*.png")) == []


@pytest.mark.parametrize("fmt", ["text", "json", "md", "html"])
def test_no_candidate_proposals_says_so(tmp_path: Path, built: dict[str, Path], fmt: str) -> None:
    ws = built["nocandidate"]
    out = tmp_path / "out"
    res = CliRunner().invoke(diff_cmd, ["-w", str(ws), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert NO_CANDIDATE in res.output
    (doc,) = out.glob("diff.*")
    assert NO_CANDIDATE in doc.read_text(encoding="utf-8")
    report = build_diff(ws)
    assert report.ope is not None and list(report.ope.results) == ["heuristic"]
    assert report.priced is not None and report.priced.reason == NO_CANDIDATE


def test_since_filters_and_bad_since_is_refused(built: dict[str, Path]) -> None:
    ws = built["better"]
    later = build_diff(ws, since="2025-03-10")
    raw = [r for r in _raw(ws) if r["kind"] == "decision" and r["timestamp"] >= "2025-03-10"]
    assert later.counts.decisions == len(raw) and 0 < len(raw) < 300
    assert later.since == "2025-03-10"
    res = CliRunner().invoke(diff_cmd, ["-w", str(ws), "--since", "last tuesday"])
    assert res.exit_code == 2
    assert "since" in res.output and "not a date" in res.output


def test_unreadable_manifest_is_reported_not_fatal(tmp_path: Path) -> None:
    ws = _ws(tmp_path, "better")
    broken = next(iter(sorted((ws / ".cyntra" / "archives").glob("*/manifest.json"))))
    broken.write_text("{", encoding="utf-8")
    report = build_diff(ws)
    assert report.counts.with_issue_snapshot == 299
    assert any(p.startswith(str(broken)) for p in report.ledger_problems)
    assert any(s.dimension == "risk" and s.value == "unknown" for s in report.slices)


def test_text_output_to_stdout_has_tables(built: dict[str, Path]) -> None:
    res = CliRunner().invoke(diff_cmd, ["-w", str(built["better"])])
    assert res.exit_code == 0
    assert re.search(r"Latency \(ms\)", res.output) and "candidate" in res.output


def test_a_copied_ledger_file_is_reported_not_counted_twice(tmp_path: Path) -> None:
    """An operator copies a day's ledger file (a backup, a merge of two machines' ledgers): the
    repeated records are reported by file and line and skipped, so diff's numbers do not move."""
    ws = _ws(tmp_path, "better")
    before = build_diff(ws).model_dump(mode="json")
    files = sorted((ws / ".cyntra" / "decisions").glob("*.jsonl"))
    copy = files[0].with_name("zz-copy.jsonl")
    copy.write_text(files[0].read_text(encoding="utf-8"), encoding="utf-8")
    n_records = len([ln for ln in copy.read_text(encoding="utf-8").splitlines() if '"kind": "decision"' in ln])
    assert n_records > 0
    report = build_diff(ws)
    dupes = [p for p in report.ledger_problems if p.startswith(str(copy))]
    assert len(dupes) == n_records and all("a copy of the decision at" in p for p in dupes)
    after = report.model_dump(mode="json")
    assert {k: v for k, v in after.items() if k != "ledger_problems"} == {
        k: v for k, v in before.items() if k != "ledger_problems"}
