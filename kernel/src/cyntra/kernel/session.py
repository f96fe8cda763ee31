"""A kernel session: one workspace's config, universe, policy, clamp and decision engine, loaded once.

Every CLI verb that reads a workspace goes through :meth:`KernelSession.open`, so start-up checks
(malformed config or policy refused with file and field) happen in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cyntra import clock
from cyntra.control.controller import ExplorationController
from cyntra.errors import ConfigError
from cyntra.kernel.config import KernelConfig, load_config
from cyntra.kernel.heuristic import HeuristicContext, UniverseLimits, heuristic_plan
from cyntra.kernel.plan import DispatchPlan
from cyntra.kernel.routing import EffectiveRule, effective_rules, expand, route, rule_matches
from cyntra.kernel.scheduler import ScheduleResult, schedule_cycle
from cyntra.planner.action_space import ActionSpace
from cyntra.planner.planner_input import planner_input_hash
from cyntra.state.graph import GraphView, IssueGraph, not_arrived
from cyntra.state.issue import Issue
from cyntra.state.store import BeadsStore, IssueSet
from cyntra.strategy.base import StrategyContext, StrategyEnv
from cyntra.strategy.clamp import Clamp
from cyntra.strategy.engine import Decision, DecisionEngine
from cyntra.strategy.policy import LoadedPolicy, bundled_default_policy_path, load_policy
from cyntra.universe import LoadedUniverse, list_universes, load_universe
from cyntra.workspace import Workspace


@dataclass
class CyclePlan:
    schedule: ScheduleResult
    decisions: dict[str, Decision] = field(default_factory=dict)

    def scheduled_decisions(self) -> list[Decision]:
        return [self.decisions[s.issue_id] for s in self.schedule.scheduled if s.issue_id in self.decisions]


class PlanMemo:
    """Heuristic plans and their previews, kept across the runner's cycles.

    The runner re-plans after every completion, and the packer previews each ready issue it
    walks past, so without a memo an issue that waits for lanes is planned again every cycle
    (tens of times per dispatch once the ready backlog grows). A plan is a pure function of the
    issue, its attempt, whether it is on the critical path, and the cycle's controller
    decisions and speculation flag (the exploration draw is seeded per issue attempt): an entry
    is used only while those hold. The owner calls :meth:`forget` whenever it changes an issue
    and :meth:`clear` when it re-reads the store.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, bool, DispatchPlan, tuple[int, int] | None]] = {}
        self._context: tuple[Any, ...] | None = None

    def begin_cycle(self, context: tuple[Any, ...]) -> None:
        """Drop every entry when the cycle-wide inputs (controller decisions, flags) changed."""
        if context != self._context:
            self._entries.clear()
            self._context = context

    def get(self, issue: Issue, critical: bool) -> tuple[DispatchPlan, tuple[int, int] | None] | None:
        hit = self._entries.get(issue.id)
        if hit is None or hit[0] != issue.dk_attempts or hit[1] != critical:
            return None
        return hit[2], hit[3]

    def put(self, issue: Issue, critical: bool, plan: DispatchPlan, preview: tuple[int, int] | None) -> None:
        self._entries[issue.id] = (issue.dk_attempts, critical, plan, preview)

    def forget(self, issue_id: str) -> None:
        self._entries.pop(issue_id, None)

    def clear(self) -> None:
        self._entries.clear()
        self._context = None

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class KernelSession:
    workspace: Workspace
    config: KernelConfig
    warnings: list[str]
    universe: LoadedUniverse | None
    limits: UniverseLimits
    space: ActionSpace
    policy: LoadedPolicy
    clamp: Clamp
    store: BeadsStore
    _engine: DecisionEngine | None = None
    _index: Any = None
    _rules: list[EffectiveRule] | None = None  # compiled routing rules (config + universe overrides)
    _universe_inputs: tuple[dict[str, Any], dict[str, Any]] | None = None  # planner input's universe part

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        universe_id: str | None = None,
        strategy: str | None = None,
        checkpoint: str | None = None,
        config: KernelConfig | None = None,
    ) -> KernelSession:
        ws = Workspace.at(root)
        warnings: list[str] = []
        if config is None:
            config, warnings = load_config(ws.config_path)
        updates: dict[str, Any] = {}
        if strategy is not None:
            updates["strategy"] = strategy
        if checkpoint is not None:
            updates["planner"] = config.planner.model_copy(update={"checkpoint": checkpoint})
        if updates:
            config = config.model_copy(update=updates)

        uid = universe_id or config.universe
        universe = load_universe(ws.root, uid) if uid else None
        if universe is None and universe_id is None and config.universe is None:
            found = list_universes(ws.root)
            if len(found) == 1:  # one universe in the workspace: it is the context
                universe = load_universe(ws.root, found[0])
        if universe is not None:
            limits = UniverseLimits.from_policies(universe.universe.policies.model_dump(exclude_none=True))
            space = universe.action_space()
        else:
            limits = UniverseLimits()
            space = ActionSpace()

        if config.policy:
            policy_path = Path(config.policy)
            if not policy_path.is_absolute():
                policy_path = ws.root / policy_path
            if not policy_path.is_file():
                raise ConfigError(ws.config_path, f"policy file {policy_path} not found", field="policy")
            policy = load_policy(policy_path)
        else:
            policy = load_policy(bundled_default_policy_path())
        clamp = Clamp(
            policy.policy,
            space,
            rule_matches,
            universe_max_run_minutes=limits.max_run_minutes,
            universe_max_concurrent_workcells=limits.max_concurrent_workcells,
            max_concurrent_workcells=config.scheduling.max_concurrent_workcells,
            max_concurrent_tokens=config.scheduling.max_concurrent_tokens,
        )
        return cls(ws, config, warnings, universe, limits, space, policy, clamp, BeadsStore(ws.root))

    @property
    def universe_id(self) -> str | None:
        return self.universe.universe_id if self.universe is not None else None

    @property
    def index(self) -> Any:
        """The workspace's similar-runs index (loaded once, fed by the runner as runs archive)."""
        if self._index is None:
            from cyntra.planner.index import SimilarRunsIndex

            self._index = SimilarRunsIndex(self.workspace)
        return self._index

    def planner_input(self, issue: Issue, now: datetime, *, job_type: str = "code",
                      world_id: str | None = None, objective_id: str | None = None) -> Any:
        """planner_input.v1 for a live decision — the same builder the dataset uses."""
        from cyntra.planner.planner_input import build_planner_input, universe_inputs

        if self._universe_inputs is None:  # the universe is loaded once per session
            self._universe_inputs = universe_inputs(self.universe)
        defaults, policies = self._universe_inputs
        return build_planner_input(
            issue, now, index=self.index, universe_id=self.universe_id, job_type=job_type, world_id=world_id,
            objective_id=objective_id, universe_defaults=defaults, universe_policies=policies,
            n_similar=self.config.planner.n_similar,
        )

    @property
    def engine(self) -> DecisionEngine:
        if self._engine is None:
            env = StrategyEnv(workspace=self.workspace.root, config=self.config, space=self.space,
                              options={"universe": self.universe})
            self._engine = DecisionEngine(env=env, clamp=self.clamp, policy=self.policy)
        return self._engine

    def routed_lists(self, issue: Issue, rules: list[EffectiveRule] | None = None) -> tuple[list[str], list[str]]:
        """(serial order, speculate order) of toolchains routing gives this issue."""
        rules = rules if rules is not None else effective_rules(self.config, self.limits.routing_overrides)
        r = route(issue, rules, self.config)
        serial = list(r.candidates)
        use = list(r.rule.rule.use) if r.rule is not None else serial[:1]
        return serial, expand(self.config, use, self.config.toolchain_priority)

    def strategy_contexts(
        self, issues: list[Issue], ctx: HeuristicContext, now: datetime, *, with_input: bool = True,
        heuristic_plans: Mapping[str, DispatchPlan] | None = None,
    ) -> list[StrategyContext]:
        """One context per issue. ``with_input=False`` leaves the planner input out: in
        ``heuristic`` mode nothing decides on it, and :meth:`plan_cycle` adds its hash to the
        records it keeps (see :meth:`with_input_hash`)."""
        out = []
        for issue in issues:
            known = heuristic_plans.get(issue.id) if heuristic_plans is not None else None
            plan = known if known is not None else heuristic_plan(issue, ctx)
            serial, speculate = self.routed_lists(issue, ctx.rules)
            extras: dict[str, Any] = {"universe_id": self.universe_id}
            pi_json: dict[str, Any] | None = None
            if with_input:
                pi = self.planner_input(issue, now)
                pi_json = pi.model_dump(mode="json")
                extras.update(planner_input_hash=planner_input_hash(pi), planner_input_model=pi)
            out.append(
                StrategyContext(
                    issue=issue,
                    heuristic=plan,
                    serial_toolchains=plan.toolchains if not plan.speculate else serial,
                    speculate_toolchains=plan.toolchains if plan.speculate else speculate,
                    now=now,
                    planner_input=pi_json,
                    extras=extras,
                )
            )
        return out

    def with_input_hash(self, decision: Decision, issue: Issue, now: datetime) -> None:
        """Record the planner input's hash on a decision made without it (same builder, same
        time: the hash equals what a context built with the input would have carried)."""
        if decision.record.planner_input_hash is None:
            h = planner_input_hash(self.planner_input(issue, now))
            decision.record = decision.record.model_copy(update={"planner_input_hash": h})

    def plan_cycle(
        self,
        issue_set: IssueSet | None = None,
        *,
        issues: Mapping[str, Issue] | None = None,
        deps: list[tuple[str, str, str]] | None = None,
        speculate: bool = False,
        max_concurrent: int | None = None,
        only_issue: str | None = None,
        now: datetime | None = None,
        report: bool = True,
        memo: PlanMemo | None = None,
        graph: GraphView | None = None,
    ) -> CyclePlan:
        """Schedule one cycle; every plan goes through the decision engine and the clamp.

        Pass an ``IssueSet`` (CLI) or ``issues``/``deps`` (the runner's in-memory active set).
        ``report=False`` (the runner) skips the report-only parts of :func:`schedule_cycle`.
        ``memo`` (the runner's) keeps previews across cycles (see :class:`PlanMemo`); ``graph``
        (the runner's, kept across cycles) stands for ``issues``/``deps``.
        """
        at = now or clock.now()
        if issue_set is not None:
            issues = issue_set.issues
            deps = [(d.from_, d.to, d.type) for d in issue_set.deps]
        dep_list = deps or []
        if graph is None:
            assert issues is not None
            graph = IssueGraph(issues, dep_list, pending=not_arrived(issues.values(), at))
        controller = ExplorationController(self.config.control, self.workspace.root)
        if self._rules is None:
            self._rules = effective_rules(self.config, self.limits.routing_overrides)
        hctx = HeuristicContext.create(self.config, universe=self.limits, graph=graph, controller=controller,
                                       action_space=self.space, speculate=speculate, rules=self._rules)
        decisions: dict[str, Decision] = {}

        # In heuristic mode the applied plan never depends on the planner input, so it is built
        # only for the decisions this cycle keeps, not for every issue the packer looks at.
        lazy_input = self.engine.mode == "heuristic"
        previewable = self.engine.mode in ("heuristic", "shadow")  # see DecisionEngine.preview_action

        previewed: dict[str, DispatchPlan] = {}  # heuristic plans the preview already made

        decided: dict[str, Issue] = {}

        def plan_fn(batch: list[Issue]) -> dict[str, DispatchPlan]:
            decided.update((i.id, i) for i in batch)
            ctxs = self.strategy_contexts(batch, hctx, at, with_input=not lazy_input, heuristic_plans=previewed)
            out: dict[str, DispatchPlan] = {}
            for d in self.engine.decide(ctxs):
                decisions[d.record.issue_id] = d
                out[d.record.issue_id] = d.plan
            return out

        critical = hctx.critical
        if memo is not None:
            memo.begin_cycle((speculate, tuple(controller.decide_domain(d) for d in controller.modes())))

        def preview_fn(issue: Issue) -> tuple[int, int] | None:
            on_path = issue.id in critical
            if memo is not None:
                hit = memo.get(issue, on_path)
                if hit is not None:
                    previewed[issue.id] = hit[0]
                    return hit[1]
            h = previewed[issue.id] = heuristic_plan(issue, hctx)
            action = self.engine.preview_action(issue, h.action, at)
            seen = None
            if action is not None:
                par = action.parallelism
                seen = (par if self.space.kind(action.swarm_id) == "parallel_compete" else 1), par
            if memo is not None:
                memo.put(issue, on_path, h, seen)
            return seen

        schedule = schedule_cycle(
            issues or {}, dep_list, self.config, self.workspace.root,
            universe=self.limits, speculate=speculate, max_concurrent=max_concurrent,
            only_issue=only_issue, plan_fn=plan_fn, now=at, graph=graph, action_space=self.space,
            # The runner's cycle only: a report (dry-run, `sim oracle`) shows a decision for every
            # issue it considers. Modes whose applied plan the heuristic fixes (heuristic, shadow)
            # only: in shadow an issue whose plan fits is then decided alone, not in a batch of
            # candidate calls, but a waiting issue is no longer decided again every cycle.
            report=report, preview_fn=preview_fn if not report and previewable else None,
            heuristic_ctx=hctx,
        )
        if lazy_input:
            keep = decisions if report else {s.issue_id: decisions[s.issue_id] for s in schedule.scheduled}
            for iid, d in keep.items():
                self.with_input_hash(d, decided[iid], at)
        return CyclePlan(schedule=schedule, decisions=decisions)
