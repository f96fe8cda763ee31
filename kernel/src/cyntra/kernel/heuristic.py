"""Today's dispatch rules as a plan: routing + speculation triggers + controller + budget.

:func:`heuristic_plan` is pure and deterministic given its :class:`HeuristicContext`, and cheap
enough to run for every ready issue each cycle. Every stage leaves one :class:`TraceStep`
(``routing``, ``speculation``, ``controller``, ``budget``) so a decision can be explained.

Speculation fires when ``speculation.enabled`` and any trigger holds: the issue's
``dk_speculate``; the ``--speculate`` flag; the matched rule's ``speculate: true``; or
``auto_trigger_on_critical_path`` with the issue on the critical path and its risk in
``auto_trigger_risk_levels``. Speculating toolchains: the rule's ``use`` list, their fallbacks,
then ``toolchain_priority`` (deduped, enabled). Parallelism: the rule's ``parallelism`` or
``default_parallelism``, plus the controller's delta, clamped to [2, max_parallelism] (and the
action space's maximum), then to the number of speculating toolchains; below 2 → no speculation.

Otherwise the plan is ``serial_handoff`` with one candidate: today's kernel runs one toolchain
per attempt, and the fallbacks in ``toolchains`` only replace an unavailable primary.

Time budget: the largest ``timeout_minutes`` of the toolchains that would run (60 when unset),
snapped up to the action space; a smaller universe ``max_run_minutes`` floors it (minimum 15).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cyntra.control.controller import ControlDecision, ExplorationController, issue_domain
from cyntra.kernel.config import KernelConfig, RoutingRule
from cyntra.kernel.plan import DispatchPlan, TraceStep
from cyntra.kernel.routing import EffectiveRule, effective_rules, expand, route
from cyntra.planner.action_space import (
    MAX_RUN_MINUTES,
    PARALLELISM,
    ActionSpace,
    PlanAction,
    floor_minutes,
    snap_minutes,
)
from cyntra.state.graph import GraphView
from cyntra.state.issue import Issue

DEFAULT_TIMEOUT_MINUTES = 60.0
PREFERRED_PARALLEL_SWARM = "speculate_vote"


class UniverseLimits(BaseModel):
    """The parts of a universe's ``policies`` the scheduler and heuristic honour."""

    model_config = ConfigDict(extra="ignore")

    max_concurrent_workcells: int | None = Field(default=None, ge=1)
    max_run_minutes: int | None = Field(default=None, ge=1)
    routing_overrides: list[RoutingRule] = Field(default_factory=list)

    @classmethod
    def from_policies(cls, policies: Mapping[str, Any] | None) -> UniverseLimits:
        """From ``universe.yaml``'s ``policies`` block (budgets + routing_overrides)."""
        policies = policies or {}
        budgets = policies.get("budgets") or {}
        return cls.model_validate({
            "max_concurrent_workcells": budgets.get("max_concurrent_workcells"),
            "max_run_minutes": budgets.get("max_run_minutes"),
            "routing_overrides": policies.get("routing_overrides") or [],
        })


@dataclass
class HeuristicContext:
    """Everything the heuristic consults, built once per scheduling cycle."""

    config: KernelConfig
    rules: list[EffectiveRule]
    controller: ExplorationController | None = None
    critical: frozenset[str] = frozenset()
    limits: UniverseLimits = field(default_factory=UniverseLimits)
    action_space: ActionSpace = field(default_factory=ActionSpace)
    speculate: bool = False

    @classmethod
    def create(
        cls,
        config: KernelConfig,
        *,
        universe: UniverseLimits | None = None,
        graph: GraphView | None = None,
        controller: ExplorationController | None = None,
        action_space: ActionSpace | None = None,
        speculate: bool = False,
        rules: list[EffectiveRule] | None = None,
    ) -> HeuristicContext:
        """``rules``: the compiled routing rules when the caller already has them (a session
        compiles them once; they depend only on the config and the universe's overrides)."""
        limits = universe or UniverseLimits()
        return cls(
            config=config,
            rules=rules if rules is not None else effective_rules(config, limits.routing_overrides),
            controller=controller,
            critical=graph.critical_set if graph is not None else frozenset(),
            limits=limits,
            action_space=action_space or ActionSpace(),
            speculate=speculate,
        )

    def decide(self, issue: Issue) -> ControlDecision:
        if self.controller is None:
            return ControlDecision(mode="disabled", domain=issue_domain(issue),
                                   reason="no controller")
        return self.controller.decide(issue)

    def parallel_swarm(self) -> str | None:
        kinds = self.action_space.swarm_types
        if kinds.get(PREFERRED_PARALLEL_SWARM) == "parallel_compete":
            return PREFERRED_PARALLEL_SWARM
        try:
            return self.action_space.parallel_swarm()
        except KeyError:
            return None

    def serial_swarm(self) -> str:
        try:
            return self.action_space.serial_swarm()
        except KeyError:
            return "serial_handoff"


def _triggers(issue: Issue, rule: EffectiveRule | None, ctx: HeuristicContext) -> list[str]:
    spec = ctx.config.speculation
    fired: list[str] = []
    if issue.dk_speculate:
        fired.append("dk_speculate")
    if ctx.speculate:
        fired.append("flag")
    if rule is not None and rule.rule.speculate:
        fired.append("rule")
    if (spec.auto_trigger_on_critical_path and issue.id in ctx.critical
            and issue.dk_risk in spec.auto_trigger_risk_levels):
        fired.append("critical_path")
    return fired


def _minutes(config: KernelConfig, running: Sequence[str],
             limits: UniverseLimits) -> tuple[int, dict[str, Any], str]:
    timeouts = {}
    for name in running:
        tc = config.toolchains.get(name)
        timeouts[name] = tc.timeout_minutes if tc is not None and tc.timeout_minutes else None
    raw = max((t or DEFAULT_TIMEOUT_MINUTES for t in timeouts.values()),
              default=DEFAULT_TIMEOUT_MINUTES)
    minutes = snap_minutes(raw)
    detail = f"max timeout {raw:g} min over {list(running)} → {minutes}"
    cap = limits.max_run_minutes
    if cap is not None and cap < minutes:
        minutes = floor_minutes(cap) or min(MAX_RUN_MINUTES)
        detail += f"; universe max_run_minutes {cap} → {minutes}"
    data = {"timeouts": timeouts, "raw_minutes": raw, "universe_max_run_minutes": cap,
            "minutes": minutes}
    return minutes, data, detail


def heuristic_plan(issue: Issue, ctx: HeuristicContext) -> DispatchPlan:
    """The plan today's rules give ``issue``, with a trace of every stage."""
    config = ctx.config
    spec = config.speculation
    trace: list[TraceStep] = []

    r = route(issue, ctx.rules, config)
    rule = r.rule
    trace.append(TraceStep(step="routing", detail=r.detail, data={
        "rule_index": rule.index if rule else None,
        "rule": rule.label if rule else None,
        "match": dict(rule.rule.match) if rule else None,
        "use": list(rule.rule.use) if rule else None,
        "candidates": r.candidates,
    }))

    decision = ctx.decide(issue)
    fired = _triggers(issue, rule, ctx)
    speculate = False
    p = 1
    spec_tcs: list[str] = []
    sdata: dict[str, Any] = {"triggers": fired}
    if not spec.enabled:
        why = "speculation disabled in config"
    elif not fired:
        why = "no trigger fired"
    else:
        spec_tcs = expand(config, rule.rule.use if rule else [], config.toolchain_priority)
        base = (rule.rule.parallelism if rule and rule.rule.parallelism else None) \
            or spec.default_parallelism
        p_max = min(spec.max_parallelism, max(PARALLELISM))
        p = min(max(base + decision.parallelism_delta, 2), p_max)
        sdata.update(base_parallelism=base, controller_delta=decision.parallelism_delta,
                     max_parallelism=p_max, available=spec_tcs)
        swarm = ctx.parallel_swarm()
        if p_max < 2:
            why = f"max_parallelism {spec.max_parallelism} < 2"
        elif len(spec_tcs) < 2:
            why = f"fewer than 2 enabled toolchains to speculate over ({spec_tcs})"
        elif swarm is None:
            why = "the swarm catalog has no parallel_compete swarm"
        else:
            p = min(p, len(spec_tcs))
            speculate = True
            why = (f"triggered by {', '.join(fired)}: parallelism {p} over {spec_tcs[:p]}")
        if not speculate:
            p = 1
    if not speculate and fired and spec.enabled:
        why = f"triggers {fired} fired but no speculation: {why}"
    sdata["speculate"] = speculate
    sdata["parallelism"] = p
    trace.append(TraceStep(step="speculation", detail=why, data=sdata))

    trace.append(TraceStep(step="controller", detail=f"{decision.mode}: {decision.reason}", data={
        "mode": decision.mode, "domain": decision.domain, "action_rate": decision.action_rate,
        "temperature": decision.temperature, "parallelism_delta": decision.parallelism_delta,
    }))

    toolchains = spec_tcs if speculate else r.candidates
    running = toolchains[:p] if speculate else toolchains[:1]
    minutes, bdata, bdetail = _minutes(config, running, ctx.limits)
    trace.append(TraceStep(step="budget", detail=bdetail, data=bdata))

    if speculate:
        swarm_id = ctx.parallel_swarm()
        assert swarm_id is not None
        action = PlanAction(swarm_id=swarm_id, parallelism=p, max_run_minutes=minutes,
                            max_candidates=p)
    else:
        action = PlanAction(swarm_id=ctx.serial_swarm(), parallelism=1, max_run_minutes=minutes,
                            max_candidates=1)
    return DispatchPlan(
        issue_id=issue.id,
        action=action,
        toolchains=list(toolchains),
        speculate=speculate,
        temperature=decision.temperature,
        controller_mode=decision.mode,
        trace=trace,
    )
