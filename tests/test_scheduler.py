"""Scheduler: ordering (critical path, controller rank, aging), lane packing, schedule_cycle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyntra.control import REPORT_PATH, ExplorationController
from cyntra.kernel.config import KernelConfig, load_config, parse_config
from cyntra.kernel.heuristic import HeuristicContext, UniverseLimits, heuristic_plan
from cyntra.kernel.plan import DispatchPlan
from cyntra.kernel.scheduler import (
    NO_SLOT,
    _order_keys,
    effective_priority,
    order_ready,
    pack_lanes,
    schedule_cycle,
    slots_for,
)
from cyntra.planner.action_space import PlanAction
from cyntra.state.graph import IssueGraph
from cyntra.state.issue import Issue

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def mk(iid: str, **kw: Any) -> Issue:
    kw.setdefault("created", "2026-01-10T11:00:00Z")
    return Issue.model_validate({"id": iid, "title": f"issue {iid}", **kw})


def plan(iid: str, p: int = 1) -> DispatchPlan:
    if p > 1:
        action = PlanAction(swarm_id="speculate_vote", parallelism=p, max_run_minutes=60,
                            max_candidates=p)
    else:
        action = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=60,
                            max_candidates=1)
    return DispatchPlan(issue_id=iid, action=action, toolchains=["a", "b", "c"][: max(p, 1)],
                        speculate=p > 1)


def ids(issues: list[Issue]) -> list[str]:
    return [i.id for i in issues]


# --- ordering ----------------------------------------------------------------------------------


def test_order_priority_risk_created_id() -> None:
    issues = [
        mk("5", dk_priority="P2", dk_risk="low"),
        mk("4", dk_priority="P2", dk_risk="high"),
        mk("3", dk_priority="P1"),
        mk("10", dk_priority="P2", dk_risk="high"),
        mk("2", dk_priority="P2", dk_risk="high", created="2026-01-10T10:00:00Z"),
        mk("1", dk_priority="P2", dk_risk="low", created=None),
    ]
    g = IssueGraph(issues)
    g._critical, g._critical_set = [], frozenset()  # isolate from critical-path ordering
    got = ids(order_ready(issues, g, None, NOW, 0))
    assert got == ["3", "2", "4", "10", "5", "1"]


def test_critical_path_first() -> None:
    issues = [mk("a", dk_priority="P0", dk_size="XS"), mk("b", dk_priority="P3", dk_size="L"),
              mk("c", dk_priority="P3", dk_size="L")]
    g = IssueGraph(issues, [("b", "c", "blocks")])
    assert g.critical_path() == ["b", "c"]
    assert ids(order_ready(g.ready_issues(), g, None, NOW, 4)) == ["b", "a"]


def test_controller_rank_trap_then_balanced_then_chaos(tmp_path: Path) -> None:
    report = tmp_path / REPORT_PATH
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"domains": {"code": 0.9, "fab_asset": 0.01}}))
    ctl = ExplorationController(parse_config({}).control, tmp_path)
    issues = [mk("code", dk_priority="P0"), mk("world", dk_priority="P1", tags=["asset:world"]),
              mk("asset", dk_priority="P3", tags=["asset:image"])]
    g = IssueGraph(issues)
    g._critical, g._critical_set = [], frozenset()
    assert ids(order_ready(issues, g, ctl, NOW, 4)) == ["asset", "world", "code"]


@pytest.mark.parametrize("waited_h,threshold,prio,expected", [
    (3.9, 4, "P3", 3), (4.0, 4, "P3", 2), (8.5, 4, "P3", 1), (100, 4, "P3", 0),
    (100, 4, "P0", 0), (100, 0, "P3", 3), (-5, 4, "P2", 2),
])
def test_starvation_aging(waited_h: float, threshold: float, prio: str, expected: int) -> None:
    ts = (NOW - timedelta(hours=waited_h)).isoformat()
    issue = mk("1", dk_priority=prio, updated=ts, created="2020-01-01T00:00:00Z")
    assert effective_priority(issue, NOW, threshold) == expected


@given(st.integers(-10**12, 10**13), st.sampled_from(["P0", "P1", "P2", "P3"]),
       st.one_of(st.floats(0.001, 50), st.sampled_from([0.5, 1, 4, 7 / 3, 1e7, 1e9, 1e-12, 1e-10, 5e-10])))
def test_ordering_ages_exactly_like_effective_priority(waited_us: int, prio: str, hours: float) -> None:
    """The ordering compares timestamps with precomputed cutoffs; it must age every issue
    exactly as the timedelta arithmetic of effective_priority does, also at the boundaries
    and for thresholds so large that a cutoff would fall before year 1."""
    updated = NOW - timedelta(microseconds=waited_us)
    issue = mk("1", dk_priority=prio, updated=updated.isoformat())
    g = IssueGraph([issue])
    (key,) = _order_keys([issue], g, None, NOW, hours)
    assert (key[0] >> 3) & 7 == effective_priority(issue, NOW, hours)


def test_threshold_below_a_microsecond_ages_per_microsecond() -> None:
    """A positive threshold that rounds to 0 µs used to divide by zero; it is one microsecond."""
    issue = mk("1", dk_priority="P3", updated=(NOW - timedelta(microseconds=2)).isoformat())
    assert effective_priority(issue, NOW, 1e-12) == 1
    assert effective_priority(issue, NOW, 0.0) == 3


def test_huge_threshold_means_no_aging() -> None:
    old = mk("1", dk_priority="P3", created="2020-01-01T00:00:00Z")
    new = mk("2", dk_priority="P2", created="2026-01-10T00:00:00Z")
    g = IssueGraph([old, new])
    g._critical, g._critical_set = [], frozenset()
    assert ids(order_ready([old, new], g, None, NOW, 1e7)) == ["2", "1"]
    assert ids(order_ready([old, new], g, None, NOW, 4)) == ["1", "2"]


def test_aging_uses_created_when_no_updated_and_reorders() -> None:
    old = mk("old", dk_priority="P3", created=(NOW - timedelta(hours=9)).isoformat())
    fresh = mk("fresh", dk_priority="P2", created=(NOW - timedelta(hours=1)).isoformat())
    assert effective_priority(old, NOW, 4) == 1
    g = IssueGraph([old, fresh])
    g._critical, g._critical_set = [], frozenset()
    assert ids(order_ready([fresh, old], g, None, NOW, 4)) == ["old", "fresh"]
    assert ids(order_ready([fresh, old], g, None, NOW, 0)) == ["fresh", "old"]


# --- lane packing --------------------------------------------------------------------------------


def test_exact_fit() -> None:
    issues = [mk("1"), mk("2"), mk("3")]
    sched, skipped = pack_lanes(issues, {i.id: plan(i.id) for i in issues}, 0, 0, 3, 150000)
    assert [s.issue_id for s in sched] == ["1", "2", "3"] and skipped == []
    assert sum(s.tokens for s in sched) == 150000


def test_token_limit_skips_then_smaller_fits() -> None:
    issues = [mk("big", dk_estimated_tokens=200000), mk("small", dk_estimated_tokens=40000),
              mk("mid", dk_estimated_tokens=70000)]
    sched, skipped = pack_lanes(issues, {i.id: plan(i.id) for i in issues}, 0, 0, 3, 120000)
    assert [s.issue_id for s in sched] == ["small", "mid"]
    assert skipped == [("big", "needs 200000 tokens, more than max_concurrent_tokens 120000")]
    sched2, skipped2 = pack_lanes(issues[1:] + issues[:1],
                                  {i.id: plan(i.id) for i in issues}, 0, 0, 3, 300000)
    assert [s.issue_id for s in sched2] == ["small", "mid"]
    assert skipped2 == [("big", "needs 200000 tokens, 190000 of 300000 free")]


def test_speculation_reserves_slots_and_tokens() -> None:
    issues = [mk("spec"), mk("s1"), mk("s2")]
    plans = {"spec": plan("spec", 3), "s1": plan("s1"), "s2": plan("s2")}
    sched, skipped = pack_lanes(issues, plans, 0, 0, 4, 10**6)
    assert [(s.issue_id, s.slots, s.tokens) for s in sched] == [("spec", 3, 150000),
                                                                  ("s1", 1, 50000)]
    assert skipped == [("s2", NO_SLOT)]


def test_speculating_issue_skipped_when_too_wide_then_serial_fits() -> None:
    issues = [mk("spec"), mk("serial")]
    sched, skipped = pack_lanes(issues, {"spec": plan("spec", 3), "serial": plan("serial")},
                                1, 50000, 3, 10**6)
    assert [s.issue_id for s in sched] == ["serial"]
    assert skipped[0][0] == "spec" and "needs 3 slots" in skipped[0][1] and "2 free" in skipped[0][1]


def test_running_issues_occupy_slots_and_tokens() -> None:
    issues = [mk("1"), mk("2")]
    plans = {i.id: plan(i.id) for i in issues}
    sched, skipped = pack_lanes(issues, plans, 3, 150000, 3, 300000)
    assert sched == [] and skipped == [("1", NO_SLOT), ("2", NO_SLOT)]
    sched, skipped = pack_lanes(issues, plans, 1, 260000, 3, 300000)
    assert sched == [] and "of 300000 free" in skipped[0][1]


# --- schedule_cycle -------------------------------------------------------------------------------

CYCLE_CFG: dict[str, Any] = {
    "scheduling": {"max_concurrent_workcells": 3, "max_concurrent_tokens": 300000,
                   "starvation_threshold_hours": 4},
    "toolchain_priority": ["codex", "claude", "opencode"],
    "toolchains": {"codex": {}, "claude": {}, "opencode": {}},
    "routing": {"rules": [{"match": {"dk_risk": "critical"}, "use": ["codex", "claude", "opencode"],
                           "speculate": True, "parallelism": 3},
                          {"match": {}, "use": ["claude"]}]},
}


def cycle(issues: list[Issue], deps: list[tuple[str, str, str]] | None = None,
          conf: dict[str, Any] | KernelConfig | None = None, ws: Path | None = None,
          **kw: Any) -> Any:
    c = conf if isinstance(conf, KernelConfig) else parse_config(conf or CYCLE_CFG)
    return schedule_cycle(issues, deps or [], c, ws, now=NOW, **kw)


def test_cycle_end_to_end(tmp_path: Path) -> None:
    issues = [mk("1", dk_risk="critical", dk_size="XL"), mk("2"), mk("3"), mk("4", status="done"),
              mk("5"), mk("6", status="running"), mk("7", tags=["needs-human"])]
    deps = [("4", "2", "blocks"), ("5", "3", "blocks"), ("ghost", "5", "blocks")]
    r = cycle(issues, deps, ws=tmp_path)
    assert r.running == ["6"]
    assert r.critical_path == ["1"]
    assert r.ready == ["1", "2"]
    assert r.blocked == {"3": ["5"], "5": ["ghost"]}
    # 1 running + the critical issue speculating ×3 would need 4 slots: skipped, 2 fits.
    assert [s.issue_id for s in r.scheduled] == ["2"]
    assert r.skipped[0][0] == "1" and "needs 3 slots" in r.skipped[0][1]
    assert r.slots_used == 2 and r.tokens_used == 100000
    assert any("ghost" in w for w in r.warnings)
    assert r.controller_modes == {"code": "disabled", "fab_asset": "disabled",
                                  "fab_world": "disabled"}
    r.model_dump_json()


def test_cycle_universe_cap_and_max_concurrent() -> None:
    issues = [mk(str(i)) for i in range(1, 6)]
    assert len(cycle(issues).scheduled) == 3
    assert len(cycle(issues, universe=UniverseLimits(max_concurrent_workcells=2)).scheduled) == 2
    assert len(cycle(issues, max_concurrent=1).scheduled) == 1
    r = cycle(issues, universe=UniverseLimits(max_concurrent_workcells=5), max_concurrent=4)
    assert r.max_workcells == 3 and len(r.scheduled) == 3  # config still caps


def test_cycle_speculate_flag_and_only_issue() -> None:
    issues = [mk("1"), mk("2"), mk("3", status="done")]
    r = cycle(issues, speculate=True)
    assert [(s.issue_id, s.slots) for s in r.scheduled] == [("1", 2)]
    assert r.skipped == [("2", "needs 2 slots (speculating ×2), 1 free")]
    r2 = cycle(issues, only_issue="2")
    assert [s.issue_id for s in r2.scheduled] == ["2"]
    assert cycle(issues, only_issue="3").skipped == [("3", "not ready: status is done")]
    assert cycle(issues, only_issue="nope").skipped == [("nope", "no such issue")]


def test_cycle_controller_report_read(tmp_path: Path) -> None:
    report = tmp_path / REPORT_PATH
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"domains": {"code": {"action_rate": 0.01}}}))
    r = cycle([mk("1")], ws=tmp_path)
    assert r.controller_modes["code"] == "trap"
    assert r.scheduled[0].plan.temperature == pytest.approx(0.3)
    report.write_text("{broken")
    r2 = cycle([mk("1")], ws=tmp_path)
    assert r2.controller_modes["code"] == "disabled"
    assert any("unreadable dynamics report" in w for w in r2.warnings)


def test_cycle_plan_fn_used_lazily_and_failures_fall_back() -> None:
    issues = [mk(str(i)) for i in range(1, 101)]
    asked: list[int] = []

    def wide(batch: list[Issue]) -> dict[str, DispatchPlan]:
        asked.append(len(batch))
        return {i.id: plan(i.id, 3) for i in batch}

    r = cycle(issues, plan_fn=wide)
    assert [(s.issue_id, s.slots) for s in r.scheduled] == [("1", 3)]
    assert sum(asked) < 100  # plans only for what the lanes could use
    assert len(r.skipped) == 99 and r.skipped[-1] == ("100", NO_SLOT)

    def broken(batch: list[Issue]) -> dict[str, DispatchPlan]:
        raise RuntimeError("model exploded")

    r2 = cycle(issues[:2], plan_fn=broken)
    assert len(r2.scheduled) == 2 and any("model exploded" in w for w in r2.warnings)

    def partial(batch: list[Issue]) -> dict[str, DispatchPlan]:
        return {batch[0].id: plan(batch[0].id)}

    r3 = cycle(issues[:2], plan_fn=partial)
    assert len(r3.scheduled) == 2 and any("no plan for 2" in w for w in r3.warnings)


def test_cycle_reports_cycles_and_rule_warnings() -> None:
    conf = json.loads(json.dumps(CYCLE_CFG))
    conf["routing"]["rules"].append({"match": {"colour": "red"}, "use": ["claude"]})
    r = cycle([mk("1"), mk("2"), mk("3")], [("1", "2", "blocks"), ("2", "1", "blocks")], conf)
    assert r.cycles == [["1", "2"]]
    assert [s.issue_id for s in r.scheduled] == ["3"]
    assert any("'colour'" in w for w in r.warnings)
    conf["routing"]["rules"].insert(0, {"match": {"title_pattern": "(bad"}, "use": ["codex"]})
    r2 = cycle([mk("1")], conf=conf)
    assert [s.issue_id for s in r2.scheduled] == ["1"]
    assert any("routing.rules[0].match.title_pattern" in w for w in r2.warnings)


def test_cycle_upstream_workspace(upstream_dir: Path) -> None:
    c, _ = load_config(upstream_dir / ".cyntra" / "config.yaml")
    lines = (upstream_dir / ".beads" / "issues.jsonl").read_text().splitlines()
    issues = [Issue.model_validate(json.loads(x)) for x in lines if x.strip()]
    r = cycle(issues, conf=c, universe=UniverseLimits(max_concurrent_workcells=3))
    # Four issues are running: every lane is taken, nothing new starts.
    assert r.running == ["9", "10", "11", "14"] and r.scheduled == []
    assert r.ready == []


@pytest.mark.parametrize("seed", range(6))
def test_runner_cycle_without_report_schedules_the_same(seed: int, tmp_path: Path) -> None:
    """``report=False`` (heap order, no blocked map) picks the same plans in the same order."""
    import random

    rng = random.Random(seed)
    pool = ["kernel", "ui", "asset:world", "asset:image", "escalation"]
    issues = [mk(str(i), dk_priority=rng.choice(["P0", "P1", "P2", "P3"]),
                 dk_risk=rng.choice(["low", "medium", "high", "critical"]),
                 dk_size=rng.choice(["XS", "M", "XL"]), tags=rng.sample(pool, rng.randrange(3)),
                 dk_estimated_tokens=rng.choice([20_000, 90_000, 200_000]),
                 created=f"2026-01-{rng.randrange(1, 10):02d}T0{rng.randrange(10)}:00:00Z",
                 status="running" if i == 1 else rng.choice(["open", "open", "ready", "done"]))
              for i in range(1, 300)]
    deps = [(str(a), str(a + rng.randrange(1, 20)), "blocks") for a in rng.sample(range(1, 280), 120)]
    config = parse_config({"scheduling": {"max_concurrent_workcells": rng.choice([3, 5, 8]),
                                          "max_concurrent_tokens": 2_000_000,
                                          "starvation_threshold_hours": rng.choice([0, 4])},
                           "routing": {"rules": [{"match": {"dk_risk": ["critical"]}, "use": ["a", "b", "c"],
                                                  "speculate": True, "parallelism": 3}]}})
    full = schedule_cycle(issues, deps, config, tmp_path, now=NOW)
    lean = schedule_cycle(issues, deps, config, tmp_path, now=NOW, report=False)
    # An exact preview (the heuristic's own plan) for some issues, none for others: the packer
    # skips previewed misfits without planning them and everything else is unchanged.
    hctx = HeuristicContext.create(config, graph=IssueGraph(issues, deps),
                                   controller=ExplorationController(config.control, tmp_path))
    planned: list[str] = []

    def plan_fn(batch: list[Issue]) -> dict[str, DispatchPlan]:
        planned.extend(i.id for i in batch)
        return {i.id: heuristic_plan(i, hctx) for i in batch}

    def preview(issue: Issue) -> tuple[int, int] | None:
        if int(issue.id) % 2:
            return None
        plan = heuristic_plan(issue, hctx)
        return slots_for(plan), plan.parallelism

    previewed = schedule_cycle(issues, deps, config, tmp_path, now=NOW, report=False, plan_fn=plan_fn,
                               preview_fn=preview)
    assert [(s.issue_id, s.plan.action) for s in previewed.scheduled] == [(s.issue_id, s.plan.action)
                                                                        for s in full.scheduled]
    # Same skips with the same reasons; only the tail of a batch planned after the lanes filled
    # (NO_SLOT, report=False lists just the issues it looked at) may be shorter.
    assert [x for x in previewed.skipped if x[1] != NO_SLOT] == [x for x in lean.skipped if x[1] != NO_SLOT]
    assert lean.ready[:len(previewed.ready)] == previewed.ready
    assert len(planned) <= len(previewed.ready)  # never more plans than issues looked at
    assert lean.scheduled and len(lean.ready) < len(full.ready)
    assert [(s.issue_id, s.plan.action) for s in lean.scheduled] == [(s.issue_id, s.plan.action) for s in full.scheduled]
    assert full.ready[:len(lean.ready)] == lean.ready and lean.blocked == {} and full.blocked
    assert lean.skipped == full.skipped[:len(lean.skipped)]
    assert (lean.slots_used, lean.tokens_used, lean.critical_path) == (full.slots_used, full.tokens_used,
                                                                      full.critical_path)
