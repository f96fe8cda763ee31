"""The policy clamp: every plan from every strategy is projected onto what the policy allows.

The action space is finite (ARCHITECTURE §4), so the clamp is exact rather than clever: it
computes the set of actions every matching enforce-mode limit allows, and returns the requested
action if it is in that set, else the allowed action closest to it. That makes the clamp
idempotent and guarantees its output is valid and inside every enforce limit. Warn/dryrun rules
only record. Each violation is recorded as {rule_id, field, requested, limit, applied, mode}, the
way admission controllers report.

Besides the policy and the universe budgets, the kernel's own capacity is a limit: a speculating
plan takes one lane and ``dk_estimated_tokens`` per candidate, so one wider than
``scheduling.max_concurrent_workcells`` or than ``max_concurrent_tokens // dk_estimated_tokens``
could never start, and its issue would wait forever.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.state.issue import Issue
from cyntra.strategy.policy import Policy, PolicyLimits, PolicyMode

Matcher = Callable[[dict[str, Any], Issue], bool]
ClampField = Literal["swarm_id", "parallelism", "max_run_minutes", "max_candidates", "confidence"]

UNIVERSE_MINUTES_RULE = "universe.budgets.max_run_minutes"
UNIVERSE_WORKCELLS_RULE = "universe.budgets.max_concurrent_workcells"
KERNEL_WORKCELLS_RULE = "scheduling.max_concurrent_workcells"
KERNEL_TOKENS_RULE = "scheduling.max_concurrent_tokens"


class Violation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str
    field: str
    requested: Any
    limit: Any
    applied: Any
    mode: PolicyMode


class ClampResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requested: PlanAction
    applied: PlanAction
    violations: list[Violation]
    changed: bool
    unsatisfiable: bool = False  # enforce rules that match together allow no action at all

    def enforce_violations(self) -> list[Violation]:
        return [v for v in self.violations if v.mode == "enforce"]


_Limit = tuple[str, str, Any, PolicyMode]  # rule_id, limit name, value, mode


def _allows(action: PlanAction, name: str, value: Any) -> bool:
    if name == "allowed_swarms":
        return action.swarm_id in value
    if name == "max_parallelism":
        return action.parallelism <= int(value)
    if name == "max_minutes":
        return action.max_run_minutes <= int(value)
    if name == "min_minutes":
        return action.max_run_minutes >= int(value)
    if name == "max_candidates":
        return action.max_candidates <= int(value)
    if name == "min_candidates":
        return action.max_candidates >= int(value)
    return True


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a limit value (lists of swarms become tuples)."""
    return tuple(value) if isinstance(value, list) else value


_FIELD_OF = {
    "allowed_swarms": "swarm_id",
    "max_parallelism": "parallelism",
    "max_minutes": "max_run_minutes",
    "min_minutes": "max_run_minutes",
    "max_candidates": "max_candidates",
    "min_candidates": "max_candidates",
}


def _distance(a: PlanAction, b: PlanAction) -> tuple[float, int, int, str]:
    """How far apart two actions are; ties go to the cheaper plan (fewer, shorter candidates)."""
    swarm = 0 if a.swarm_id == b.swarm_id else 1
    d = (
        4.0 * swarm
        + abs(a.parallelism - b.parallelism)
        + abs(a.max_candidates - b.max_candidates)
        + abs(math.log2(a.max_run_minutes) - math.log2(b.max_run_minutes))
    )
    return (d, b.parallelism * b.max_candidates * b.max_run_minutes, b.max_run_minutes, b.swarm_id)


class Clamp:
    """Applies a policy (and the universe budgets) to plans for one action space."""

    def __init__(
        self,
        policy: Policy,
        space: ActionSpace,
        matcher: Matcher,
        *,
        universe_max_run_minutes: int | None = None,
        universe_max_concurrent_workcells: int | None = None,
        max_concurrent_workcells: int | None = None,
        max_concurrent_tokens: int | None = None,
    ) -> None:
        self.policy = policy
        self.space = space
        self.matcher = matcher
        self.universe_max_run_minutes = universe_max_run_minutes
        self.universe_max_concurrent_workcells = universe_max_concurrent_workcells
        self.max_concurrent_workcells = max_concurrent_workcells  # the kernel's lanes (scheduling)
        self.max_concurrent_tokens = max_concurrent_tokens
        self._allowed_cache: dict[
            tuple[tuple[str, Any], ...], tuple[tuple[PlanAction, ...], frozenset[tuple[str, int, int, int]]]
        ] = {}

    def limits_for(self, issue: Issue) -> list[_Limit]:
        out: list[_Limit] = []
        if self.universe_max_run_minutes is not None:
            out.append((UNIVERSE_MINUTES_RULE, "max_minutes", self.universe_max_run_minutes, "enforce"))
        if self.universe_max_concurrent_workcells is not None:
            out.append(
                (UNIVERSE_WORKCELLS_RULE, "max_parallelism", self.universe_max_concurrent_workcells, "enforce")
            )
        if self.max_concurrent_workcells is not None:
            out.append((KERNEL_WORKCELLS_RULE, "max_parallelism", self.max_concurrent_workcells, "enforce"))
        tokens = issue.dk_estimated_tokens
        if self.max_concurrent_tokens is not None and tokens > 0:
            fit = self.max_concurrent_tokens // tokens
            if fit >= 1:  # 0: not even one candidate fits; the scheduler reports why it waits
                out.append((KERNEL_TOKENS_RULE, "max_parallelism", fit, "enforce"))
        for rule in self.policy.rules:
            if not self.matcher(rule.match, issue):
                continue
            for name in PolicyLimits.model_fields:
                value = getattr(rule.limits, name)
                if value is None or name == "min_confidence":
                    continue
                out.append((rule.id, name, value, rule.mode))
        return out

    def allowed(self, issue: Issue) -> list[PlanAction]:
        """Every action inside all enforce-mode limits that match this issue."""
        return list(self._allowed_for(self.limits_for(issue))[0])

    def _allowed_for(self, limits: list[_Limit]) -> tuple[tuple[PlanAction, ...], frozenset[tuple[str, int, int, int]]]:
        """The allowed actions (and their keys) under these limits, memoised: the kernel asks for
        every decision, and a policy has only a handful of distinct limit combinations."""
        enforce = tuple((n, _frozen(v)) for _, n, v, mode in limits if mode == "enforce")
        hit = self._allowed_cache.get(enforce)
        if hit is None:
            actions = tuple(a for a in self.space.actions if all(_allows(a, n, v) for n, v in enforce))
            hit = self._allowed_cache[enforce] = (actions, frozenset(a.key() for a in actions))
        return hit

    def min_confidence(self, issue: Issue) -> tuple[float, str]:
        """The strictest confidence floor for this issue, and the rule that sets it."""
        floor, rule_id = self.policy.min_confidence, "policy.min_confidence"
        for rule in self.policy.rules:
            value = rule.limits.min_confidence
            if rule.mode == "enforce" and value is not None and value > floor and self.matcher(rule.match, issue):
                floor, rule_id = value, rule.id
        return floor, rule_id

    def project(self, action: PlanAction, issue: Issue) -> PlanAction:
        """``apply(action, issue).applied`` without building the violations (a hot path: the
        scheduler previews plans it may never decide)."""
        limits = self.limits_for(issue)
        allowed, allowed_keys = self._allowed_for(limits)
        if action.key() in allowed_keys:
            return action
        if not allowed:
            return self.apply(action, issue).applied
        return min(allowed, key=lambda b: _distance(action, b))

    def apply(self, action: PlanAction, issue: Issue) -> ClampResult:
        limits = self.limits_for(issue)
        allowed, allowed_keys = self._allowed_for(limits)
        unsatisfiable = not allowed
        if action.key() in allowed_keys:
            applied = action
        elif allowed:
            applied = min(allowed, key=lambda b: _distance(action, b))
        else:
            # Matching enforce rules contradict each other: violate as few limits as possible.
            enforce = [lim for lim in limits if lim[3] == "enforce"]
            applied = min(
                self.space.actions,
                key=lambda b: (sum(not _allows(b, n, v) for _, n, v, _ in enforce), _distance(action, b)),
            )
        violations: list[Violation] = []
        for rule_id, name, value, mode in limits:
            if _allows(action, name, value):
                continue
            field = _FIELD_OF[name]
            violations.append(
                Violation(
                    rule_id=rule_id,
                    field=field,
                    requested=getattr(action, field),
                    limit={name: value},
                    applied=getattr(applied if mode == "enforce" else action, field),
                    mode=mode,
                )
            )
        # Fields changed only to keep the tuple valid (e.g. parallelism after a swarm switch).
        named = {v.field for v in violations if v.mode == "enforce"}
        for field in ("swarm_id", "parallelism", "max_run_minutes", "max_candidates"):
            if field not in named and getattr(action, field) != getattr(applied, field):
                violations.append(
                    Violation(
                        rule_id="action_space.validity",
                        field=field,
                        requested=getattr(action, field),
                        limit="valid tuple",
                        applied=getattr(applied, field),
                        mode="enforce",
                    )
                )
        return ClampResult(
            requested=action,
            applied=applied,
            violations=violations,
            changed=applied != action,
            unsatisfiable=unsatisfiable,
        )
