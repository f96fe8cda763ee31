"""The universe layer: loading, validation errors (file/line/field), policies, run context."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyntra import schemas
from cyntra.errors import ConfigError, InputError
from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.universe import (
    RunContext,
    context_for,
    default_swarms,
    list_universes,
    load_universe,
    read_context,
    write_context,
)

UNIVERSE_FILES = ("universe", "swarms", "objectives")

ALPHA_UNIVERSE = """\
schema_version: "1.0"
universe_id: alpha
name: Alpha
worlds:
  - world_id: main_repo
    world_kind: codebase
    path: worlds/main_repo
policies:
  determinism:
    enforce_cpu_only: false
  budgets:
    max_concurrent_workcells: 2
    max_run_minutes: 45
  routing_overrides:
    - id: risky_to_claude
      match:
        dk_risk: [high, critical]
      use: [claude, codex]
      speculate: true
      parallelism: 2
defaults:
  swarm_id: serial_handoff
  objective_id: cheapest_pass
"""

ALPHA_SWARMS = """\
schema_version: "1.0"
swarms:
  race:
    type: parallel_compete
    population_size: 2
    note: kept as-is
  relay:
    type: serial_handoff
  serial_handoff:
    type: serial_handoff
    population_size: 2
    selection:
      mode: first_pass
      require_all_gates_pass: false
"""

ALPHA_OBJECTIVES = """\
schema_version: "1.0"
objectives:
  cheapest_pass:
    description: pass the gates at the lowest cost
    metrics:
      cost_usd: min
      duration_ms: min
    require_all_gates_pass: true
"""


def make_universe(
    workspace: Path,
    uid: str = "alpha",
    universe: str | None = ALPHA_UNIVERSE,
    swarms: str | None = None,
    objectives: str | None = None,
) -> Path:
    root = workspace / "universes" / uid
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("universe", universe), ("swarms", swarms), ("objectives", objectives)):
        if text is not None:
            (root / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def medica_ws(tmp_path: Path, upstream_dir: Path) -> Path:
    """A workspace holding the upstream medica universe, copied at test time."""
    shutil.copytree(upstream_dir / "universes", tmp_path / "universes")
    return tmp_path


def upstream_validator(upstream_dir: Path, name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((upstream_dir / "schemas" / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


# --- loading -------------------------------------------------------------------------------


def test_loads_upstream_medica(medica_ws: Path) -> None:
    u = load_universe(medica_ws, "medica")
    assert u.universe_id == "medica"
    assert u.universe.name == "Medica"
    assert [w.world_id for w in u.universe.worlds] == ["outora_library"]
    world = u.world("outora_library")
    assert world.world_kind == "fab_world" and world.enabled and "fab" in world.tags
    assert u.defaults.swarm_id == "speculate_vote"
    assert u.defaults.objective_id == "realism_perf_v1"
    assert u.swarm_types() == {
        "speculate_vote": "parallel_compete",
        "serial_handoff": "serial_handoff",
    }
    assert u.swarms["speculate_vote"].population_size == 3
    assert u.swarms["speculate_vote"].selection.require_all_gates_pass is True
    assert u.objectives["realism_perf_v1"].metrics == {"overall": "max", "duration_ms": "min"}
    assert u.swarms_from_file and u.objectives_from_file
    assert u.budgets.max_concurrent_workcells == 3
    assert u.budgets.max_run_minutes == 120
    assert u.routing_overrides == []
    assert u.determinism_env() == {"PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": ""}
    assert [a.key() for a in u.action_space()] == [a.key() for a in ActionSpace()]
    assert u.root == medica_ws / "universes" / "medica"
    assert list_universes(medica_ws) == ["medica"]


def test_defaults_without_catalog_files(tmp_path: Path) -> None:
    make_universe(tmp_path)
    u = load_universe(tmp_path, "alpha")
    assert not u.swarms_from_file and not u.objectives_from_file
    assert u.swarms == default_swarms()
    assert u.swarm_types() == {
        "speculate_vote": "parallel_compete",
        "serial_handoff": "serial_handoff",
    }
    assert u.swarms["speculate_vote"].population_size == 3
    assert u.swarms["serial_handoff"].population_size == 1
    # No objective catalog: the default objective id cannot be checked and is kept.
    assert u.objectives == {}
    assert u.defaults.objective_id == "cheapest_pass"
    assert u.determinism_env() == {}


def test_minimal_universe_gets_policy_defaults(tmp_path: Path) -> None:
    make_universe(
        tmp_path,
        "beta",
        'schema_version: "1.0"\nuniverse_id: beta\nworlds:\n'
        "  - {world_id: w, world_kind: simulation, path: sim.yaml}\n",
    )
    u = load_universe(tmp_path, "beta")
    assert u.budgets.max_concurrent_workcells is None and u.budgets.max_run_minutes is None
    assert u.routing_overrides == []
    assert u.defaults.swarm_id is None and u.defaults.objective_id is None
    assert u.world("w").enabled is True and u.world("w").tags == []


def test_custom_catalogs(tmp_path: Path) -> None:
    make_universe(tmp_path, swarms=ALPHA_SWARMS, objectives=ALPHA_OBJECTIVES)
    u = load_universe(tmp_path, "alpha")
    assert u.swarm_types() == {
        "race": "parallel_compete",
        "relay": "serial_handoff",
        "serial_handoff": "serial_handoff",
    }
    assert u.swarms["relay"].population_size == 1  # defaulted by type
    assert u.swarms["race"].model_extra == {"note": "kept as-is"}
    assert u.swarms["serial_handoff"].selection.mode == "first_pass"
    space = u.action_space()
    assert space.swarms == ("race", "relay", "serial_handoff")
    assert space.is_valid(
        PlanAction(swarm_id="race", parallelism=2, max_run_minutes=30, max_candidates=2)
    )
    assert not space.is_valid(
        PlanAction(swarm_id="speculate_vote", parallelism=2, max_run_minutes=30, max_candidates=2)
    )
    assert u.objectives["cheapest_pass"].require_all_gates_pass is True


def test_budgets_and_routing_overrides(tmp_path: Path) -> None:
    make_universe(tmp_path)
    u = load_universe(tmp_path, "alpha")
    assert (u.budgets.max_concurrent_workcells, u.budgets.max_run_minutes) == (2, 45)
    rules = u.routing_overrides
    assert rules == [
        {
            "id": "risky_to_claude",
            "match": {"dk_risk": ["high", "critical"]},
            "use": ["claude", "codex"],
            "speculate": True,
            "parallelism": 2,
        }
    ]
    rules[0]["use"] = ["mutated"]
    rules.append({})
    assert len(u.routing_overrides) == 1 and u.routing_overrides[0]["id"] == "risky_to_claude"


def test_determinism_env_seed_without_cpu_only(tmp_path: Path) -> None:
    text = ALPHA_UNIVERSE.replace(
        "    enforce_cpu_only: false\n", "    enforce_cpu_only: false\n    pythonhashseed: 1234\n"
    )
    make_universe(tmp_path, universe=text)
    assert load_universe(tmp_path, "alpha").determinism_env() == {"PYTHONHASHSEED": "1234"}


def test_world_path_checked_only_when_run(tmp_path: Path) -> None:
    make_universe(tmp_path)
    u = load_universe(tmp_path, "alpha")  # worlds/main_repo does not exist: still loads
    with pytest.raises(ConfigError) as exc:
        u.resolve_world_path("main_repo")
    assert exc.value.field == "worlds.0.path"
    assert exc.value.path == str(tmp_path / "universes" / "alpha" / "universe.yaml")
    assert "main_repo" in str(exc.value) and "does not exist" in str(exc.value)
    (tmp_path / "worlds" / "main_repo").mkdir(parents=True)
    assert u.resolve_world_path("main_repo") == tmp_path / "worlds" / "main_repo"
    with pytest.raises(ConfigError, match="unknown world 'nope'"):
        u.resolve_world_path("nope")


def test_absolute_world_path(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "world.yaml"
    text = ALPHA_UNIVERSE.replace("path: worlds/main_repo", f"path: {target}")
    make_universe(tmp_path / "ws", universe=text)
    u = load_universe(tmp_path / "ws", "alpha")
    with pytest.raises(ConfigError):
        u.resolve_world_path("main_repo")
    target.parent.mkdir()
    target.write_text("{}\n")
    assert u.resolve_world_path("main_repo") == target


# --- errors --------------------------------------------------------------------------------


def test_missing_universe_dir_lists_available(tmp_path: Path) -> None:
    make_universe(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "gamma")
    assert "gamma" in str(exc.value) and "['alpha']" in str(exc.value)
    assert exc.value.path == str(tmp_path / "universes" / "gamma")


def test_missing_universe_file(tmp_path: Path) -> None:
    make_universe(tmp_path, "gamma", universe=None, swarms=ALPHA_SWARMS)
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "gamma")
    assert exc.value.path == str(tmp_path / "universes" / "gamma" / "universe.yaml")
    assert list_universes(tmp_path) == []


def test_invalid_universe_id_refused_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid universe id"):
        load_universe(tmp_path, "../etc")


def test_universe_id_must_match_directory(tmp_path: Path) -> None:
    make_universe(tmp_path, "other")
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "other")
    assert exc.value.field == "universe_id"
    assert exc.value.line == 2
    assert "'alpha'" in str(exc.value) and "'other'" in str(exc.value)


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    text = ALPHA_UNIVERSE.replace(
        "    path: worlds/main_repo\n", "    path: worlds/main_repo\n    tags: [a, b\n"
    )
    make_universe(tmp_path, universe=text)
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.path is not None and exc.value.path.endswith("universe.yaml")
    assert exc.value.line is not None and 8 <= exc.value.line <= 10
    assert "invalid YAML" in str(exc.value)


def test_bad_yaml_in_swarms_names_that_file(tmp_path: Path) -> None:
    make_universe(tmp_path, swarms='schema_version: "1.0"\nswarms:\n  a: {type: x\n')
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.path == str(tmp_path / "universes" / "alpha" / "swarms.yaml")
    assert exc.value.line is not None


def test_duplicate_key_is_refused_with_line(tmp_path: Path) -> None:
    text = ALPHA_UNIVERSE.replace("name: Alpha\n", "name: Alpha\nname: Again\n")
    make_universe(tmp_path, universe=text)
    with pytest.raises(ConfigError, match="duplicate key 'name'") as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.line == 4


@pytest.mark.parametrize("text", ["", "- just\n- a list\n"])
def test_non_mapping_file(tmp_path: Path, text: str) -> None:
    make_universe(tmp_path, universe=text)
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_universe(tmp_path, "alpha")


@pytest.mark.parametrize(
    ("file", "old", "new", "field", "line"),
    [
        ("universe", "world_kind: codebase", "world_kind: planet", "worlds.0.world_kind", 6),
        (
            "universe",
            "max_run_minutes: 45",
            'max_run_minutes: "45"',
            "policies.budgets.max_run_minutes",
            13,
        ),
        (
            "universe",
            "max_concurrent_workcells: 2",
            "max_concurrent_workcells: 0",
            "policies.budgets.max_concurrent_workcells",
            12,
        ),
        ("universe", "    path: worlds/main_repo\n", "", "worlds.0", 5),
        ("universe", "name: Alpha", "nmae: Alpha", "<root>", 1),
        (
            "universe",
            "      parallelism: 2",
            "      parallelism: two",
            "policies.routing_overrides.0.parallelism",
            20,
        ),
        ("swarms", "type: parallel_compete", "type: mob", "swarms.race.type", 4),
        (
            "swarms",
            "population_size: 2\n    note",
            "population_size: 0\n    note",
            "swarms.race.population_size",
            5,
        ),
        (
            "objectives",
            "cost_usd: min",
            "cost_usd: lowest",
            "objectives.cheapest_pass.metrics.cost_usd",
            6,
        ),
        ("objectives", 'schema_version: "1.0"', 'schema_version: "2.0"', "schema_version", 1),
    ],
)
def test_schema_violation_reports_file_field_and_line(
    tmp_path: Path, file: str, old: str, new: str, field: str, line: int
) -> None:
    texts = {"universe": ALPHA_UNIVERSE, "swarms": ALPHA_SWARMS, "objectives": ALPHA_OBJECTIVES}
    assert old in texts[file]
    texts[file] = texts[file].replace(old, new, 1)
    # The default swarm must exist in the custom catalog for the universe to load.
    make_universe(tmp_path, **texts)
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    err = exc.value
    assert err.path == str(tmp_path / "universes" / "alpha" / f"{file}.yaml")
    assert err.field == field
    assert err.line == line
    assert field in str(err) and f"{file}.yaml:{line}" in str(err)


def test_duplicate_world_ids(tmp_path: Path) -> None:
    text = ALPHA_UNIVERSE.replace(
        "policies:\n",
        "  - world_id: main_repo\n    world_kind: dataset\n    path: data\npolicies:\n",
    )
    make_universe(tmp_path, universe=text)
    with pytest.raises(ConfigError, match="duplicate world_id 'main_repo'") as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.field == "worlds.1.world_id" and exc.value.line == 8


def test_unknown_default_swarm(tmp_path: Path) -> None:
    make_universe(
        tmp_path,
        universe=ALPHA_UNIVERSE.replace("swarm_id: serial_handoff", "swarm_id: stampede"),
        swarms=ALPHA_SWARMS,
    )
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.field == "defaults.swarm_id" and exc.value.line == 22
    assert "stampede" in str(exc.value) and "swarms.yaml" in str(exc.value)


def test_unknown_default_swarm_against_default_catalog(tmp_path: Path) -> None:
    make_universe(
        tmp_path, universe=ALPHA_UNIVERSE.replace("swarm_id: serial_handoff", "swarm_id: race")
    )
    with pytest.raises(ConfigError, match="default swarm catalog") as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.field == "defaults.swarm_id"


def test_unknown_default_objective(tmp_path: Path) -> None:
    make_universe(
        tmp_path,
        universe=ALPHA_UNIVERSE.replace("objective_id: cheapest_pass", "objective_id: fastest"),
        objectives=ALPHA_OBJECTIVES,
    )
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.field == "defaults.objective_id" and exc.value.line == 23
    assert "fastest" in str(exc.value) and "cheapest_pass" in str(exc.value)


def test_empty_swarm_catalog_is_refused(tmp_path: Path) -> None:
    make_universe(tmp_path, swarms='schema_version: "1.0"\nswarms: {}\n')
    with pytest.raises(ConfigError) as exc:
        load_universe(tmp_path, "alpha")
    assert exc.value.field == "swarms"


# --- run context ---------------------------------------------------------------------------


def test_context_json_written_and_valid(medica_ws: Path, upstream_dir: Path) -> None:
    u = load_universe(medica_ws, "medica")
    ctx = context_for(u, issue_id="42", world_id="outora_library")
    assert (ctx.swarm_id, ctx.objective_id) == ("speculate_vote", "realism_perf_v1")
    workcell = medica_ws / "wc-1"
    workcell.mkdir()
    written = write_context(workcell, ctx)
    assert written == workcell / "context.json"
    assert [p.name for p in workcell.iterdir()] == ["context.json"]  # no temp file left
    data = json.loads(written.read_text())
    assert data == {
        "schema_version": "1.0",
        "universe_id": "medica",
        "world_id": "outora_library",
        "objective_id": "realism_perf_v1",
        "swarm_id": "speculate_vote",
        "issue_id": "42",
    }
    assert schemas.schema_errors("run_context", data) == []
    upstream_validator(upstream_dir, "run_context").validate(data)
    assert read_context(workcell) == ctx
    # Writing to an explicit file path works too, and explicit ids win over the defaults.
    other = write_context(medica_ws / "ctx" / "run.json", context_for(u, swarm_id="serial_handoff"))
    assert json.loads(other.read_text())["swarm_id"] == "serial_handoff"


def test_context_for_unknown_world(medica_ws: Path) -> None:
    u = load_universe(medica_ws, "medica")
    with pytest.raises(ConfigError, match="unknown world"):
        context_for(u, world_id="atlantis")


def test_invalid_context_is_not_written(tmp_path: Path) -> None:
    ctx = RunContext(universe_id="Not-Valid", issue_id="1")
    with pytest.raises(InputError) as exc:
        write_context(tmp_path / "context.json", ctx)
    assert exc.value.field == "universe_id"
    assert not (tmp_path / "context.json").exists()


def test_read_context_refuses_bad_content(tmp_path: Path) -> None:
    p = tmp_path / "context.json"
    p.write_text('{"schema_version": "1.0",\n "universe_id": "medica",\n "extra": 1}\n')
    with pytest.raises(InputError, match="extra"):
        read_context(p)
    p.write_text('{"schema_version": "1.0",\n "universe_id": \n')
    with pytest.raises(InputError) as exc:
        read_context(p)
    assert exc.value.line == 3


# --- compatibility with the upstream schemas ----------------------------------------------


@pytest.mark.parametrize("name", UNIVERSE_FILES)
def test_upstream_files_valid_under_both_schemas(upstream_dir: Path, name: str) -> None:
    files = sorted((upstream_dir / "universes").glob(f"*/{name}.yaml"))
    assert files, f"no upstream {name}.yaml found"
    upstream = upstream_validator(upstream_dir, name)
    for f in files:
        data = yaml.safe_load(f.read_text())
        upstream.validate(data)
        assert schemas.schema_errors(name, data) == [], f
    for uid in sorted(p.name for p in (upstream_dir / "universes").iterdir()):
        assert load_universe(upstream_dir, uid).universe_id == uid


@pytest.mark.parametrize("name", (*UNIVERSE_FILES, "run_context"))
def test_our_schemas_are_well_formed(name: str) -> None:
    schema = schemas.load_schema(name)
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_model_dumps_validate_under_upstream_schemas(medica_ws: Path, upstream_dir: Path) -> None:
    from cyntra.universe import ObjectiveCatalog, SwarmCatalog

    u = load_universe(medica_ws, "medica")
    upstream_validator(upstream_dir, "universe").validate(u.universe.model_dump(mode="json"))
    upstream_validator(upstream_dir, "swarms").validate(
        SwarmCatalog(swarms=u.swarms).model_dump(mode="json")
    )
    upstream_validator(upstream_dir, "objectives").validate(
        ObjectiveCatalog(objectives=u.objectives).model_dump(mode="json")
    )


# Random edits of the upstream documents: whatever our schema accepts, upstream's must too
# ("at least as strict"), so a file we write or accept never breaks an upstream reader.
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=200),
    st.just(""),
    st.sampled_from(
        [
            "1.0",
            "2.0",
            "medica",
            "Medica",
            "x-y",
            "fab_world",
            "planet",
            "max",
            "min",
            "parallel_compete",
            "serial_handoff",
            "mob",
            "objectives",
        ]
    ),
    # Fresh containers each draw: a shared literal would be mutated across examples.
    st.builds(dict),
    st.builds(list),
    st.builds(lambda: [{}]),
    st.builds(lambda: {"type": "serial_handoff"}),
)
_KEYS = st.sampled_from(
    [
        "schema_version",
        "universe_id",
        "worlds",
        "policies",
        "defaults",
        "swarms",
        "objectives",
        "type",
        "metrics",
        "budgets",
        "extra_key",
        "world_id",
        "path",
        "selection",
        "max_run_minutes",
    ]
)


def _containers(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if isinstance(doc, dict | list) else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _containers(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _containers(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), name=st.sampled_from(UNIVERSE_FILES))
def test_our_schemas_at_least_as_strict_as_upstream(
    upstream_dir: Path, data: st.DataObject, name: str
) -> None:
    base = yaml.safe_load((upstream_dir / "universes" / "medica" / f"{name}.yaml").read_text())
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        target = _get(doc, data.draw(st.sampled_from(_containers(doc))))
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(target, dict):
            keys = sorted(target)
            if action == "delete" and keys:
                del target[data.draw(st.sampled_from(keys))]
            elif action == "set" and keys:
                target[data.draw(st.sampled_from(keys))] = data.draw(_VALUES)
            else:
                target[data.draw(_KEYS)] = data.draw(_VALUES)
        elif isinstance(target, list):
            if action == "delete" and target:
                target.pop(data.draw(st.integers(0, len(target) - 1)))
            elif action == "set" and target:
                target[data.draw(st.integers(0, len(target) - 1))] = data.draw(_VALUES)
            else:
                target.append(data.draw(_VALUES))
    if not schemas.schema_errors(name, doc):
        upstream_validator(upstream_dir, name).validate(doc)
