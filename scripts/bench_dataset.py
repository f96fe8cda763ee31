"""Benchmark: dataset build and live planner_input build over a 100,000-run workspace.

How the workspace is synthesised (to save time, no kernel runs): run summaries are written
directly as ``.cyntra/index/runs.jsonl`` (what ``SimilarRunsIndex.add`` appends) and decisions +
outcomes directly as ledger lines in ``.cyntra/decisions/<date>.jsonl`` (the exact JSON that
``Ledger.append`` writes, without an fsync per line). The dataset is then built with
``--from-index`` (summaries from the index instead of an archive scan). Archive scanning is
measured separately on a sample of real archive directories (``--archive-sample``) and reported
as a per-archive cost.

Measured: (a) dataset build time; (b) ``build_planner_input`` with the index over all runs:
median / p99 per build, against the same builder fed by a linear scan (precomputed timestamps
and tag sets, so the scan is not penalised by parsing).

    python scripts/bench_dataset.py [--runs 100000] [--queries 2000] [--scan-queries 30]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cyntra.clock import isoformat_z
from cyntra.planner.action_space import ActionSpace
from cyntra.planner.index import SimilarRun, SimilarRunsIndex, jaccard, recency
from cyntra.planner.planner_input import IssueFeatures, build_planner_input, title_keywords
from cyntra.planner.run_summary import ExecutedPlan, RunSummary, epoch_us, scan_archives
from cyntra.strategy.record import AppliedPlan, DecisionRecord, OutcomeRecord, Proposal
from cyntra.workspace import Workspace

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EXTRA_TAGS = {"bug": 0.25, "feature": 0.25, "refactor": 0.10, "perf": 0.05, "ci": 0.06, "architecture": 0.04, "complex": 0.05}
AREAS = ["backend", "frontend", "infra", "data", "docs", "mobile"]
THINGS = ["cache", "parser", "router", "auth", "billing", "search", "queue", "schema", "upload", "metrics"]
TOOLCHAINS = ["codex", "claude", "opencode", "crush"]


def synthesize(root: Path, n_runs: int, seed: int = 0) -> tuple[int, int]:
    """Write runs.jsonl + ledger files; returns (runs, decisions)."""
    rng = random.Random(seed)
    space = ActionSpace()
    ws = Workspace.at(root)
    ws.index_dir.mkdir(parents=True, exist_ok=True)
    ws.decisions_dir.mkdir(parents=True, exist_ok=True)
    n_issues = max(1, n_runs)
    issues: list[dict[str, Any]] = []
    for k in range(n_issues):
        tags = [rng.choice(AREAS)] + [t for t, p in EXTRA_TAGS.items() if rng.random() < p]
        if rng.random() < 0.05:
            tags.append("asset:mesh")
        issues.append({
            "id": f"I-{k:06d}", "title": f"{rng.choice(['Fix', 'Speed up', 'Refactor'])} {rng.choice(THINGS)} in {tags[0]}",
            "tags": sorted(tags), "priority": rng.choice(["P0", "P1", "P2", "P3"]),
            "risk": rng.choice(["low", "medium", "high", "critical"]), "size": rng.choice(["XS", "S", "M", "L", "XL"]),
            "attempts": 0,
        })
    span_s = 365 * 86400
    runs_written = decisions = fresh = 0
    t = T0
    step = span_s / (n_runs / 1.6)
    ledger: dict[str, list[str]] = {}
    with open(ws.index_dir / "runs.jsonl", "w", encoding="utf-8") as idx:
        while runs_written < n_runs:
            t += timedelta(seconds=rng.expovariate(1 / step))
            # mostly a fresh issue, sometimes a retry of a recent one (attempts cluster in time)
            if fresh < len(issues) and (rng.random() < 0.65 or fresh == 0):
                iss = issues[fresh]
                fresh += 1
            else:
                iss = issues[rng.randint(max(0, fresh - 200), fresh - 1)]
            action = rng.choice(space.actions)
            k = min(action.parallelism if action.parallelism > 1 else 1, n_runs - runs_written)
            feats = IssueFeatures(id=iss["id"], priority=iss["priority"], risk=iss["risk"], size=iss["size"],
                                  attempts=iss["attempts"], estimated_tokens=50000, tags=iss["tags"],
                                  title_keywords=title_keywords(iss["title"]))
            did = f"d{decisions:07d}"
            dec = DecisionRecord(
                decision_id=did, issue_id=iss["id"], timestamp=isoformat_z(t), mode="heuristic",
                heuristic=Proposal(strategy="heuristic", status="ok", action=action),
                applied=AppliedPlan(action=action, toolchains=TOOLCHAINS[:k], source="heuristic"),
                propensity=1.0, universe_id="bench",
            )
            minutes = rng.choice([3, 10, 25, 50, 110])
            status = rng.choices(["success", "failed", "timeout"], [0.6, 0.3, 0.1])[0]
            start = t + timedelta(seconds=30)
            done = start + timedelta(minutes=minutes)
            for c in range(k):
                s = RunSummary(
                    run_id=f"wc-{runs_written:07d}", issue_id=iss["id"], decision_id=did, job_type="code",
                    domain="fab_asset" if "asset:mesh" in iss["tags"] else "code", universe_id="bench",
                    tags=iss["tags"], issue=feats, toolchain=TOOLCHAINS[c],
                    plan=ExecutedPlan(swarm_id=action.swarm_id, parallelism=action.parallelism,
                                      max_run_minutes=action.max_run_minutes, max_candidates=action.max_candidates),
                    candidate_index=c, loser=k > 1 and c > 0, status=status, all_passed=status == "success",
                    fail_codes=[] if status == "success" else ["gate:test"], duration_ms=minutes * 60000,
                    cost_usd=round(0.02 * minutes * (c + 1), 4), tokens_used=1000 * minutes,
                    started_at=isoformat_z(start), completed_at=isoformat_z(done),
                    available_at=isoformat_z(done + timedelta(seconds=2)), decision_time=isoformat_z(t),
                )
                idx.write(json.dumps(s.model_dump(mode="json"), sort_keys=True) + "\n")
                runs_written += 1
            out = OutcomeRecord(decision_id=did, issue_id=iss["id"], timestamp=isoformat_z(done), status=status,
                                gates_passed=status == "success", utility=1.0 if status == "success" else -0.5)
            day = isoformat_z(t)[:10]
            ledger.setdefault(day, []).append(json.dumps(dec.model_dump(mode="json"), sort_keys=True))
            ledger.setdefault(isoformat_z(done)[:10], []).append(json.dumps(out.model_dump(mode="json"), sort_keys=True))
            iss["attempts"] += 1
            decisions += 1
    for day, lines in ledger.items():
        (ws.decisions_dir / f"{day}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return runs_written, decisions


class LinearScan:
    """The baseline: score every run of the list per query (timestamps and tag sets precomputed)."""

    def __init__(self, runs: Iterable[RunSummary]) -> None:
        self.rows = [
            ((r.job_type, r.domain, r.world_id, r.objective_id), epoch_us(r.started_at), epoch_us(r.available_at),
             frozenset(r.tags), r.run_id, r)
            for r in runs
        ]

    def similar_scored(self, job_type: str, domain: str, tags: list[str], before: datetime | str, n: int = 8,
                       world_id: str | None = None, objective_id: str | None = None) -> list[SimilarRun]:
        q, b, g = frozenset(tags), epoch_us(before), (job_type, domain, world_id, objective_id)
        scored = []
        for grp, start, avail, sig, rid, r in self.rows:
            if grp != g or start >= b or avail >= b:
                continue
            j = jaccard(q, sig)
            name, bonus = recency(b - start)
            scored.append((-(j + bonus), -start, rid, j, name, r))
        scored.sort(key=lambda x: (x[0], x[1], x[2]))
        return [SimilarRun(x[5], x[3], -x[0], x[4]) for x in scored[:n]]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--scan-queries", type=int, default=30)
    ap.add_argument("--archive-sample", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    from planner_model.dataset import build_dataset

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp) / "ws"
        t = time.perf_counter()
        runs, decisions = synthesize(root, args.runs)
        print(f"synthesised {runs} runs, {decisions} decisions in {time.perf_counter() - t:.1f}s")

        t = time.perf_counter()
        res = build_dataset(root, Path(tmp) / "ds", from_index=True, quiet=True)
        build_s = time.perf_counter() - t
        print(f"(a) dataset build: {build_s:.1f}s for {sum(res.meta.splits.values())} examples "
              f"(splits {res.meta.splits}, truncated {res.meta.truncations})  target <= 60s")

        t = time.perf_counter()
        index = SimilarRunsIndex(root)
        n_loaded = len(index)
        print(f"index load: {n_loaded} runs in {time.perf_counter() - t:.2f}s")
        rng = random.Random(1)
        all_runs = list(index.runs())
        lo, hi = T0 + timedelta(days=180), T0 + timedelta(days=366)
        queries = []
        for _ in range(args.queries):
            r = rng.choice(all_runs)
            when = lo + (hi - lo) * rng.random()
            queries.append((r.issue.model_copy(update={"id": "I-new"}), when))
        for issue, when in queries[:50]:  # warm-up
            build_planner_input(issue, when, index=index, universe_id="bench")
        fast: list[float] = []
        for issue, when in queries:
            t = time.perf_counter()
            build_planner_input(issue, when, index=index, universe_id="bench")
            fast.append((time.perf_counter() - t) * 1000)
        scan = LinearScan(all_runs)
        slow: list[float] = []
        for issue, when in queries[: args.scan_queries]:
            t = time.perf_counter()
            a = build_planner_input(issue, when, index=scan, universe_id="bench")
            slow.append((time.perf_counter() - t) * 1000)
            b = build_planner_input(issue, when, index=index, universe_id="bench")
            assert a == b, "index and linear scan disagree"
        med_f, med_s = statistics.median(fast), statistics.median(slow)
        print(f"(b) live planner_input, {n_loaded} runs indexed: median {med_f:.3f} ms, p99 {pct(fast, 99):.3f} ms "
              f"over {len(fast)} builds  (target median <= 2 ms)")
        print(f"    linear scan: median {med_s:.1f} ms, p99 {pct(slow, 99):.1f} ms over {len(slow)} builds; "
              f"speed-up {med_s / med_f:.0f}x (target >= 50x); results identical on all compared builds")

        if args.archive_sample:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from test_run_summary import issue_row, make_decision, write_archive

            aws = Workspace.at(Path(tmp) / "aws")
            for i in range(args.archive_sample):
                when = T0 + timedelta(minutes=i)
                write_archive(aws, f"wc-{i:06d}", issue_row(f"I-{i}", ["bug"]), make_decision(f"I-{i}", when), when)
            t = time.perf_counter()
            summaries, problems = scan_archives(aws)
            per = (time.perf_counter() - t) / max(1, len(summaries)) * 1000
            print(f"archive scan: {per:.3f} ms per archive ({len(summaries)} archives, {len(problems)} problems); "
                  f"extrapolated {per * args.runs / 1000:.1f}s for {args.runs} archives")


if __name__ == "__main__":
    main()
