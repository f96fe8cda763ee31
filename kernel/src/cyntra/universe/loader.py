"""Load ``universes/<id>/{universe,swarms,objectives}.yaml`` into validated models.

Every file is checked against our JSON Schema (``kernel/schemas/cyntra/``) before it becomes a
model, so an operator gets one error naming the file, the line and the field instead of a
failure deep inside a run. World paths are *not* checked here: a universe may list worlds that
only exist on some machines, so :meth:`LoadedUniverse.resolve_world_path` checks a path only when
that world is about to run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
    model_validator,
)

from cyntra import schemas
from cyntra.errors import ConfigError, InputError
from cyntra.planner.action_space import ActionSpace, SwarmType

SCHEMA_VERSION: Literal["1.0"] = "1.0"
UNIVERSES_DIR = "universes"
UNIVERSE_FILE = "universe.yaml"
SWARMS_FILE = "swarms.yaml"
OBJECTIVES_FILE = "objectives.yaml"

UNIVERSE_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")

WorldKind = Literal["fab_world", "codebase", "dataset", "simulation"]
Direction = Literal["max", "min"]

# Population a swarm gets when its entry does not say (the default catalog's sizes).
DEFAULT_POPULATION: dict[SwarmType, int] = {"parallel_compete": 3, "serial_handoff": 1}


class _FileModel(BaseModel):
    """Dumps like the YAML it came from: unset optional keys are omitted, not written as null."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


# --- universe.yaml -------------------------------------------------------------------------


class World(_FileModel):
    """One world of the universe; ``path`` is relative to the workspace unless absolute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    world_id: str
    world_kind: WorldKind
    path: str
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)


class Determinism(_FileModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enforce_cpu_only: bool = False
    pythonhashseed: int | None = None


class Budgets(_FileModel):
    """Universe-wide ceilings; the policy clamp treats them as implicit top-level limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_workcells: int | None = Field(default=None, ge=1)
    max_run_minutes: int | None = Field(default=None, ge=1)


class UniversePolicies(_FileModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    determinism: Determinism = Field(default_factory=Determinism)
    budgets: Budgets = Field(default_factory=Budgets)
    routing_overrides: list[dict[str, Any]] = Field(default_factory=list)


class UniverseDefaults(_FileModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    swarm_id: str | None = None
    objective_id: str | None = None


class Universe(_FileModel):
    """``universe.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    universe_id: str
    name: str | None = None
    description: str | None = None
    worlds: list[World] = Field(min_length=1)
    policies: UniversePolicies = Field(default_factory=UniversePolicies)
    defaults: UniverseDefaults = Field(default_factory=UniverseDefaults)


# --- swarms.yaml / objectives.yaml ---------------------------------------------------------


class Selection(BaseModel):
    """How a swarm picks its winner; unknown keys are kept for newer selectors."""

    model_config = ConfigDict(frozen=True, extra="allow")

    mode: str = "objectives"
    require_all_gates_pass: bool = True


class Swarm(BaseModel):
    """A coordination topology. ``id`` is the catalog key, not a key inside the entry."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    type: SwarmType
    population_size: int = Field(ge=1)
    selection: Selection = Field(default_factory=Selection)

    @model_validator(mode="before")
    @classmethod
    def _default_population(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("population_size") is None:
            kind = data.get("type")
            if kind in DEFAULT_POPULATION:
                data = {**data, "population_size": DEFAULT_POPULATION[kind]}
        return data


class Objective(BaseModel):
    """Metric directions used to rank candidates (gates first when required)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    description: str | None = None
    metrics: dict[str, Direction]
    require_all_gates_pass: bool | None = None


def _entries(items: dict[str, BaseModel]) -> dict[str, Any]:
    # Catalog files key entries by id, so the id is not repeated inside the entry.
    return {
        key: {k: v for k, v in m.model_dump(mode="json", exclude={"id"}).items() if v is not None}
        for key, m in items.items()
    }


class SwarmCatalog(BaseModel):
    """``swarms.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    swarms: dict[str, Swarm]

    @field_serializer("swarms")
    def _dump_swarms(self, swarms: dict[str, Swarm]) -> dict[str, Any]:
        return _entries(dict(swarms))


class ObjectiveCatalog(BaseModel):
    """``objectives.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    objectives: dict[str, Objective]

    @field_serializer("objectives")
    def _dump_objectives(self, objectives: dict[str, Objective]) -> dict[str, Any]:
        return _entries(dict(objectives))


def default_swarms() -> dict[str, Swarm]:
    """The catalog used when a universe has no ``swarms.yaml``."""
    return {
        "speculate_vote": Swarm(id="speculate_vote", type="parallel_compete", population_size=3),
        "serial_handoff": Swarm(id="serial_handoff", type="serial_handoff", population_size=1),
    }


# --- the loaded bundle ---------------------------------------------------------------------


class LoadedUniverse(BaseModel):
    """A universe with its swarm and objective catalogs, and where it was loaded from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    universe: Universe
    swarms: dict[str, Swarm]
    objectives: dict[str, Objective]
    workspace: Path
    root: Path  # <workspace>/universes/<id>
    swarms_from_file: bool = False
    objectives_from_file: bool = False

    @property
    def universe_id(self) -> str:
        return self.universe.universe_id

    @property
    def universe_file(self) -> Path:
        return self.root / UNIVERSE_FILE

    @property
    def budgets(self) -> Budgets:
        return self.universe.policies.budgets

    @property
    def routing_overrides(self) -> list[dict[str, Any]]:
        """Rules to prepend to ``routing.rules`` (copies: callers may not edit the universe)."""
        return [dict(rule) for rule in self.universe.policies.routing_overrides]

    @property
    def defaults(self) -> UniverseDefaults:
        return self.universe.defaults

    def swarm_types(self) -> dict[str, SwarmType]:
        return {sid: s.type for sid, s in self.swarms.items()}

    def action_space(self) -> ActionSpace:
        return ActionSpace(self.swarm_types())

    def determinism_env(self) -> dict[str, str]:
        """Environment a run of this universe must get to be reproducible."""
        det = self.universe.policies.determinism
        env: dict[str, str] = {}
        if det.pythonhashseed is not None:
            env["PYTHONHASHSEED"] = str(det.pythonhashseed)
        if det.enforce_cpu_only:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def world(self, world_id: str) -> World:
        for w in self.universe.worlds:
            if w.world_id == world_id:
                return w
        known = [w.world_id for w in self.universe.worlds]
        raise ConfigError(
            self.universe_file, f"unknown world {world_id!r}; worlds: {known}", field="worlds"
        )

    def resolve_world_path(self, world_id: str) -> Path:
        """The world's path, checked now (only when the world is about to run)."""
        world = self.world(world_id)
        index = self.universe.worlds.index(world)
        raw = Path(world.path)
        path = raw if raw.is_absolute() else self.workspace / raw
        if not path.exists():
            raise ConfigError(
                self.universe_file,
                f"world {world_id!r} path does not exist: {path}",
                field=f"worlds.{index}.path",
            )
        return path


UniverseBundle = LoadedUniverse


# --- reading files -------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, str | int | float | bool):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, f"invalid YAML: {problem}", line=line) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else type(data).__name__
        raise ConfigError(path, f"expected a YAML mapping, found {found}", line=1)
    return data, text


def _line_of(text: str, field: str | None) -> int | None:
    """1-based line of a dotted field path (``worlds.0.path``) in YAML text, best effort."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    parts = [] if field in (None, "<root>") else str(field).split(".")
    for part in parts:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    child = value_node
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _check(name: str, data: dict[str, Any], path: Path, text: str) -> None:
    try:
        schemas.validate(name, data, path=path)
    except InputError as exc:
        raise ConfigError(
            path, exc.reason, line=_line_of(text, exc.field), field=exc.field
        ) from None


def _build(model: type[BaseModel], data: dict[str, Any], path: Path, text: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ConfigError(path, err["msg"], line=_line_of(text, field), field=field) from None


def parse_universe_file(path: Path) -> Universe:
    return _parse_universe(path)[0]


def _parse_universe(path: Path) -> tuple[Universe, str]:
    data, text = _read_yaml(path)
    _check("universe", data, path, text)
    universe: Universe = _build(Universe, data, path, text)
    seen: dict[str, int] = {}
    for i, w in enumerate(universe.worlds):
        if w.world_id in seen:
            field = f"worlds.{i}.world_id"
            raise ConfigError(
                path,
                f"duplicate world_id {w.world_id!r} (also worlds.{seen[w.world_id]})",
                line=_line_of(text, field),
                field=field,
            )
        seen[w.world_id] = i
    return universe, text


def parse_swarms_file(path: Path) -> dict[str, Swarm]:
    data, text = _read_yaml(path)
    _check("swarms", data, path, text)
    entries = {sid: {**body, "id": sid} for sid, body in data["swarms"].items()}
    catalog: SwarmCatalog = _build(SwarmCatalog, {**data, "swarms": entries}, path, text)
    return dict(catalog.swarms)


def parse_objectives_file(path: Path) -> dict[str, Objective]:
    data, text = _read_yaml(path)
    _check("objectives", data, path, text)
    entries = {oid: {**body, "id": oid} for oid, body in data["objectives"].items()}
    catalog: ObjectiveCatalog = _build(
        ObjectiveCatalog, {**data, "objectives": entries}, path, text
    )
    return dict(catalog.objectives)


def list_universes(workspace: Path) -> list[str]:
    """Ids of the universes under ``<workspace>/universes`` that have a ``universe.yaml``."""
    base = Path(workspace) / UNIVERSES_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / UNIVERSE_FILE).is_file())


def load_universe(workspace: Path, universe_id: str) -> LoadedUniverse:
    """Load and cross-check one universe; raises :class:`ConfigError` naming file/line/field."""
    workspace = Path(workspace)
    base = workspace / UNIVERSES_DIR
    if not UNIVERSE_ID_RE.match(universe_id):
        raise ConfigError(base, f"invalid universe id {universe_id!r} (expected ^[a-z][a-z0-9_]*$)")
    root = base / universe_id
    if not root.is_dir():
        available = list_universes(workspace)
        raise ConfigError(root, f"universe {universe_id!r} not found; available: {available}")
    universe_path = root / UNIVERSE_FILE
    if not universe_path.is_file():
        raise ConfigError(universe_path, f"universe {universe_id!r} has no {UNIVERSE_FILE}")
    universe, universe_text = _parse_universe(universe_path)
    if universe.universe_id != universe_id:
        raise ConfigError(
            universe_path,
            f"universe_id {universe.universe_id!r} does not match its directory {universe_id!r}",
            line=_line_of(universe_text, "universe_id"),
            field="universe_id",
        )

    swarms_path = root / SWARMS_FILE
    swarms_from_file = swarms_path.is_file()
    swarms = parse_swarms_file(swarms_path) if swarms_from_file else default_swarms()
    objectives_path = root / OBJECTIVES_FILE
    objectives_from_file = objectives_path.is_file()
    objectives = parse_objectives_file(objectives_path) if objectives_from_file else {}

    defaults = universe.defaults
    # The swarm catalog always exists (file or default); the objective catalog only with a file.
    if defaults.swarm_id is not None and defaults.swarm_id not in swarms:
        source = SWARMS_FILE if swarms_from_file else "the default swarm catalog"
        raise ConfigError(
            universe_path,
            f"default swarm {defaults.swarm_id!r} is not in {source}: {sorted(swarms)}",
            line=_line_of(universe_text, "defaults.swarm_id"),
            field="defaults.swarm_id",
        )
    if (
        objectives_from_file
        and defaults.objective_id is not None
        and (defaults.objective_id not in objectives)
    ):
        raise ConfigError(
            universe_path,
            f"default objective {defaults.objective_id!r} is not in {OBJECTIVES_FILE}: "
            f"{sorted(objectives)}",
            line=_line_of(universe_text, "defaults.objective_id"),
            field="defaults.objective_id",
        )
    return LoadedUniverse(
        universe=universe,
        swarms=swarms,
        objectives=objectives,
        workspace=workspace,
        root=root,
        swarms_from_file=swarms_from_file,
        objectives_from_file=objectives_from_file,
    )
