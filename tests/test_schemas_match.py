"""Every pydantic artifact model agrees with its JSON Schema in ``kernel/schemas/cyntra/``.

To cover a new artifact, append ``(schema_name, factory)`` to ``CASES``: the factory returns a
representative model instance (set optional fields where the schema types them, so the check
sees them). The tests then prove that what the model writes validates, and that the schema
cannot require a key the model does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from cyntra import schemas
from cyntra.kernel.plan import TraceStep
from cyntra.planner.action_space import PlanAction
from cyntra.strategy.clamp import Violation
from cyntra.strategy.policy import Policy, PolicyLimits, PolicyRule, PromotionGates
from cyntra.strategy.record import AppliedPlan, DecisionRecord, OutcomeRecord, Proposal, agreement
from cyntra.universe import (
    Budgets,
    Determinism,
    Objective,
    ObjectiveCatalog,
    RunContext,
    Swarm,
    SwarmCatalog,
    Universe,
    UniverseDefaults,
    UniversePolicies,
    World,
    default_swarms,
)

Factory = Callable[[], BaseModel]


def _decision_full() -> DecisionRecord:
    heur = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=120, max_candidates=3)
    cand = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=30, max_candidates=2)
    clamped = PlanAction(swarm_id="speculate_vote", parallelism=2, max_run_minutes=120, max_candidates=2)
    violation = Violation(rule_id="cap", field="parallelism", requested=3, limit={"max_parallelism": 2},
                          applied=2, mode="enforce")
    return DecisionRecord(
        decision_id="dec-1", issue_id="7", timestamp="2026-01-01T00:00:00Z", job_type="code", mode="urm",
        planner_input_hash="ab" * 32,
        heuristic=Proposal(strategy="heuristic", status="ok", action=heur, toolchains=["codex", "claude"],
                           trace=[TraceStep(step="routing", detail="rule 0", data={"rule": 0})], confidence=1.0,
                           latency_ms=0.1, clamp=[violation]),
        candidate=Proposal(strategy="urm", status="ok", action=cand, toolchains=["claude"],
                           probabilities={"parallelism": {"1": 0.8, "2": 0.2}}, confidence=0.8,
                           expected_utility=3.5, latency_ms=2.5, error=None),
        agreement=agreement(heur, cand),
        applied=AppliedPlan(action=clamped, toolchains=["codex", "claude"], source="exploration"),
        clamp=[violation], propensity=0.05, exploration={"epsilon": 0.1, "explored": True},
        fallback_reason="low confidence", checkpoint_id="ckpt-1", checkpoint_sha256="cd" * 32,
        policy_sha256="ef" * 32, universe_id="medica", world_id="w", objective_id="o",
    )


def _decision_minimal() -> DecisionRecord:
    action = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=60, max_candidates=1)
    return DecisionRecord(
        decision_id="dec-2", issue_id="8", timestamp="2026-01-01T00:00:00Z", mode="shadow",
        heuristic=Proposal(strategy="heuristic", status="ok", action=action),
        candidate=Proposal(strategy="urm", status="timeout", error="exceeded latency budget 50.0 ms"),
        applied=AppliedPlan(action=action, toolchains=["claude"], source="heuristic"), propensity=1.0,
    )


def _outcome() -> OutcomeRecord:
    return OutcomeRecord(
        decision_id="dec-1", issue_id="7", timestamp="2026-01-01T01:00:00Z", status="success", gates_passed=True,
        started_at="2026-01-01T00:00:00Z", completed_at="2026-01-01T01:00:00Z", duration_ms=3600000,
        cost_usd=1.25, tokens_used=1000, candidates_run=2, winner_toolchain="codex", utility=12.5,
    )


def _policy_full() -> Policy:
    return Policy(
        min_confidence=0.3,
        rules=[
            PolicyRule(id="a", description="all limits", match={"dk_risk": ["high"], "tags_any": "infra",
                                                               "title_pattern": "x"},
                       mode="warn", limits=PolicyLimits(allowed_swarms=["serial_handoff"], max_parallelism=2,
                                                        max_minutes=60, min_minutes=15, max_candidates=2,
                                                        min_candidates=1, min_confidence=0.5)),
            PolicyRule(id="b"),
        ],
        promotion=PromotionGates(min_decisions=10, max_fallback_rate=0.1, max_p99_latency_ms=5.0, max_ece=0.2,
                                 require_ope_lower_bound_ge_heuristic=False),
    )


def _universe_full() -> Universe:
    return Universe(
        universe_id="alpha",
        name="Alpha",
        description="a test universe",
        worlds=[
            World(world_id="repo", world_kind="codebase", path="worlds/repo", tags=["code"]),
            World(world_id="sim", world_kind="simulation", path="/abs/sim.yaml", enabled=False),
        ],
        policies=UniversePolicies(
            determinism=Determinism(enforce_cpu_only=True, pythonhashseed=7),
            budgets=Budgets(max_concurrent_workcells=2, max_run_minutes=60),
            routing_overrides=[{"id": "r1", "match": {"dk_risk": "high"}, "use": ["claude"]}],
        ),
        defaults=UniverseDefaults(swarm_id="speculate_vote", objective_id="fast"),
    )


def _universe_minimal() -> Universe:
    # Unset optional fields must be omitted from the dump, not written as null.
    return Universe(
        universe_id="beta", worlds=[World(world_id="w", world_kind="dataset", path="d")]
    )


def _swarms() -> SwarmCatalog:
    extra = Swarm.model_validate(
        {"id": "relay", "type": "serial_handoff", "population_size": 2, "note": "extra key"}
    )
    return SwarmCatalog(swarms={**default_swarms(), "relay": extra})


def _objectives() -> ObjectiveCatalog:
    return ObjectiveCatalog(
        objectives={
            "fast": Objective(id="fast", metrics={"duration_ms": "min"}),
            "good": Objective(
                id="good",
                description="quality first",
                metrics={"overall": "max", "cost_usd": "min"},
                require_all_gates_pass=True,
            ),
        }
    )


CASES: list[tuple[str, Factory]] = [
    ("decision", _decision_full),
    ("decision", _decision_minimal),
    ("decision_outcome", _outcome),
    ("decision_outcome", lambda: OutcomeRecord(decision_id="d", issue_id="1", timestamp="2026-01-01T00:00:00Z",
                                               status="failed", gates_passed=False)),
    ("policy", _policy_full),
    ("policy", Policy),
    ("universe", _universe_full),
    ("universe", _universe_minimal),
    ("swarms", _swarms),
    ("objectives", _objectives),
    ("run_context", lambda: RunContext(universe_id="medica")),
    (
        "run_context",
        lambda: RunContext(
            universe_id="medica",
            world_id="outora_library",
            objective_id="realism_perf_v1",
            swarm_id="speculate_vote",
            issue_id="17",
        ),
    ),
]


def _ids() -> list[str]:
    return [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        if isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
    return names


@pytest.mark.parametrize(("schema_name", "factory"), CASES, ids=_ids())
def test_model_dump_validates_against_schema(schema_name: str, factory: Factory) -> None:
    data: Any = factory().model_dump(mode="json")
    assert schemas.schema_errors(schema_name, data) == []


@pytest.mark.parametrize(("schema_name", "factory"), CASES, ids=_ids())
def test_schema_required_keys_are_model_fields(schema_name: str, factory: Factory) -> None:
    schema = schemas.load_schema(schema_name)
    fields = _field_names(type(factory()))
    assert set(schema.get("required", [])) <= fields


@pytest.mark.parametrize(("schema_name", "factory"), CASES, ids=_ids())
def test_closed_schema_properties_are_model_fields(schema_name: str, factory: Factory) -> None:
    """Where the schema is closed, the model can hold every key the schema allows."""
    schema = schemas.load_schema(schema_name)
    if schema.get("additionalProperties", True) is not False:
        pytest.skip(f"{schema_name} is open: extra keys are the model's extra")
    fields = _field_names(type(factory()))
    assert set(schema.get("properties", {})) <= fields
