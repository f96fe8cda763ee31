"""The ``DispatchStrategy`` interface and its registry (plugins via the ``cyntra.strategies`` entry points).

A strategy is small: given what the kernel knows about an issue at decision time, propose an
action tuple. It never runs anything, never touches the clamp and never writes records — the
:mod:`cyntra.strategy.engine` does that, so a plugin cannot break the control path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from cyntra.kernel.config import KernelConfig
from cyntra.kernel.plan import DispatchPlan, TraceStep
from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.state.issue import Issue

ENTRY_POINT_GROUP = "cyntra.strategies"


@dataclass
class StrategyContext:
    """Everything a strategy may look at for one issue at one decision time."""

    issue: Issue
    heuristic: DispatchPlan
    serial_toolchains: list[str]
    speculate_toolchains: list[str]
    now: datetime
    job_type: str = "code"
    planner_input: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def toolchains_for(self, action: PlanAction, space: ActionSpace) -> list[str]:
        """The ordered toolchains a plan would use for this issue (routing stays the kernel's)."""
        if space.kind(action.swarm_id) == "parallel_compete":
            return list(self.speculate_toolchains)
        return list(self.serial_toolchains)


class StrategyDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: PlanAction
    trace: list[TraceStep] = Field(default_factory=list)
    probabilities: dict[str, dict[str, float]] | None = None
    confidence: float | None = None
    expected_utility: float | None = None


@dataclass
class StrategyEnv:
    """What a strategy factory receives to build itself."""

    workspace: Path
    config: KernelConfig
    space: ActionSpace
    options: dict[str, Any] = field(default_factory=dict)


class StrategyUnavailable(Exception):
    """The strategy cannot run here (no torch, no checkpoint, ...); the reason is recorded."""


@runtime_checkable
class DispatchStrategy(Protocol):
    name: str

    def decide(self, ctx: StrategyContext) -> StrategyDecision: ...

    def decide_batch(self, ctxs: Sequence[StrategyContext]) -> list[StrategyDecision]: ...


class BaseStrategy:
    """Convenience base: implement ``decide``; ``decide_batch`` loops (override to batch)."""

    name = "base"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        raise NotImplementedError

    def decide_batch(self, ctxs: Sequence[StrategyContext]) -> list[StrategyDecision]:
        return [self.decide(c) for c in ctxs]

    def describe(self) -> dict[str, Any]:
        """Identity recorded with each decision (checkpoint id/sha for learned strategies)."""
        return {}


StrategyFactory = Callable[[StrategyEnv], DispatchStrategy]
_REGISTRY: dict[str, StrategyFactory] = {}
_ENTRY_POINTS_LOADED = False


def register_strategy(name: str, factory: StrategyFactory) -> None:
    _REGISTRY[name] = factory


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue

        def factory(env: StrategyEnv, _ep: Any = ep) -> DispatchStrategy:
            loaded = _ep.load()
            obj = loaded(env)
            if not isinstance(obj, DispatchStrategy):
                raise StrategyUnavailable(f"entry point {_ep.value} did not return a DispatchStrategy")
            return obj

        _REGISTRY[ep.name] = factory


def available_strategies() -> list[str]:
    _ensure_builtins()
    _load_entry_points()
    return sorted(_REGISTRY)


def build_strategy(name: str, env: StrategyEnv) -> DispatchStrategy:
    """Build a registered strategy; raises StrategyUnavailable with a reason."""
    _ensure_builtins()
    _load_entry_points()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise StrategyUnavailable(f"unknown strategy {name!r}; registered: {sorted(_REGISTRY)}")
    return factory(env)


def _ensure_builtins() -> None:
    # Importing registers the built-ins; kept lazy so `urm` never imports torch at kernel start.
    from cyntra.strategy import builtin  # noqa: F401
