"""Best-of-K labels: K distinct allowed plans per past decision, run through the real kernel path.

A small sim workspace runs its history under the heuristic (real runner, dispatcher, workcells,
sim adapter, verifier); best-of-K then replays sampled decisions. The replayed heuristic plan must
reproduce the history's own outcome (same draws at the same decision time), the derived rewards
must equal what executing those plans gives, the main history must be untouched, and a budget
must stop collection before it is exceeded.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cyntra.errors import CyntraError
from cyntra.kernel.runner import run_kernel
from cyntra.kernel.session import KernelSession
from cyntra.planner.action_space import ACTION_FIELDS, ActionSpace
from cyntra.planner.best_of_k import (
    BestOfKLabel,
    CandidateResult,
    PlanRun,
    attempts_from,
    best_of_k_cmd,
    best_run,
    collect_best_of_k,
    derive_outcome,
    history_decisions,
    labels_path,
    select_plans,
)
from cyntra.schemas import schema_errors
from cyntra.sim.cli import init_workspace
from cyntra.strategy.ledger import Ledger


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("bok") / "ws"
    init_workspace(ws, n_issues=40, seed=3)
    cfg = ws / ".cyntra" / "config.yaml"
    cfg.write_text(cfg.read_text() + "\nexploration:\n  epsilon: 0.3\n")
    run_kernel(KernelSession.open(ws), once=False, until_idle=True)
    return ws


@pytest.fixture()
def ws(history: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(history, dst)
    return dst


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _rows(ws: Path) -> list[BestOfKLabel]:
    return [BestOfKLabel.model_validate_json(line) for line in labels_path(KernelSession.open(ws).workspace)
            .read_text().splitlines()]


def test_k_distinct_allowed_plans_through_the_kernel(ws: Path) -> None:
    archives_before = _tree(ws / ".cyntra" / "archives")
    ledger_before = _tree(ws / ".cyntra" / "decisions")
    index_before = {p.name: p.read_bytes() for p in (ws / ".cyntra" / "index").rglob("*") if p.is_file()}
    report = collect_best_of_k(ws, k=4, n_issues=6, seed=1)
    assert report.decisions_labelled == 6 and report.plans_run == 24 and not report.stopped_by_budget
    written = json.loads((ws / ".cyntra" / "best_of_k" / "last_run.json").read_text())
    assert schema_errors("best_of_k_report", written) == []
    session = KernelSession.open(ws)
    issues = session.store.load().issues
    joined = {j.decision.decision_id: j for j in Ledger(session.workspace.decisions_dir).read().joined()}
    replayed_heuristic = 0
    for row in _rows(ws):
        labels = [p.action for p in row.plans]
        assert len(labels) == len(set(labels)) == 4
        allowed = {a.label() for a in session.clamp.allowed(issues[row.issue_id])}
        assert set(labels) <= allowed
        assert [p.action for p in row.plans if p.heuristic] == [row.heuristic_action]
        assert row.target_action == best_run(row.plans).action
        assert row.action_rewards == {p.action: p.utility for p in row.plans}
        for p in row.plans:  # every plan's runs were archived apart from the main history
            dirs = list((ws / p.archives).iterdir())
            assert len(dirs) == len(p.candidates) >= 1
            assert all((d / "manifest.json").is_file() and (d / "proof.json").is_file() for d in dirs)
            manifest = json.loads((dirs[0] / "manifest.json").read_text())
            assert manifest["plan"]["swarm_id"] == p.action.split("/")[0]
            assert manifest["planner"]["exploration"]["replay_of"] == row.decision_id
        # Same issue snapshot, same decision time: the heuristic's plan replays the history's outcome.
        j = joined[row.decision_id]
        if j.decision.applied.action.label() == row.heuristic_action and j.outcome is not None:
            heur = next(p for p in row.plans if p.heuristic)
            assert heur.utility == pytest.approx(j.outcome.utility, abs=1e-3)
            assert heur.passed == j.outcome.gates_passed
            replayed_heuristic += 1
    assert replayed_heuristic >= 1
    assert _tree(ws / ".cyntra" / "archives") == archives_before
    assert _tree(ws / ".cyntra" / "decisions") == ledger_before
    assert {p.name: p.read_bytes() for p in (ws / ".cyntra" / "index").rglob("*") if p.is_file()} == index_before
    # A second run labels other decisions only (rows already present are skipped).
    again = collect_best_of_k(ws, k=2, n_issues=3, seed=2)
    rows = _rows(ws)
    assert len(rows) == 9 and len({(r.issue_id, r.decision_time) for r in rows}) == 9
    assert again.skipped.get("already_labelled", 0) >= 6


def test_derived_rewards_match_execution(ws: Path) -> None:
    collect_best_of_k(ws, k=6, n_issues=8, seed=4)
    session = KernelSession.open(ws)
    issues = session.store.load().issues
    checked = 0
    for row in _rows(ws):
        issue = issues[row.issue_id]
        serial, spec = session.routed_lists(issue)
        assert not set(row.derived_rewards) & set(row.action_rewards)
        assert set(row.derived_outcomes) == set(row.derived_rewards)
        for label, out in row.derived_outcomes.items():  # the recorded parts price back to the reward
            u = session.config.objective.utility(priority=issue.dk_priority, size=issue.dk_size, passed=out.passed,
                                                 cost_usd=out.cost_usd, wall_minutes=out.wall_minutes)
            assert u == pytest.approx(row.derived_rewards[label], abs=1e-4)
        for i, run in enumerate(row.plans):  # leave one executed plan out, derive it from the others
            others = row.plans[:i] + row.plans[i + 1:]
            attempts = attempts_from(others, lambda _tc, m: float(m))
            action = next(a for a in session.space.actions if a.label() == run.action)
            res = derive_outcome(action, session.space, serial, spec, attempts, lambda _tc, m: float(m))
            if res is None:
                continue
            u = session.config.objective.utility(priority=issue.dk_priority, size=issue.dk_size, passed=res[0],
                                                 cost_usd=res[1], wall_minutes=res[2])
            assert u == pytest.approx(run.utility, abs=1e-3)
            checked += 1
    assert checked >= 5


def _run(action: str, *cands: tuple[str, str, float]) -> PlanRun:
    """An executed plan whose candidates (toolchain, status, minutes) cost $1 per minute."""
    results = [CandidateResult(toolchain=tc, status=st, passed=st == "success", duration_ms=int(m * 60000),
                               cost_usd=m) for tc, st, m in cands]
    return PlanRun(action=action, heuristic=False, passed=any(c.passed for c in results), status="x", cost_usd=0.0,
                   duration_ms=0, utility=0.0, toolchains=[c[0] for c in cands], candidates=results, archives="")


def test_which_plans_are_derived_does_not_depend_on_outcomes() -> None:
    """A derived label must not be likelier when attempts went well: only unconditional attempts
    (parallel candidates, a serial plan's first) count, an attempt tells nothing about a budget
    longer than its own even if it finished early, and a serial plan needs every candidate it
    could run even when the first passes."""
    space = ActionSpace()
    act = {a.label(): a for a in space.actions}
    minutes = lambda _tc, m: float(m)  # noqa: E731
    serial, spec = ["codex", "claude", "opencode"], ["codex", "claude", "opencode"]

    # claude ran second in a serial plan only because codex failed: not usable.
    failed_first = attempts_from([_run("serial_handoff/p1/60m/c2", ("codex", "failed", 20), ("claude", "success", 10))],
                                 minutes, space)
    assert set(failed_first) == {"codex"}
    # codex passed in 20 minutes under a 30-minute budget: that tells the 15- and 30-minute plans,
    # not the 60-minute one (a timeout would not have told it either).
    early = attempts_from([_run("serial_handoff/p1/30m/c1", ("codex", "success", 20))], minutes, space)
    assert derive_outcome(act["serial_handoff/p1/15m/c1"], space, serial, spec, early, minutes) == (False, 15.0, 15.0)
    assert derive_outcome(act["serial_handoff/p1/30m/c1"], space, serial, spec, early, minutes) == (True, 20.0, 20.0)
    assert derive_outcome(act["serial_handoff/p1/60m/c1"], space, serial, spec, early, minutes) is None
    # A serial c2 plan needs claude's attempt too, although codex passes first; a parallel plan
    # supplies it (and the longest launch budget per toolchain is kept).
    assert derive_outcome(act["serial_handoff/p1/30m/c2"], space, serial, spec, early, minutes) is None
    both = attempts_from([_run("serial_handoff/p1/30m/c1", ("codex", "success", 20)),
                          _run("speculate_vote/p2/15m/c2", ("codex", "timeout", 15), ("claude", "timeout", 15)),
                          _run("speculate_vote/p2/60m/c2", ("codex", "success", 20), ("claude", "success", 40))],
                         minutes, space)
    assert both["claude"].budget_minutes == 60.0 and both["codex"].budget_minutes == 60.0
    assert derive_outcome(act["serial_handoff/p1/30m/c2"], space, serial, spec, both, minutes) == (True, 20.0, 20.0)
    assert derive_outcome(act["speculate_vote/p2/30m/c2"], space, serial, spec, both, minutes) == (True, 50.0, 30.0)


def test_budget_stops_before_overspending(ws: Path) -> None:
    report = collect_best_of_k(ws, k=3, n_issues=20, seed=0, budget_usd=40.0)
    assert report.stopped_by_budget and report.stop_reason and "budget" in report.stop_reason
    assert report.cost_usd <= 40.0
    assert 0 < report.decisions_labelled < 20
    assert len(_rows(ws)) == report.decisions_labelled
    res = CliRunner().invoke(best_of_k_cmd, ["-w", str(ws), "--k", "3", "--budget", "0", "--issues", "5"])
    assert res.exit_code == 0, res.output
    assert "budget: stopped before decision" in res.output
    assert len(_rows(ws)) == report.decisions_labelled  # nothing more was run


def test_per_issue_labels_retries_too(ws: Path) -> None:
    """One decision per issue by default; ``per_issue=None`` (CLI ``--per-issue 0``) labels every
    decision, retries included; ``per_issue=2`` at most two of each issue's."""
    history, _, _ = history_decisions(KernelSession.open(ws).workspace)
    per: dict[str, int] = {}
    for h in history:
        per[h.issue.id] = per.get(h.issue.id, 0) + 1
    retried = sorted(i for i, n in per.items() if n >= 2)
    assert retried, "the fixture history should retry some issue"
    one = collect_best_of_k(ws, k=1, seed=0)
    assert one.decisions_labelled == len(per)  # one per issue
    shutil.rmtree(ws / ".cyntra" / "best_of_k")
    every = collect_best_of_k(ws, k=1, seed=0, per_issue=None)
    assert every.decisions_labelled == len(history)
    rows = _rows(ws)
    assert len({r.decision_id for r in rows}) == len(history)
    assert {r.issue_id for r in rows if r.attempt > 0} >= set(retried)  # the retries have labels
    shutil.rmtree(ws / ".cyntra" / "best_of_k")
    two = collect_best_of_k(ws, k=1, seed=0, per_issue=2)
    assert two.decisions_labelled == sum(min(2, n) for n in per.values())
    with pytest.raises(CyntraError, match="per_issue"):
        collect_best_of_k(ws, k=1, per_issue=0)


def test_plan_selection_is_stratified_and_seeded() -> None:
    space = ActionSpace()
    heur = next(a for a in space.actions if a.label() == "serial_handoff/p1/60m/c1")
    picks = [select_plans(heur, space.actions, 6, random.Random(s)) for s in range(30)]
    for p in picks:
        assert p[0] == heur and len(p) == len(set(p)) == 6
        for f in ACTION_FIELDS:  # every field varies within one issue's K plans
            assert len({getattr(a, f) for a in p}) >= 2
        assert {a.max_run_minutes for a in p} == {15, 30, 60, 120}
    assert len({tuple(a.label() for a in p) for p in picks}) >= 20  # not the same alternatives every time
    assert select_plans(heur, space.actions, 6, random.Random(7)) == select_plans(heur, space.actions, 6, random.Random(7))
    limited = [a for a in space.actions if a.max_candidates <= 2]
    assert set(select_plans(heur, limited, 20, random.Random(0))) == set(limited) | {heur}


def test_best_is_gates_then_cost_then_duration() -> None:
    def run(action: str, passed: bool, cost: float, ms: int, heuristic: bool = False) -> PlanRun:
        return PlanRun(action=action, heuristic=heuristic, passed=passed, status="success" if passed else "failed",
                       cost_usd=cost, duration_ms=ms, utility=0.0, toolchains=[], candidates=[], archives="x")

    runs = [run("a", False, 0.1, 10), run("b", True, 3.0, 10), run("c", True, 2.0, 50), run("d", True, 2.0, 40)]
    assert best_run(runs).action == "d"
    assert best_run([run("a", False, 1.0, 10), run("b", False, 0.5, 99)]).action == "b"


def test_dataset_reads_the_labels(ws: Path, tmp_path: Path) -> None:
    from planner_model.dataset import build_dataset

    report = collect_best_of_k(ws, k=4, n_issues=10, seed=5)
    bk = build_dataset(ws, tmp_path / "bk", labels="best-of-k", quiet=True)
    assert bk.meta.source["examples"] == report.decisions_labelled
    attached = build_dataset(ws, tmp_path / "att", labels="executed", attach_best_of_k=True, quiet=True)
    executed = build_dataset(ws, tmp_path / "ex", labels="executed", quiet=True)
    assert attached.meta.source["examples"] == executed.meta.source["examples"] > report.decisions_labelled
    import numpy as np

    n_rows = sum(int(np.isfinite(np.load(tmp_path / "att" / f"{s}__action_rewards.npy")).any(axis=1).sum())
                 for s in ("train", "val", "test"))
    n_cells = sum(int(np.isfinite(np.load(tmp_path / "att" / f"{s}__action_rewards.npy")).sum())
                  for s in ("train", "val", "test"))
    assert n_rows == report.decisions_labelled
    assert n_cells == report.plans_run + report.derived_rewards
