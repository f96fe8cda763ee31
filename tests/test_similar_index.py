"""The similar-runs index: equals the brute-force scan, never leaks the future, persists, refreshes."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cyntra.clock import isoformat_z
from cyntra.planner.index import SimilarRun, SimilarRunsIndex, recency, similar_bruteforce
from cyntra.planner.planner_input import IssueFeatures
from cyntra.planner.run_summary import ExecutedPlan, RunSummary, summarize_archive
from cyntra.workspace import Workspace
from test_run_summary import T0, issue_row, make_decision, write_archive

TAGS = ["bug", "feature", "perf", "ci", "api", "db", "asset:mesh", "asset:world"]
GROUPS = [("code", None, None), ("world", "w1", "o1"), ("world", "w1", "o2")]


def synth_run(i: int, rng: random.Random, span_days: float = 60.0) -> RunSummary:
    tags = sorted(set(rng.sample(TAGS[:6], rng.randint(0, 3))))
    job, world, obj = rng.choice(GROUPS)
    # coarse start times so ties in start happen and the run_id tie-break matters
    start = T0 + timedelta(minutes=30 * rng.randint(0, int(span_days * 48)))
    done = start + timedelta(minutes=rng.choice([5, 30, 240, 3000]))
    feats = IssueFeatures(id=f"I-{i % 97}", priority="P2", risk="medium", size="M", attempts=0,
                          estimated_tokens=1000, tags=tags)
    return RunSummary(
        run_id=f"r{rng.randint(0, 10**9):09d}-{i}", issue_id=feats.id, job_type=job, domain="code",
        world_id=world, objective_id=obj, tags=tags, issue=feats, toolchain="codex",
        plan=ExecutedPlan(swarm_id="serial_handoff", parallelism=1, max_run_minutes=30, max_candidates=1),
        status="success", all_passed=True, duration_ms=1000, started_at=isoformat_z(start),
        completed_at=isoformat_z(done), available_at=isoformat_z(done + timedelta(seconds=1)),
    )


def key(hits: list[SimilarRun]) -> list[tuple[str, float, str]]:
    return [(h.summary.run_id, h.score, h.age_bucket) for h in hits]


def test_index_equals_bruteforce_on_random_data() -> None:
    rng = random.Random(7)
    runs = [synth_run(i, rng) for i in range(3000)]
    idx = SimilarRunsIndex.from_summaries(runs)
    for _ in range(400):
        job, world, obj = rng.choice(GROUPS)
        tags = sorted(set(rng.sample(TAGS[:6], rng.randint(0, 3))))
        before = T0 + timedelta(minutes=rng.randint(-100, 62 * 24 * 60))
        n = rng.choice([1, 3, 8, 20])
        got = idx.similar_scored(job, "code", tags, before, n, world, obj)
        want = similar_bruteforce(runs, job, "code", tags, before, n, world, obj)
        assert key(got) == key(want)
        for h in got:  # leakage: started and available strictly before the decision
            assert h.summary.started_at < isoformat_z(before)
            assert h.summary.available_at < isoformat_z(before)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_runs=st.integers(0, 120), n=st.integers(1, 10),
       offset_h=st.integers(-5, 2000), qtags=st.lists(st.sampled_from(TAGS[:6]), max_size=3))
def test_index_equals_bruteforce_property(seed: int, n_runs: int, n: int, offset_h: int, qtags: list[str]) -> None:
    rng = random.Random(seed)
    runs = [synth_run(i, rng, span_days=10) for i in range(n_runs)]
    idx = SimilarRunsIndex(None)
    for r in runs:  # incremental inserts must equal the bulk-built structures
        idx.add(r)
    before = T0 + timedelta(hours=offset_h)
    want = similar_bruteforce(runs, "code", "code", qtags, before, n)
    assert key(idx.similar_scored("code", "code", qtags, before, n)) == key(want)
    assert key(SimilarRunsIndex.from_summaries(runs).similar_scored("code", "code", qtags, before, n)) == key(want)


def test_scores_and_recency_buckets() -> None:
    day = 86_400 * 1_000_000
    assert recency(day - 1) == ("lt1d", 0.3) and recency(day) == ("lt7d", 0.2)
    assert recency(29 * day) == ("lt30d", 0.1) and recency(31 * day) == ("old", 0.0)
    rng = random.Random(1)
    base = synth_run(0, rng)
    a = base.model_copy(update={"run_id": "a", "tags": ["bug", "ci"], "world_id": None, "objective_id": None,
                                "job_type": "code", "started_at": isoformat_z(T0), "available_at": isoformat_z(T0)})
    b = a.model_copy(update={"run_id": "b", "tags": ["bug"]})
    c = a.model_copy(update={"run_id": "c", "tags": []})
    idx = SimilarRunsIndex.from_summaries([c, b, a])
    hits = idx.similar_scored("code", "code", ["bug"], T0 + timedelta(hours=1), 3)
    assert [(h.summary.run_id, h.jaccard) for h in hits] == [("b", 1.0), ("a", 0.5), ("c", 0.0)]
    assert [h.score for h in hits] == [1.3, 0.8, 0.3]
    assert idx.similar_scored("code", "code", ["bug"], T0, 3) == []  # strictly before


def test_incremental_add_equals_rebuild_and_persists(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    idx = SimilarRunsIndex(ws)
    assert len(idx) == 0  # loaded at session start, before any archive exists
    rng = random.Random(3)
    for i in range(40):
        tags = sorted(set(rng.sample(["bug", "perf", "ci", "api"], rng.randint(0, 2))))
        dec = make_decision(f"I-{i}", T0 + timedelta(hours=i))
        d = write_archive(ws, f"wc-{i:03d}", issue_row(f"I-{i}", tags), dec, T0 + timedelta(hours=i, minutes=1))
        assert idx.add(summarize_archive(d)) is True
    assert idx.add(summarize_archive(d)) is False  # idempotent
    lines = (ws.index_dir / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 40
    queries = [(["bug"], T0 + timedelta(hours=h)) for h in (0, 5, 20, 45)] + [([], T0 + timedelta(days=9))]
    live = [key(idx.similar_scored("code", "code", t, b, 8)) for t, b in queries]
    reloaded = SimilarRunsIndex(ws)
    assert [key(reloaded.similar_scored("code", "code", t, b, 8)) for t, b in queries] == live
    rebuilt = SimilarRunsIndex(ws)
    assert rebuilt.rebuild() == []
    assert [key(rebuilt.similar_scored("code", "code", t, b, 8)) for t, b in queries] == live
    # an index over a workspace with archives but no index file builds itself once
    (ws.index_dir / "runs.jsonl").unlink()
    assert len(SimilarRunsIndex(ws)) == 40


def test_refresh_sees_runs_added_by_another_process(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    d = write_archive(ws, "wc-a", issue_row("I-a", ["bug"]), make_decision("I-a", T0), T0)
    mine = SimilarRunsIndex(ws)
    assert len(mine) == 1
    d2 = write_archive(ws, "wc-b", issue_row("I-b", ["bug"]), make_decision("I-b", T0), T0 + timedelta(hours=1))
    code = textwrap.dedent(f"""
        from cyntra.planner.index import SimilarRunsIndex
        from cyntra.planner.run_summary import summarize_archive
        idx = SimilarRunsIndex({str(tmp_path)!r})
        assert idx.add(summarize_archive({str(d2)!r}))
        print(len(idx))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
    later = datetime(2025, 4, 1, tzinfo=UTC)
    assert [s.run_id for s in mine.similar("code", "code", ["bug"], later)] == ["wc-a"]
    assert mine.refresh() == 1
    assert [s.run_id for s in mine.similar("code", "code", ["bug"], later)] == ["wc-b", "wc-a"]
    assert summarize_archive(d).run_id == "wc-a"


def test_bad_index_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    good = synth_run(1, random.Random(2))
    ws.index_dir.mkdir(parents=True)
    (ws.index_dir / "runs.jsonl").write_text(good.model_dump_json() + "\n{not json\n")
    idx = SimilarRunsIndex(ws)
    assert len(idx) == 1
    assert len(idx.problems) == 1 and idx.problems[0].line == 2
    assert "runs.jsonl" in str(idx.problems[0])
