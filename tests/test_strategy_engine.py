"""The decision engine with real registered candidate strategies that fail in every way.

A candidate that raises, sleeps past ``planner.latency_budget_ms``, returns an invalid tuple, a
non-decision, a NaN confidence or a batch of the wrong length is recorded as such; under
``shadow`` dispatch carries on with the heuristic's plan within the budget, and under the
candidate's own mode the record says why it fell back. Also: confidence floors, the clamp on
candidate plans, and epsilon-greedy exploration inside the clamp.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cyntra.clock import isoformat_z
from cyntra.control.controller import ExplorationController
from cyntra.kernel.heuristic import HeuristicContext
from cyntra.kernel.session import KernelSession
from cyntra.planner.action_space import ACTION_FIELDS, PlanAction
from cyntra.schemas import schema_errors
from cyntra.state.graph import IssueGraph
from cyntra.strategy import base, ope
from cyntra.strategy.base import (
    BaseStrategy,
    DispatchStrategy,
    StrategyContext,
    StrategyDecision,
    StrategyEnv,
    register_strategy,
)
from cyntra.strategy.engine import Decision

FIX = Path(__file__).parent / "fixtures" / "strategy"
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
BUDGET_MS = 25.0
SLACK_S = 0.25  # thread start/join and record building on a loaded CI machine
SLEEP_S = 2.0
REPORT = {"domains": {"code": {"action_rate": 0.05}, "fab_asset": {"action_rate": 0.9}, "fab_world": 0.3}}
GREEDY_FAR = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=120, max_candidates=3)


def _deep_update(base_: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base_.get(key), dict):
            _deep_update(base_[key], value)
        else:
            base_[key] = value


def make_workspace(root: Path, *, config: dict[str, Any] | None = None, policy: str = "policy.yaml") -> Path:
    (root / ".cyntra" / "dynamics").mkdir(parents=True)
    (root / ".beads").mkdir()
    cfg = yaml.safe_load((FIX / "config.yaml").read_text())
    cfg["policy"] = policy
    cfg["planner"] = {"latency_budget_ms": BUDGET_MS}
    _deep_update(cfg, config or {})
    (root / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.copy(FIX / policy, root / policy)
    shutil.copy(FIX / "issues.jsonl", root / ".beads" / "issues.jsonl")
    shutil.copy(FIX / "deps.jsonl", root / ".beads" / "deps.jsonl")
    (root / ".cyntra" / "dynamics" / "dynamics_report.json").write_text(json.dumps(REPORT))
    return root


def contexts(session: KernelSession, ids: Sequence[str] | None = None) -> list[StrategyContext]:
    issue_set = session.store.load()
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps])
    hctx = HeuristicContext.create(session.config, universe=session.limits, graph=graph,
                                   controller=ExplorationController(session.config.control, session.workspace.root),
                                   action_space=session.space)
    issues = [issue_set.issues[i] for i in ids] if ids is not None else list(issue_set.issues.values())
    return session.strategy_contexts(issues, hctx, NOW)


# -- candidate strategies (real plugins, registered by name) -------------------------------------


class Raiser(BaseStrategy):
    name = "my-raiser"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        raise RuntimeError("model exploded")


class Sleeper(BaseStrategy):
    name = "my-sleeper"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        time.sleep(SLEEP_S)
        return StrategyDecision(action=GREEDY_FAR, confidence=1.0)


class Blocker(BaseStrategy):
    """Hangs until the test releases it (a deadlocked model, say)."""

    name = "my-blocker"
    release = threading.Event()
    calls = 0

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        type(self).calls += 1
        self.release.wait(10)
        return StrategyDecision(action=GREEDY_FAR, confidence=1.0)


class InvalidTuple(BaseStrategy):
    name = "my-invalid"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        bad = PlanAction.model_construct(swarm_id="serial_handoff", parallelism=3, max_run_minutes=60,
                                         max_candidates=1)
        return StrategyDecision(action=bad, confidence=0.99)


class Garbage(BaseStrategy):
    name = "my-garbage"

    def decide(self, ctx: StrategyContext) -> Any:
        return {"swarm_id": "speculate_vote", "parallelism": 2}


class NaNConfidence(BaseStrategy):
    name = "my-nan"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        return StrategyDecision(action=GREEDY_FAR, confidence=float("nan"))


class ShortBatch(BaseStrategy):
    name = "my-short"

    def decide_batch(self, ctxs: Sequence[StrategyContext]) -> list[StrategyDecision]:
        return []


class Confident(BaseStrategy):
    """Always the widest plan, with a fixed confidence (the clamp and floors must rein it in)."""

    def __init__(self, name: str, confidence: float) -> None:
        self.name = name
        self.conf = confidence

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        return StrategyDecision(action=GREEDY_FAR, confidence=self.conf)


def _factory(cls: type[BaseStrategy]) -> Any:
    def build(env: StrategyEnv) -> DispatchStrategy:
        return cls()

    return build


def _unbuildable(env: StrategyEnv) -> DispatchStrategy:
    raise ValueError("cannot load weights")


FAILING: dict[str, tuple[str, str]] = {
    "my-raiser": ("error", "RuntimeError: model exploded"),
    "my-sleeper": ("timeout", "exceeded latency budget"),
    "my-invalid": ("invalid", "serial_handoff requires parallelism 1"),
    "my-garbage": ("invalid", "not a StrategyDecision"),
    "my-nan": ("invalid", "not a probability"),
    "my-short": ("invalid", "wrong length"),
    "my-unbuildable": ("unavailable", "ValueError: cannot load weights"),
    "no-such-strategy": ("unavailable", "unknown strategy 'no-such-strategy'"),
}


@pytest.fixture(autouse=True)
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the test strategies in a private copy of the registry."""
    base._ensure_builtins()  # registered into the real registry, not only into this test's copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    classes: list[type[BaseStrategy]] = [Raiser, Sleeper, Blocker, InvalidTuple, Garbage, NaNConfidence, ShortBatch]
    for cls in classes:
        register_strategy(cls.name, _factory(cls))
    register_strategy("my-unbuildable", _unbuildable)
    register_strategy("my-unsure", lambda env: Confident("my-unsure", 0.1))
    register_strategy("my-confident", lambda env: Confident("my-confident", 0.5))
    yield


def _heuristic_applied(tmp_path: Path, ids: Sequence[str] | None = None) -> dict[str, Decision]:
    session = KernelSession.open(make_workspace(tmp_path / "heur"), strategy="heuristic")
    return {d.record.issue_id: d for d in session.engine.decide(contexts(session, ids))}


IDS = ["h1", "k1", "t3", "l1", "c3"]  # serial, speculating, docs, low-small, critical path


@pytest.mark.parametrize("name", list(FAILING))
def test_shadow_candidate_failure_never_changes_or_delays_dispatch(tmp_path: Path, name: str) -> None:
    status, reason = FAILING[name]
    ws = make_workspace(tmp_path / "ws", config={"strategy": "shadow", "planner": {"candidate": name}})
    session = KernelSession.open(ws)
    ctxs = contexts(session, IDS)
    start = time.perf_counter()
    decisions = session.engine.decide(ctxs)
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_MS / 1000 * len(ctxs) + SLACK_S, f"{name}: decide took {elapsed:.3f}s"

    heur = _heuristic_applied(tmp_path, IDS)
    for d in decisions:
        rec = d.record
        assert rec.mode == "shadow"
        assert rec.candidate is not None and rec.candidate.strategy == name
        assert rec.candidate.status == status
        assert rec.candidate.error is not None and reason in rec.candidate.error
        assert rec.candidate.action is None and rec.agreement is None
        assert rec.fallback_reason is None  # shadow never falls back: the heuristic is what it applies
        assert rec.applied.source == "heuristic"
        h = heur[rec.issue_id]
        assert d.plan.action == h.plan.action == rec.heuristic.action
        assert d.plan.candidate_toolchains() == h.plan.candidate_toolchains()
        assert schema_errors("decision", rec.model_dump(mode="json")) == []


def test_shadow_sleeper_does_not_hold_up_a_scheduling_cycle(tmp_path: Path) -> None:
    """The whole cycle (lazy batches of plans) stays within the per-batch budgets."""
    ws = make_workspace(tmp_path / "ws", config={"strategy": "shadow", "planner": {"candidate": "my-sleeper"}})
    session = KernelSession.open(ws)
    issue_set = session.store.load()
    start = time.perf_counter()
    cycle = session.plan_cycle(issue_set, now=NOW)
    elapsed = time.perf_counter() - start
    batches = {d.record.candidate.latency_ms for d in cycle.decisions.values() if d.record.candidate}
    n = len(cycle.decisions)
    assert elapsed < BUDGET_MS / 1000 * n + SLACK_S * max(1, len(batches)), elapsed
    ref = KernelSession.open(make_workspace(tmp_path / "ref"), strategy="heuristic").plan_cycle(issue_set, now=NOW)
    assert [(s.issue_id, s.plan.action) for s in cycle.schedule.scheduled] == [
        (s.issue_id, s.plan.action) for s in ref.schedule.scheduled]
    assert all(d.record.candidate is not None and d.record.candidate.status == "timeout"
               for d in cycle.decisions.values())


def test_a_hung_candidate_is_not_called_again_until_it_returns(tmp_path: Path) -> None:
    """One hung call costs one thread and one budget; later cycles skip the candidate at no cost."""
    Blocker.release.clear()
    Blocker.calls = 0
    ws = make_workspace(tmp_path / "ws", config={"strategy": "shadow", "planner": {"candidate": "my-blocker"}})
    engine = KernelSession.open(ws).engine
    ctxs = contexts(engine_session := KernelSession.open(ws), ["h1"])
    assert engine_session.config.strategy == "shadow"
    first = engine.decide(ctxs)[0].record.candidate
    assert first is not None and first.status == "timeout" and "exceeded latency budget" in (first.error or "")
    start = time.perf_counter()
    for _ in range(5):
        again = engine.decide(ctxs)[0].record.candidate
        assert again is not None and again.status == "timeout" and "not called" in (again.error or "")
    assert time.perf_counter() - start < BUDGET_MS / 1000  # five cycles cost less than one budget
    assert Blocker.calls == 1
    Blocker.release.set()
    deadline = time.monotonic() + 5
    while engine._overrunning is not None and engine._overrunning.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    ok = engine.decide(ctxs)[0].record.candidate
    assert ok is not None and ok.status == "ok" and Blocker.calls == 2


@pytest.mark.parametrize("name", list(FAILING))
def test_candidate_mode_falls_back_to_the_heuristic_with_a_reason(tmp_path: Path, name: str) -> None:
    status, reason = FAILING[name]
    session = KernelSession.open(make_workspace(tmp_path / "ws"), strategy=name)
    ctxs = contexts(session, IDS)
    start = time.perf_counter()
    decisions = session.engine.decide(ctxs)
    assert time.perf_counter() - start < BUDGET_MS / 1000 * len(ctxs) + SLACK_S
    heur = _heuristic_applied(tmp_path, IDS)
    for d in decisions:
        rec = d.record
        assert rec.mode == name
        assert rec.fallback_reason is not None
        assert rec.fallback_reason.startswith(f"candidate {status}")
        assert reason in rec.fallback_reason
        assert rec.applied.source == "heuristic"
        assert rec.applied.action == heur[rec.issue_id].record.applied.action
        assert d.plan.action == heur[rec.issue_id].plan.action
        assert schema_errors("decision", rec.model_dump(mode="json")) == []


def test_low_confidence_falls_back_with_a_confidence_violation(tmp_path: Path) -> None:
    # The fixture policy's floor is 0.2; the candidate says 0.1.
    session = KernelSession.open(make_workspace(tmp_path / "ws"), strategy="my-unsure")
    issues = session.store.load().issues
    for d in session.engine.decide(contexts(session)):
        rec = d.record
        assert rec.candidate is not None and rec.candidate.status == "ok"
        assert rec.fallback_reason is not None and rec.fallback_reason.startswith("low confidence 0.100")
        assert rec.applied.source == "heuristic" and rec.heuristic.action is not None
        assert rec.applied.action == session.clamp.apply(rec.heuristic.action, issues[rec.issue_id]).applied
        conf = [v for v in rec.candidate.clamp if v.field == "confidence"]
        assert len(conf) == 1
        expected_rule = "kernel-confident" if rec.issue_id in {"t1", "k5"} else "policy.min_confidence"
        assert (conf[0].rule_id, conf[0].requested, conf[0].mode) == (expected_rule, 0.1, "enforce")


def test_config_confidence_floor_applies_too(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", config={"planner": {"min_confidence": 0.6}})
    session = KernelSession.open(ws, strategy="my-confident")
    for d in session.engine.decide(contexts(session, IDS)):
        assert d.record.fallback_reason is not None and "low confidence 0.500 < 0.600" in d.record.fallback_reason


def test_confident_candidate_is_applied_inside_the_clamp(tmp_path: Path) -> None:
    session = KernelSession.open(make_workspace(tmp_path / "ws"), strategy="my-confident")
    issues = session.store.load().issues
    sources = set()
    for d in session.engine.decide(contexts(session)):
        rec, issue = d.record, issues[d.record.issue_id]
        sources.add(rec.applied.source)
        if issue.id in {"t1", "k5"}:  # kernel-confident: 0.9 floor
            assert rec.applied.source == "heuristic" and "kernel-confident" in (rec.fallback_reason or "")
            continue
        assert rec.fallback_reason is None and rec.applied.source == "candidate"
        res = session.clamp.apply(GREEDY_FAR, issue)
        assert rec.applied.action == res.applied == d.plan.action
        assert rec.applied.action in session.clamp.allowed(issue)
        assert rec.clamp == res.violations
        assert rec.candidate is not None and rec.candidate.clamp == res.violations
        assert rec.agreement is not None and rec.agreement["all"] == (rec.heuristic.action == GREEDY_FAR)
        # The toolchains recorded are the ones that run: as many as the applied plan allows.
        n = d.plan.parallelism if d.plan.speculate else d.plan.max_candidates
        assert rec.applied.toolchains == d.plan.toolchains[:n]
        assert rec.candidate.toolchains == session.engine._runnable(  # same rule for the proposal
            contexts(session, [issue.id])[0], GREEDY_FAR)
        assert schema_errors("decision", rec.model_dump(mode="json")) == []
    assert sources == {"candidate", "heuristic"}
    # docs issues may not speculate (docs-serial-only), low-small are capped at p1/30m.
    by_id = {d.record.issue_id: d.record for d in session.engine.decide(contexts(session, ["t3", "l1"]))}
    assert by_id["t3"].applied.action.swarm_id == "serial_handoff"
    assert by_id["l1"].applied.action.max_run_minutes <= 30


# -- exploration -----------------------------------------------------------------------------------


def _explore_session(tmp_path: Path, name: str, **exploration: Any) -> KernelSession:
    ws = make_workspace(tmp_path / name, config={"exploration": {"epsilon": 0.5, "seed": 7, **exploration}})
    return KernelSession.open(ws, strategy="heuristic")


def test_exploration_stays_inside_the_clamp_with_correct_propensities(tmp_path: Path) -> None:
    session = _explore_session(tmp_path, "ws")
    issues = session.store.load().issues
    eps = 0.5
    explored = 0
    records = [d.record for d in session.engine.decide(contexts(session))]
    for rec in records:
        issue = issues[rec.issue_id]
        assert rec.heuristic.action is not None
        greedy = session.clamp.apply(rec.heuristic.action, issue).applied
        allowed = session.clamp.allowed(issue)
        assert rec.applied.action in allowed
        k = len([a for a in allowed if a != greedy])
        assert rec.exploration is not None and rec.exploration["alternatives"] == k
        if rec.applied.action == greedy:
            assert rec.applied.source == "heuristic"
            assert rec.propensity == pytest.approx(1 - eps if k else 1.0)
        else:
            explored += 1
            assert rec.applied.source == "exploration" and rec.exploration["explored"] is True
            assert rec.exploration["greedy"] == greedy.label()
            assert rec.propensity == pytest.approx(eps / k)
        assert schema_errors("decision", rec.model_dump(mode="json")) == []
    assert 0 < explored < len(records)
    # Same decision ids (same issue, attempt, time) → the same choices.
    again = [d.record for d in _explore_session(tmp_path, "ws2").engine.decide(contexts(session))]
    assert [(r.decision_id, r.applied.action, r.propensity) for r in again] == [
        (r.decision_id, r.applied.action, r.propensity) for r in records]


def test_an_issue_draws_once_per_attempt_not_once_per_cycle(tmp_path: Path) -> None:
    """The scheduler re-decides an issue whose plan did not fit, a cycle later (new time, new
    decision id). The draw must not change with it: re-drawing until a plan fits made narrow
    plans win more often than their recorded propensity (and OPE biased). A retry draws anew."""
    session = _explore_session(tmp_path, "ws")
    issues = session.store.load().issues
    times = [datetime(2026, 1, 15, 9, m, tzinfo=UTC) for m in range(0, 50, 7)]
    changed_on_retry = 0
    for issue in issues.values():
        (ctx,) = contexts(session, [issue.id])
        assert ctx.heuristic.action is not None
        seen = set()
        for now in times:
            ctx.now = now
            (d,) = session.engine.decide([ctx])
            seen.add((d.record.applied.action, d.record.propensity))
            assert session.engine.preview_action(issue, ctx.heuristic.action, now) == d.record.applied.action
        assert len(seen) == 1, issue.id
        retries = {session.engine.decide([ctx], attempt_of={issue.id: a})[0].record.applied.action for a in range(1, 9)}
        changed_on_retry += len(retries) > 1
    assert changed_on_retry > 0


def test_exploration_rate_matches_epsilon(tmp_path: Path) -> None:
    session = _explore_session(tmp_path, "ws")
    issue = session.store.load().issues["n1"]
    greedy = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=60, max_candidates=1)
    n = 4000
    hits = sum(session.engine._explore(issue, f"dec-{i}", greedy)[2]["explored"] for i in range(n))
    assert abs(hits / n - 0.5) < 0.04


def test_exploration_fields_restrict_what_varies(tmp_path: Path) -> None:
    session = _explore_session(tmp_path, "ws", fields=["max_run_minutes"])
    issues = session.store.load().issues
    varied = 0
    for d in session.engine.decide(contexts(session)):
        rec = d.record
        assert rec.heuristic.action is not None
        greedy = session.clamp.apply(rec.heuristic.action, issues[rec.issue_id]).applied
        for f in ACTION_FIELDS:
            if f != "max_run_minutes":
                assert getattr(rec.applied.action, f) == getattr(greedy, f)
        varied += rec.applied.action.max_run_minutes != greedy.max_run_minutes
        if rec.applied.source == "exploration":
            k = rec.exploration["alternatives"] if rec.exploration else 0
            assert 1 <= k <= 3 and rec.propensity == pytest.approx(0.5 / k)
    assert varied > 0


def test_candidate_directed_exploration_logs_the_mixture_it_draws_from(tmp_path: Path) -> None:
    """Shadow with ``candidate_share``: exploring draws favour the candidate's clamped plan, every
    recorded propensity equals the logging probability OPE reconstructs, the logging distribution
    sums to one, and the scheduler's preview agrees with the decision wherever it commits."""
    eps, share = 0.5, 0.6
    ws = make_workspace(tmp_path / "ws", config={
        "strategy": "shadow", "planner": {"candidate": "my-confident"},
        "exploration": {"epsilon": eps, "seed": 3, "candidate_share": share}})
    session = KernelSession.open(ws)
    issues = session.store.load().issues
    toward_hits = explored = previews = 0
    expected = 0.0
    for rnd in range(12):  # draws are seeded per (issue, attempt): many attempts, independent draws
        now = datetime(2026, 1, 15, 12, rnd, tzinfo=UTC)
        ctxs = contexts(session)
        for ctx in ctxs:
            ctx.now = now
        for d in session.engine.decide(ctxs, attempt_of={c.issue.id: rnd for c in ctxs}):
            rec = d.record
            issue = issues[rec.issue_id].model_copy(update={"dk_attempts": rnd})
            assert rec.applied.source in ("heuristic", "exploration")  # shadow: the candidate never decides
            assert rec.applied.action in session.clamp.allowed(issue)
            exp = rec.exploration or {}
            toward = session.clamp.apply(GREEDY_FAR, issue).applied
            greedy = session.clamp.apply(rec.heuristic.action, issue).applied  # type: ignore[arg-type]
            floored = issue.id in {"t1", "k5"}  # kernel-confident: 0.9 floor, the candidate says 0.5
            if exp.get("alternatives"):
                assert exp["candidate_share"] == share
                assert exp["candidate"] == (toward.label() if toward != greedy and not floored else None)
            assert ope.logging_probability(rec, rec.applied.action.label()) == pytest.approx(rec.propensity)
            # over the plans the clamp allows (OPE's targets are clamp outputs)
            total = sum(ope.logging_probability(rec, a.label()) for a in session.clamp.allowed(issue))
            assert total == pytest.approx(1.0)
            if exp.get("explored") and exp["candidate"]:
                explored += 1
                toward_hits += rec.applied.action == toward
                expected += share + (1 - share) / exp["alternatives"]
            preview = session.engine.preview_action(issue, rec.heuristic.action, now)  # type: ignore[arg-type]
            if preview is not None:
                previews += 1
                assert preview == rec.applied.action
            else:  # the draw went to the candidate's plan, or uniform where the candidate had none
                assert exp.get("explored")
                assert rec.applied.action == toward if exp["candidate"] else rec.applied.action != greedy
    assert explored > 20 and previews > 0
    # the candidate's share plus its part of the uniform draws (within 4 binomial sigmas)
    assert abs(toward_hits - expected) < 4 * (explored * 0.25) ** 0.5, (toward_hits, expected, explored)


def test_shadow_explores_towards_the_candidate_only_above_its_confidence_floor(tmp_path: Path) -> None:
    """Below the floor a deployed candidate falls back to the heuristic, so shadow records the
    same fallback and never favours the plan it would not apply: the log then estimates the
    candidate as it would run."""
    ws = make_workspace(tmp_path / "ws", config={
        "strategy": "shadow", "planner": {"candidate": "my-unsure"},  # 0.1 against the policy's 0.2
        "exploration": {"epsilon": 0.5, "seed": 3, "candidate_share": 1.0}})
    session = KernelSession.open(ws)
    for d in session.engine.decide(contexts(session)):
        rec = d.record
        assert rec.candidate is not None and rec.candidate.status == "ok"
        assert [v.field for v in rec.candidate.clamp if v.field == "confidence"] == ["confidence"]
        assert (rec.exploration or {}).get("candidate") is None
        assert rec.fallback_reason is None  # shadow: the heuristic applies by design
        assert ope.target_label(rec, "candidate") == ope.target_label(rec, "heuristic")
        assert ope.logging_probability(rec, rec.applied.action.label()) == pytest.approx(rec.propensity)
        assert schema_errors("decision", rec.model_dump(mode="json")) == []


def test_candidate_share_is_a_shadow_setting(tmp_path: Path) -> None:
    """Where the candidate decides (or fell back for low confidence), exploring draws stay
    uniform: no record names a candidate plan to favour."""
    ws = make_workspace(tmp_path / "ws", config={
        "exploration": {"epsilon": 0.5, "seed": 3, "candidate_share": 1.0}})
    for name in ("my-confident", "my-unsure"):
        session = KernelSession.open(ws, strategy=name)
        for d in session.engine.decide(contexts(session)):
            exp = d.record.exploration or {}
            assert exp.get("candidate") is None
            assert ope.logging_probability(d.record, d.record.applied.action.label()) == pytest.approx(
                d.record.propensity)


def test_decision_ids_are_deterministic_and_distinct(tmp_path: Path) -> None:
    session = KernelSession.open(make_workspace(tmp_path / "ws"), strategy="heuristic")
    ids = [d.record.decision_id for d in session.engine.decide(contexts(session))]
    assert len(set(ids)) == len(ids)
    again = [d.record.decision_id for d in session.engine.decide(contexts(session))]
    assert ids == again
    # Derived from (issue, attempt, decision time, job type) only: a replayed history gets the same ids.
    digest = hashlib.sha256(f"h1|0|{isoformat_z(NOW)}|code".encode()).hexdigest()
    assert ids[0] == f"dec-{digest[:20]}"


# -- policy files and their schema ---------------------------------------------------------------


@pytest.mark.parametrize("path", sorted([*(FIX.parent.parent.parent / "policies").glob("*.yaml"),
                                         *FIX.glob("policy*.yaml")]), ids=lambda p: p.name)
def test_policy_files_validate_against_the_schema(path: Path) -> None:
    from cyntra.strategy.policy import load_policy

    loaded = load_policy(path)
    assert schema_errors("policy", yaml.safe_load(path.read_text()) or {}) == []
    assert schema_errors("policy", loaded.policy.model_dump(mode="json")) == []


@pytest.mark.parametrize("text", [
    "rules: [{id: a, limits: {max_parallelism: 7}}]",
    "rules: [{id: a, mode: sometimes}]",
    "rules: [{id: a, limits: {colour: red}}]",
    "rules: [{id: a, match: {colour: red}}]",
    "rules: [{limits: {}}]",
    "bogus: 1",
])
def test_schema_and_loader_refuse_the_same_policies(tmp_path: Path, text: str) -> None:
    from cyntra.errors import ConfigError
    from cyntra.strategy.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert schema_errors("policy", yaml.safe_load(text)) != []
    with pytest.raises(ConfigError):
        load_policy(path)
