#!/usr/bin/env python
"""Benchmark one live ``urm`` decision end to end on CPU: planner input + encode + forward + decode.

Builds a real history (a sim workspace run ``--until-idle``), a dataset and a small checkpoint,
then times, per issue of a fresh backlog, what the kernel does for one decision:
``session.planner_input`` (similar runs from the index) and ``URMStrategy.decide_batch([ctx])``
(tokenise, forward, decode inside the clamp). Both runtimes are timed on the same contexts: the
numpy forward the strategy uses for batches of 1-2 on CPU, and torch (1 intra-op thread, as the
strategy sets it). Prints medians and p99 in ms.

Usage: python scripts/bench_decide.py [--issues 400] [--iters 2000] [--json PATH]
Target (issue #7): single decision including input building, median ≤ 2 ms, p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cyntra import clock
from cyntra.cli import main as cyntra_main
from cyntra.control.controller import ExplorationController
from cyntra.kernel.heuristic import HeuristicContext
from cyntra.kernel.session import KernelSession
from cyntra.sim.cli import init_workspace
from cyntra.state.graph import IssueGraph
from cyntra.strategy import urm as urm_module
from cyntra.strategy.base import StrategyEnv
from cyntra.strategy.urm import build_urm_strategy


def _pcts(xs: list[float]) -> dict[str, float]:
    s = sorted(x * 1000 for x in xs)
    return {"median_ms": round(statistics.median(s), 3), "p99_ms": round(s[int(0.99 * (len(s) - 1))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--issues", type=int, default=400, help="history issues (run to idle before timing)")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from planner_model.config import TrainConfig
    from planner_model.dataset import build_dataset
    from planner_model.train import train

    root = Path(tempfile.mkdtemp(prefix="urm-decide-"))
    ws = root / "ws"
    init_workspace(ws, n_issues=args.issues, seed=3)
    res = CliRunner().invoke(cyntra_main, ["run", "-w", str(ws), "--until-idle", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    build_dataset(ws, root / "data", quiet=True)
    train(root / "data", root / "ckpt", TrainConfig(epochs=2, quiet=True, device="cpu", seed=0))

    # A fresh backlog in the same workspace's world: new issues, the history's index.
    fresh = root / "fresh"
    init_workspace(fresh, n_issues=64, seed=4)
    for sub in (".cyntra/index", ".cyntra/archives"):
        src = ws / sub
        if src.is_dir():
            shutil.rmtree(fresh / sub, ignore_errors=True)
            shutil.copytree(src, fresh / sub)
    session = KernelSession.open(fresh)
    issue_set = session.store.load()
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps])
    hctx = HeuristicContext.create(session.config, universe=session.limits, graph=graph,
                                   controller=ExplorationController(session.config.control, fresh),
                                   action_space=session.space)
    issues = list(issue_set.issues.values())
    now = clock.now()
    session.config.planner.checkpoint = str(root / "ckpt")
    session.config.planner.device = "cpu"
    strategy = build_urm_strategy(StrategyEnv(workspace=fresh, config=session.config, space=session.space))
    ctxs = session.strategy_contexts(issues, hctx, now)

    t_input: list[float] = []
    for i in range(args.iters):
        issue = issues[i % len(issues)]
        t = time.perf_counter()
        session.planner_input(issue, now)
        t_input.append(time.perf_counter() - t)

    def time_decide(max_batch: int) -> list[float]:
        urm_module.NUMPY_MAX_BATCH = max_batch
        out: list[float] = []
        for i in range(args.iters):
            ctx = ctxs[i % len(ctxs)]
            t = time.perf_counter()
            strategy.decide_batch([ctx])
            out.append(time.perf_counter() - t)
        return out[100:]

    t_numpy = time_decide(2)
    t_torch = time_decide(0)
    urm_module.NUMPY_MAX_BATCH = 2
    total = [a + b for a, b in zip(t_input[100:], t_numpy, strict=False)]
    figures: dict[str, Any] = {
        "history_runs": len(session.index),
        "planner_input": _pcts(t_input[100:]),
        "decide_numpy_runtime": _pcts(t_numpy),
        "decide_torch_1_thread": _pcts(t_torch),
        "decision_including_input": _pcts(total),
        "iters": args.iters,
    }
    figures["targets_met"] = {
        "median_le_2ms": figures["decision_including_input"]["median_ms"] <= 2,
        "p99_le_10ms": figures["decision_including_input"]["p99_ms"] <= 10,
    }
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
