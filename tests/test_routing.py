"""Routing rules, speculation triggers and the heuristic plan (budget, trace)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cyntra.errors import ConfigError
from cyntra.kernel.config import KernelConfig, load_config, parse_config
from cyntra.kernel.heuristic import HeuristicContext, UniverseLimits, heuristic_plan
from cyntra.kernel.plan import DispatchPlan
from cyntra.kernel.routing import check_rules, effective_rules, expand, route, rule_matches
from cyntra.planner.action_space import ActionSpace
from cyntra.state.graph import IssueGraph
from cyntra.state.issue import Issue


def mk(iid: str = "1", **kw: Any) -> Issue:
    return Issue.model_validate({"id": iid, "title": f"issue {iid}", **kw})


def cfg(**data: Any) -> KernelConfig:
    return parse_config(data)


def step(plan: DispatchPlan, name: str) -> dict[str, Any]:
    found = [s for s in plan.trace if s.step == name]
    assert len(found) == 1
    return {"detail": found[0].detail, **found[0].data}


# --- matcher keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,issue_kw,expected", [
    ("dk_tool_hint", "codex", {"dk_tool_hint": "codex"}, True),
    ("dk_tool_hint", "codex", {"dk_tool_hint": "claude"}, False),
    ("dk_tool_hint", "codex", {}, False),
    ("dk_tool_hint", ["claude", "codex"], {"dk_tool_hint": "codex"}, True),
    ("dk_tool_hint", [None], {}, True),
    ("dk_risk", "high", {"dk_risk": "high"}, True),
    ("dk_risk", "HIGH", {"dk_risk": "high"}, True),
    ("dk_risk", ["critical"], {"dk_risk": "high"}, False),
    ("dk_risk", ["critical", "high"], {"dk_risk": "high"}, True),
    ("dk_size", "xl", {"dk_size": "XL"}, True),
    ("dk_size", ["XS", "S"], {"dk_size": "M"}, False),
    ("dk_size", ["XS", "S"], {}, False),  # default M
    ("dk_priority", "P0", {"dk_priority": "P0"}, True),
    ("dk_priority", ["P0", "P1"], {}, False),  # default P2
    ("tags_any", ["a", "b"], {"tags": ["b", "z"]}, True),
    ("tags_any", ["a", "b"], {"tags": ["z"]}, False),
    ("tags_any", "a", {"tags": ["a"]}, True),
    ("tags_any", [], {"tags": ["a"]}, False),
    ("tags_all", ["a", "b"], {"tags": ["a", "b", "c"]}, True),
    ("tags_all", ["a", "b"], {"tags": ["a"]}, False),
    ("tags_all", [], {"tags": []}, True),
    ("title_pattern", r"^World \w+$", {"title": "World jhtsic"}, True),
    ("title_pattern", r"refactor", {"title": "Big Refactor"}, False),  # case-sensitive
    ("title_pattern", r"(?i)refactor", {"title": "Big Refactor"}, True),
    ("description_pattern", r"studio", {"description": "a photo studio"}, True),
    ("description_pattern", r"studio", {}, False),
    ("description_pattern", r"^$", {}, True),  # no description searches ""
])
def test_each_match_key(key: str, value: Any, issue_kw: dict[str, Any], expected: bool) -> None:
    assert rule_matches({key: value}, mk(**issue_kw)) is expected


def test_empty_match_always_and_keys_are_anded() -> None:
    assert rule_matches({}, mk())
    m = {"dk_risk": "high", "tags_any": ["kernel"]}
    assert rule_matches(m, mk(dk_risk="high", tags=["kernel"]))
    assert not rule_matches(m, mk(dk_risk="high", tags=["ui"]))
    assert not rule_matches(m, mk(dk_risk="low", tags=["kernel"]))


def test_check_rules_warns_on_unknown_key_and_raises_on_bad_regex() -> None:
    c = cfg(toolchains={"codex": {}}, routing={"rules": [
        {"match": {"dk_rsik": "high"}, "use": ["codex"]},
        {"match": {}, "use": ["ghost"]},
        {"match": {}, "use": []},
    ]})
    warnings = check_rules(effective_rules(c), c)
    assert any("routing.rules[0]" in w and "'dk_rsik'" in w for w in warnings)
    assert any("routing.rules[1]" in w and "'ghost'" in w for w in warnings)
    assert any("routing.rules[2]" in w and "empty 'use'" in w for w in warnings)
    bad = cfg(routing={"rules": [{"match": {}, "use": ["a"]},
                                 {"match": {"title_pattern": "(unclosed"}, "use": ["a"]}]})
    with pytest.raises(ConfigError) as err:
        check_rules(effective_rules(bad), bad, path="cfg.yaml")
    assert err.value.field == "routing.rules[1].match.title_pattern"
    assert "cfg.yaml" in str(err.value)
    # At match time an invalid regex never matches (and never raises).
    assert not rule_matches({"title_pattern": "(unclosed"}, mk(title="(unclosed"))
    # An unknown key alone does not restrict the match.
    assert rule_matches({"dk_rsik": "high"}, mk())


def test_upstream_config_rules_are_clean(upstream_dir: Path) -> None:
    c, warnings = load_config(upstream_dir / ".cyntra" / "config.yaml")
    assert warnings == []
    assert check_rules(effective_rules(c), c) == []


# --- first match, overrides, fallbacks ---------------------------------------------------------


def test_first_match_wins_and_overrides_prepended() -> None:
    c = cfg(routing={"rules": [
        {"match": {"dk_risk": "high"}, "use": ["codex"]},
        {"match": {}, "use": ["claude"]},
    ]})
    rules = effective_rules(c)
    r = route(mk(dk_risk="high"), rules, c)
    assert r.rule is not None and r.rule.index == 0 and r.candidates[0] == "codex"
    assert route(mk(), rules, c).candidates == ["claude"]
    limits = UniverseLimits.from_policies(
        {"routing_overrides": [{"id": "med", "match": {"tags_any": ["med"]}, "use": ["crush"]}]})
    rules2 = effective_rules(c, limits.routing_overrides)
    assert [x.source for x in rules2] == ["universe.routing_overrides[0]", "routing.rules[0]",
                                         "routing.rules[1]"]
    r2 = route(mk(dk_risk="high", tags=["med"]), rules2, c)
    assert r2.rule is not None and r2.rule.label == "med" and r2.candidates == ["crush"]


def test_fallback_order_dedup_and_disabled() -> None:
    c = cfg(
        toolchains={"a": {}, "b": {}, "c": {"enabled": False}, "d": {}, "e": {}},
        routing={"rules": [{"match": {}, "use": ["a", "c", "b", "zz"]}],
                 "fallbacks": {"a": ["c", "d", "b"], "b": ["e", "a"], "c": ["e"]}},
    )
    # use list, then fallbacks of a, c, b, zz in turn; c disabled, zz unknown, dups dropped.
    assert route(mk(), effective_rules(c), c).candidates == ["a", "b", "d", "e"]


def test_no_toolchains_section_means_all_enabled() -> None:
    c = cfg(routing={"rules": [{"match": {}, "use": ["x"]}], "fallbacks": {"x": ["y"]}})
    assert route(mk(), effective_rules(c), c).candidates == ["x", "y"]


def test_no_match_uses_first_enabled_priority() -> None:
    c = cfg(toolchain_priority=["codex", "claude", "opencode"],
            toolchains={"codex": {"enabled": False}, "claude": {}, "opencode": {}},
            routing={"rules": [{"match": {"dk_risk": "low"}, "use": ["opencode"]}],
                     "fallbacks": {"claude": ["codex", "opencode"]}})
    r = route(mk(), effective_rules(c), c)
    assert r.rule is None and r.candidates == ["claude", "opencode"]
    assert "no rule matched" in r.detail
    # A match whose toolchains are all disabled falls back the same way, and says so.
    c2 = cfg(toolchain_priority=["claude"], toolchains={"codex": {"enabled": False}, "claude": {}},
             routing={"rules": [{"match": {}, "use": ["codex"]}]})
    r2 = route(mk(), effective_rules(c2), c2)
    assert r2.rule is not None and r2.candidates == ["claude"] and "none of" in r2.detail
    c3 = cfg(toolchain_priority=["codex"], toolchains={"codex": {"enabled": False}})
    assert route(mk(), effective_rules(c3), c3).candidates == []


def test_expand_appends_extra_lists() -> None:
    c = cfg(routing={"fallbacks": {"a": ["b"]}})
    assert expand(c, ["a"], ["c", "a", "b", "d"]) == ["a", "b", "c", "d"]


# --- speculation triggers ----------------------------------------------------------------------

SPEC_BASE: dict[str, Any] = {
    "toolchain_priority": ["codex", "claude", "opencode"],
    "toolchains": {"codex": {"timeout_minutes": 60}, "claude": {"timeout_minutes": 60},
                   "opencode": {"timeout_minutes": 45}},
    "routing": {"rules": [
        {"match": {"tags_any": ["spec"]}, "use": ["codex", "claude"], "speculate": True},
        {"match": {}, "use": ["claude"]},
    ], "fallbacks": {"claude": ["codex"]}},
    "speculation": {"enabled": True, "default_parallelism": 2, "max_parallelism": 3,
                    "auto_trigger_on_critical_path": True,
                    "auto_trigger_risk_levels": ["high", "critical"]},
}


def plan_for(issue: Issue, conf: dict[str, Any] | KernelConfig, *, critical: bool = False,
             speculate: bool = False, universe: UniverseLimits | None = None,
             action_space: ActionSpace | None = None) -> DispatchPlan:
    c = conf if isinstance(conf, KernelConfig) else parse_config(conf)
    ctx = HeuristicContext.create(c, universe=universe, speculate=speculate,
                                  action_space=action_space)
    if critical:
        ctx.critical = frozenset({issue.id})
    return heuristic_plan(issue, ctx)


def test_no_trigger_serial_plan() -> None:
    p = plan_for(mk(), SPEC_BASE)
    assert not p.speculate
    assert p.action.key() == ("serial_handoff", 1, 60, 1)
    assert p.toolchains == ["claude", "codex"]
    assert step(p, "speculation")["detail"] == "no trigger fired"


@pytest.mark.parametrize("trigger,issue_kw,kw", [
    ("dk_speculate", {"dk_speculate": "true"}, {}),
    ("flag", {}, {"speculate": True}),
    ("rule", {"tags": ["spec"]}, {}),
    ("critical_path", {"dk_risk": "critical"}, {"critical": True}),
])
def test_each_trigger(trigger: str, issue_kw: dict[str, Any], kw: dict[str, Any]) -> None:
    p = plan_for(mk(**issue_kw), SPEC_BASE, **kw)
    assert p.speculate
    assert step(p, "speculation")["triggers"] == [trigger]
    assert p.action.swarm_id == "speculate_vote"
    assert p.action.parallelism == 2 == p.action.max_candidates


def test_dk_speculate_false_string_is_false() -> None:
    assert not plan_for(mk(dk_speculate="false"), SPEC_BASE).speculate


def test_critical_path_trigger_needs_risk_level_and_setting() -> None:
    assert not plan_for(mk(dk_risk="medium"), SPEC_BASE, critical=True).speculate
    assert not plan_for(mk(dk_risk="high"), SPEC_BASE, critical=False).speculate
    off = json.loads(json.dumps(SPEC_BASE))
    off["speculation"]["auto_trigger_on_critical_path"] = False
    assert not plan_for(mk(dk_risk="high"), off, critical=True).speculate


def test_speculation_disabled_overrides_every_trigger() -> None:
    off = json.loads(json.dumps(SPEC_BASE))
    off["speculation"]["enabled"] = False
    p = plan_for(mk(dk_speculate=True, tags=["spec"], dk_risk="high"), off, critical=True,
                 speculate=True)
    assert not p.speculate and p.action.parallelism == 1
    s = step(p, "speculation")
    assert s["detail"] == "speculation disabled in config"
    assert s["triggers"] == ["dk_speculate", "flag", "rule", "critical_path"]


def test_fewer_than_two_toolchains_no_speculation() -> None:
    one = {"toolchain_priority": ["codex"], "toolchains": {"codex": {}, "claude": {"enabled": False}},
           "routing": {"rules": [{"match": {}, "use": ["codex", "claude"], "speculate": True}]}}
    p = plan_for(mk(), one)
    assert not p.speculate and p.action.key() == ("serial_handoff", 1, 60, 1)
    assert "fewer than 2 enabled toolchains" in step(p, "speculation")["detail"]


def test_no_parallel_swarm_in_catalog_no_speculation() -> None:
    p = plan_for(mk(dk_speculate=True), SPEC_BASE,
                 action_space=ActionSpace({"solo": "serial_handoff"}))
    assert not p.speculate and p.action.swarm_id == "solo"
    assert "no parallel_compete swarm" in step(p, "speculation")["detail"]


def test_parallelism_from_rule_clamped_to_max_and_available() -> None:
    conf = json.loads(json.dumps(SPEC_BASE))
    conf["routing"]["rules"][0]["parallelism"] = 5
    p = plan_for(mk(tags=["spec"]), conf)
    assert p.action.parallelism == 3  # max_parallelism
    assert p.toolchains == ["codex", "claude", "opencode"]
    conf["speculation"]["max_parallelism"] = 9
    assert plan_for(mk(tags=["spec"]), conf).action.parallelism == 3  # only 3 toolchains
    conf["routing"]["rules"][0]["parallelism"] = 1
    assert plan_for(mk(tags=["spec"]), conf).action.parallelism == 2  # floor 2


def test_speculate_toolchains_order_use_fallbacks_priority() -> None:
    conf = json.loads(json.dumps(SPEC_BASE))
    conf["routing"]["rules"][0]["use"] = ["claude"]
    p = plan_for(mk(tags=["spec"]), conf)
    assert p.toolchains == ["claude", "codex", "opencode"]  # use, fallback, priority
    assert p.candidate_toolchains() == ["claude", "codex"]


# --- budget ------------------------------------------------------------------------------------


def test_budget_from_timeouts_snapped_and_universe_floor() -> None:
    conf = {"toolchain_priority": ["fast", "slow", "plain"],
            "toolchains": {"fast": {"timeout_minutes": 10}, "slow": {"timeout_minutes": 90},
                           "plain": {}},
            "routing": {"rules": [{"match": {"tags_any": ["s"]}, "use": ["slow"]},
                                  {"match": {"tags_any": ["p"]}, "use": ["plain"]},
                                  {"match": {"tags_any": ["x"]}, "use": ["fast", "slow"],
                                   "speculate": True},
                                  {"match": {}, "use": ["fast"], "speculate": False}]}}
    assert plan_for(mk(), conf).max_run_minutes == 15
    assert plan_for(mk(tags=["s"]), conf).max_run_minutes == 120
    assert plan_for(mk(tags=["p"]), conf).max_run_minutes == 60  # unset → 60
    assert plan_for(mk(tags=["x"]), conf).max_run_minutes == 120  # max over fast+slow
    capped = plan_for(mk(tags=["s"]), conf, universe=UniverseLimits(max_run_minutes=100))
    assert capped.max_run_minutes == 60
    b = step(capped, "budget")
    assert b["raw_minutes"] == 90 and b["universe_max_run_minutes"] == 100 and b["minutes"] == 60
    tiny = plan_for(mk(tags=["s"]), conf, universe=UniverseLimits(max_run_minutes=5))
    assert tiny.max_run_minutes == 15  # minimum
    assert plan_for(mk(), conf, universe=UniverseLimits(max_run_minutes=120)).max_run_minutes == 15


def test_plan_trace_has_every_stage_and_is_deterministic() -> None:
    a = plan_for(mk(dk_risk="high", tags=["spec"]), SPEC_BASE, critical=True)
    b = plan_for(mk(dk_risk="high", tags=["spec"]), SPEC_BASE, critical=True)
    assert [s.step for s in a.trace] == ["routing", "speculation", "controller", "budget"]
    assert a.model_dump() == b.model_dump()
    r = step(a, "routing")
    assert r["rule_index"] == 0 and r["rule"] == "routing.rules[0]"
    assert step(a, "speculation")["triggers"] == ["rule", "critical_path"]
    assert step(a, "controller")["mode"] == "disabled"
    json.dumps([s.model_dump() for s in a.trace])  # trace is JSON-serialisable


# --- upstream facts ------------------------------------------------------------------------------


@pytest.fixture()
def upstream_cfg(upstream_dir: Path) -> KernelConfig:
    c, _ = load_config(upstream_dir / ".cyntra" / "config.yaml")
    return c


def test_upstream_critical_risk_speculates_three(upstream_cfg: KernelConfig) -> None:
    p = plan_for(mk(dk_risk="critical"), upstream_cfg)
    assert p.speculate and p.parallelism == 3
    assert p.candidate_toolchains() == ["codex", "claude", "crush"]
    assert step(p, "speculation")["triggers"] == ["rule"]
    assert step(p, "routing")["rule_index"] == 6


def test_upstream_high_risk_speculates_two(upstream_cfg: KernelConfig) -> None:
    p = plan_for(mk(dk_risk="high"), upstream_cfg)
    assert p.speculate and p.parallelism == 2
    assert p.candidate_toolchains() == ["codex", "claude"]
    assert p.max_run_minutes == 60


def test_upstream_hinted_issue_uses_codex(upstream_cfg: KernelConfig) -> None:
    issue = mk(dk_tool_hint="codex", dk_risk="high")
    off_path = plan_for(issue, upstream_cfg)
    assert step(off_path, "routing")["rule_index"] == 0
    assert not off_path.speculate  # the hint rule has no speculate flag
    assert off_path.toolchains == ["codex", "claude", "opencode"]
    assert off_path.candidate_toolchains() == ["codex"]
    on_path = plan_for(issue, upstream_cfg, critical=True)
    assert on_path.speculate and step(on_path, "speculation")["triggers"] == ["critical_path"]
    assert on_path.candidate_toolchains() == ["codex", "claude"]


def test_upstream_early_issues(upstream_dir: Path, upstream_cfg: KernelConfig) -> None:
    lines = (upstream_dir / ".beads" / "issues.early.jsonl").read_text().splitlines()
    issues = [Issue.model_validate(json.loads(x)) for x in lines if x.strip()]
    g = IssueGraph(issues)
    assert g.ready_ids() == ["1", "3", "4"]
    ctx = HeuristicContext.create(upstream_cfg, graph=g, universe=UniverseLimits.from_policies(
        {"budgets": {"max_concurrent_workcells": 3, "max_run_minutes": 120},
         "routing_overrides": []}))
    plans = {i.id: heuristic_plan(i, ctx) for i in g.ready_issues()}
    # Issue 1: hinted codex, high risk, on the critical path (equal M chains, smallest id).
    assert g.critical_path() == ["1"]
    assert plans["1"].speculate and plans["1"].candidate_toolchains() == ["codex", "claude"]
    # Issues 3/4: asset:world → fab-world (single enabled toolchain rule, no speculation flag).
    assert plans["3"].toolchains == ["fab-world"] and not plans["3"].speculate
    assert plans["3"].max_run_minutes == 120
