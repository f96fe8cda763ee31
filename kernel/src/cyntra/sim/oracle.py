"""The oracle: expected utility of every valid plan for an issue, the best plan, and regret.

Closed form given the hidden difficulty (``docs/sim.md``): candidates are independent given the
issue, so for candidates i = 1..k with pass probabilities p_i, expected costs c_i and duration laws
D_i = min(N_i, B):

* speculate_vote: P(pass) = 1 − Π(1 − p_i); E[cost] = Σ c_i; E[wall] = E[max D_i]
  = ∫₀ᴮ (1 − Π F_i(x)) dx, integrated by fixed Gauss–Legendre quadrature in log-time.
* serial_handoff: r_1 = 1, r_{i+1} = r_i (1 − p_i); P(pass) = 1 − r_{k+1};
  E[cost] = Σ r_i c_i; E[wall] = Σ r_i E[D_i].

E[U] = value·size_factor·P(pass) − E[cost] − wall_cost·E[wall] − fail_penalty·(1 − P(pass)).

The toolchains of a plan come from routing: a speculate plan takes the first k of the speculate
order (rule's use list + fallbacks + toolchain priority), a serial plan the first k of
[primary] + fallbacks. :class:`SimpleRouting` encodes the upstream default rules so the oracle and
``scripts/sim_gap.py`` can run standalone; the kernel passes its own routed lists instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np

from cyntra.planner.action_space import ActionSpace, PlanAction, snap_minutes
from cyntra.sim.objective import combine_serial, combine_speculate, plan_utility
from cyntra.sim.profile import SimProfile
from cyntra.sim.world import CandidateModel, world_for
from cyntra.state.issue import Issue

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)
_GL: tuple[tuple[float, float], ...] = tuple(
    (float(n), float(w)) for n, w in zip(_NODES, _WEIGHTS, strict=True)
)
_SPACE = ActionSpace()

# Upstream defaults (ARCHITECTURE §3, upstream .cyntra/config.yaml).
TOOLCHAIN_PRIORITY: tuple[str, ...] = ("codex", "claude", "opencode", "crush")
FALLBACKS: dict[str, tuple[str, ...]] = {
    "codex": ("claude", "opencode"),
    "claude": ("codex", "opencode"),
    "opencode": ("claude",),
    "crush": ("opencode", "claude"),
}
TIMEOUT_MINUTES: dict[str, int] = {"codex": 60, "claude": 60, "opencode": 45, "crush": 45}
DEEP_TAGS: frozenset[str] = frozenset({"architecture", "complex", "kernel", "deep-reasoning"})


class PlanEstimate(NamedTuple):
    """One row of the oracle table."""

    action: PlanAction
    eu: float
    p_pass: float
    e_cost: float
    e_wall: float


@dataclass(frozen=True)
class Route:
    """Which rule matched and what it asks for."""

    rule: str
    use: tuple[str, ...]
    speculate: bool
    parallelism: int


@dataclass(frozen=True)
class RoutedCandidates:
    """Ordered toolchains for each kind of plan; a plan takes the first k."""

    speculate: tuple[str, ...]
    serial: tuple[str, ...]


@dataclass(frozen=True)
class SimpleRouting:
    """The upstream default routing rules, as a small function (replaced by the kernel's module)."""

    priority: tuple[str, ...] = TOOLCHAIN_PRIORITY
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(FALLBACKS))
    timeouts: dict[str, int] = field(default_factory=lambda: dict(TIMEOUT_MINUTES))

    def route(self, issue: Issue) -> Route:
        hint = issue.dk_tool_hint
        if hint in self.priority:
            return Route("tool_hint", (hint,), False, 1)
        if issue.dk_risk == "critical":
            return Route("risk_critical", ("codex", "claude", "crush"), True, 3)
        if issue.dk_risk == "high":
            return Route("risk_high", ("codex", "claude"), True, 2)
        if issue.dk_size == "XL":
            return Route("size_xl", ("codex",), False, 1)
        if DEEP_TAGS.intersection(issue.tags):
            return Route("deep_tags", ("codex",), False, 1)
        if issue.dk_risk == "low" and issue.dk_size in ("XS", "S"):
            return Route("low_risk_small", ("opencode",), False, 1)
        return Route("default", ("claude",), False, 1)

    def candidates(self, issue: Issue) -> RoutedCandidates:
        route = self.route(issue)
        primary = route.use[0]
        spec = list(dict.fromkeys([*route.use, *self.fallbacks.get(primary, ()), *self.priority]))
        serial = list(dict.fromkeys([primary, *self.fallbacks.get(primary, ())]))
        return RoutedCandidates(tuple(spec), tuple(serial))

    def heuristic_plan(self, issue: Issue, space: ActionSpace = _SPACE) -> PlanAction:
        """Today's plan: speculate when the rule says so, else one serial candidate; budget =
        the primary toolchain's timeout snapped up to an allowed budget (so nearly always 60)."""
        route = self.route(issue)
        budget = snap_minutes(self.timeouts.get(route.use[0], 60))
        if route.speculate:
            p = max(2, min(3, route.parallelism))
            return PlanAction(swarm_id=space.parallel_swarm(), parallelism=p, max_run_minutes=budget, max_candidates=p)
        return PlanAction(swarm_id=space.serial_swarm(), parallelism=1, max_run_minutes=budget, max_candidates=1)


DEFAULT_ROUTING = SimpleRouting()


def toolchains_for_plan(
    issue: Issue, action: PlanAction, routing: SimpleRouting | None = None, space: ActionSpace = _SPACE
) -> list[str]:
    """The toolchains a plan would run, in order (speculate order vs serial handoff order)."""
    routed = (routing or DEFAULT_ROUTING).candidates(issue)
    return _pick(action, routed.speculate, routed.serial, space)


def _pick(action: PlanAction, spec: Sequence[str], serial: Sequence[str], space: ActionSpace) -> list[str]:
    if space.kind(action.swarm_id) == "parallel_compete":
        return list(spec[: action.parallelism])
    return list(serial[: action.max_candidates])


# --- closed form ---------------------------------------------------------------------------


class _IssueLaws:
    """Per-issue cache of candidate laws and their per-budget moments."""

    def __init__(self, profile: SimProfile, issue: Issue, at: datetime | None) -> None:
        self.world = world_for(profile)
        self.issue = issue
        self.at = at
        self._models: dict[str, CandidateModel] = {}
        self._moments: dict[tuple[str, float], tuple[float, float, float]] = {}

    def model(self, toolchain: str) -> CandidateModel:
        m = self._models.get(toolchain)
        if m is None:
            m = self.world.candidate_model(self.issue, toolchain, self.at)
            self._models[toolchain] = m
        return m

    def moments(self, toolchain: str, budget: float) -> tuple[float, float, float]:
        """(p_pass, E[cost], E[duration]) of one candidate."""
        key = (toolchain, budget)
        hit = self._moments.get(key)
        if hit is None:
            m = self.model(toolchain)
            ed = m.expected_duration(budget)
            hit = (m.p_pass(budget), m.price_per_minute * ed, ed)
            self._moments[key] = hit
        return hit

    def expected_max(self, toolchains: Sequence[str], budget: float) -> float:
        """E[max_i min(N_i, B)] = ∫₀ᴮ (1 − Π F_i(x)) dx, in log-time (x = eᵗ)."""
        models = [self.model(t) for t in toolchains]
        if len(models) == 1:
            return self.moments(toolchains[0], budget)[2]
        top = math.log(budget)
        low = min(min(m.mu_ok - 7.0 * m.sigma_ok, m.mu_stuck - 7.0 * m.sigma_stuck) for m in models)
        low = min(low, top - 1e-3)
        half = 0.5 * (top - low)
        mid = 0.5 * (top + low)
        total = math.exp(low)  # integrand is 1 on [0, e^low]
        for node, weight in _GL:
            t = mid + half * node
            x = math.exp(t)
            prod = 1.0
            for m in models:
                prod *= m.duration_cdf(x, budget)
            total += weight * half * x * (1.0 - prod)
        return total


def _estimate(
    laws: _IssueLaws, profile: SimProfile, action: PlanAction, toolchains: Sequence[str], space: ActionSpace
) -> PlanEstimate:
    issue = laws.issue
    budget = float(action.max_run_minutes)
    obj = profile.objective
    value = obj.value(issue.dk_priority, issue.dk_size)
    wall_cost = obj.wall_cost_per_minute[issue.dk_priority]
    if not toolchains:
        raise ValueError(f"plan {action.label()} has no toolchain to run")
    if space.kind(action.swarm_id) == "parallel_compete":
        fail = 1.0
        cost = 0.0
        for t in toolchains:
            p, c, _ = laws.moments(t, budget)
            fail *= 1.0 - p
            cost += c
        wall = laws.expected_max(toolchains, budget)
    else:
        reach = 1.0
        cost = 0.0
        wall = 0.0
        for t in toolchains:
            p, c, d = laws.moments(t, budget)
            cost += reach * c
            wall += reach * d
            reach *= 1.0 - p
        fail = reach
    p_pass = 1.0 - fail
    eu = value * p_pass - cost - wall_cost * wall - obj.fail_penalty * fail
    return PlanEstimate(action, eu, p_pass, cost, wall)


def _lists(candidates: Sequence[str], serial_candidates: Sequence[str] | None) -> tuple[Sequence[str], Sequence[str]]:
    return candidates, (serial_candidates if serial_candidates is not None else candidates)


def _at(issue: Issue, at: datetime | None) -> datetime | None:
    return at if at is not None else issue.created


def plan_estimate(
    profile: SimProfile,
    issue: Issue,
    action: PlanAction,
    candidates: Sequence[str],
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
) -> PlanEstimate:
    """Closed-form (p_pass, E[cost], E[wall], E[U]) of one plan. ``at`` (drift) defaults to created."""
    spec, serial = _lists(candidates, serial_candidates)
    laws = _IssueLaws(profile, issue, _at(issue, at))
    return _estimate(laws, profile, action, _pick(action, spec, serial, space), space)


def monte_carlo_utility(
    profile: SimProfile,
    issue: Issue,
    action: PlanAction,
    candidates: Sequence[str],
    n_samples: int,
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
    first_attempt: int = 0,
) -> float:
    """Mean realised utility over ``n_samples`` draws (attempt numbers as seeds: common random
    numbers across plans) — the world-side check of the closed form."""
    spec, serial = _lists(candidates, serial_candidates)
    tools = _pick(action, spec, serial, space)
    world = world_for(profile)
    when = _at(issue, at)
    parallel = space.kind(action.swarm_id) == "parallel_compete"
    total = 0.0
    for a in range(first_attempt, first_attempt + n_samples):
        if parallel:
            outs = [world.sample(issue, t, a, action.max_run_minutes, i, when) for i, t in enumerate(tools)]
            plan = combine_speculate(outs)
        else:
            outs = []
            for i, t in enumerate(tools):
                o = world.sample(issue, t, a, action.max_run_minutes, i, when)
                outs.append(o)
                if o.all_passed:
                    break
            plan = combine_serial(outs)
        total += plan_utility(plan, issue, profile)
    return total / n_samples


def expected_utility(
    profile: SimProfile,
    issue: Issue,
    action: PlanAction,
    candidates: Sequence[str],
    attempt: int = 0,
    n_samples: int | None = None,
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
) -> float:
    """E[U] of a plan: closed form by default; Monte Carlo (seeds from ``attempt`` on) if
    ``n_samples`` is given."""
    if n_samples is not None:
        return monte_carlo_utility(
            profile, issue, action, candidates, n_samples, serial_candidates, at, first_attempt=attempt
        )
    return plan_estimate(profile, issue, action, candidates, serial_candidates, at).eu


def oracle_table(
    profile: SimProfile,
    issue: Issue,
    candidates: Sequence[str],
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
) -> list[PlanEstimate]:
    """Every valid plan with (action, eu, p_pass, e_cost, e_wall), in action-space order."""
    spec, serial = _lists(candidates, serial_candidates)
    laws = _IssueLaws(profile, issue, _at(issue, at))
    return [_estimate(laws, profile, a, _pick(a, spec, serial, space), space) for a in space.actions]


def oracle_for_issue(
    profile: SimProfile,
    issue: Issue,
    routing: SimpleRouting | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
) -> list[PlanEstimate]:
    """:func:`oracle_table` with the toolchain lists of :class:`SimpleRouting`."""
    routed = (routing or DEFAULT_ROUTING).candidates(issue)
    return oracle_table(profile, issue, routed.speculate, routed.serial, at, space)


def best_of(table: Sequence[PlanEstimate]) -> PlanEstimate:
    """Highest E[U]; ties go to the earlier plan in action-space order (deterministic)."""
    best = table[0]
    for row in table[1:]:
        if row.eu > best.eu:
            best = row
    return best


def best_plan(
    profile: SimProfile,
    issue: Issue,
    candidates: Sequence[str],
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
) -> tuple[PlanAction, float]:
    row = best_of(oracle_table(profile, issue, candidates, serial_candidates, at, space))
    return row.action, row.eu


def regret(
    profile: SimProfile,
    issue: Issue,
    action: PlanAction,
    candidates: Sequence[str],
    serial_candidates: Sequence[str] | None = None,
    at: datetime | None = None,
    space: ActionSpace = _SPACE,
) -> float:
    """E[U] of the best plan minus E[U] of ``action`` (≥ 0)."""
    table = oracle_table(profile, issue, candidates, serial_candidates, at, space)
    mine = next((r.eu for r in table if r.action.key() == action.key()), None)
    if mine is None:
        mine = plan_estimate(profile, issue, action, candidates, serial_candidates, at, space).eu
    return max(0.0, best_of(table).eu - mine)
