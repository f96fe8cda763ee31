"""``.cyntra/config.yaml``: the kernel's configuration.

Reads upstream configs unchanged. Unknown keys produce a warning that names them; a value of the
wrong type is an error that names the key. Our additions: ``strategy``, ``planner``, ``policy``,
``exploration``, ``workcells`` and per-toolchain ``adapter``/``argv``/``env``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cyntra.errors import ConfigError

StrategyName = str  # registry key: "heuristic", "shadow", "urm" or a plugin's name


class _Section(BaseModel):
    # Unknown keys are kept (so they survive and can be warned about), never fatal.
    model_config = ConfigDict(extra="allow")


class SchedulingConfig(_Section):
    max_concurrent_workcells: int = Field(default=3, ge=1)
    max_concurrent_tokens: int = Field(default=300000, ge=1)
    starvation_threshold_hours: float = Field(default=4.0, ge=0)


class ToolchainConfig(_Section):
    enabled: bool = True
    path: str | None = None
    default_model: str | None = None
    timeout_minutes: float | None = Field(default=None, gt=0)
    config: dict[str, Any] = Field(default_factory=dict)
    # Ours: which adapter runs it (defaults to the toolchain's name when that is a known
    # adapter, else "command"), the argv template of the generic command adapter, env.
    adapter: str | None = None
    argv: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    prompt_via: Literal["file", "stdin", "arg"] | None = None
    # Ours: a hard cap on one run of this toolchain, whatever budget the plan grants.
    hard_timeout_minutes: float | None = Field(default=None, gt=0)


class RoutingRule(_Section):
    match: dict[str, Any] = Field(default_factory=dict)
    use: list[str] = Field(default_factory=list)
    speculate: bool = False
    parallelism: int | None = Field(default=None, ge=1)
    id: str | None = None


class RoutingConfig(_Section):
    rules: list[RoutingRule] = Field(default_factory=list)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)


class SpeculationConfig(_Section):
    enabled: bool = True
    default_parallelism: int = Field(default=2, ge=1)
    max_parallelism: int = Field(default=3, ge=1)
    vote_threshold: float = Field(default=0.7, ge=0, le=1)
    auto_trigger_on_critical_path: bool = True
    auto_trigger_risk_levels: list[str] = Field(default_factory=lambda: ["high", "critical"])


class ControlConfig(_Section):
    enabled: bool = True
    action_low: float = 0.1
    action_high: float = 0.5
    temperature_base: float = 0.2
    temperature_min: float = 0.1
    temperature_max: float = 0.6
    temperature_step: float = 0.1
    parallelism_step: int = 1


class GatesConfig(_Section):
    test_command: str | None = None
    typecheck_command: str | None = None
    lint_command: str | None = None
    build_command: str | None = None
    timeout_seconds: float = Field(default=900, gt=0)
    retry_flaky: int = Field(default=0, ge=0)


class PlannerConfig(_Section):
    checkpoint: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    latency_budget_ms: float = Field(default=50.0, gt=0)
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    candidate: str | None = None  # the strategy `shadow` runs beside the heuristic
    n_similar: int = Field(default=8, ge=0)


class ExplorationConfig(_Section):
    epsilon: float = Field(default=0.0, ge=0, le=1)
    fields: list[str] | None = None
    seed: int = 0
    # In shadow mode, the share of exploring draws that applies the candidate's (clamped) plan
    # instead of a uniform alternative: it gives off-policy evaluation of the candidate the
    # support that uniform exploration over dozens of plans cannot. Ignored in other modes.
    candidate_share: float = Field(default=0.0, ge=0, le=1)


class ObjectiveConfig(_Section):
    """How an outcome is priced (the reward in decision outcomes; docs/sim.md has the formula).

    U = value_by_priority[p]·value_size_factor[s]·passed − cost_usd − wall_cost_per_minute[p]·wall_minutes
        − fail_penalty·(1 − passed)
    """

    value_by_priority: dict[str, float] = Field(
        default_factory=lambda: {"P0": 40.0, "P1": 28.0, "P2": 18.0, "P3": 10.0})
    value_size_factor: dict[str, float] = Field(
        default_factory=lambda: {"XS": 0.6, "S": 0.8, "M": 1.0, "L": 1.4, "XL": 1.8})
    wall_cost_per_minute: dict[str, float] = Field(
        default_factory=lambda: {"P0": 0.25, "P1": 0.10, "P2": 0.03, "P3": 0.01})
    fail_penalty: float = 0.0

    def utility(self, *, priority: str, size: str, passed: bool, cost_usd: float, wall_minutes: float) -> float:
        u = -cost_usd - self.wall_cost_per_minute.get(priority, 0.0) * wall_minutes
        if passed:
            return u + self.value_by_priority.get(priority, 0.0) * self.value_size_factor.get(size, 1.0)
        return u - self.fail_penalty


class WorkcellConfig(_Section):
    backend: Literal["auto", "git", "directory"] = "auto"
    keep_losers: bool = True


class KernelConfig(_Section):
    version: str = "1.0"
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig)
    toolchain_priority: list[str] = Field(default_factory=lambda: ["codex", "claude", "opencode", "crush"])
    toolchains: dict[str, ToolchainConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    speculation: SpeculationConfig = Field(default_factory=SpeculationConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    strategy: StrategyName = "heuristic"
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    policy: str | None = None
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    workcells: WorkcellConfig = Field(default_factory=WorkcellConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    universe: str | None = None
    sim: dict[str, Any] | None = None  # the sim backend's settings (profile, seed), see cyntra.sim

    def unknown_keys(self) -> list[str]:
        """Dotted paths of keys no section knows (reported as warnings, kept as-is)."""
        found: list[str] = []

        def walk(model: BaseModel, prefix: str) -> None:
            for key in (model.model_extra or {}):
                found.append(f"{prefix}{key}")
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, _Section):
                    walk(value, f"{prefix}{name}.")
                elif isinstance(value, dict):
                    for k, v in value.items():
                        if isinstance(v, _Section):
                            walk(v, f"{prefix}{name}.{k}.")
                elif isinstance(value, list):
                    for i, v in enumerate(value):
                        if isinstance(v, _Section):
                            walk(v, f"{prefix}{name}[{i}].")

        walk(self, "")
        # Toolchain `config:` blocks and rule `match:` blocks are free-form on purpose.
        return found

    def toolchain(self, name: str) -> ToolchainConfig:
        return self.toolchains.get(name, ToolchainConfig())

    def enabled_toolchains(self) -> list[str]:
        return [name for name, tc in self.toolchains.items() if tc.enabled]


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any, path: str | Path = "<config>") -> KernelConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "the config must be a YAML mapping")
    try:
        return KernelConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(path, err["msg"], field=_format_loc(tuple(err["loc"]))) from None


def load_config(path: str | Path) -> tuple[KernelConfig, list[str]]:
    """Load a config file; returns the config and warnings (unknown keys)."""
    p = Path(path)
    if not p.exists():
        return KernelConfig(), []
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(p, f"invalid YAML: {getattr(exc, 'problem', exc)}", line=line) from None
    cfg = parse_config(data, p)
    warnings = [f"{p}: unknown config key '{k}' (ignored)" for k in cfg.unknown_keys()]
    return cfg, warnings
