"""Best-of-K labels: run K valid plans for past decisions through the real kernel path and keep the best.

For a sample of decisions from the workspace's ledger, the issue snapshot archived with the
decision (its ``manifest.json``) is dispatched again with K plans — always the heuristic's
(clamped) plan, the others chosen to cover swarm, parallelism, budget and candidates (a seeded,
coverage-greedy pick among the plans the policy clamp allows, so the alternatives differ from
issue to issue). Each plan goes through :class:`~cyntra.kernel.dispatcher.Dispatcher` —
workcells, adapters, verifier, vote, archives — under the sim backend when the workspace has
one, on a task-local virtual clock set to the original decision time, so the simulated draws are
those the history saw.

Where it writes (kept apart so the main history and the similar-runs index are not polluted by
runs that no strategy decided): workcells and archives under ``.cyntra/best_of_k/``, one archive
folder per (decision, plan); labels appended to ``.cyntra/best_of_k/labels.jsonl``, one row per
decision: ``{issue_id, attempt, decision_time, decision_id, heuristic_action, target_action,
action_rewards, derived_rewards, derived_outcomes, plans}``. The winner (``target_action``) is chosen by the objective's order:
gates pass first, then lower cost, then shorter duration. ``action_rewards`` maps each EXECUTED
plan to its realised utility (the workspace's ``objective:``).

``derived_rewards`` adds plans that were not executed but whose outcome the executed ones
reveal: every candidate run is one toolchain's attempt at the issue, and a plan's outcome is a
function of those attempts (serial: in order until one passes; speculate: all at once, any
pass). Assuming a toolchain's attempt does not depend on which plan launched it except that a
budget truncates it, an attempt that finished in ``d`` minutes is the same under any budget
``≥ d`` and a timeout under any budget ``< d``. In the simulator this is exact (common random
numbers); with real agents it is one sample of the same distribution. ``derived_outcomes`` holds
each derived plan's gates result, cost and wall minutes (the ``factored`` value objective learns
from those, priced with the objective current when the dataset is built).

Which plans get a derived reward must not depend on how the executed ones turned out, or the
labels are a biased sample: a plan is derived only when every attempt it *could* make -- each of
its serial candidates, even past one that passed, or each parallel one -- was launched
unconditionally (a parallel plan's candidate, or a serial plan's first) by an executed plan with
at least its budget. (Deriving whatever the results happened to determine --
a serial plan as soon as its first candidate passed, a long budget from an attempt that happened
to finish early -- labelled easy issues' plans and left hard issues' out, and the value learned
from those labels was optimistic exactly where the oracle gives up: docs/beat-the-heuristic.md.)

``--budget`` caps the simulated (or real) spend: before an issue's plans run, their worst-case
cost (each candidate at its full budget, at the highest price per minute seen in the history)
is checked against what is left, and collection stops there, saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field

from cyntra import clock
from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import CyntraError, InputError
from cyntra.fsutil import append_jsonl, atomic_write_json
from cyntra.kernel.dispatcher import DispatchOutcome
from cyntra.kernel.plan import DispatchPlan, TraceStep
from cyntra.planner.action_space import ACTION_FIELDS, ActionSpace, PlanAction
from cyntra.state.issue import Issue
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import AppliedPlan, DecisionRecord
from cyntra.workcell import WorkcellManager
from cyntra.workspace import Workspace

LABEL_SCHEMA = "cyntra.best_of_k_label.v1"
BEST_OF_K_DIR = "best_of_k"
LABELS_FILE = "labels.jsonl"


def best_of_k_dir(ws: Workspace) -> Path:
    return ws.cyntra_dir / BEST_OF_K_DIR


def labels_path(ws: Workspace) -> Path:
    return best_of_k_dir(ws) / LABELS_FILE


class CandidateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    toolchain: str
    status: str
    passed: bool
    duration_ms: int
    cost_usd: float | None


class PlanRun(BaseModel):
    """One executed plan for one decision."""

    model_config = ConfigDict(extra="forbid")

    action: str
    heuristic: bool
    passed: bool
    status: str
    cost_usd: float
    duration_ms: int
    utility: float
    toolchains: list[str]
    candidates: list[CandidateResult]
    archives: str


class DerivedOutcome(BaseModel):
    """What a derived (not executed) plan would have given: gates result, cost and wall time."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    cost_usd: float
    wall_minutes: float


class BestOfKLabel(BaseModel):
    """One labelled decision (a row of ``labels.jsonl``; the dataset builder reads it)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = LABEL_SCHEMA
    issue_id: str
    attempt: int
    decision_time: str
    decision_id: str
    heuristic_action: str
    target_action: str
    action_rewards: dict[str, float]
    derived_rewards: dict[str, float] = Field(default_factory=dict)
    derived_outcomes: dict[str, DerivedOutcome] = Field(default_factory=dict)
    plans: list[PlanRun]


class BestOfKReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: str = "cyntra.best_of_k_report.v1"
    workspace: str
    k: int
    seed: int
    per_issue: int | None = 1  # decisions labelled per issue; None: every decision
    decisions_available: int
    decisions_labelled: int = 0
    plans_run: int = 0
    candidate_runs: int = 0
    cost_usd: float = 0.0
    budget_usd: float | None = None
    stopped_by_budget: bool = False
    stop_reason: str | None = None
    derived_rewards: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    labels: str
    wall_seconds: float = 0.0


# -- choosing plans ---------------------------------------------------------------------------


def select_plans(heuristic: PlanAction, allowed: Sequence[PlanAction], k: int, rng: random.Random) -> list[PlanAction]:
    """The heuristic's plan plus up to ``k - 1`` others that cover the action fields.

    Greedy coverage: each pick maximises Σ_fields 1/(1 + times its value was already chosen),
    with a seeded random tie-break, so every field's values are spread over the K plans and two
    issues rarely get the same alternatives.
    """
    chosen = [heuristic]
    pool = [a for a in allowed if a != heuristic]
    rng.shuffle(pool)
    counts: dict[tuple[str, Any], int] = {}

    def count(a: PlanAction) -> None:
        for f in ACTION_FIELDS:
            counts[(f, getattr(a, f))] = counts.get((f, getattr(a, f)), 0) + 1

    count(heuristic)
    while len(chosen) < k and pool:
        scored = [(sum(1.0 / (1 + counts.get((f, getattr(a, f)), 0)) for f in ACTION_FIELDS) + 1e-3 * rng.random(), i)
                  for i, a in enumerate(pool)]
        _, best = max(scored)
        pick = pool.pop(best)
        chosen.append(pick)
        count(pick)
    return chosen


def best_run(runs: Sequence[PlanRun]) -> PlanRun:
    """The objective's order: gates pass first, then cost, then duration (then the heuristic's)."""
    return min(runs, key=lambda r: (not r.passed, round(r.cost_usd, 6), r.duration_ms, not r.heuristic, r.action))


# -- counterfactual rewards of plans not executed -----------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One toolchain's revealed attempt at the issue: finished in ``minutes`` unless ``timed_out``."""

    passed: bool
    minutes: float
    cost_usd: float
    timed_out: bool
    budget_minutes: float

    def at_budget(self, budget: float) -> tuple[bool, float, float] | None:
        """(passed, minutes, cost) under ``budget``, or None when the attempt was launched with less.

        Only the launch budget decides whether the attempt tells (see the module docstring): one
        that finished early says nothing about a longer budget here, although its result would.
        """
        if budget > self.budget_minutes + 1e-9:
            return None
        price = self.cost_usd / self.minutes if self.minutes > 0 else 0.0
        if not self.timed_out and self.minutes <= budget + 1e-9:
            return self.passed, self.minutes, self.cost_usd
        return False, budget, price * budget


def attempts_from(runs: Iterable[PlanRun], budget_of: Callable[[str, int], float],
                  space: ActionSpace | None = None) -> dict[str, Attempt]:
    """Per toolchain, its unconditional attempt launched with the longest budget (the first such).

    Unconditional: every candidate of a parallel plan, and the first of a serial one -- a later
    serial candidate runs only because the ones before it failed, so its attempt is known more
    often on hard issues. Chosen by budget alone, never by result: what the attempts determine
    does not depend on outcomes (see the module docstring).
    """
    space = space or ActionSpace()
    out: dict[str, Attempt] = {}
    for run in runs:
        minutes_budget = int(run.action.split("/")[2].rstrip("m"))
        parallel = space.kind(run.action.split("/")[0]) == "parallel_compete"
        for c in run.candidates if parallel else run.candidates[:1]:
            if c.status == "error" or c.cost_usd is None:
                continue
            att = Attempt(passed=c.passed, minutes=c.duration_ms / 60000.0, cost_usd=c.cost_usd,
                          timed_out=c.status == "timeout", budget_minutes=budget_of(c.toolchain, minutes_budget))
            old = out.get(c.toolchain)
            if old is None or att.budget_minutes > old.budget_minutes:
                out[c.toolchain] = att
    return out


def derive_outcome(action: PlanAction, space: ActionSpace, serial: Sequence[str], speculate: Sequence[str],
                   attempts: dict[str, Attempt],
                   budget_of: Callable[[str, int], float]) -> tuple[bool, float, float] | None:
    """(passed, cost, wall minutes) of ``action`` from revealed attempts, or None if undetermined."""
    if space.kind(action.swarm_id) == "parallel_compete":
        tcs = list(speculate)[: action.parallelism]
        results = []
        for tc in tcs:
            att = attempts.get(tc)
            r = att.at_budget(budget_of(tc, action.max_run_minutes)) if att else None
            if r is None:
                return None
            results.append(r)
        if not results:
            return None
        return any(r[0] for r in results), sum(r[2] for r in results), max(r[1] for r in results)
    steps = []
    for tc in list(serial)[: action.max_candidates]:  # every candidate it could run, not only until a pass
        att = attempts.get(tc)
        r = att.at_budget(budget_of(tc, action.max_run_minutes)) if att else None
        if r is None:
            return None
        steps.append(r)
    cost = wall = 0.0
    for passed, minutes, spent in steps:
        cost += spent
        wall += minutes
        if passed:
            return True, cost, wall
    return (False, cost, wall) if steps else None


# -- history ----------------------------------------------------------------------------------


@dataclass
class HistoryDecision:
    record: DecisionRecord
    issue: Issue
    time: datetime


def history_decisions(ws: Workspace) -> tuple[list[HistoryDecision], dict[str, float], dict[str, int]]:
    """Ledger decisions with their archived issue snapshot, the highest price per minute seen per
    toolchain (for the budget check), and counts of decisions skipped by reason."""
    ledger = Ledger(ws.decisions_dir).read()
    snapshots: dict[str, dict[str, Any]] = {}
    prices: dict[str, float] = {}
    root = ws.archives_dir
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        mpath, ppath = d / "manifest.json", d / "proof.json"
        if not mpath.is_file():
            continue
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        dec = (manifest.get("planner") or {}).get("decision_id")
        if isinstance(dec, str) and isinstance(manifest.get("issue"), dict) and dec not in snapshots:
            snapshots[dec] = manifest["issue"]
        try:
            meta = json.loads(ppath.read_text(encoding="utf-8")).get("metadata", {})
        except (OSError, json.JSONDecodeError):
            continue
        cost, ms, tc = meta.get("cost_usd"), meta.get("duration_ms"), meta.get("toolchain")
        if isinstance(cost, int | float) and isinstance(ms, int) and ms > 0 and isinstance(tc, str):
            prices[tc] = max(prices.get(tc, 0.0), float(cost) / (ms / 60000.0))
    out: list[HistoryDecision] = []
    skipped: dict[str, int] = {}
    for rec in ledger.decisions:
        snap = snapshots.get(rec.decision_id)
        if rec.job_type != "code" or snap is None:
            key = "not_code" if rec.job_type != "code" else "no_archived_snapshot"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        try:
            issue = Issue.model_validate(snap)
        except ValueError:
            skipped["unreadable_snapshot"] = skipped.get("unreadable_snapshot", 0) + 1
            continue
        out.append(HistoryDecision(rec, issue, parse_ts(rec.timestamp)))
    out.sort(key=lambda h: (h.time, h.record.decision_id))
    return out, prices, skipped


def _existing(path: Path) -> set[tuple[str, str]]:
    done: set[tuple[str, str]] = set()
    if not path.is_file():
        return done
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done.add((str(row["issue_id"]), isoformat_z(parse_ts(str(row["decision_time"])))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"unreadable label row: {exc}", line=lineno) from None
    return done


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _heuristic_action(rec: DecisionRecord) -> PlanAction | None:
    """The heuristic's plan after the clamp, as recorded (its ``applied`` value per clamped field)."""
    h = rec.heuristic.action
    if h is None:
        return None
    values: dict[str, Any] = {f: getattr(h, f) for f in ACTION_FIELDS}
    for v in rec.heuristic.clamp:
        if v.field in values and v.mode == "enforce":
            values[v.field] = v.applied
    try:
        return PlanAction(**values)
    except ValueError:
        return h


# -- collection -------------------------------------------------------------------------------


def collect_best_of_k(
    workspace: str | Path,
    *,
    k: int,
    budget_usd: float | None = None,
    n_issues: int | None = None,
    seed: int = 0,
    until: str | None = None,
    per_issue: int | None = 1,
    echo: Callable[[str], None] | None = None,
) -> BestOfKReport:
    """Label past decisions of up to ``n_issues`` issues with K plans each.

    ``per_issue`` decisions are sampled (seeded) from each issue's history, ``None`` takes them
    all. One per issue spreads a budget over the most issues; all of them also labels every retry,
    which a one-per-issue sample under-represents (an issue that failed twice has three decisions
    and one label)."""
    from cyntra.kernel.dispatcher import Dispatcher
    from cyntra.kernel.session import KernelSession
    from cyntra.sim.backend import sim_context

    if k < 1:
        raise CyntraError("--k must be at least 1")
    t0 = time.perf_counter()
    session = KernelSession.open(workspace)
    ws = session.workspace
    out_path = labels_path(ws)
    history, prices, skipped = history_decisions(ws)
    if until is not None:
        cutoff = parse_ts(until)
        history = [h for h in history if h.time < cutoff]
    done = _existing(out_path)
    rng = random.Random(seed)
    by_issue: dict[str, list[HistoryDecision]] = {}
    for h in history:
        if (h.issue.id, isoformat_z(h.time)) in done:
            skipped["already_labelled"] = skipped.get("already_labelled", 0) + 1
            continue
        by_issue.setdefault(h.issue.id, []).append(h)
    issue_ids = sorted(by_issue)
    rng.shuffle(issue_ids)
    if n_issues is not None:
        issue_ids = issue_ids[:n_issues]
    if per_issue is not None and per_issue < 1:
        raise CyntraError("per_issue must be at least 1 (None: every decision)")
    chosen: list[HistoryDecision] = []
    for i in issue_ids:
        options = by_issue[i]
        if per_issue == 1:
            chosen.append(rng.choice(options))  # the historical draw: same labels for the same seed
        elif per_issue is None or per_issue >= len(options):
            chosen += options
        else:
            chosen += rng.sample(options, per_issue)
    picked = sorted(chosen, key=lambda h: (h.time, h.record.decision_id))
    report = BestOfKReport(workspace=str(ws.root), k=k, seed=seed, per_issue=per_issue, decisions_available=len(history),
                           budget_usd=budget_usd, skipped=dict(sorted(skipped.items())), labels=str(out_path))
    config = session.config
    space = session.space
    env = session.universe.determinism_env() if session.universe is not None else {}
    top_price = max(prices.values(), default=0.0)

    def budget_of(tc: str, minutes: int) -> float:
        try:
            hard = config.toolchain(tc).hard_timeout_minutes
        except Exception:
            hard = None
        return float(minutes) if hard is None else min(float(minutes), float(hard))

    def worst_case(plans: Sequence[PlanAction], serial: Sequence[str], spec: Sequence[str]) -> float:
        total = 0.0
        for a in plans:
            parallel = space.kind(a.swarm_id) == "parallel_compete"
            tcs = list(spec)[: a.parallelism] if parallel else list(serial)[: a.max_candidates]
            total += sum(prices.get(tc, top_price) * budget_of(tc, a.max_run_minutes) for tc in tcs)
        return total

    async def run_all() -> None:
        for n_done, h in enumerate(picked):
            issue = h.issue
            heur = _heuristic_action(h.record)
            allowed = session.clamp.allowed(issue)
            if heur is None or heur not in allowed:
                heur = session.clamp.apply(heur or allowed[0], issue).applied if allowed else None
            if heur is None:
                report.skipped["no_allowed_plan"] = report.skipped.get("no_allowed_plan", 0) + 1
                continue
            digest = int(hashlib.sha256(f"{seed}|{h.record.decision_id}".encode()).hexdigest()[:16], 16)
            plans = select_plans(heur, allowed, k, random.Random(digest))
            serial, spec = session.routed_lists(issue)
            if budget_usd is not None:
                bound = worst_case(plans, serial, spec)
                if report.cost_usd + bound > budget_usd + 1e-9:
                    report.stopped_by_budget = True
                    report.stop_reason = (
                        f"stopped before decision {h.record.decision_id} (issue {issue.id}): its {len(plans)} plans "
                        f"could cost up to ${bound:.2f}, ${budget_usd - report.cost_usd:.2f} of the "
                        f"${budget_usd:.2f} budget is left ({report.decisions_labelled} decisions labelled)")
                    return
            key = f"{_slug(issue.id)}__a{issue.dk_attempts}__{h.record.decision_id}"
            runs: list[PlanRun] = []
            for action in plans:
                parallel = space.kind(action.swarm_id) == "parallel_compete"
                plan = DispatchPlan(
                    issue_id=issue.id, action=action, toolchains=list(spec if parallel else serial),
                    speculate=parallel, temperature=None, controller_mode="disabled",
                    trace=[TraceStep(step="best-of-k", detail=f"replay of {h.record.decision_id} with {action.label()}")],
                )
                pid = hashlib.sha256(f"{h.record.decision_id}|{action.label()}".encode()).hexdigest()[:20]
                record = h.record.model_copy(update={
                    "decision_id": f"bok-{pid}", "mode": "best-of-k", "candidate": None, "agreement": None,
                    "applied": AppliedPlan(action=action, toolchains=plan.candidate_toolchains(), source="exploration"),
                    "propensity": 1.0, "exploration": {"best_of_k": True, "replay_of": h.record.decision_id},
                    "fallback_reason": None,
                })
                manager = WorkcellManager(ws.root, "directory")
                manager.root = best_of_k_dir(ws) / "workcells"
                manager.archive_root = best_of_k_dir(ws) / "archives" / key / _slug(action.label())
                dispatcher = Dispatcher(ws.root, config, manager, session.universe_id, dict(env))
                with clock.task_clock(clock.VirtualClock(h.time)) if clock.is_virtual() else _null():
                    outcome = await _safe_dispatch(dispatcher, issue, plan, record, h.time)
                wall = outcome.duration_ms / 60000.0
                utility = config.objective.utility(priority=issue.dk_priority, size=issue.dk_size,
                                                   passed=outcome.passed, cost_usd=outcome.cost_usd,
                                                   wall_minutes=wall)
                runs.append(PlanRun(
                    action=action.label(), heuristic=action == heur, passed=outcome.passed, status=outcome.status,
                    cost_usd=outcome.cost_usd, duration_ms=outcome.duration_ms, utility=round(utility, 6),
                    toolchains=plan.candidate_toolchains(),
                    candidates=[CandidateResult(toolchain=c.toolchain, status=c.status, passed=c.passed,
                                                duration_ms=c.duration_ms, cost_usd=c.cost_usd)
                                for c in outcome.candidates],
                    archives=str(manager.archive_root.relative_to(ws.root)),
                ))
                report.plans_run += 1
                report.candidate_runs += len(outcome.candidates)
                report.cost_usd = round(report.cost_usd + outcome.cost_usd, 6)
            attempts = attempts_from(runs, budget_of, space)
            executed = {r.action for r in runs}
            derived: dict[str, float] = {}
            derived_outcomes: dict[str, DerivedOutcome] = {}
            for a in allowed:
                if a.label() in executed:
                    continue
                res = derive_outcome(a, space, serial, spec, attempts, budget_of)
                if res is not None:
                    u = config.objective.utility(priority=issue.dk_priority, size=issue.dk_size, passed=res[0],
                                                 cost_usd=res[1], wall_minutes=res[2])
                    derived[a.label()] = round(u, 6)
                    derived_outcomes[a.label()] = DerivedOutcome(passed=res[0], cost_usd=round(res[1], 6),
                                                                 wall_minutes=round(res[2], 6))
            winner = best_run(runs)
            label = BestOfKLabel(
                issue_id=issue.id, attempt=issue.dk_attempts, decision_time=isoformat_z(h.time),
                decision_id=h.record.decision_id, heuristic_action=heur.label(), target_action=winner.action,
                action_rewards={r.action: r.utility for r in runs}, derived_rewards=derived,
                derived_outcomes=derived_outcomes, plans=runs,
            )
            append_jsonl(out_path, label.model_dump(mode="json"))
            report.decisions_labelled += 1
            report.derived_rewards += len(derived)
            if echo is not None and (n_done + 1) % 100 == 0:
                echo(f"  {n_done + 1}/{len(picked)} decisions, ${report.cost_usd:.2f}")

    best_of_k_dir(ws).mkdir(parents=True, exist_ok=True)
    with sim_context(session):
        asyncio.run(run_all())
    report.wall_seconds = round(time.perf_counter() - t0, 3)
    atomic_write_json(best_of_k_dir(ws) / "last_run.json", report.model_dump(mode="json"))
    return report


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def _safe_dispatch(dispatcher: Any, issue: Issue, plan: DispatchPlan, record: DecisionRecord,
                         at: datetime) -> DispatchOutcome:
    """A broken dispatch is recorded as a failed plan, as the runner does; it never stops collection."""
    try:
        result: DispatchOutcome = await dispatcher.dispatch(issue, plan, record)
        return result
    except Exception as exc:
        return DispatchOutcome(issue_id=issue.id, decision_id=record.decision_id, swarm_id=plan.action.swarm_id,
                               passed=False, status="error", started_at=at, completed_at=at, duration_ms=0,
                               failure_summary=f"dispatch error: {type(exc).__name__}: {exc}")


@click.command("best-of-k")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True)
@click.option("--k", "k", type=click.IntRange(min=1, max=20), default=4, show_default=True,
              help="Plans per decision (the heuristic's plus K-1 others).")
@click.option("--budget", "budget_usd", type=click.FloatRange(min=0), default=None,
              help="Cap on the total cost (USD) of the runs; collection stops before exceeding it.")
@click.option("--issues", "n_issues", type=click.IntRange(min=1), default=None,
              help="Label decisions of at most this many issues (default: all issues).")
@click.option("--per-issue", type=click.IntRange(min=0), default=1, show_default=True,
              help="Decisions labelled per issue, sampled from its history; 0 labels every decision "
                   "(retries included).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--until", default=None, help="Only decisions before this ISO time.")
@click.option("--json", "as_json", is_flag=True)
def best_of_k_cmd(workspace: Path, k: int, budget_usd: float | None, n_issues: int | None, per_issue: int,
                  seed: int, until: str | None, as_json: bool) -> None:
    """Execute K valid plans per past decision through the kernel and store best-of-K labels."""
    try:
        report = collect_best_of_k(workspace, k=k, budget_usd=budget_usd, n_issues=n_issues, seed=seed,
                                   until=until, per_issue=per_issue or None,
                                   echo=None if as_json else click.echo)
    except CyntraError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        click.echo(f"best-of-{k}: {report.decisions_labelled} decisions labelled ({report.plans_run} plans, "
                   f"{report.candidate_runs} candidate runs, ${report.cost_usd:.2f}, "
                   f"{report.derived_rewards} derived rewards) in {report.wall_seconds:.1f}s -> {report.labels}")
        if report.skipped:
            click.echo("skipped: " + ", ".join(f"{k_}={v}" for k_, v in report.skipped.items()))
    if report.stopped_by_budget:
        click.echo(f"budget: {report.stop_reason}", err=True)
