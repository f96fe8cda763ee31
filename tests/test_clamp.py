"""The policy clamp: enforce limits always hold, output is valid, clamping is idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyntra.errors import ConfigError
from cyntra.kernel.routing import rule_matches
from cyntra.planner.action_space import MAX_RUN_MINUTES, ActionSpace, PlanAction
from cyntra.state.issue import RISKS, SIZES, Issue
from cyntra.strategy.clamp import Clamp, _allows
from cyntra.strategy.policy import Policy, PolicyLimits, PolicyRule, load_policy, parse_policy

SPACE = ActionSpace()
REPO = Path(__file__).resolve().parents[1]


def _clamp(policy: Policy, **kw: int | None) -> Clamp:
    return Clamp(policy, SPACE, rule_matches, **kw)  # type: ignore[arg-type]


def test_default_policy_loads_and_is_hashed() -> None:
    loaded = load_policy(REPO / "policies" / "default.yaml")
    assert len(loaded.sha256) == 64
    assert next(r.id for r in loaded.policy.rules) == "critical-gets-time"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("rules: [{id: a, limits: {max_parallelism: 7}}]", "rules[0].limits.max_parallelism"),
        ("rules: [{id: a, mode: sometimes}]", "rules[0].mode"),
        ("rules: [{id: a}, {id: a}]", "<root>"),
        ("rules: [{id: a, limits: {max_minutes: 200, min_minutes: 300}}]", "rules[0].limits"),
        ("rules: [{id: a, limits: {colour: red}}]", "rules[0].limits.colour"),
        ("bogus: 1", "bogus"),
    ],
)
def test_malformed_policy_is_refused_with_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.field == field
    assert str(path) in str(info.value)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - id: a\n   mode: [\n")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.line is not None


def test_missing_policy_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.yaml")


def test_universe_budget_floors_minutes_and_records_violation() -> None:
    clamp = _clamp(Policy(), universe_max_run_minutes=60)
    issue = Issue(id="1")
    res = clamp.apply(PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=120, max_candidates=1), issue)
    assert res.applied.max_run_minutes == 60
    assert res.changed
    v = res.violations[0]
    assert (v.rule_id, v.field, v.requested, v.applied, v.mode) == (
        "universe.budgets.max_run_minutes", "max_run_minutes", 120, 60, "enforce")


def test_warn_mode_records_but_does_not_change() -> None:
    policy = Policy(rules=[PolicyRule(id="w", mode="warn", limits=PolicyLimits(max_parallelism=2))])
    issue = Issue(id="1")
    action = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=60, max_candidates=3)
    res = _clamp(policy).apply(action, issue)
    assert res.applied == action and not res.changed
    assert [(v.rule_id, v.mode, v.applied) for v in res.violations] == [("w", "warn", 3)]


def test_swarm_switch_keeps_tuple_valid() -> None:
    policy = Policy(rules=[PolicyRule(id="serial-only", limits=PolicyLimits(allowed_swarms=["serial_handoff"]))])
    action = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=60, max_candidates=3)
    res = _clamp(policy).apply(action, Issue(id="1"))
    assert res.applied.swarm_id == "serial_handoff" and res.applied.parallelism == 1
    assert SPACE.is_valid(res.applied)
    fields = {v.field: v.rule_id for v in res.violations}
    assert fields["swarm_id"] == "serial-only"
    assert fields["parallelism"] == "action_space.validity"


def test_rule_only_applies_when_it_matches() -> None:
    policy = Policy(rules=[PolicyRule(id="crit", match={"dk_risk": ["critical"]},
                                      limits=PolicyLimits(min_candidates=2))])
    action = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=30, max_candidates=1)
    assert not _clamp(policy).apply(action, Issue(id="1", dk_risk="low")).changed
    res = _clamp(policy).apply(action, Issue(id="1", dk_risk="critical"))
    assert res.applied.max_candidates == 2


limits_st = st.builds(
    PolicyLimits,
    allowed_swarms=st.none() | st.lists(st.sampled_from(["speculate_vote", "serial_handoff"]), min_size=1, unique=True),
    max_parallelism=st.none() | st.integers(1, 3),
    max_minutes=st.none() | st.sampled_from([15, 20, 30, 45, 60, 90, 120, 500]),
    max_candidates=st.none() | st.integers(1, 3),
)
rule_st = st.builds(
    PolicyRule,
    id=st.uuids().map(str),
    match=st.sampled_from([{}, {"dk_risk": ["high", "critical"]}, {"dk_size": "XS"}, {"tags_any": ["infra"]}]),
    mode=st.sampled_from(["enforce", "warn", "dryrun"]),
    limits=limits_st,
)
issue_st = st.builds(
    Issue, id=st.just("7"), dk_risk=st.sampled_from(RISKS), dk_size=st.sampled_from(SIZES),
    tags=st.lists(st.sampled_from(["infra", "docs", "backend"]), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(rule_st, max_size=4),
    issue=issue_st,
    action=st.sampled_from(SPACE.actions),
    budget=st.none() | st.sampled_from((*MAX_RUN_MINUTES, 45, 100)),
    lanes=st.none() | st.integers(1, 3),
)
def test_clamp_properties(rules: list[PolicyRule], issue: Issue, action: PlanAction,
                          budget: int | None, lanes: int | None) -> None:
    clamp = _clamp(Policy(rules=rules), universe_max_run_minutes=budget, universe_max_concurrent_workcells=lanes)
    res = clamp.apply(action, issue)
    assert SPACE.is_valid(res.applied)
    enforce = [lim for lim in clamp.limits_for(issue) if lim[3] == "enforce"]
    if not res.unsatisfiable:
        assert all(_allows(res.applied, n, v) for _, n, v, _ in enforce)
        assert res.applied in clamp.allowed(issue)
    again = clamp.apply(res.applied, issue)
    assert again.applied == res.applied
    assert not again.changed
    if action in clamp.allowed(issue):
        assert res.applied == action
    assert clamp.project(action, issue) == res.applied  # the scheduler's preview path agrees


def test_parse_policy_accepts_empty_document() -> None:
    assert parse_policy("").policy.rules == []


@pytest.mark.parametrize(
    ("tokens", "workcells", "max_tokens", "parallelism"),
    [
        (120_000, 3, 300_000, 2),  # 3 candidates x 120k would need 360k of 300k: never starts
        (100_000, 3, 300_000, 3),  # exactly fits
        (50_000, 2, 300_000, 2),   # the kernel has two lanes
        (400_000, 3, 300_000, 3),  # not even one candidate fits: left as is, the scheduler says why
    ],
)
def test_a_plan_wider_than_the_kernel_can_run_is_clamped(tokens: int, workcells: int, max_tokens: int,
                                                         parallelism: int) -> None:
    """A speculating plan takes a lane and ``dk_estimated_tokens`` per candidate; wider than the
    kernel's lanes or token budget it could never start, and its issue would wait forever."""
    issue = Issue.model_validate({"id": "1", "title": "t", "dk_estimated_tokens": tokens})
    clamp = _clamp(Policy(), max_concurrent_workcells=workcells, max_concurrent_tokens=max_tokens)
    wide = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=60, max_candidates=3)
    res = clamp.apply(wide, issue)
    assert res.applied.parallelism == parallelism
    assert clamp.project(wide, issue) == res.applied
    if parallelism < 3:
        assert res.applied.parallelism * tokens <= max_tokens and res.applied.parallelism <= workcells
        assert {v.rule_id for v in res.enforce_violations()} & {
            "scheduling.max_concurrent_tokens", "scheduling.max_concurrent_workcells"}
    else:
        assert not res.changed
