"""The objective: how a plan's outcome is priced, and how candidate runs combine into a plan outcome.

    U = value[priority]·size_factor[size]·passed − cost_usd − wall_cost[priority]·wall_minutes
        − fail_penalty·(1 − passed)

``value × size_factor`` is what a passing issue is worth (USD-equivalent), ``cost_usd`` the agents' spend,
``wall_cost`` the price of waiting for the result. Combination follows the runner's semantics:

* ``speculate_vote``: all candidates run at once, each to completion or its budget; the plan
  passes if any candidate passes every gate; cost = Σ costs; wall = max durations.
* ``serial_handoff``: candidates run in turn and the plan stops at the first that passes every
  gate; cost = Σ costs of those run; wall = Σ their durations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cyntra.sim.profile import SimProfile
from cyntra.sim.world import CandidateOutcome
from cyntra.state.issue import Issue


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """The combined result of one plan's candidates."""

    passed: bool
    cost_usd: float
    wall_minutes: float
    candidates: tuple[CandidateOutcome, ...]  # the candidates that actually ran
    winner_index: int | None  # index into ``candidates`` of the first passing one


def utility(passed: bool, cost_usd: float, wall_minutes: float, issue: Issue, profile: SimProfile) -> float:
    """The documented objective (module docstring, ``docs/sim.md``)."""
    obj = profile.objective
    prio = issue.dk_priority
    u = -cost_usd - obj.wall_cost_per_minute[prio] * wall_minutes
    if passed:
        return u + obj.value(prio, issue.dk_size)
    return u - obj.fail_penalty


def plan_utility(outcome: PlanOutcome, issue: Issue, profile: SimProfile) -> float:
    return utility(outcome.passed, outcome.cost_usd, outcome.wall_minutes, issue, profile)


def _winner(outcomes: Sequence[CandidateOutcome]) -> int | None:
    for i, o in enumerate(outcomes):
        if o.all_passed:
            return i
    return None


def combine_speculate(outcomes: Sequence[CandidateOutcome]) -> PlanOutcome:
    """Parallel candidates: pass if any passes; cost adds up; wall time is the slowest."""
    if not outcomes:
        raise ValueError("a speculate plan needs at least one candidate")
    return PlanOutcome(
        passed=any(o.all_passed for o in outcomes),
        cost_usd=sum(o.cost_usd for o in outcomes),
        wall_minutes=max(o.duration_minutes for o in outcomes),
        candidates=tuple(outcomes),
        winner_index=_winner(outcomes),
    )


def combine_serial(outcomes: Sequence[CandidateOutcome]) -> PlanOutcome:
    """Handoff chain: candidates after the first passing one never ran, so they are dropped."""
    if not outcomes:
        raise ValueError("a serial plan needs at least one candidate")
    win = _winner(outcomes)
    ran = tuple(outcomes) if win is None else tuple(outcomes[: win + 1])
    return PlanOutcome(
        passed=win is not None,
        cost_usd=sum(o.cost_usd for o in ran),
        wall_minutes=sum(o.duration_minutes for o in ran),
        candidates=ran,
        winner_index=win,
    )
