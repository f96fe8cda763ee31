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
