"""``cyntra demo``: the whole story on a fresh simulated workspace, start to finish.

1. history — the heuristic decides, with exploration inside the clamp (propensities logged);
2. dataset — archives + ledger → URM-style memmaps (leakage-safe, time-ordered);
3. training + evaluation of the URM planner (CPU, or CUDA when present);
4. shadow — later issues run with the heuristic applied and the planner recorded beside it,
   exploration favouring the planner's plans (``exploration.candidate_share``) so OPE has support;
5. reports — `strategy diff` (markdown + plots), the oracle report, and a `promote --dry-run` verdict.

It ends with a summary table and the path of every artifact.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cyntra.clock import isoformat_z, parse_ts
from cyntra.workspace import Workspace


@dataclass
class DemoSize:
    issues: int
    epochs: int
    history_fraction: float = 0.6
    epsilon: float = 0.15
    candidate_share: float = 0.75  # shadow: share of exploring draws that apply the planner's plan


QUICK = DemoSize(issues=360, epochs=6)
FULL = DemoSize(issues=2000, epochs=12)


@dataclass
class DemoResult:
    out: Path
    artifacts: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _set_config(ws: Workspace, **updates: str) -> None:
    """Edit top-level keys of the sim config in place (the demo owns this workspace)."""
    text = ws.config_path.read_text(encoding="utf-8")
    for key, block in updates.items():
        lines = text.splitlines()
        kept = [ln for ln in lines if not ln.startswith(f"{key}:")]
        text = "\n".join(kept).rstrip("\n") + "\n" + block.rstrip("\n") + "\n"
    ws.config_path.write_text(text, encoding="utf-8")


def run_demo(out: Path, *, quick: bool = False, seed: int = 7, console: Console | None = None) -> DemoResult:
    from cyntra.kernel.runner import run_kernel
    from cyntra.kernel.session import KernelSession
    from cyntra.sim.cli import init_workspace
    from cyntra.sim.report import evaluate_decisions
    from cyntra.strategy.diff import build_diff, write_report
    from cyntra.strategy.promote import check_gates

    con = console or Console()
    size = QUICK if quick else FULL
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    res = DemoResult(out=out)
    ws = Workspace.at(out / "workspace")

    def step(name: str) -> float:
        con.rule(f"[bold]{name}")
        return time.perf_counter()

    # 1. a fresh sim workspace, and its history under the heuristic with exploration
    t0 = step(f"1/5 history: {size.issues} simulated issues, heuristic + exploration ε={size.epsilon}")
    init_workspace(ws.root, n_issues=size.issues, seed=seed)
    created = sorted(
        parse_ts(json.loads(line)["created"]) for line in ws.issues_path.read_text().splitlines() if line.strip()
    )
    split_at = created[int(len(created) * size.history_fraction)]
    _set_config(ws, exploration=f"exploration:\n  epsilon: {size.epsilon}\n  seed: {seed}\n")
    session = KernelSession.open(ws.root)
    report1 = run_kernel(session, until_idle=True, once=False, progress=True, until=split_at)
    con.print(f"history: {report1.dispatched} decisions, {report1.succeeded} passed, "
              f"{report1.escalated} escalated, ${report1.cost_usd:,.0f} (virtual time up to {isoformat_z(split_at)})")
    res.timings["history"] = time.perf_counter() - t0

    # 2. dataset
    t0 = step("2/5 dataset: archives + ledger → planner inputs → memmaps")
    from planner_model.dataset import build_dataset

    data_dir = out / "dataset"
    built = build_dataset(ws.root, data_dir, quiet=True)
    meta = json.loads((data_dir / "dataset.json").read_text())
    con.print(f"dataset {meta['dataset_sha256'][:12]}: splits {meta['splits']}, vocab {meta['vocab_size']}")
    res.timings["dataset"] = time.perf_counter() - t0
    _ = built

    # 3. train + evaluate
    t0 = step(f"3/5 training the URM planner ({size.epochs} epochs) and evaluating it")
    from planner_model.config import TrainConfig
    from planner_model.evaluate import evaluate
    from planner_model.train import train

    ckpt = out / "checkpoint"
    tr = train(data_dir, ckpt, TrainConfig(epochs=size.epochs, seed=seed, quiet=False))
    ev = evaluate(ckpt, data_dir, out / "eval", n_bootstrap=300)
    em_raw = (ev.get("model") or {}).get("exact_match")
    em = em_raw.get("mean", em_raw.get("value")) if isinstance(em_raw, dict) else em_raw
    con.print(f"checkpoint {ckpt}: best epoch {tr.best_epoch}, held-out exact match "
              f"{_fmt(em)}; eval report {out / 'eval' / 'eval.md'}")
    res.timings["train+eval"] = time.perf_counter() - t0

    # 4. shadow on the later issues
    t0 = step("4/5 shadow: the heuristic decides, the URM planner is recorded beside it")
    _set_config(ws, strategy="strategy: shadow",
                planner=f"planner:\n  checkpoint: {ckpt}\n  candidate: urm\n  latency_budget_ms: 200\n",
                exploration=f"exploration:\n  epsilon: {size.epsilon}\n  seed: {seed}\n"
                            f"  candidate_share: {size.candidate_share}\n")
    con.print(f"exploration ε={size.epsilon}, {size.candidate_share:.0%} of it on the planner's plans "
              "(OPE support)")
    session = KernelSession.open(ws.root)
    report2 = run_kernel(session, until_idle=True, once=False, progress=True)
    con.print(f"shadow: {report2.dispatched} decisions, {report2.fallbacks} fallbacks")
    res.timings["shadow"] = time.perf_counter() - t0

    # 5. reports
    t0 = step("5/5 reports: strategy diff, oracle report, promote --dry-run")
    diff = build_diff(ws.root, since=isoformat_z(split_at), n_boot=300)
    diff_files = write_report(diff, "md", out / "reports")
    write_report(diff, "json", out / "reports")
    session = KernelSession.open(ws.root)
    sim_report, _ = evaluate_decisions(session)
    (out / "reports" / "sim_report.json").write_text(sim_report.model_dump_json(indent=2) + "\n")
    verdict = check_gates(session, n_boot=300)
    res.timings["reports"] = time.perf_counter() - t0

    agreement = getattr(diff, "agreement", None)
    overall = getattr(agreement, "overall", None) if agreement is not None else None
    res.summary = {
        "history_decisions": report1.dispatched,
        "shadow_decisions": report2.dispatched,
        "dataset_examples": sum(meta["splits"].values()),
        "exact_match": em,
        "agreement": overall,
        "heuristic_regret": sim_report.regret.mean if sim_report.regret else None,
        "pass_rate": sim_report.pass_rate,
        "promote_verdict": "would promote" if verdict.passed else "refused",
        "failed_gates": [g.name for g in verdict.gates if not g.passed],
    }
    res.artifacts = {
        "workspace": str(ws.root),
        "ledger": str(ws.decisions_dir),
        "archives": str(ws.archives_dir),
        "dataset": str(data_dir),
        "checkpoint": str(ckpt),
        "eval report": str(out / "eval" / "eval.md"),
        "diff report": str(next((p for p in diff_files if p.suffix == ".md"), out / "reports")),
        "oracle report": str(out / "reports" / "sim_report.json"),
        "plots": ", ".join(sorted(str(p) for p in (out / "reports").glob("*.png")) +
                           sorted(str(p) for p in (out / "eval").glob("*.png"))),
    }
    (out / "demo_summary.json").write_text(json.dumps(
        {"summary": res.summary, "artifacts": res.artifacts, "timings_s": res.timings}, indent=2, default=str) + "\n")
    _print_summary(con, res)
    return res


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _print_summary(con: Console, res: DemoResult) -> None:
    t = Table(title="cyntra demo — summary")
    t.add_column("what")
    t.add_column("value")
    for k, v in res.summary.items():
        t.add_row(k.replace("_", " "), _fmt(v) if not isinstance(v, list) else ", ".join(v) or "none")
    t.add_row("time", f"{sum(res.timings.values()):.0f} s (" +
              ", ".join(f"{k} {v:.0f}s" for k, v in res.timings.items()) + ")")
    con.print(t)
    a = Table(title="artifacts")
    a.add_column("artifact")
    a.add_column("path")
    for k, v in res.artifacts.items():
        a.add_row(k, v)
    con.print(a)
