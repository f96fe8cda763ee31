"""planner_input.v1: one builder, canonical hash, schema-valid, only the past is visible."""

from __future__ import annotations

import random
from datetime import timedelta

from cyntra.planner.index import SimilarRunsIndex
from cyntra.planner.planner_input import (
    PlannerInput,
    build_planner_input,
    canonical_json,
    planner_input_hash,
    title_keywords,
    universe_inputs,
)
from cyntra.schemas import schema_errors
from cyntra.state.issue import Issue
from cyntra.universe import Budgets, Universe, UniverseDefaults, UniversePolicies, World
from test_run_summary import T0
from test_similar_index import synth_run

ROW = {
    "id": "I-7", "title": "Add the retry logic to the Payment API client (v2) and fix it", "tags": ["bug", "api"],
    "dk_priority": "P0", "dk_risk": "critical", "dk_size": "L", "dk_tool_hint": "claude",
    "dk_attempts": "2", "dk_estimated_tokens": None, "dk_speculate": "false",
}


def _index() -> SimilarRunsIndex:
    rng = random.Random(11)
    return SimilarRunsIndex.from_summaries([synth_run(i, rng, span_days=5) for i in range(300)])


def test_title_keywords_are_deterministic() -> None:
    assert title_keywords(ROW["title"]) == ["api", "client", "fix", "logic", "payment", "retry"]
    assert title_keywords("a b cc 2024 the") == []
    assert len(title_keywords(" ".join(f"word{i:02d}x" for i in range(30)))) == 12


def test_build_is_schema_valid_and_hash_is_canonical() -> None:
    idx = _index()
    universe = Universe(
        universe_id="alpha", worlds=[World(world_id="w", world_kind="codebase", path="w")],
        policies=UniversePolicies(budgets=Budgets(max_run_minutes=60)),
        defaults=UniverseDefaults(swarm_id="serial_handoff"),
    )
    defaults, policies = universe_inputs(universe)
    assert defaults == {"swarm_id": "serial_handoff"} and policies == {"budgets": {"max_run_minutes": 60}}
    when = T0 + timedelta(days=3)
    pi = build_planner_input(ROW, when, index=idx, universe_id="alpha", universe_defaults=defaults,
                             universe_policies=policies)
    assert schema_errors("planner_input", pi.model_dump(mode="json")) == []
    assert pi.issue.attempts == 2 and pi.issue.estimated_tokens == 50000 and pi.issue.speculate is False
    assert pi.issue.tags == ["api", "bug"] and pi.domain == "code"
    assert 0 < len(pi.last_N_similar_runs) <= 8
    assert all(r.started_at < pi.decision_time for r in pi.last_N_similar_runs)
    # the same decision from an Issue model, a dict, a string time: the same bytes and hash
    again = build_planner_input(Issue.model_validate(ROW), "2025-03-04T09:00:00Z", index=idx,
                                universe_id="alpha", universe_defaults=universe.defaults,
                                universe_policies=universe.policies)
    assert canonical_json(again) == canonical_json(pi)
    assert planner_input_hash(again) == planner_input_hash(pi)
    assert PlannerInput.model_validate_json(canonical_json(pi)) == pi
    later = build_planner_input(ROW, when + timedelta(hours=5), index=idx, universe_id="alpha")
    assert planner_input_hash(later) != planner_input_hash(pi)


def test_n_similar_zero_and_world_runs() -> None:
    idx = _index()
    pi = build_planner_input(ROW, T0 + timedelta(days=9), index=idx, universe_id=None, n_similar=0)
    assert pi.last_N_similar_runs == [] and pi.n_similar == 0
    w = build_planner_input(ROW, T0 + timedelta(days=9), index=idx, universe_id=None, job_type="world",
                            world_id="w1", objective_id="o1")
    hits = idx.similar("world", "code", ["api", "bug"], T0 + timedelta(days=9), 8, "w1", "o1")
    assert [r.run_id for r in w.last_N_similar_runs] == [h.run_id for h in hits]
    assert all((h.world_id, h.objective_id) == ("w1", "o1") for h in hits) and hits
