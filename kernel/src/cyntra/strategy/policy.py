"""Clamp policies (``policies/*.yaml``): ordered rules with limits, refused loudly when malformed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cyntra.errors import ConfigError
from cyntra.planner.action_space import MAX_RUN_MINUTES

PolicyMode = Literal["enforce", "warn", "dryrun"]


class PolicyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_swarms: list[str] | None = None
    max_parallelism: int | None = Field(default=None, ge=1, le=3)
    max_minutes: int | None = Field(default=None, ge=1)
    min_minutes: int | None = Field(default=None, ge=1)
    max_candidates: int | None = Field(default=None, ge=1, le=3)
    min_candidates: int | None = Field(default=None, ge=1, le=3)
    min_confidence: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> PolicyLimits:
        if self.min_minutes is not None and self.max_minutes is not None and self.min_minutes > self.max_minutes:
            raise ValueError("min_minutes is above max_minutes")
        if (
            self.min_candidates is not None
            and self.max_candidates is not None
            and self.min_candidates > self.max_candidates
        ):
            raise ValueError("min_candidates is above max_candidates")
        if self.max_minutes is not None and self.max_minutes < min(MAX_RUN_MINUTES):
            raise ValueError(f"max_minutes below the smallest budget {min(MAX_RUN_MINUTES)}")
        return self


class PolicyRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    description: str | None = None
    match: dict[str, Any] = Field(default_factory=dict)
    mode: PolicyMode = "enforce"
    limits: PolicyLimits = Field(default_factory=PolicyLimits)


class PromotionGates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_decisions: int = Field(default=200, ge=1)
    max_fallback_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=20.0, gt=0)
    max_ece: float = Field(default=0.10, ge=0, le=1)
    require_ope_lower_bound_ge_heuristic: bool = True


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.policy.v1"] = "cyntra.policy.v1"
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    rules: list[PolicyRule] = Field(default_factory=list)
    promotion: PromotionGates = Field(default_factory=PromotionGates)

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self


class LoadedPolicy(BaseModel):
    """A policy plus where it came from and its content hash (recorded in every decision)."""

    policy: Policy
    path: str | None
    sha256: str


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_policy(text: str, path: str | Path | None = None) -> LoadedPolicy:
    where = str(path) if path is not None else "<policy>"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(where, f"invalid YAML: {getattr(exc, 'problem', exc)}",
                          line=mark.line + 1 if mark is not None else None) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, "a policy must be a YAML mapping")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(where, err["msg"], field=_loc(tuple(err["loc"])) or "<root>") from None
    from cyntra.kernel.routing import MATCH_KEYS, PATTERN_KEYS  # local: routing never imports us

    for i, rule in enumerate(policy.rules):
        for key, value in rule.match.items():
            field = f"rules[{i}].match.{key}"
            if key not in MATCH_KEYS:
                raise ConfigError(where, f"unknown match key (known: {', '.join(sorted(MATCH_KEYS))})", field=field)
            if key in PATTERN_KEYS:
                try:
                    re.compile(str(value))
                except re.error as exc:
                    raise ConfigError(where, f"invalid regex {value!r}: {exc}", field=field) from None
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedPolicy(policy=policy, path=str(path) if path is not None else None, sha256=sha)


def load_policy(path: str | Path | None) -> LoadedPolicy:
    """Load a policy file; ``None`` means the empty policy (only universe budgets apply)."""
    if path is None:
        return parse_policy("schema_version: cyntra.policy.v1\n", None)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "policy file not found")
    return parse_policy(p.read_text(encoding="utf-8"), p)


def bundled_default_policy_path() -> Path:
    here = Path(__file__).resolve()
    bundled = here.parents[1] / "_policies" / "default.yaml"
    if bundled.is_file():
        return bundled
    return here.parents[4] / "policies" / "default.yaml"
