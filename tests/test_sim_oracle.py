"""The oracle agrees with the world it summarises, and the default world is beatable but learnable."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from cyntra.kernel.config import parse_config
from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.schemas import schema_errors
from cyntra.sim.objective import combine_serial, combine_speculate, utility
from cyntra.sim.oracle import (
    DEFAULT_ROUTING,
    best_plan,
    expected_utility,
    monte_carlo_utility,
    oracle_for_issue,
    oracle_table,
    plan_estimate,
    regret,
    toolchains_for_plan,
)
from cyntra.sim.population import generate_issues
from cyntra.sim.profile import SimProfile, load_profile
from cyntra.sim.workspace_template import sim_config_yaml, sim_universe_files
from cyntra.sim.world import CandidateOutcome, sample_candidate
from cyntra.state.issue import Issue

SPACE = ActionSpace()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def profile() -> SimProfile:
    return load_profile()


@pytest.fixture(scope="module")
def issues(profile: SimProfile) -> list[Issue]:
    rows, _ = generate_issues(profile, 120, 17)
    return [Issue.model_validate(r) for r in rows]


def _plan(swarm: str, p: int, minutes: int, c: int) -> PlanAction:
    return PlanAction(swarm_id=swarm, parallelism=p, max_run_minutes=minutes, max_candidates=c)


def _issue(**fields: object) -> Issue:
    base: dict[str, object] = {"id": "7", "title": "Update settings page", "tags": ["frontend"]}
    base.update(fields)
    return Issue.model_validate(base)


# --- combination semantics -------------------------------------------------------------------


def _out(passed: bool, minutes: float, cost: float, toolchain: str = "claude") -> CandidateOutcome:
    gates = dict.fromkeys(("test", "typecheck", "lint"), passed)
    return CandidateOutcome(
        toolchain, 0, 0, 60.0, minutes, minutes, False, 0 if passed else 1, gates, (), passed, 10, cost, 0.5, 5, 1
    )


def test_combine_speculate_sums_cost_and_takes_slowest() -> None:
    plan = combine_speculate([_out(False, 10, 1.0), _out(True, 30, 2.0), _out(False, 20, 0.5)])
    assert plan.passed and plan.winner_index == 1
    assert plan.cost_usd == pytest.approx(3.5) and plan.wall_minutes == 30
    assert len(plan.candidates) == 3


def test_combine_serial_stops_at_first_pass() -> None:
    plan = combine_serial([_out(False, 10, 1.0), _out(True, 30, 2.0), _out(True, 20, 0.5)])
    assert plan.passed and plan.winner_index == 1 and len(plan.candidates) == 2
    assert plan.cost_usd == pytest.approx(3.0) and plan.wall_minutes == 40
    fail = combine_serial([_out(False, 10, 1.0), _out(False, 5, 2.0)])
    assert not fail.passed and fail.winner_index is None and fail.wall_minutes == 15


def test_utility_formula(profile: SimProfile) -> None:
    issue = _issue(dk_priority="P1", dk_size="L")
    obj = profile.objective
    value = obj.value_by_priority["P1"] * obj.value_size_factor["L"]
    wall = obj.wall_cost_per_minute["P1"]
    assert utility(True, 3.0, 40.0, issue, profile) == pytest.approx(value - 3.0 - 40.0 * wall)
    assert utility(False, 3.0, 40.0, issue, profile) == pytest.approx(-3.0 - 40.0 * wall - obj.fail_penalty)


# --- routing representation ------------------------------------------------------------------


def test_toolchains_for_plan_follow_routing() -> None:
    spec3 = _plan("speculate_vote", 3, 60, 3)
    serial2 = _plan("serial_handoff", 1, 60, 2)
    claude = _issue()  # default rule
    assert toolchains_for_plan(claude, spec3) == ["claude", "codex", "opencode"]
    assert toolchains_for_plan(claude, serial2) == ["claude", "codex"]
    critical = _issue(dk_risk="critical")
    assert toolchains_for_plan(critical, spec3) == ["codex", "claude", "crush"]
    assert toolchains_for_plan(critical, _plan("serial_handoff", 1, 60, 3)) == ["codex", "claude", "opencode"]
    hint = _issue(dk_tool_hint="crush", dk_risk="critical")
    assert toolchains_for_plan(hint, _plan("serial_handoff", 1, 60, 3)) == ["crush", "opencode", "claude"]
    small = _issue(dk_risk="low", dk_size="XS")
    assert toolchains_for_plan(small, _plan("speculate_vote", 2, 30, 2)) == ["opencode", "claude"]
    assert toolchains_for_plan(_issue(dk_size="XL"), serial2) == ["codex", "claude"]
    assert toolchains_for_plan(_issue(tags=["kernel"]), serial2) == ["codex", "claude"]


def test_heuristic_plan_matches_upstream_rules() -> None:
    h = DEFAULT_ROUTING.heuristic_plan
    assert h(_issue(dk_risk="critical")).key() == ("speculate_vote", 3, 60, 3)
    assert h(_issue(dk_risk="high")).key() == ("speculate_vote", 2, 60, 2)
    assert h(_issue(dk_risk="high", dk_tool_hint="claude")).key() == ("serial_handoff", 1, 60, 1)
    assert h(_issue(dk_risk="low", dk_size="S")).key() == ("serial_handoff", 1, 60, 1)  # opencode 45 → 60
    assert h(_issue()).key() == ("serial_handoff", 1, 60, 1)
    assert DEFAULT_ROUTING.route(_issue(dk_risk="low", dk_size="S")).use == ("opencode",)


# --- oracle vs world ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        _plan("serial_handoff", 1, 15, 1),
        _plan("serial_handoff", 1, 60, 3),
        _plan("serial_handoff", 1, 120, 2),
        _plan("speculate_vote", 2, 30, 2),
        _plan("speculate_vote", 3, 120, 3),
    ],
    ids=lambda a: a.label(),
)
def test_expected_utility_matches_monte_carlo(profile: SimProfile, issues: list[Issue], plan: PlanAction) -> None:
    n = 1500
    for issue in issues[:6]:
        routed = DEFAULT_ROUTING.candidates(issue)
        est = plan_estimate(profile, issue, plan, routed.speculate, routed.serial)
        tools = toolchains_for_plan(issue, plan)
        utils, passes = [], []
        parallel = plan.swarm_id == "speculate_vote"
        for a in range(n):
            outs = []
            for k, t in enumerate(tools):
                o = sample_candidate(profile, issue, t, a, plan.max_run_minutes, k, issue.created)
                outs.append(o)
                if not parallel and o.all_passed:
                    break
            res = combine_speculate(outs) if parallel else combine_serial(outs)
            utils.append(utility(res.passed, res.cost_usd, res.wall_minutes, issue, profile))
            passes.append(res.passed)
        mean = sum(utils) / n
        sd = math.sqrt(sum((u - mean) ** 2 for u in utils) / (n - 1))
        assert abs(est.eu - mean) < 4.5 * sd / math.sqrt(n) + 0.05, (issue.id, est.eu, mean)
        p = sum(passes) / n
        assert abs(est.p_pass - p) < 4.5 * math.sqrt(max(p * (1 - p), 1e-4) / n) + 0.01
        mc = monte_carlo_utility(profile, issue, plan, routed.speculate, n, routed.serial)
        assert mc == pytest.approx(mean)  # the library's Monte Carlo is the same computation


def test_expected_wall_of_speculation_matches_samples(profile: SimProfile, issues: list[Issue]) -> None:
    plan = _plan("speculate_vote", 3, 60, 3)
    issue = next(i for i in issues if i.dk_size in ("L", "XL"))
    routed = DEFAULT_ROUTING.candidates(issue)
    est = plan_estimate(profile, issue, plan, routed.speculate, routed.serial)
    tools = toolchains_for_plan(issue, plan)
    n = 3000
    walls = [
        max(sample_candidate(profile, issue, t, a, 60, k, issue.created).duration_minutes for k, t in enumerate(tools))
        for a in range(n)
    ]
    mean = sum(walls) / n
    sd = math.sqrt(sum((w - mean) ** 2 for w in walls) / (n - 1))
    assert abs(est.e_wall - mean) < 4.5 * sd / math.sqrt(n) + 0.05


def test_expected_utility_api_closed_form_and_sampled(profile: SimProfile, issues: list[Issue]) -> None:
    issue = issues[3]
    routed = DEFAULT_ROUTING.candidates(issue)
    plan = _plan("serial_handoff", 1, 30, 2)
    closed = expected_utility(profile, issue, plan, routed.speculate, serial_candidates=routed.serial)
    sampled = expected_utility(profile, issue, plan, routed.speculate, n_samples=800, serial_candidates=routed.serial)
    assert closed == pytest.approx(plan_estimate(profile, issue, plan, routed.speculate, routed.serial).eu)
    assert abs(closed - sampled) < 3.0


def test_oracle_table_best_plan_and_regret(profile: SimProfile, issues: list[Issue]) -> None:
    for issue in issues[:40]:
        routed = DEFAULT_ROUTING.candidates(issue)
        table = oracle_table(profile, issue, routed.speculate, routed.serial)
        assert [row.action for row in table] == list(SPACE.actions) and len(table) == 20
        action, eu = best_plan(profile, issue, routed.speculate, routed.serial)
        assert all(eu >= row.eu for row in table)
        assert regret(profile, issue, action, routed.speculate, routed.serial) == 0.0
        for row in table:
            a, e, p, c, w = row  # a plain 5-tuple for callers
            assert 0.0 <= p <= 1.0 and c >= 0 and w >= 0
            assert regret(profile, issue, a, routed.speculate, routed.serial) == pytest.approx(eu - e)
        assert table == oracle_for_issue(profile, issue)


def test_more_candidates_never_lower_pass_probability(profile: SimProfile, issues: list[Issue]) -> None:
    for issue in issues[:30]:
        rows = {r.action.key(): r for r in oracle_for_issue(profile, issue)}
        routed = DEFAULT_ROUTING.candidates(issue)
        for m in (15, 30, 60, 120):
            serial = [rows[("serial_handoff", 1, m, c)].p_pass for c in (1, 2, 3)]
            assert serial == sorted(serial)
            assert rows[("speculate_vote", 3, m, 3)].p_pass >= rows[("speculate_vote", 2, m, 2)].p_pass - 1e-12
            if routed.speculate[:2] == routed.serial[:2]:
                # Same toolchains, same budget: speculation and handoff pass equally often.
                spec, ser = rows[("speculate_vote", 2, m, 2)], rows[("serial_handoff", 1, m, 2)]
                assert spec.p_pass == pytest.approx(ser.p_pass)
                assert spec.e_cost >= ser.e_cost - 1e-9  # speculation always pays for both


# --- the default world is beatable, and learnably so -------------------------------------------


def _sim_gap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sim_gap", REPO / "scripts" / "sim_gap.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sim_gap"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_default_world_gap_is_substantial_and_learnable(profile: SimProfile) -> None:
    res = _sim_gap().analyse(profile, 800, 99, n_boot=300)
    low, high = res["mean_regret"][1], res["mean_regret"][2]
    assert low > 0.0 and high >= low
    assert res["regret_share_of_oracle"] >= 0.2
    assert res["learner"]["gap_closed"] >= 0.5
    assert res["learner"]["gap_closed"] > res["learner"]["gap_closed_constant"]


# --- workspace template ------------------------------------------------------------------------


def test_sim_config_parses_without_unknown_keys(profile: SimProfile) -> None:
    text = sim_config_yaml(profile, "profiles/my world.yaml", seed=5)
    assert "# " in text  # commented
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.unknown_keys() == []
    assert cfg.sim == {"profile": "profiles/my world.yaml", "seed": 5}
    assert {n: t.adapter for n, t in cfg.toolchains.items()} == dict.fromkeys(
        ("codex", "claude", "opencode", "crush"), "sim"
    )
    assert {n: t.timeout_minutes for n, t in cfg.toolchains.items()} == {
        "codex": 60,
        "claude": 60,
        "opencode": 45,
        "crush": 45,
    }
    assert (cfg.gates.test_command, cfg.gates.typecheck_command, cfg.gates.lint_command) == (
        "sim:test",
        "sim:typecheck",
        "sim:lint",
    )
    assert cfg.workcells.backend == "directory" and cfg.strategy == "heuristic"
    assert cfg.routing.fallbacks == {k: list(v) for k, v in DEFAULT_ROUTING.fallbacks.items()}
    assert cfg.routing.rules[4].speculate and cfg.routing.rules[4].parallelism == 3
    assert not any("fab-world" in r.use or "comfyui" in r.use for r in cfg.routing.rules)
    assert parse_config(yaml.safe_load(sim_config_yaml(profile))).sim == {"profile": "default", "seed": profile.seed}
    alt = load_profile("alt")
    alt_cfg = parse_config(yaml.safe_load(sim_config_yaml(alt, "alt")))
    assert alt_cfg.objective.model_dump() == alt.objective.model_dump()


def test_sim_universe_files_validate(profile: SimProfile, upstream_dir: Path) -> None:
    import json

    import jsonschema

    files = sim_universe_files(profile)
    assert set(files) == {
        "universes/sim/universe.yaml",
        "universes/sim/swarms.yaml",
        "universes/sim/objectives.yaml",
    }
    for rel, text in files.items():
        name = rel.rsplit("/", 1)[1].split(".")[0]
        data = yaml.safe_load(text)
        upstream = json.loads((upstream_dir / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))
        jsonschema.validate(data, upstream)
        assert schema_errors(name, data) == []
    uni = yaml.safe_load(files["universes/sim/universe.yaml"])
    assert uni["worlds"][0]["world_kind"] == "simulation"
    swarms = yaml.safe_load(files["universes/sim/swarms.yaml"])["swarms"]
    assert {k: v["type"] for k, v in swarms.items()} == {
        "speculate_vote": "parallel_compete",
        "serial_handoff": "serial_handoff",
    }
