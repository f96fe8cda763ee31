"""The scheduler: order the ready issues and pack them into free workcell lanes.

Order (:func:`order_ready`), most urgent first:

1. issues on the critical path;
2. controller rank of the issue's domain: ``trap`` first (the domain is stuck, so the kernel
   spends its next lanes there), then ``balanced`` / ``disabled``, then ``chaos`` (the domain
   is already churning);
3. effective priority (P0 first). Starvation aging: an issue waiting since ``updated`` (or
   ``created``) for k full ``starvation_threshold_hours`` is raised k levels, never above P0
   (a threshold of 0 turns aging off);
4. higher risk first; 5. older ``created`` first (unknown last); 6. id (natural order).

Packing (:class:`LanePacker`, :func:`pack_lanes`): an issue takes 1 slot, or ``parallelism``
slots when its plan speculates; its tokens are ``dk_estimated_tokens`` × that many candidates.
An issue that does not fit is skipped with a reason and packing goes on (a smaller one later
may fit). Issues with status ``running`` already hold 1 slot and their estimated tokens each.
The universe's ``max_concurrent_workcells`` caps the config's (and ``--max-concurrent``).

:func:`schedule_cycle` ties graph, controller, plans and packing together. Plans come from
``plan_fn`` (a batch callable; the heuristic by default) and are asked for lazily, in order, in
batches the size of the free lanes, so a 100,000-issue backlog costs only the plans the free
lanes can use.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cyntra import clock
from cyntra.control.controller import DOMAINS, MODE_RANK, ExplorationController, issue_domain
from cyntra.errors import ConfigError
from cyntra.gcpause import gc_paused
from cyntra.kernel.config import KernelConfig
from cyntra.kernel.heuristic import HeuristicContext, UniverseLimits, heuristic_plan
from cyntra.kernel.plan import DispatchPlan
from cyntra.kernel.routing import check_rules
from cyntra.planner.action_space import ActionSpace
from cyntra.state.graph import DepLike, GraphView, IssueGraph, not_arrived
from cyntra.state.issue import PRIORITIES, RISK_ORDER, Issue

PlanFn = Callable[[list[Issue]], dict[str, DispatchPlan]]
# issue -> (lanes its plan will take, its parallelism), or None when unknown
PreviewFn = Callable[[Issue], tuple[int, int] | None]
NO_SLOT = "no free workcell slot"
_NEVER = datetime.max.replace(tzinfo=UTC)  # sorts issues without ``created`` last


def aging_step(threshold_hours: float) -> timedelta | None:
    """The starvation threshold as a timedelta (None: aging off). A positive threshold below
    the clock's resolution is one microsecond, not zero (which would divide by zero)."""
    if threshold_hours <= 0:
        return None
    return max(timedelta(hours=threshold_hours), timedelta(microseconds=1))


def effective_priority(issue: Issue, now: datetime, threshold_hours: float) -> int:
    """Priority rank (0 = P0) after starvation aging."""
    rank = issue.priority_rank
    since = issue.updated or issue.created
    threshold = aging_step(threshold_hours)
    if since is None or threshold is None or rank == 0:
        return rank
    waited = now - since
    if waited < threshold:
        return rank
    return max(0, rank - int(waited // threshold))


_OrderKey = tuple[int, datetime, int, int, str, int]


def _cutoffs(now: datetime, threshold: timedelta, n: int) -> list[datetime | None]:
    out: list[datetime | None] = []
    for p in range(n):
        try:
            out.append(now - threshold * p)
        except OverflowError:
            out.append(None)
    return out


def _order_keys(
    ready: Sequence[Issue],
    graph: GraphView,
    controller: ExplorationController | None,
    now: datetime,
    starvation_threshold_hours: float,
) -> list[_OrderKey]:
    """One flat sort key per ready issue (see the module docstring for the keys).

    The four small ranks are packed into one int (critical, mode rank, priority, risk, each
    < 8) so a comparison usually ends at the first element; ``n`` is the issue's position.
    """
    critical = graph.critical_set
    default_rank = MODE_RANK["disabled"]
    domain_rank = {d: MODE_RANK[controller.decide_domain(d).mode] for d in DOMAINS} \
        if controller is not None else {}
    if domain_rank:
        default_rank = domain_rank["code"]  # an issue without tags is code
    by_domain = len(set(domain_rank.values())) > 1  # else every issue has the same rank
    tags_rank: dict[tuple[str, ...], int] = {}
    step = aging_step(starvation_threshold_hours)
    aging = step is not None
    threshold = step if step is not None else timedelta(0)
    # Waiting since at or before cutoff[p] means aged by at least p steps: plain datetime
    # comparisons, exactly ``(now - since) // threshold >= p`` (integer microseconds). None: a
    # cutoff before year 1 (a threshold meant as "never"), which no timestamp reaches.
    cutoff = _cutoffs(now, threshold, len(PRIORITIES)) if aging else []
    first = cutoff[1] if aging else None
    prio_rank = {p: n for n, p in enumerate(PRIORITIES)}
    risk_rank = {r: 3 - n for r, n in RISK_ORDER.items()}  # critical first

    # One flat loop, no per-issue helper calls: this keys every ready issue each cycle.
    keyed: list[_OrderKey] = []
    append = keyed.append
    for n, issue in enumerate(ready):
        rank = default_rank
        if by_domain and issue.tags:
            tags = tuple(issue.tags)
            r = tags_rank.get(tags)
            if r is None:
                r = tags_rank[tags] = domain_rank[issue_domain(issue)]
            rank = r
        prio = prio_rank[issue.dk_priority]
        created = issue.created
        if prio and aging:
            since = issue.updated or created
            if since is not None and first is not None and since <= first:
                last = cutoff[prio]
                if last is not None and since <= last:
                    prio = 0
                else:
                    prio = max(0, prio - int((now - since) // threshold))
        iid = issue.id
        head = ((0 if iid in critical else 512) + (rank << 6) + (prio << 3) + risk_rank[issue.dk_risk])
        if iid.isdigit() and iid.isascii():
            append((head, created or _NEVER, 0, len(iid), iid, n))
        else:
            append((head, created or _NEVER, 1, 0, iid, n))
    return keyed


def order_ready(
    ready: Sequence[Issue],
    graph: GraphView,
    controller: ExplorationController | None,
    now: datetime,
    starvation_threshold_hours: float,
) -> list[Issue]:
    """Ready issues, most urgent first (see the module docstring for the keys)."""
    keyed = _order_keys(ready, graph, controller, now, starvation_threshold_hours)
    keyed.sort()
    items = ready if isinstance(ready, list) else list(ready)
    return [items[k[-1]] for k in keyed]


def iter_ready(
    ready: Sequence[Issue],
    graph: GraphView,
    controller: ExplorationController | None,
    now: datetime,
    starvation_threshold_hours: float,
) -> Iterator[Issue]:
    """The same order as :func:`order_ready`, produced lazily from a heap: a cycle that fills
    its lanes after a few issues pays O(n) for the heap, not O(n log n) for a full sort."""
    keyed = _order_keys(ready, graph, controller, now, starvation_threshold_hours)
    heapq.heapify(keyed)
    items = ready if isinstance(ready, list) else list(ready)
    pop = heapq.heappop
    while keyed:
        yield items[pop(keyed)[-1]]


class ScheduledIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issue_id: str
    plan: DispatchPlan
    slots: int
    tokens: int


def slots_for(plan: DispatchPlan) -> int:
    """Lanes a plan occupies: its parallel candidates when speculating, else one."""
    return plan.parallelism if plan.speculate else 1


class LanePacker:
    """Greedy packing that keeps going past an issue that does not fit."""

    def __init__(self, max_workcells: int, max_tokens: int,
                 running_slots: int = 0, running_tokens: int = 0) -> None:
        self.max_workcells = max_workcells
        self.max_tokens = max_tokens
        self.slots = running_slots
        self.tokens = running_tokens
        self.scheduled: list[ScheduledIssue] = []
        self.skipped: list[tuple[str, str]] = []

    @property
    def full(self) -> bool:
        return self.slots >= self.max_workcells

    def why_not(self, issue: Issue, slots: int, parallelism: int) -> str | None:
        """Why a plan taking ``slots`` lanes cannot start now (None: it fits)."""
        if self.full:
            return NO_SLOT
        tokens = issue.dk_estimated_tokens * slots
        free = self.max_workcells - self.slots
        if slots > free:
            return f"needs {slots} slots (speculating ×{parallelism}), {free} free"
        if self.tokens + tokens > self.max_tokens:
            if tokens > self.max_tokens:
                return f"needs {tokens} tokens, more than max_concurrent_tokens {self.max_tokens}"
            return f"needs {tokens} tokens, {self.max_tokens - self.tokens} of {self.max_tokens} free"
        return None

    def offer(self, issue: Issue, plan: DispatchPlan) -> bool:
        slots = slots_for(plan)
        why = self.why_not(issue, slots, plan.parallelism)
        if why is not None:
            self.skipped.append((issue.id, why))
            return False
        tokens = issue.dk_estimated_tokens * slots
        self.slots += slots
        self.tokens += tokens
        self.scheduled.append(ScheduledIssue(issue_id=issue.id, plan=plan, slots=slots,
                                             tokens=tokens))
        return True


def pack_lanes(
    ordered: Sequence[Issue],
    plans: Mapping[str, DispatchPlan],
    running_slots: int,
    running_tokens: int,
    max_workcells: int,
    max_tokens: int,
) -> tuple[list[ScheduledIssue], list[tuple[str, str]]]:
    """Fill free lanes in order; returns (scheduled, [(issue_id, why skipped)])."""
    packer = LanePacker(max_workcells, max_tokens, running_slots, running_tokens)
    for issue in ordered:
        if packer.full:
            packer.skipped.append((issue.id, NO_SLOT))
            continue
        packer.offer(issue, plans[issue.id])
    return packer.scheduled, packer.skipped


class ScheduleResult(BaseModel):
    """One scheduling cycle: what runs now, what waits and why."""

    model_config = ConfigDict(extra="forbid")

    scheduled: list[ScheduledIssue] = Field(default_factory=list)
    skipped: list[tuple[str, str]] = Field(default_factory=list)
    ready: list[str] = Field(default_factory=list)  # in scheduling order
    blocked: dict[str, list[str]] = Field(default_factory=dict)
    running: list[str] = Field(default_factory=list)
    critical_path: list[str] = Field(default_factory=list)
    cycles: list[list[str]] = Field(default_factory=list)
    controller_modes: dict[str, str] = Field(default_factory=dict)
    max_workcells: int = 0
    max_tokens: int = 0
    slots_used: int = 0
    tokens_used: int = 0
    warnings: list[str] = Field(default_factory=list)


def _batch_plans(plan_fn: PlanFn, fallback: PlanFn, batch: list[Issue],
                 warnings: list[str]) -> dict[str, DispatchPlan]:
    """Ask ``plan_fn``; a failure or a missing plan falls back to the heuristic, recorded."""
    if plan_fn is fallback:
        return fallback(batch)
    try:
        plans = dict(plan_fn(batch))
    except Exception as exc:  # a strategy failure never stops dispatch
        warnings.append(f"plan_fn failed ({type(exc).__name__}: {exc}); heuristic plans used "
                        f"for {len(batch)} issue(s)")
        return fallback(batch)
    lacking = [i for i in batch if not isinstance(plans.get(i.id), DispatchPlan)]
    if lacking:
        warnings.append(f"plan_fn gave no plan for {', '.join(i.id for i in lacking)}; "
                        "heuristic plans used")
        plans.update(fallback(lacking))
    return plans


@gc_paused
def schedule_cycle(
    issues: Sequence[Issue] | Mapping[str, Issue],
    deps: Iterable[DepLike],
    config: KernelConfig,
    workspace: str | Path | None,
    *,
    universe: UniverseLimits | None = None,
    speculate: bool = False,
    max_concurrent: int | None = None,
    only_issue: str | None = None,
    plan_fn: PlanFn | None = None,
    now: datetime | None = None,
    graph: GraphView | None = None,
    action_space: ActionSpace | None = None,
    report: bool = True,
    preview_fn: PreviewFn | None = None,
    heuristic_ctx: HeuristicContext | None = None,
) -> ScheduleResult:
    """Decide which ready issues start now, with which plans.

    ``report=False`` is the runner's cycle: it skips what only a report reads -- the blocked
    map, and the full order of the ready issues the lanes could not take (``ready`` then lists
    the issues considered, in order, and ``skipped`` only those). The scheduled plans are the
    same either way (a test checks it).

    ``heuristic_ctx`` (optional): the caller's heuristic context for this graph, used instead
    of building another; its rules, controller, action space, limits and speculation flag then
    stand for ``universe``/``action_space``/``speculate``, which only build a context.

    ``preview_fn`` (optional) gives, cheaply, the ``(slots, parallelism)`` an issue's plan will
    take, or ``None`` when it cannot tell; an issue whose preview does not fit is skipped with
    the reason ``offer`` would give, without asking ``plan_fn``. It must be exact (the session's
    comes from :meth:`DecisionEngine.preview_action`; a test checks the schedule is unchanged;
    only if ``plan_fn`` raises and the heuristic's own plans stand in can the two differ).
    """
    limits = universe or UniverseLimits()
    when = now or clock.now()
    if graph is None:
        known = issues.values() if isinstance(issues, Mapping) else issues
        graph = IssueGraph(issues, deps, pending=not_arrived(known, when))
    g: GraphView = graph
    if heuristic_ctx is not None and heuristic_ctx.controller is not None:  # the caller's, same graph
        ctx, controller = heuristic_ctx, heuristic_ctx.controller
    else:
        controller = ExplorationController(config.control, workspace)
        ctx = HeuristicContext.create(config, universe=limits, graph=g, controller=controller,
                                      action_space=action_space, speculate=speculate)
    warnings = list(g.warnings) + list(controller.warnings)
    try:
        warnings.extend(check_rules(ctx.rules, config))
    except ConfigError as exc:  # an invalid regex: that rule never matches; dispatch goes on
        warnings.append(f"{exc} (the rule never matches)")

    def heuristic_batch(batch: list[Issue]) -> dict[str, DispatchPlan]:
        return {i.id: heuristic_plan(i, ctx) for i in batch}

    fn = plan_fn or heuristic_batch

    sched = config.scheduling
    caps = [sched.max_concurrent_workcells]
    if max_concurrent is not None:
        caps.append(max_concurrent)
    if limits.max_concurrent_workcells is not None:
        caps.append(limits.max_concurrent_workcells)
    max_workcells = max(0, min(caps))
    max_tokens = sched.max_concurrent_tokens

    running = g.running()
    packer = LanePacker(max_workcells, max_tokens, running_slots=len(running),
                        running_tokens=sum(i.dk_estimated_tokens for i in running))

    skipped_early: list[tuple[str, str]] = []
    ready = g.ready_issues()
    if only_issue is not None:
        if only_issue not in g.issues:
            skipped_early.append((only_issue, "no such issue"))
            ready = []
        else:
            why = g.not_ready_reason(only_issue)
            ready = [g.issues[only_issue]] if why is None else []
            if why is not None:
                skipped_early.append((only_issue, f"not ready: {why}"))

    threshold = sched.starvation_threshold_hours
    queue = iter(order_ready(ready, g, controller, when, threshold)) if report else \
        iter_ready(ready, g, controller, when, threshold)
    considered: list[Issue] = []
    batch: list[Issue] = []
    size = 0
    rest: list[Issue] = []

    def flush() -> None:
        plans = _batch_plans(fn, heuristic_batch, batch, warnings)
        for queued in batch:
            packer.offer(queued, plans[queued.id])
        batch.clear()

    for issue in queue:
        seen = preview_fn(issue) if preview_fn is not None else None
        if seen is not None and batch:
            flush()  # the lanes must reflect every earlier issue before this one is judged
        if packer.full:
            rest.append(issue)
            break
        considered.append(issue)
        if seen is not None:
            why = packer.why_not(issue, *seen)
            if why is not None:
                packer.skipped.append((issue.id, why))
            else:
                batch.append(issue)
                flush()
            continue
        # As many plans as there were free lanes when the batch started: every plan costs a
        # strategy decision (planner input, model, clamp), and one that does not fit just
        # leaves room for the next batch.
        if not batch:
            size = max(1, max_workcells - packer.slots)
        batch.append(issue)
        if len(batch) >= size:
            flush()
    if batch:
        flush()
    rest = rest + list(queue) if report else []
    skipped = skipped_early + packer.skipped + [(i.id, NO_SLOT) for i in rest]

    # Built from typed parts above; construct skips re-validating 100k-entry lists.
    return ScheduleResult.model_construct(
        scheduled=packer.scheduled,
        skipped=skipped,
        ready=[i.id for i in considered] + [i.id for i in rest],
        blocked=g.blocked() if report else {},
        running=[i.id for i in running],
        critical_path=g.critical_path(),
        cycles=g.cycles,
        controller_modes=controller.modes(),
        max_workcells=max_workcells,
        max_tokens=max_tokens,
        slots_used=packer.slots,
        tokens_used=packer.tokens,
        warnings=warnings,
    )


__all__ = [
    "NO_SLOT",
    "LanePacker",
    "PlanFn",
    "PreviewFn",
    "ScheduleResult",
    "ScheduledIssue",
    "effective_priority",
    "iter_ready",
    "order_ready",
    "pack_lanes",
    "schedule_cycle",
    "slots_for",
]
