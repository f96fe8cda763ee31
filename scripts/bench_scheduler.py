"""Benchmark one scheduling cycle on a large backlog (default 100,000 issues + 50,000 deps).

Generates a seeded random workspace (.beads/issues.jsonl + deps.jsonl, a random DAG, a
dynamics report), then times, over several runs, what one kernel cycle does: load
(``BeadsStore.load`` when available, else a plain json + ``Issue.model_validate`` loop), graph
(IssueGraph: ready set and critical path) and one ``schedule_cycle(report=False)`` on that graph
-- the runner's cycle. ``report`` then times what ``cyntra run --dry-run`` adds on top: the
blocked map and the full order of every ready issue (``schedule_cycle(report=True)``). Prints the
median of each stage, wall clock and process CPU time (CPU time is the steadier figure on a
shared machine). The previous run's objects are freed before each timed run.

    python scripts/bench_scheduler.py [--issues N] [--deps M] [--runs R] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cyntra.clock import isoformat_z
from cyntra.control import REPORT_PATH
from cyntra.kernel.config import KernelConfig, parse_config
from cyntra.kernel.heuristic import UniverseLimits
from cyntra.kernel.scheduler import schedule_cycle
from cyntra.state.graph import IssueGraph
from cyntra.state.issue import Issue

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

# A config shaped like a typical upstream one (hint rules, asset rules, risk speculation).
CONFIG: dict[str, Any] = {
    "scheduling": {"max_concurrent_workcells": 3, "max_concurrent_tokens": 300000,
                   "starvation_threshold_hours": 4},
    "toolchain_priority": ["codex", "claude", "opencode", "crush"],
    "toolchains": {"codex": {"timeout_minutes": 60}, "claude": {"timeout_minutes": 60},
                   "opencode": {"timeout_minutes": 45}, "crush": {"timeout_minutes": 45},
                   "fab-world": {"timeout_minutes": 120}},
    "routing": {
        "rules": [
            {"match": {"dk_tool_hint": "codex"}, "use": ["codex"]},
            {"match": {"dk_tool_hint": "claude"}, "use": ["claude"]},
            {"match": {"tags_any": ["asset:world"]}, "use": ["fab-world"]},
            {"match": {"dk_risk": ["critical"]}, "use": ["codex", "claude", "crush"],
             "speculate": True, "parallelism": 3},
            {"match": {"dk_risk": ["high"]}, "use": ["codex", "claude"], "speculate": True},
            {"match": {"title_pattern": r"(?i)refactor|architecture"}, "use": ["codex"]},
            {"match": {"dk_risk": ["low"], "dk_size": ["XS", "S"]}, "use": ["opencode"]},
            {"match": {}, "use": ["claude"]},
        ],
        "fallbacks": {"codex": ["claude", "opencode"], "claude": ["codex", "opencode"],
                      "opencode": ["claude"], "crush": ["opencode", "claude"]},
    },
}

TAGS = ["kernel", "ui", "docs", "asset:world", "asset:image", "infra", "tests", "perf"]
STATUSES = ["open"] * 70 + ["ready"] * 5 + ["done"] * 20 + ["escalated"] * 5


def generate(ws: Path, n_issues: int, n_deps: int, seed: int) -> None:
    """Write a random workspace: issues, a DAG of blocks deps, and a dynamics report."""
    rng = random.Random(seed)
    beads = ws / ".beads"
    beads.mkdir(parents=True)
    with (beads / "issues.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(1, n_issues + 1):
            created = NOW - timedelta(minutes=rng.randrange(60 * 24 * 30))
            row: dict[str, Any] = {
                "id": str(i),
                "title": rng.choice(["Fix", "Refactor", "Add", "Document"]) + f" thing {i}",
                "status": "running" if i <= 2 else rng.choice(STATUSES),
                "created": isoformat_z(created),
                "updated": isoformat_z(created + timedelta(minutes=rng.randrange(600))),
                "tags": rng.sample(TAGS, rng.randrange(3)),
                "dk_priority": rng.choice(["P0", "P1", "P2", "P2", "P3"]),
                "dk_risk": rng.choice(["low", "medium", "medium", "high", "critical"]),
                "dk_size": rng.choice(["XS", "S", "M", "M", "L", "XL"]),
                "dk_attempts": str(rng.randrange(3)),
                "dk_estimated_tokens": rng.choice([20000, 50000, 80000, 120000]),
            }
            if rng.random() < 0.1:
                row["dk_tool_hint"] = rng.choice(["codex", "claude"])
            fh.write(json.dumps(row) + "\n")
    with (beads / "deps.jsonl").open("w", encoding="utf-8") as fh:
        for _ in range(n_deps):
            a, b = rng.randrange(1, n_issues + 1), rng.randrange(1, n_issues + 1)
            if a == b:
                b = a + 1 if a < n_issues else a - 1
            lo, hi = min(a, b), max(a, b)  # edges go forward: a DAG
            typ = "blocks" if rng.random() < 0.9 else "related"
            fh.write(json.dumps({"from": str(lo), "to": str(hi), "type": typ}) + "\n")
    report = ws / REPORT_PATH
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"domains": {"code": {"action_rate": 0.3},
                                              "fab_world": {"action_rate": 0.05},
                                              "fab_asset": {"action_rate": 0.8}}}))


def loader(ws: Path) -> tuple[str, Callable[[], tuple[dict[str, Issue], list[Any]]]]:
    """BeadsStore.load when the store module exists, else a plain parse loop."""
    try:
        from cyntra.state.store import BeadsStore
    except ImportError:
        BeadsStore = None  # type: ignore[assignment,misc]

    if BeadsStore is not None:
        store = BeadsStore(ws)

        def load_store() -> tuple[dict[str, Issue], list[Any]]:
            s = store.load()
            return s.issues, list(s.deps)

        return "BeadsStore.load", load_store

    def load_plain() -> tuple[dict[str, Issue], list[Any]]:
        issues: dict[str, Issue] = {}
        for line in (ws / ".beads" / "issues.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                issue = Issue.model_validate(json.loads(line))
                issues[issue.id] = issue
        deps = []
        for line in (ws / ".beads" / "deps.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                deps.append((str(d["from"]), str(d["to"]), str(d.get("type", "blocks"))))
        return issues, deps

    return "json + Issue.model_validate", load_plain


def run_once(ws: Path, load: Callable[[], tuple[dict[str, Issue], list[Any]]],
             config: KernelConfig) -> tuple[dict[str, float], dict[str, Any]]:
    limits = UniverseLimits(max_concurrent_workcells=3, max_run_minutes=120)
    c0, t0 = time.process_time(), time.perf_counter()
    issues, deps = load()
    c1, t1 = time.process_time(), time.perf_counter()
    graph = IssueGraph(issues, deps)
    ready = graph.ready_ids()
    path = graph.critical_path()
    c2, t2 = time.process_time(), time.perf_counter()
    result = schedule_cycle(issues, deps, config, ws, universe=limits, graph=graph, now=NOW, report=False)
    c3, t3 = time.process_time(), time.perf_counter()
    full = schedule_cycle(issues, deps, config, ws, universe=limits, graph=graph, now=NOW)
    c4, t4 = time.process_time(), time.perf_counter()
    if [s.issue_id for s in full.scheduled] != [s.issue_id for s in result.scheduled]:
        raise SystemExit("report=True and report=False scheduled different issues")
    facts = {"issues": len(issues), "deps": len(deps), "ready": len(ready),
             "blocked": len(full.blocked), "critical_path_len": len(path),
             "critical_hours": graph.critical_hours, "scheduled": [
                 (s.issue_id, s.plan.action.label()) for s in result.scheduled]}
    return {"load": t1 - t0, "graph": t2 - t1, "schedule": t3 - t2, "total": t3 - t0, "report": t4 - t3,
            "load_cpu": c1 - c0, "graph_cpu": c2 - c1, "schedule_cpu": c3 - c2,
            "total_cpu": c3 - c0, "report_cpu": c4 - c3}, facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--issues", type=int, default=100_000)
    ap.add_argument("--deps", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    config = parse_config(CONFIG)
    with tempfile.TemporaryDirectory(prefix="cyntra-bench-") as tmp:
        ws = Path(tmp)
        generate(ws, args.issues, args.deps, args.seed)
        how, load = loader(ws)
        runs: list[dict[str, float]] = []
        facts: dict[str, Any] = {}
        for _ in range(args.runs):
            facts = {}
            gc.collect()  # free the previous run's 100k issues outside the timed region
            times, facts = run_once(ws, load, config)
            runs.append(times)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if args.json:
        print(json.dumps({"loader": how, "runs": args.runs, "median_s": medians, **facts}))
        return 0
    print(f"{facts['issues']} issues, {facts['deps']} deps; ready {facts['ready']}, "
          f"blocked {facts['blocked']}, critical path {facts['critical_path_len']} issues "
          f"({facts['critical_hours']} h)")
    print(f"scheduled: {facts['scheduled']}")
    print(f"median of {args.runs} runs (load via {how}):   wall       cpu")
    for k in ("load", "graph", "schedule", "total", "report"):
        print(f"  {k:<9}{medians[k] * 1000:14.1f} ms{medians[k + '_cpu'] * 1000:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
