"""Off-policy evaluation on logged data with a known truth, refusal without support, and the ledger bridge."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cyntra.planner.action_space import PlanAction
from cyntra.strategy.clamp import Violation
from cyntra.strategy.ledger import JoinedDecision
from cyntra.strategy.ope import (
    SupportThresholds,
    build_batch,
    clamped_action,
    effective_sample_size,
    evaluate,
    fit_reward_model,
    logging_probability,
    on_policy_mean,
    target_label,
)
from cyntra.strategy.record import AppliedPlan, DecisionRecord, OutcomeRecord, Proposal

K, C = 4, 3


def _world(seed: int, n: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Uniform-random logging over K actions in C context cells; rewards mu[cell, action] + noise."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, C, n)
    mu = rng.normal(0, 5, (C, K))
    actions = rng.integers(0, K, n)
    rewards = mu[cells, actions] + rng.normal(0, 3, n)
    return cells, actions, rewards, mu


def test_estimators_cover_the_truth_under_uniform_logging() -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    errors: dict[str, list[float]] = {m: [] for m in covered}
    seeds = range(20)
    for seed in seeds:
        cells, actions, rewards, mu = _world(seed)
        n = len(rewards)
        target = np.argmax(mu, axis=1)[cells]  # deterministic: the best action per cell
        truth = float(mu[cells, target].mean())
        res = evaluate(rewards, actions, np.full(n, 1 / K), target, n_actions=K, logging=np.full((n, K), 1 / K),
                       contexts=cells, seed=seed)
        assert not res.refused
        for m in covered:
            est = getattr(res, m)
            assert est.lower is not None and est.upper is not None and est.estimate is not None
            assert est.lower <= est.estimate <= est.upper
            covered[m] += est.lower <= truth <= est.upper
            errors[m].append(est.estimate - truth)
        # The on-policy mean estimates the logging policy's own value.
        logging_truth = float(mu[cells].mean())
        on = on_policy_mean(rewards, seed=seed)
        assert on.lower is not None and on.upper is not None
        assert on.lower - 1.0 <= logging_truth <= on.upper + 1.0
    for m, hits in covered.items():
        assert hits >= 16, f"{m} covered the truth in only {hits}/20 seeds"
        assert abs(np.mean(errors[m])) < 0.35, f"{m} is biased: mean error {np.mean(errors[m]):.3f}"
    # DR uses the reward model: tighter than IPS on average.
    assert np.std(errors["dr"]) < np.std(errors["ips"])


def test_stochastic_target_distribution() -> None:
    hits = 0
    for seed in range(10):
        cells, actions, rewards, mu = _world(100 + seed)
        n = len(rewards)
        pi = np.random.default_rng(seed).dirichlet(np.ones(K), size=C)[cells]
        truth = float((pi * mu[cells]).sum(axis=1).mean())
        res = evaluate(rewards, actions, np.full(n, 1 / K), pi, logging=np.full((n, K), 1 / K), contexts=cells,
                       seed=seed, n_boot=400)
        assert res.dr.lower is not None and res.dr.upper is not None
        hits += res.dr.lower <= truth <= res.dr.upper
    assert hits >= 8


def test_effective_sample_size_formula() -> None:
    assert effective_sample_size([1, 1, 2, 0]) == pytest.approx(16 / 6)
    assert effective_sample_size([3.0] * 7) == pytest.approx(7)
    assert effective_sample_size([0, 0]) == 0.0
    _, actions, rewards, _ = _world(3, n=400)
    target = np.zeros(400, dtype=int)
    props = np.full(400, 1 / K)
    res = evaluate(rewards, actions, props, target, n_actions=K, logging=np.full((400, K), 1 / K), n_boot=50)
    w = (actions == 0) / props
    assert res.diagnostics.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert res.diagnostics.matches == int((actions == 0).sum())
    assert res.diagnostics.max_weight == pytest.approx(K)


def test_refuses_when_the_logger_never_tried_the_targets_action() -> None:
    rng = np.random.default_rng(0)
    n = 500
    rewards = rng.normal(size=n)
    logged = np.zeros(n, dtype=int)  # deterministic logger: always action 0, propensity 1
    target = np.ones(n, dtype=int)
    res = evaluate(rewards, logged, np.ones(n), target, n_actions=2)
    assert res.refused and res.dr.estimate is None and res.ips.estimate is None and res.snips.estimate is None
    assert res.diagnostics.unsupported_fraction == 1.0
    assert res.diagnostics.matches == 0
    assert "minimum 30" in (res.reason or "")


def test_refuses_partial_support_and_reports_the_unsupported_fraction() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    logged = rng.integers(0, 2, n)  # the logger tries actions 0 and 1 only
    logging = np.zeros((n, 3))
    logging[:, :2] = 0.5
    target = np.where(rng.random(n) < 0.2, 2, 0)  # ...the target takes action 2 in ~20% of decisions
    res = evaluate(rng.normal(size=n), logged, np.full(n, 0.5), target, n_actions=3, logging=logging)
    assert res.refused and res.dr.estimate is None
    assert 0.15 < res.diagnostics.unsupported_fraction < 0.25
    assert "no support" in (res.reason or "") and f"{res.diagnostics.unsupported_fraction:.1%}" in (res.reason or "")
    # The same data with a target inside the support is estimated.
    ok = evaluate(rng.normal(size=n), logged, np.full(n, 0.5), np.zeros(n, dtype=int), n_actions=3, logging=logging,
                  n_boot=100)
    assert not ok.refused and ok.dr.estimate is not None


def test_unknown_logging_mass_counts_as_unsupported() -> None:
    """Without a full logging distribution, only the logged action's probability is known."""
    rng = np.random.default_rng(2)
    n = 300
    logged = rng.integers(0, 2, n)
    res = evaluate(rng.normal(size=n), logged, np.full(n, 0.5), np.zeros(n, dtype=int), n_actions=2, n_boot=50)
    assert res.refused
    assert res.diagnostics.unsupported_fraction == pytest.approx(float((logged != 0).mean()))


def test_refuses_too_few_matches_and_low_ess() -> None:
    rewards = np.arange(20, dtype=float)
    res = evaluate(rewards, np.zeros(20, dtype=int), np.ones(20), np.zeros(20, dtype=int), n_actions=1)
    assert res.refused and res.diagnostics.matches == 20 and "minimum 30" in (res.reason or "")
    loose = evaluate(rewards, np.zeros(20, dtype=int), np.ones(20), np.zeros(20, dtype=int), n_actions=1,
                     thresholds=SupportThresholds(min_matches=5, min_ess=25), n_boot=50)
    assert loose.refused and "effective sample size" in (loose.reason or "")
    empty = evaluate(np.array([]), np.array([], dtype=int), np.array([]), np.array([], dtype=int))
    assert empty.refused and empty.n == 0 and empty.reason == "no logged decisions with a reward"
    assert on_policy_mean([]).estimate is None


def test_callers_reward_model_and_seeded_intervals() -> None:
    cells, actions, rewards, mu = _world(7)
    n = len(rewards)
    target = np.argmax(mu, axis=1)[cells]
    truth = float(mu[cells, target].mean())
    kw = {"n_actions": K, "logging": np.full((n, K), 1 / K), "contexts": cells}
    exact = evaluate(rewards, actions, np.full(n, 1 / K), target, q_hat=mu[cells], **kw)  # type: ignore[arg-type]
    assert exact.reward_model == "caller q̂"
    assert exact.dr.estimate == pytest.approx(truth, abs=0.6)
    a = evaluate(rewards, actions, np.full(n, 1 / K), target, seed=5, n_boot=200, **kw)  # type: ignore[arg-type]
    b = evaluate(rewards, actions, np.full(n, 1 / K), target, seed=5, n_boot=200, **kw)  # type: ignore[arg-type]
    c = evaluate(rewards, actions, np.full(n, 1 / K), target, seed=6, n_boot=200, **kw)  # type: ignore[arg-type]
    assert a == b
    assert a.dr.estimate == c.dr.estimate and a.dr.lower != c.dr.lower


def test_dr_is_leave_one_out_cross_fitted() -> None:
    """The vectorised DR point estimate equals a literal leave-one-out loop over the reward model."""
    rng = np.random.default_rng(4)
    n, k, n_cells = 80, 3, 4
    cells = rng.integers(0, n_cells, n)
    actions = rng.integers(0, k, n)
    rewards = rng.normal(size=n) + actions
    props = np.full(n, 1 / k)
    pi = rng.dirichlet(np.ones(k), n)
    res = evaluate(rewards, actions, props, pi, logging=np.full((n, k), 1 / k), contexts=cells,
                   thresholds=SupportThresholds(min_matches=1, min_ess=1), n_boot=20)
    q_full = fit_reward_model(cells, actions, rewards, n_cells, k)
    total = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        q_loo = fit_reward_model(cells[keep], actions[keep], rewards[keep], n_cells, k)
        q_i = q_full[cells[i]].copy()
        q_i[actions[i]] = q_loo[cells[i], actions[i]]
        w = pi[i, actions[i]] / props[i]
        total += float((pi[i] * q_i).sum() + w * (rewards[i] - q_loo[cells[i], actions[i]]))
    assert res.dr.estimate == pytest.approx(total / n)


def test_reward_model_shrinks_to_the_action_mean() -> None:
    q = fit_reward_model([0, 0, 1], [0, 0, 0], [10.0, 10.0, 0.0], 3, 2, shrinkage=2.0)
    g = 20 / 3
    m0 = (20.0 + 2 * g) / (3 + 2)
    assert q[0, 0] == pytest.approx((20 + 2 * m0) / 4)
    assert q[2, 0] == pytest.approx(m0)  # an unseen cell gets the action's mean
    assert q[0, 1] == pytest.approx(g)  # an unseen action gets the global mean


# -- the ledger bridge -----------------------------------------------------------------------------

SERIAL60 = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=60, max_candidates=1)
SERIAL30 = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=30, max_candidates=1)
SPEC2 = PlanAction(swarm_id="speculate_vote", parallelism=2, max_run_minutes=60, max_candidates=2)


def _record(applied: PlanAction, propensity: float, exploration: dict[str, object] | None,
            candidate: Proposal | None = None, heuristic_clamp: list[Violation] | None = None) -> DecisionRecord:
    return DecisionRecord(
        decision_id="dec-1", issue_id="1", timestamp="2025-01-01T00:00:00.000000Z", mode="shadow",
        heuristic=Proposal(strategy="heuristic", status="ok", action=SPEC2 if heuristic_clamp else SERIAL60,
                           clamp=heuristic_clamp or []),
        candidate=candidate,
        applied=AppliedPlan(action=applied, toolchains=["claude"],
                            source="exploration" if exploration and exploration.get("explored") else "heuristic"),
        propensity=propensity, exploration=exploration,
    )


def test_logging_probability_reconstructs_epsilon_greedy() -> None:
    greedy = _record(SERIAL60, 0.8, {"epsilon": 0.2, "explored": False, "alternatives": 4})
    assert logging_probability(greedy, SERIAL60.label()) == 0.8
    assert logging_probability(greedy, SPEC2.label()) == pytest.approx(0.05)
    # A field exploration may not change: alternatives must keep the greedy plan's swarm.
    assert logging_probability(greedy, SPEC2.label(), explore_fields=["max_run_minutes"]) == 0.0
    assert logging_probability(greedy, SERIAL30.label(), explore_fields=["max_run_minutes"]) == pytest.approx(0.05)
    explored = _record(SERIAL30, 0.05, {"epsilon": 0.2, "explored": True, "alternatives": 4,
                                         "greedy": SERIAL60.label()})
    assert logging_probability(explored, SERIAL60.label()) == pytest.approx(0.8)
    assert logging_probability(explored, SERIAL30.label()) == 0.05
    deterministic = _record(SERIAL60, 1.0, None)
    assert logging_probability(deterministic, SERIAL60.label()) == 1.0
    assert logging_probability(deterministic, SERIAL30.label()) == 0.0


def test_targets_are_clamped_and_the_candidate_falls_back() -> None:
    cap = Violation(rule_id="cap", field="parallelism", requested=3, limit={"max_parallelism": 2}, applied=2,
                    mode="enforce")
    c_act = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=60, max_candidates=3)
    fix = Violation(rule_id="action_space.validity", field="max_candidates", requested=3, limit="valid tuple",
                    applied=2, mode="enforce")
    ok = Proposal(strategy="urm", status="ok", action=c_act, clamp=[cap, fix])
    assert clamped_action(ok) == SPEC2
    rec = _record(SERIAL60, 1.0, None, candidate=ok)
    assert target_label(rec, "candidate") == SPEC2.label()
    assert target_label(rec, "heuristic") == SERIAL60.label()
    failed = _record(SERIAL60, 1.0, None, candidate=Proposal(strategy="urm", status="timeout", error="slow"))
    assert target_label(failed, "candidate") == SERIAL60.label()  # deployed: falls back to the heuristic
    low = Proposal(strategy="urm", status="ok", action=c_act, confidence=0.1, clamp=[
        Violation(rule_id="floor", field="confidence", requested=0.1, limit={"min_confidence": 0.5},
                  applied="heuristic", mode="enforce")])
    assert target_label(_record(SERIAL60, 1.0, None, candidate=low), "candidate") == SERIAL60.label()
    assert target_label(_record(SERIAL60, 1.0, None), "candidate") is None


def test_build_batch_skips_decisions_without_reward() -> None:
    rec = _record(SERIAL60, 0.8, {"epsilon": 0.2, "explored": False, "alternatives": 4},
                  candidate=Proposal(strategy="urm", status="ok", action=SERIAL30))
    out = OutcomeRecord(decision_id="dec-1", issue_id="1", timestamp="2025-01-01T01:00:00.000000Z",
                        status="success", gates_passed=True, duration_ms=600000, cost_usd=2.0, utility=5.0)
    batch = build_batch([JoinedDecision(rec, out), JoinedDecision(rec, None)], {"dec-1": "high/M"})
    assert batch.n == 1 and batch.cell_names == ["high/M"]
    assert batch.labels[batch.logged[0]] == SERIAL60.label()
    assert batch.labels[batch.targets["candidate"][0]] == SERIAL30.label()
    assert batch.logging["candidate"][0, batch.targets["candidate"][0]] == pytest.approx(0.05)
    minutes = build_batch([JoinedDecision(rec, out)], reward="agent_minutes")
    assert minutes.rewards[0] == pytest.approx(10.0)


def _width(est: Any) -> float:
    lo, hi = est.lower, est.upper
    assert lo is not None and hi is not None, est
    return float(hi - lo)


def test_cluster_bootstrap_counts_copies_of_one_issue_once() -> None:
    """Four identical copies of every decision (as if each issue were retried with the same
    outcome) carry no more information than one: resampling whole issues gives the interval of
    the unique data, resampling decisions one about half as wide (falsely confident)."""
    from cyntra.sim.report import bootstrap

    cells, actions, rewards, _ = _world(5, n=400)
    p = np.full(cells.size, 1 / K)
    target = np.zeros(cells.size, dtype=np.int64)
    lg = np.full((cells.size, K), 1 / K)
    once = evaluate(rewards, actions, p, target, n_actions=K, logging=lg, contexts=cells, seed=1)
    rep = lambda x: np.repeat(x, 4)  # noqa: E731
    issues = [f"i{i}" for i in range(cells.size) for _ in range(4)]
    lg4 = np.full((4 * cells.size, K), 1 / K)
    naive = evaluate(rep(rewards), rep(actions), rep(p), rep(target), n_actions=K, logging=lg4, contexts=rep(cells),
                     seed=1)
    clustered = evaluate(rep(rewards), rep(actions), rep(p), rep(target), n_actions=K, logging=lg4,
                         contexts=rep(cells), seed=1, groups=issues)
    for m in ("ips", "snips", "dr"):
        assert getattr(clustered, m).estimate == pytest.approx(getattr(naive, m).estimate)
        assert _width(getattr(clustered, m)) == pytest.approx(_width(getattr(once, m)), rel=0.25), m
        assert _width(getattr(naive, m)) < 0.7 * _width(getattr(once, m)), m
    # the same for a plain mean (sim report and benchmark intervals) and the logger's own mean
    one, four = bootstrap(list(rewards), seed=2), bootstrap(list(rep(rewards)), seed=2, groups=issues)
    assert one is not None and four is not None and four.mean == pytest.approx(one.mean)
    assert four.hi - four.lo == pytest.approx(one.hi - one.lo, rel=0.2)
    mean4 = on_policy_mean(rep(rewards), seed=2, groups=issues)
    assert _width(mean4) == pytest.approx(one.hi - one.lo, rel=0.2)
    # one decision per issue: resampling issues is resampling decisions, draw for draw
    single = evaluate(rewards, actions, p, target, n_actions=K, logging=lg, contexts=cells, seed=1,
                      groups=[f"i{i}" for i in range(cells.size)])
    for m in ("ips", "snips", "dr"):
        a, b = getattr(single, m), getattr(once, m)
        assert (a.estimate, a.lower, a.upper) == pytest.approx((b.estimate, b.lower, b.upper), rel=1e-12)
