"""The world profile: every parameter of the simulated agent world, in one validated YAML file.

A profile fixes the issue population (what arrives), the hidden difficulty model (what makes an
issue hard), each toolchain's latent skill, speed and price, how long runs take, how gates fail,
optional drift, and the objective that prices an outcome. ``load_profile`` validates the YAML
against ``kernel/schemas/cyntra/sim_profile.schema.json`` first (errors name file and field), then
builds the typed :class:`SimProfile`. See ``docs/sim.md`` for the meaning of every parameter.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cyntra.clock import parse_ts
from cyntra.errors import InputError
from cyntra.schemas import validate

SCHEMA_VERSION = "cyntra.sim_profile.v1"
PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE_PATH = Path(__file__).parent / "default_profile.yaml"
GATE_NAMES: tuple[str, ...] = ("test", "typecheck", "lint")
PRIORITIES: tuple[str, ...] = ("P0", "P1", "P2", "P3")
RISKS: tuple[str, ...] = ("low", "medium", "high", "critical")
SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        return parse_ts(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return parse_ts(value.isoformat())
    return value


class Arrival(_Model):
    """When issues are created: a Poisson process over ``[start, start + span)``."""

    start: datetime
    span_days: float | None = Field(default=None, gt=0)
    rate_per_day: float = Field(default=20.0, gt=0)  # used when span_days is null
    weekday_weights: list[float] = Field(default_factory=lambda: [1.0] * 7, min_length=7, max_length=7)

    @field_validator("start", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _timestamp(v)


class Domain(_Model):
    """A work domain; its name is the issue's first tag."""

    weight: float = Field(gt=0)
    things: list[str] = Field(min_length=1)
    risk: dict[str, float] | None = None  # overrides the population's risk mix
    size: dict[str, float] | None = None  # overrides the population's size mix


class Keyword(_Model):
    """A title keyword: observable in the title, shifts the hidden difficulty by ``effect``."""

    word: str = Field(min_length=1)
    effect: float
    rate: float = Field(ge=0, le=1)
    template: str
    domains: list[str] | None = None  # None = any domain


class DependencyModel(_Model):
    density: float = Field(default=0.2, ge=0, le=1)  # P(an issue has blockers)
    window: int = Field(default=20, ge=1)  # blockers come from the previous `window` issues
    max_blockers: int = Field(default=2, ge=1)


class Population(_Model):
    arrival: Arrival
    priority: dict[str, float]
    risk: dict[str, float]
    size: dict[str, float]
    domains: dict[str, Domain] = Field(min_length=1)
    extra_tags: dict[str, float] = Field(default_factory=dict)  # tag -> independent rate
    keywords: list[Keyword] = Field(default_factory=list)
    tool_hint_rate: float = Field(default=0.0, ge=0, le=1)
    tool_hint_mix: dict[str, float] = Field(default_factory=dict)
    dependencies: DependencyModel = Field(default_factory=DependencyModel)


class Difficulty(_Model):
    """Hidden difficulty d = base + size + risk + Σ tag effects + keyword effects + noise_sd·z."""

    base: float = 0.0
    noise_sd: float = Field(default=0.5, ge=0)
    size: dict[str, float] = Field(default_factory=dict)
    risk: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, float] = Field(default_factory=dict)


class Toolchain(_Model):
    """P(run on track) = sigmoid(bias + Σ skill[tag] − d); duration × speed; cost = price × minutes."""

    bias: float
    skill: dict[str, float] = Field(default_factory=dict)
    speed: float = Field(gt=0)
    price_per_minute: float = Field(ge=0)
    tokens_per_minute: float = Field(ge=0)


class DurationModel(_Model):
    """Needed minutes ~ LogNormal(ln(base[size]·speed·e^{slope·d}), sigma); stuck runs shift the mean."""

    base_minutes: dict[str, float]
    difficulty_slope: float = 0.2
    sigma: float = Field(gt=0)
    stuck_shift: float = 1.0
    stuck_sigma: float = Field(gt=0)


class Gate(_Model):
    fail_by_risk: dict[str, float]  # real failures of an on-track run, by risk
    flake: float = Field(default=0.0, ge=0, lt=1)  # spurious failures, any run


class GateModel(_Model):
    test: Gate
    typecheck: Gate
    lint: Gate
    hard_fail_prob: float = Field(default=0.5, ge=0, le=1)  # off-track run: exit 2 instead of 1


class Drift(_Model):
    toolchain: str
    start: datetime = Field(alias="from")
    delta: float
    domains: list[str] | None = None  # None = every issue

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    @field_validator("start", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _timestamp(v)


class Objective(_Model):
    """U = value[priority]·size_factor[size]·passed − cost_usd − wall_cost[priority]·wall_minutes
    − fail_penalty·(1 − passed)."""

    value_by_priority: dict[str, float]
    value_size_factor: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(SIZES, 1.0))
    wall_cost_per_minute: dict[str, float]
    fail_penalty: float = 0.0

    def value(self, priority: str, size: str) -> float:
        return self.value_by_priority[priority] * self.value_size_factor.get(size, 1.0)


class SimProfile(_Model):
    schema_version: Literal["cyntra.sim_profile.v1"] = "cyntra.sim_profile.v1"
    name: str
    description: str = ""
    seed: int
    population: Population
    difficulty: Difficulty
    toolchains: dict[str, Toolchain] = Field(min_length=1)
    duration: DurationModel
    gates: GateModel
    drift: list[Drift] = Field(default_factory=list)
    objective: Objective

    @model_validator(mode="after")
    def _cross_refs(self) -> SimProfile:
        for i, d in enumerate(self.drift):
            if d.toolchain not in self.toolchains:
                raise ValueError(f"drift[{i}].toolchain {d.toolchain!r} is not a profile toolchain")
        for name in self.population.tool_hint_mix:
            if name not in self.toolchains:
                raise ValueError(f"population.tool_hint_mix: {name!r} is not a profile toolchain")
        for i, kw in enumerate(self.population.keywords):
            for dom in kw.domains or []:
                if dom not in self.population.domains:
                    raise ValueError(f"population.keywords[{i}].domains: unknown domain {dom!r}")
        return self

    def with_seed(self, seed: int) -> SimProfile:
        """The same world under another seed (a workspace's ``sim.seed``)."""
        return self.model_copy(update={"seed": int(seed)})


def bundled_profiles() -> dict[str, Path]:
    """Profiles shipped in the package: ``default`` and every ``profiles/*.yaml``."""
    out = {"default": DEFAULT_PROFILE_PATH}
    if PROFILE_DIR.is_dir():
        for p in sorted(PROFILE_DIR.glob("*.yaml")):
            out[p.stem] = p
    return out


def _pydantic_field(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    return loc, err["msg"]


def _plain(value: Any) -> Any:
    """YAML turns unquoted timestamps into datetimes; the schema speaks JSON, so give it strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat() + "T00:00:00Z"
    return value


def parse_profile(data: Any, path: str | Path = "<profile>") -> SimProfile:
    """Validate a loaded mapping (schema first, then the typed model); errors name the field."""
    if not isinstance(data, dict):
        raise InputError(path, "a sim profile must be a YAML mapping")
    data = _plain(data)
    validate("sim_profile", data, path=path)
    try:
        return SimProfile.model_validate(data)
    except ValidationError as exc:
        loc, msg = _pydantic_field(exc)
        raise InputError(path, msg, field=loc) from None


def load_profile(path: str | Path | None = None) -> SimProfile:
    """Load a profile file, a bundled profile by name (``"default"``, ``"alt"``), or the default."""
    if path is None:
        p = DEFAULT_PROFILE_PATH
    else:
        bundled = bundled_profiles()
        p = bundled[str(path)] if str(path) in bundled else Path(path)
    if not p.is_file():
        raise InputError(p, "sim profile not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(p, f"invalid YAML: {getattr(exc, 'problem', exc)}", line=line) from None
    return parse_profile(data, p)
