"""Snapshots of the heuristic strategy's decisions and the clamp's results (syrupy, JSON).

The fixture set (tests/fixtures/strategy/) covers every routing rule and matcher key, every
speculation trigger (dk_speculate, the --speculate flag, a rule's speculate: true, the critical
path auto trigger) and every controller mode (a dynamics report gives code=trap,
fab_asset=chaos, fab_world=balanced; no report gives disabled). The upstream issues are
snapshotted too. Timestamps, ids, latencies, hashes and tmp paths are masked so the snapshots
are stable; a diff in them is a behaviour change to review (`pytest --snapshot-update`).

Also: switching the kernel from its old path (``schedule_cycle`` with its built-in heuristic
``plan_fn``) to ``KernelSession.plan_cycle`` with ``strategy: heuristic`` changes no plan.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from cyntra.control.controller import ExplorationController
from cyntra.kernel.config import load_config
from cyntra.kernel.heuristic import HeuristicContext
from cyntra.kernel.scheduler import schedule_cycle
from cyntra.kernel.session import KernelSession
from cyntra.planner.action_space import PlanAction
from cyntra.state.graph import IssueGraph
from cyntra.strategy.engine import Decision

FIX = Path(__file__).parent / "fixtures" / "strategy"
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
# code: trap (< action_low 0.1), fab_asset: chaos (> action_high 0.5), fab_world: balanced.
MIXED_REPORT = {"domains": {"code": {"action_rate": 0.05}, "fab_asset": {"action_rate": 0.9}, "fab_world": 0.3}}


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def _deep_update(base: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def make_workspace(root: Path, *, report: dict[str, Any] | None = None,
                   config: dict[str, Any] | None = None, policy: str = "policy-empty.yaml") -> Path:
    """A workspace built from the fixtures (config, issues, deps, policy, optional dynamics report)."""
    (root / ".cyntra").mkdir(parents=True)
    (root / ".beads").mkdir()
    cfg = yaml.safe_load((FIX / "config.yaml").read_text())
    _deep_update(cfg, config or {})
    cfg["policy"] = policy
    (root / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.copy(FIX / policy, root / policy)
    shutil.copy(FIX / "issues.jsonl", root / ".beads" / "issues.jsonl")
    shutil.copy(FIX / "deps.jsonl", root / ".beads" / "deps.jsonl")
    if report is not None:
        (root / ".cyntra" / "dynamics").mkdir()
        (root / ".cyntra" / "dynamics" / "dynamics_report.json").write_text(json.dumps(report))
    return root


def heuristic_decisions(session: KernelSession, *, speculate: bool = False) -> list[Decision]:
    """Every issue of the workspace through the engine (readiness aside), in file order."""
    issue_set = session.store.load()
    assert not issue_set.problems
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps])
    hctx = HeuristicContext.create(session.config, universe=session.limits, graph=graph,
                                   controller=ExplorationController(session.config.control, session.workspace.root),
                                   action_space=session.space, speculate=speculate)
    ctxs = session.strategy_contexts(list(issue_set.issues.values()), hctx, NOW)
    return session.engine.decide(ctxs)


def _mask(text: str, root: Path) -> str:
    return text.replace(str(root), "<workspace>")


def compact(decision: Decision, root: Path) -> dict[str, Any]:
    """What a reviewer needs to see of one heuristic decision (no ids, times, latencies)."""
    rec, plan = decision.record, decision.plan
    assert rec.heuristic.action == plan.action, "strategy: heuristic must apply the heuristic's plan"
    steps = {t.step: t for t in rec.heuristic.trace}
    return {
        "plan": plan.action.label(),
        "runs": plan.candidate_toolchains(),
        "toolchains": plan.toolchains,
        "speculate": plan.speculate,
        "temperature": plan.temperature,
        "controller": plan.controller_mode,
        "rule": steps["routing"].data["rule"],
        "triggers": steps["speculation"].data["triggers"],
        "trace": {k: _mask(steps[k].detail, root) for k in ("routing", "speculation", "controller", "budget")},
        "clamp": [v.model_dump(mode="json") for v in rec.clamp],
        "source": rec.applied.source,
        "propensity": rec.propensity,
    }


SCENARIOS: dict[str, dict[str, Any]] = {
    "mixed_report": {"report": MIXED_REPORT},
    "no_report": {},
    "speculate_flag": {"speculate": True},
    "speculation_disabled": {"report": MIXED_REPORT, "config": {"speculation": {"enabled": False}}},
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_heuristic_decisions_snapshot(tmp_path: Path, scenario: str, snapshot_json: SnapshotAssertion) -> None:
    spec = SCENARIOS[scenario]
    ws = make_workspace(tmp_path / "ws", report=spec.get("report"), config=spec.get("config"))
    session = KernelSession.open(ws)
    decisions = heuristic_decisions(session, speculate=spec.get("speculate", False))
    assert len(decisions) >= 40
    out = {d.record.issue_id: compact(d, ws) for d in decisions}
    assert out == snapshot_json


def test_fixture_set_covers_every_rule_trigger_and_mode(tmp_path: Path) -> None:
    """The snapshot is only as good as its coverage: prove the fixtures reach every branch."""
    rules: set[str | None] = set()
    triggers: set[str] = set()
    modes: set[str] = set()
    no_spec_despite_trigger = 0
    for n, spec in enumerate(SCENARIOS.values()):
        ws = make_workspace(tmp_path / f"ws{n}", report=spec.get("report"), config=spec.get("config"))
        for d in heuristic_decisions(KernelSession.open(ws), speculate=spec.get("speculate", False)):
            steps = {t.step: t for t in d.record.heuristic.trace}
            rules.add(steps["routing"].data["rule"])
            fired = steps["speculation"].data["triggers"]
            triggers.update(fired)
            modes.add(d.plan.controller_mode)
            no_spec_despite_trigger += bool(fired) and not d.plan.speculate
    cfg, _ = load_config(FIX / "config.yaml")
    assert rules == {r.id for r in cfg.routing.rules} | {None}
    assert triggers == {"dk_speculate", "flag", "rule", "critical_path"}
    assert modes == {"trap", "chaos", "balanced", "disabled"}
    assert no_spec_despite_trigger > 0


def _copy_upstream(upstream: Path, dest: Path, issues_file: str) -> Path:
    (dest / ".beads").mkdir(parents=True)
    (dest / ".cyntra").mkdir()
    shutil.copy(upstream / ".cyntra" / "config.yaml", dest / ".cyntra" / "config.yaml")
    shutil.copytree(upstream / "universes", dest / "universes")
    shutil.copy(upstream / ".beads" / issues_file, dest / ".beads" / "issues.jsonl")
    shutil.copy(FIX / "policy-empty.yaml", dest / "policy-empty.yaml")
    return dest


@pytest.mark.parametrize("issues_file", ["issues.jsonl", "issues.early.jsonl"])
def test_upstream_heuristic_decisions_snapshot(upstream_dir: Path, tmp_path: Path, issues_file: str,
                                               snapshot_json: SnapshotAssertion) -> None:
    ws = _copy_upstream(upstream_dir, tmp_path / "up", issues_file)
    config, _ = load_config(ws / ".cyntra" / "config.yaml")
    # The upstream config as-is, with an empty clamp policy so the default policy's edits don't churn this.
    session = KernelSession.open(ws, config=config.model_copy(update={"policy": "policy-empty.yaml"}))
    decisions = heuristic_decisions(session)
    assert decisions
    out = {d.record.issue_id: compact(d, ws) for d in decisions}
    assert out == snapshot_json


PROBES = [
    PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=120, max_candidates=3),
    PlanAction(swarm_id="speculate_vote", parallelism=2, max_run_minutes=15, max_candidates=2),
    PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=15, max_candidates=1),
    PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=120, max_candidates=3),
]


def test_clamp_results_snapshot(tmp_path: Path, snapshot_json: SnapshotAssertion) -> None:
    """The fixture policy (enforce / warn / dryrun rules) on the heuristic's plan and fixed probes."""
    ws = make_workspace(tmp_path / "ws", report=MIXED_REPORT, policy="policy.yaml")
    session = KernelSession.open(ws)
    out: dict[str, Any] = {}
    modes: set[str] = set()
    for d in heuristic_decisions(session):
        issue = session.store.load().issues[d.record.issue_id]
        rows = []
        for action in [d.record.heuristic.action, *PROBES]:
            assert action is not None
            res = session.clamp.apply(action, issue)
            assert session.clamp.apply(res.applied, issue).applied == res.applied  # idempotent
            modes.update(v.mode for v in res.violations)
            rows.append({
                "requested": action.label(),
                "applied": res.applied.label(),
                "changed": res.changed,
                "violations": [f"{v.mode} {v.rule_id} {v.field}: {v.requested!r}->{v.applied!r} limit={v.limit}"
                               for v in res.violations],
            })
        floor, rule = session.clamp.min_confidence(issue)
        out[d.record.issue_id] = {"min_confidence": [floor, rule], "applied_now": d.record.applied.action.label(),
                                  "clamps": rows}
    assert modes == {"enforce", "warn", "dryrun"}
    assert out == snapshot_json


# -- old path vs strategy: heuristic -------------------------------------------------------------

WIDE = {"scheduling": {"max_concurrent_workcells": 500, "max_concurrent_tokens": 10**9}}


@pytest.mark.parametrize(
    ("report", "speculate", "config"),
    [
        (MIXED_REPORT, False, WIDE),
        (None, False, WIDE),
        (MIXED_REPORT, True, WIDE),
        (MIXED_REPORT, False, {}),  # 3 lanes: the same issues must win the same lanes
        (None, True, {}),
        (MIXED_REPORT, False, {**WIDE, "speculation": {"enabled": False}}),
    ],
)
def test_strategy_heuristic_changes_no_plan(tmp_path: Path, report: dict[str, Any] | None, speculate: bool,
                                            config: dict[str, Any]) -> None:
    ws = make_workspace(tmp_path / "ws", report=report, config=config)
    session = KernelSession.open(ws, strategy="heuristic")
    assert session.policy.policy.rules == []
    issue_set = session.store.load()
    deps = [(d.from_, d.to, d.type) for d in issue_set.deps]
    old = schedule_cycle(issue_set.issues, deps, session.config, ws, universe=session.limits, speculate=speculate,
                         now=NOW, action_space=session.space)
    new = session.plan_cycle(issue_set, speculate=speculate, now=NOW)
    assert old.scheduled, "the fixture must schedule something"
    assert [s.issue_id for s in new.schedule.scheduled] == [s.issue_id for s in old.scheduled]
    assert new.schedule.skipped == old.skipped
    for o, n in zip(old.scheduled, new.schedule.scheduled, strict=True):
        assert n.plan.action == o.plan.action, o.issue_id
        assert n.plan.toolchains == o.plan.toolchains, o.issue_id
        assert n.plan.candidate_toolchains() == o.plan.candidate_toolchains(), o.issue_id
        assert (n.plan.speculate, n.plan.temperature, n.plan.controller_mode) == (
            o.plan.speculate, o.plan.temperature, o.plan.controller_mode), o.issue_id
        assert (n.slots, n.tokens) == (o.slots, o.tokens)
        # The new path keeps the old trace and appends the strategy step.
        assert n.plan.trace[: len(o.plan.trace)] == o.plan.trace
        rec = new.decisions[o.issue_id].record
        assert (rec.applied.source, rec.propensity, rec.fallback_reason, rec.clamp) == ("heuristic", 1.0, None, [])
