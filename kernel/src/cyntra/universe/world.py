"""``world.yaml``: how ``cyntra evolve`` produces and measures one candidate of a world.

A universe's ``worlds[]`` entry says *which* worlds exist; the file its ``path`` points at (or
``<path>/world.yaml`` when the path is a directory) says *how to run one*: an argv command
template run in a workcell, the parameter space mutated between generations, the metrics JSON
the command writes, the gates a candidate must pass and its time budget. The file is checked
against ``world.schema.json`` and then cross-checked (ranges, defaults, placeholders), and every
error names the file, line and field, so a typo fails before the first candidate runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cyntra.errors import ConfigError
from cyntra.state.issue import Priority, Risk, Size
from cyntra.universe.loader import (
    LoadedUniverse,
    World,
    _build,
    _check,
    _line_of,
    _read_yaml,
)

WORLD_FILE = "world.yaml"
WORLD_SCHEMA_VERSION: Literal["1.0"] = "1.0"

# Names a command template may use; anything else in braces is refused at load time.
PLACEHOLDERS: tuple[str, ...] = (
    "seed",
    "workcell",
    "params_file",
    "metrics_file",
    "generation",
    "candidate",
    "world_dir",
    "python",
)
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")

WorkcellBackendChoice = Literal["directory", "git", "auto"]
ChoiceValue = str | int | float | bool


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FloatParam(_Spec):
    """A real parameter in ``[low, high]``; mutated by a clipped Gaussian step."""

    type: Literal["float"]
    low: float
    high: float
    default: float | None = None


class IntParam(_Spec):
    """An integer parameter in ``[low, high]``; mutated like a float, then rounded."""

    type: Literal["int"]
    low: int
    high: int
    default: int | None = None


class ChoiceParam(_Spec):
    """One of ``values``; mutation switches to another value with ``mutation.choice_rate``."""

    type: Literal["choice"]
    values: list[ChoiceValue] = Field(min_length=1)
    default: ChoiceValue | None = None


ParamSpec = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]


class MetricGate(_Spec):
    """A gate judged from the candidate's metrics: ``min <= metrics[metric] <= max``."""

    metric: str
    min: float | None = None
    max: float | None = None

    def label(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{self.metric}>={self.min:g}")
        if self.max is not None:
            parts.append(f"{self.metric}<={self.max:g}")
        return "metric:" + ",".join(parts)

    def check(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)


class Mutation(_Spec):
    """How the best parent's parameters are perturbed for the next generation."""

    scale: float = Field(default=0.2, gt=0, le=1)
    decay: float = Field(default=0.8, gt=0, le=1)
    choice_rate: float = Field(default=0.3, ge=0, le=1)


class WorldIssue(_Spec):
    """The synthetic issue's priority/risk/size (what the clamp's rules and the planner see)."""

    priority: Priority = "P2"
    risk: Risk = "medium"
    size: Size = "M"


class WorldSpec(_Spec):
    """``world.yaml`` (``world.schema.json``)."""

    schema_version: Literal["1.0"] = WORLD_SCHEMA_VERSION
    world_id: str | None = None
    description: str | None = None
    command: list[str] = Field(min_length=1)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    metrics: list[str] = Field(default_factory=list)
    params_file: str = "params.json"
    metrics_file: str = "metrics.json"
    gates: dict[str, str | MetricGate] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=600.0, gt=0)
    gate_timeout_seconds: float = Field(default=300.0, gt=0)
    generations: int = Field(default=3, ge=1)
    seed: int = Field(default=0, ge=0)
    mutation: Mutation = Field(default_factory=Mutation)
    env: dict[str, str] = Field(default_factory=dict)
    issue: WorldIssue = Field(default_factory=WorldIssue)
    tags: list[str] = Field(default_factory=list)
    workcell_backend: WorkcellBackendChoice = "directory"

    def shell_gates(self) -> dict[str, str]:
        return {k: v for k, v in self.gates.items() if isinstance(v, str)}

    def metric_gates(self) -> dict[str, MetricGate]:
        return {k: v for k, v in self.gates.items() if isinstance(v, MetricGate)}

    def gate_labels(self) -> dict[str, str | None]:
        """``{name: command}`` as a manifest's ``quality_gates`` records them."""
        return {k: v if isinstance(v, str) else v.label() for k, v in self.gates.items()}

    def required_metrics(self, objective_metrics: list[str]) -> list[str]:
        """Metrics a candidate's file must hold: declared, the objective's, the metric gates'."""
        out: list[str] = []
        for name in [*self.metrics, *objective_metrics, *(g.metric for g in self.metric_gates().values())]:
            if name not in out:
                out.append(name)
        return out

    def default_params(self) -> dict[str, Any]:
        """The first candidate's parameters: each ``default``, else the midpoint / first value."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if p.default is not None:
                out[name] = p.default
            elif isinstance(p, ChoiceParam):
                out[name] = p.values[0]
            elif isinstance(p, IntParam):
                out[name] = (p.low + p.high) // 2
            else:
                out[name] = (p.low + p.high) / 2.0
        return out

    def render_command(self, values: Mapping[str, str]) -> list[str]:
        """The argv with placeholders filled in (``{{``/``}}`` are literal braces)."""
        return [render_template(arg, values) for arg in self.command]


def render_template(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[m.group(1)]

    return _TOKEN_RE.sub(sub, text)


def unknown_placeholders(text: str) -> list[str]:
    return [m.group(1) for m in _TOKEN_RE.finditer(text) if m.group(1) is not None and m.group(1) not in PLACEHOLDERS]


@dataclass(frozen=True)
class LoadedWorld:
    """A universe's world entry with its parsed ``world.yaml``."""

    entry: World
    spec: WorldSpec
    path: Path  # the world.yaml file

    @property
    def world_id(self) -> str:
        return self.entry.world_id

    @property
    def world_dir(self) -> Path:
        return self.path.parent

    @property
    def tags(self) -> list[str]:
        """The universe entry's tags, then the file's, without repeats (order kept)."""
        out: list[str] = []
        for t in [*self.entry.tags, *self.spec.tags]:
            if t not in out:
                out.append(t)
        return out


def _fail(path: Path, text: str, field: str, reason: str) -> ConfigError:
    return ConfigError(path, reason, line=_line_of(text, field), field=field)


def parse_world_file(path: Path) -> WorldSpec:
    """Read, schema-check and cross-check one ``world.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "world file not found")
    data, text = _read_yaml(path)
    _check("world", data, path, text)
    spec: WorldSpec = _build(WorldSpec, data, path, text)
    for i, arg in enumerate(spec.command):
        bad = unknown_placeholders(arg)
        if bad:
            raise _fail(path, text, f"command.{i}",
                        f"unknown placeholder {{{bad[0]}}}; known: {', '.join(PLACEHOLDERS)}")
    for name, p in spec.params.items():
        field = f"params.{name}"
        if isinstance(p, FloatParam | IntParam):
            if not p.low < p.high:
                raise _fail(path, text, f"{field}.high", f"high ({p.high}) must be above low ({p.low})")
            if p.default is not None and not p.low <= p.default <= p.high:
                raise _fail(path, text, f"{field}.default",
                            f"default {p.default} is outside [{p.low}, {p.high}]")
        elif p.default is not None and p.default not in p.values:
            raise _fail(path, text, f"{field}.default", f"default {p.default!r} is not one of {p.values}")
        if name in spec.overrides:
            raise _fail(path, text, f"overrides.{name}", f"{name!r} is both searched (params) and fixed")
    for name, g in spec.metric_gates().items():
        if g.min is not None and g.max is not None and g.min > g.max:
            raise _fail(path, text, f"gates.{name}", f"min ({g.min}) is above max ({g.max})")
    if spec.params_file == spec.metrics_file:
        raise _fail(path, text, "metrics_file", "metrics_file and params_file must differ")
    return spec


def world_file_for(universe: LoadedUniverse, world_id: str) -> Path:
    """The world's ``world.yaml``: the entry's path, or ``<path>/world.yaml`` for a directory."""
    path = universe.resolve_world_path(world_id)
    return path / WORLD_FILE if path.is_dir() else path


def load_world(universe: LoadedUniverse, world_id: str) -> LoadedWorld:
    """Load a world of ``universe`` to run it (refuses disabled worlds and mismatched ids)."""
    entry = universe.world(world_id)
    index = universe.universe.worlds.index(entry)
    if not entry.enabled:
        raise ConfigError(universe.universe_file, f"world {world_id!r} is disabled (enabled: false)",
                          field=f"worlds.{index}.enabled")
    path = world_file_for(universe, world_id)
    spec = parse_world_file(path)
    if spec.world_id is not None and spec.world_id != world_id:
        _, text = _read_yaml(path)
        raise _fail(path, text, "world_id",
                    f"world_id {spec.world_id!r} does not match the universe's entry {world_id!r}")
    return LoadedWorld(entry=entry, spec=spec, path=path.resolve())


def placeholder_values(
    *,
    seed: int,
    workcell: Path,
    params_file: Path,
    metrics_file: Path,
    generation: int,
    candidate: int,
    world_dir: Path,
) -> dict[str, str]:
    """The values a command template is filled with (``{python}`` is this interpreter)."""
    return {
        "seed": str(seed),
        "workcell": str(workcell),
        "params_file": str(params_file),
        "metrics_file": str(metrics_file),
        "generation": str(generation),
        "candidate": str(candidate),
        "world_dir": str(world_dir),
        "python": sys.executable,
    }
