"""The runner: the kernel's main loop — schedule, decide, dispatch, record, repeat.

One loop serves real and simulated time. Dispatches run as asyncio tasks; a finished dispatch is
applied (store update, outcome record, escalation) in order of its completion time. Under the
real clock that is simply the order they finish; under a virtual clock (the simulator) the loop
advances time to the next completion or the next issue arrival, so lanes, ordering and
concurrency limits hold in virtual time while months of history run in seconds.

Issue state lives in memory for the run and is written back through the store (atomic, locked,
re-read inside the lock so edits by others survive). Real runs write every change at once; a
simulated run writes in batches (``flush_every`` changes, or half the issue count when larger:
each write rewrites the whole file, so its cost per change stays flat as the workspace grows) —
the file is always a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, Field
from rich.console import Console

from cyntra import clock
from cyntra.clock import isoformat_z
from cyntra.errors import CyntraError
from cyntra.gcpause import frozen_heap
from cyntra.kernel.dispatcher import ArchivedRun, Dispatcher, DispatchOutcome
from cyntra.kernel.session import KernelSession, PlanMemo
from cyntra.log import configure as configure_logging
from cyntra.log import get_logger
from cyntra.state.events import EventLog
from cyntra.state.issue import Issue
from cyntra.state.live_graph import LiveGraph
from cyntra.state.store import IssueSet
from cyntra.strategy.engine import Decision
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import OutcomeRecord
from cyntra.workcell import WorkcellManager

TERMINAL = frozenset({"done", "escalated", "closed"})
log = get_logger("cyntra.kernel")


class RunReport(BaseModel):
    """What one ``cyntra run`` did (``--json`` prints this)."""

    schema_version: str = "cyntra.run_report.v1"
    strategy: str
    cycles: int = 0
    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    escalated: int = 0
    candidates: int = 0
    cost_usd: float = 0.0
    recovered: list[str] = Field(default_factory=list)
    fallbacks: int = 0
    stopped_by: str | None = None  # SIGINT / SIGTERM: no new dispatches, the running ones finished
    started_at: str
    finished_at: str
    wall_seconds: float = 0.0
    outcomes: list[dict[str, Any]] = Field(default_factory=list)

    def print(self, console: Console) -> None:
        console.print(
            f"strategy [bold]{self.strategy}[/bold]: {self.dispatched} dispatched in {self.cycles} cycles — "
            f"{self.succeeded} passed, {self.failed} failed, {self.escalated} escalated; "
            f"{self.candidates} candidate runs, ${self.cost_usd:.2f}; {self.wall_seconds:.1f}s wall"
        )
        if self.recovered:
            console.print(f"recovered orphaned runs: {', '.join(self.recovered)}")
        if self.stopped_by:
            console.print(f"stopped by {self.stopped_by} (running dispatches were finished)")
        for o in self.outcomes[-20:]:
            console.print(f"  {o['issue_id']:>8}  {o['swarm_id']:<15} {o['status']:<8} "
                          f"{','.join(o['toolchains'])}  ${o['cost_usd']:.2f}")


class KernelBusy(CyntraError):
    pass


@contextlib.contextmanager
def kernel_lock(path: Path) -> Iterator[None]:
    """One kernel loop per workspace: a second `cyntra run` fails fast instead of double-dispatching."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KernelBusy(f"another kernel is running in this workspace ({path} is locked)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class _Op:
    kind: str  # "update" | "escalate"
    issue_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


class IssueState:
    """The run's in-memory view of the issues, written back through the store."""

    def __init__(self, session: KernelSession, *, flush_every: int) -> None:
        self.session = session
        self.store = session.store
        self.flush_every = flush_every
        self.ops: list[_Op] = []
        self.memo = PlanMemo()  # plans of waiting issues, kept across cycles
        self._load()

    def _load(self) -> None:
        """(Re)read the store: issues, the arrival order, and the graph of the active issues."""
        self.set: IssueSet = self.store.load()
        # Arrival order for simulated time (an issue created in the future has not arrived yet).
        self.arrivals = sorted(
            (i for i in self.set.issues.values() if i.status not in TERMINAL),
            key=lambda i: (i.created or datetime.min.replace(tzinfo=clock.now().tzinfo), i.id),
        )
        self._arrived = 0
        self.active: dict[str, Issue] = {}
        # What each cycle schedules from: the active issues and every issue their deps name.
        self.graph = LiveGraph(self.set.issues, [(d.from_, d.to, d.type) for d in self.set.deps], self.active)
        self.memo.clear()

    def reload(self) -> None:
        """Pick up edits others made (``--watch``): write ours first, then read everything again."""
        self.flush()
        self._load()

    def admit(self, now: datetime) -> None:
        while self._arrived < len(self.arrivals):
            issue = self.arrivals[self._arrived]
            if issue.created is not None and issue.created > now:
                break
            self._arrived += 1
            if issue.status not in TERMINAL:
                self.active[issue.id] = issue
                self.graph.changed(issue.id)

    def next_arrival(self) -> datetime | None:
        if self._arrived < len(self.arrivals):
            return self.arrivals[self._arrived].created
        return None

    def update(self, issue_id: str, **fields: Any) -> None:
        issue = self.set.issues[issue_id]
        self.memo.forget(issue_id)
        for k, v in fields.items():
            setattr(issue, k, v)
        issue.updated = clock.now()
        if issue.status in TERMINAL:
            self.active.pop(issue_id, None)
        self.graph.changed(issue_id)
        self.ops.append(_Op("update", issue_id, {**fields, "updated": issue.updated}))
        self._maybe_flush()

    def escalate(self, issue_id: str, summary: str) -> None:
        issue = self.set.issues[issue_id]
        self.memo.forget(issue_id)
        issue.status = "escalated"
        self.active.pop(issue_id, None)
        self.graph.changed(issue_id)
        self.ops.append(_Op("escalate", issue_id, summary=summary))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        batch = self.flush_every if self.flush_every <= 1 else max(self.flush_every, len(self.set.issues) // 2)
        if len(self.ops) >= batch:
            self.flush()

    def flush(self) -> list[str]:
        """Write pending changes; returns ids of escalation issues created."""
        if not self.ops:
            return []
        ops, self.ops = self.ops, []
        created: list[str] = []

        def apply(s: IssueSet) -> None:
            for op in ops:
                if op.issue_id not in s.issues:
                    continue
                if op.kind == "update":
                    for k, v in op.fields.items():
                        setattr(s.issues[op.issue_id], k, v)
                else:
                    created.append(_escalate_in(s, op.issue_id, op.summary))

        self.store.update(apply)
        return created


def _escalate_in(s: IssueSet, issue_id: str, summary: str) -> str:
    """Escalate inside an open store transaction (same shape as BeadsStore.escalate)."""
    from cyntra.state.store import escalation_fields

    original = s.issues[issue_id]
    original.status = "escalated"
    original.updated = clock.now()
    new = s.add(escalation_fields(original, summary))
    return new.id


class Kernel:
    def __init__(self, session: KernelSession, *, progress: bool = False,
                 on_dispatched: Callable[[DispatchOutcome], None] | None = None) -> None:
        self.session = session
        self.ws = session.workspace
        self.config = session.config
        virtual = clock.is_virtual()
        self.virtual = virtual
        self.state = IssueState(session, flush_every=500 if virtual else 1)
        backend = self.config.workcells.backend
        self.manager = WorkcellManager(self.ws.root, backend)
        self.events = EventLog(self.ws.root)
        self.ledger = Ledger(self.ws.decisions_dir)
        self.on_dispatched = on_dispatched
        self.progress = progress
        env = session.universe.determinism_env() if session.universe is not None else {}
        self.dispatcher = Dispatcher(self.ws.root, self.config, self.manager, session.universe_id, dict(env),
                                     on_archived=_index_hook(session))
        self._seq = 0

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Orphans of a killed kernel: archive what exists, make the issues ready again."""
        recovered: list[str] = []
        running = [i for i in self.state.set.issues.values() if i.status == "running"]
        stale = self.manager.list_active()
        for wc in stale:
            with contextlib.suppress(Exception):
                self.manager.archive(wc, loser=False)
            with contextlib.suppress(Exception):
                self.manager.cleanup(wc)
            self.events.emit("workcell.recovered", issue_id=wc.issue_id, workcell_id=wc.id)
        for path in self.manager.list_unfinished():  # killed while creating it: nothing to archive
            with contextlib.suppress(Exception):
                self.manager.remove_unfinished(path)
            self.events.emit("workcell.removed_unfinished", workcell_id=path.name)
        with contextlib.suppress(Exception):
            self.manager.prune()
        for issue in running:
            self.state.update(issue.id, status="open")
            self.events.emit("issue.recovered", issue_id=issue.id, reason="kernel stopped mid-run")
            recovered.append(issue.id)
        self.state.flush()
        return recovered

    # -- the loop ------------------------------------------------------------------------

    async def run(self, *, once: bool = False, until_idle: bool = False, watch: bool = False,
                  issue_id: str | None = None, max_concurrent: int | None = None, speculate: bool = False,
                  poll_seconds: float = 5.0, max_dispatches: int | None = None,
                  until: datetime | None = None) -> RunReport:
        t0 = time.perf_counter()
        report = RunReport(strategy=self.session.engine.mode, started_at=clock.now_iso(), finished_at="")
        report.recovered = self.recover()
        tasks: dict[asyncio.Task[DispatchOutcome], Decision] = {}
        finished: list[tuple[datetime, int, DispatchOutcome, Decision]] = []
        bar = _Progress(self.progress, total=len(self.state.arrivals) if until_idle else None)
        first = True
        stop = asyncio.Event()
        handled = _stop_on_signals(stop, report, lambda: len(tasks) + len(finished))
        try:
            while True:
                now = clock.now()
                self.state.admit(now)
                in_flight = len(tasks) + len(finished)
                can_start = (not stop.is_set() and not (once and not first)
                             and not (max_dispatches is not None and report.dispatched >= max_dispatches)
                             and not (until is not None and now >= until))
                if can_start:
                    started = self._start_cycle(tasks, issue_id, max_concurrent, speculate, in_flight, report)
                    report.cycles += 1
                    first = False
                    if issue_id is not None and started == 0 and not tasks and not finished:
                        break
                if tasks:
                    if self.virtual:
                        done, _ = await asyncio.wait(tasks)
                    else:
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    # In start order, not the done set's (hash) order: the sequence number breaks
                    # ties between dispatches that complete at the same instant (in virtual time,
                    # two timeouts started together), so it must not depend on memory addresses.
                    for t in [t for t in tasks if t in done]:
                        decision = tasks.pop(t)
                        outcome = t.result()
                        self._seq += 1
                        heapq.heappush(finished, (outcome.completed_at, self._seq, outcome, decision))
                if finished:
                    when = finished[0][0]
                    arrival = self.state.next_arrival()
                    if (self.virtual and arrival is not None and arrival < when and can_start
                            and self._free_lanes(len(finished), max_concurrent) > 0):
                        clock_advance(arrival)
                        continue
                    _, _, outcome, decision = heapq.heappop(finished)
                    if self.virtual:
                        clock_advance(outcome.completed_at)
                    self._apply(outcome, decision, report)
                    bar.advance(report)
                    continue
                # Nothing running.
                if once or (issue_id is not None):
                    break
                arrival = self.state.next_arrival()
                if until_idle:
                    if self.virtual and arrival is not None and can_start:
                        clock_advance(arrival)
                        continue
                    break
                if watch and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_seconds)
                    if stop.is_set():
                        break
                    self.state.reload()
                    continue
                break
        finally:
            _restore_signals(handled)
            self.state.flush()
            bar.close()
        report.finished_at = clock.now_iso()
        report.wall_seconds = round(time.perf_counter() - t0, 3)
        return report

    def _free_lanes(self, in_flight: int, max_concurrent: int | None) -> int:
        caps = [self.config.scheduling.max_concurrent_workcells]
        if max_concurrent is not None:
            caps.append(max_concurrent)
        if self.session.limits.max_concurrent_workcells is not None:
            caps.append(self.session.limits.max_concurrent_workcells)
        return min(caps) - in_flight

    def _start_cycle(self, tasks: dict[asyncio.Task[DispatchOutcome], Decision], issue_id: str | None,
                     max_concurrent: int | None, speculate: bool, in_flight: int, report: RunReport) -> int:
        graph = self.state.graph.view()
        if not graph.ready_issues():
            return 0
        cycle = self.session.plan_cycle(graph=graph, speculate=speculate,
                                        max_concurrent=max_concurrent, only_issue=issue_id, report=False,
                                        memo=self.state.memo)
        started = 0
        for item in cycle.schedule.scheduled:
            decision = cycle.decisions[item.issue_id]
            issue = self.state.set.issues[item.issue_id]
            self._record_decision(decision)
            if decision.record.fallback_reason:
                report.fallbacks += 1
            self.state.update(issue.id, status="running")
            self.events.emit("dispatch.started", issue_id=issue.id, decision_id=decision.record.decision_id,
                             plan=decision.plan.action.label(), toolchains=decision.plan.candidate_toolchains())
            snapshot = issue.model_copy(update={"status": "running"})
            task = asyncio.ensure_future(self._dispatch(snapshot, decision))
            tasks[task] = decision
            report.dispatched += 1
            started += 1
        return started

    async def _dispatch(self, issue: Issue, decision: Decision) -> DispatchOutcome:
        rec = decision.record
        started = clock.now()
        with structlog.contextvars.bound_contextvars(decision_id=rec.decision_id, issue_id=rec.issue_id):
            try:
                if self.virtual:
                    with clock.task_clock(clock.VirtualClock(started)):
                        return await self.dispatcher.dispatch(issue, decision.plan, rec)
                return await self.dispatcher.dispatch(issue, decision.plan, rec)
            except Exception as exc:  # e.g. an unsafe issue id, a broken repo: record, never crash
                log.error("dispatch.error", error=f"{type(exc).__name__}: {exc}")
                return DispatchOutcome(
                    issue_id=issue.id, decision_id=rec.decision_id, swarm_id=decision.plan.action.swarm_id,
                    passed=False, status="error", started_at=started, completed_at=started, duration_ms=0,
                    failure_summary=f"dispatch error: {exc}",
                )

    def _record_decision(self, decision: Decision) -> None:
        rec = decision.record
        self.ledger.append(rec)
        with structlog.contextvars.bound_contextvars(decision_id=rec.decision_id, issue_id=rec.issue_id):
            log.info(
                "strategy.decision",
                mode=rec.mode,
                applied=rec.applied.action.label(),
                source=rec.applied.source,
                heuristic=rec.heuristic.action.label() if rec.heuristic.action else None,
                candidate=rec.candidate.action.label() if rec.candidate and rec.candidate.action else None,
                candidate_status=rec.candidate.status if rec.candidate else None,
                agreement=rec.agreement.get("all") if rec.agreement else None,
                propensity=rec.propensity,
                fallback_reason=rec.fallback_reason,
                clamp=[f"{v.rule_id}:{v.field}" for v in rec.clamp],
            )

    def _apply(self, outcome: DispatchOutcome, decision: Decision, report: RunReport) -> None:
        issue = self.state.set.issues[outcome.issue_id]
        cfg = self.config
        wall_minutes = outcome.duration_ms / 60000.0
        utility = cfg.objective.utility(priority=issue.dk_priority, size=issue.dk_size, passed=outcome.passed,
                                        cost_usd=outcome.cost_usd, wall_minutes=wall_minutes)
        self.ledger.append(OutcomeRecord(
            decision_id=outcome.decision_id, issue_id=outcome.issue_id, timestamp=isoformat_z(outcome.completed_at),
            status=outcome.status, gates_passed=outcome.passed, started_at=isoformat_z(outcome.started_at),
            completed_at=isoformat_z(outcome.completed_at), duration_ms=outcome.duration_ms,
            cost_usd=outcome.cost_usd, tokens_used=outcome.tokens_used, candidates_run=len(outcome.candidates),
            winner_toolchain=outcome.winner_toolchain, utility=round(utility, 6),
        ))
        report.candidates += len(outcome.candidates)
        report.cost_usd = round(report.cost_usd + outcome.cost_usd, 6)
        if outcome.passed:
            report.succeeded += 1
            self.state.update(issue.id, status="done")
            self.events.emit("dispatch.completed", issue_id=issue.id, decision_id=outcome.decision_id,
                             status="success", winner=outcome.winner_toolchain, merged=outcome.merged_commit)
        else:
            report.failed += 1
            attempts = issue.dk_attempts + 1
            if attempts >= issue.dk_max_attempts:
                self.state.update(issue.id, dk_attempts=attempts)
                self.state.escalate(issue.id, f"Gate failures: {outcome.failure_summary}")
                report.escalated += 1
                self.events.emit("issue.escalated", issue_id=issue.id, attempts=attempts,
                                 reason=outcome.failure_summary)
            else:
                self.state.update(issue.id, dk_attempts=attempts, status="open")
            self.events.emit("dispatch.completed", issue_id=issue.id, decision_id=outcome.decision_id,
                             status=outcome.status, reason=outcome.failure_summary)
        if len(report.outcomes) < 1000:
            report.outcomes.append({
                "issue_id": outcome.issue_id, "decision_id": outcome.decision_id, "swarm_id": outcome.swarm_id,
                "status": outcome.status, "passed": outcome.passed, "cost_usd": outcome.cost_usd,
                "toolchains": [c.toolchain for c in outcome.candidates], "utility": round(utility, 4),
            })
        if self.on_dispatched is not None:
            self.on_dispatched(outcome)


def _stop_on_signals(stop: asyncio.Event, report: RunReport, in_flight: Callable[[], int]) -> list[int]:
    """SIGINT / SIGTERM stop the loop gracefully: no new dispatch starts, the running ones finish
    and are recorded, then ``run`` returns its report. A second signal takes the default path
    (stop at once; the next start recovers the orphans). Returns the signals handled (none off
    the main thread, where asyncio cannot install handlers)."""
    import signal

    loop = asyncio.get_running_loop()
    sigs = [signal.SIGINT, signal.SIGTERM]

    def on_signal(sig: signal.Signals) -> None:
        report.stopped_by = sig.name
        stop.set()
        log.info("kernel.stopping", signal=sig.name, in_flight=in_flight())
        _restore_signals([int(s) for s in sigs])

    handled: list[int] = []
    for sig in sigs:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no signals here
            break
        handled.append(int(sig))
    return handled


def _restore_signals(sigs: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in sigs:
        with contextlib.suppress(RuntimeError, ValueError):
            loop.remove_signal_handler(sig)


def clock_advance(when: datetime) -> None:
    c = clock.get_clock()
    if isinstance(c, clock.VirtualClock):
        c.advance_to(when)


class _Progress:
    """A rich progress bar for long simulated runs (silent otherwise)."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self._p: Any = None
        if enabled and total and total > 50:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(TextColumn("dispatching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               transient=True)
            self._task = self._p.add_task("run", total=total)
            self._p.start()

    def advance(self, report: RunReport) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=report.succeeded + report.escalated)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def run_kernel(session: KernelSession, *, once: bool = True, watch: bool = False, until_idle: bool = False,
               issue_id: str | None = None, max_concurrent: int | None = None, speculate: bool = False,
               progress: bool = False, until: datetime | None = None, poll_seconds: float = 5.0) -> RunReport:
    """Entry point for `cyntra run` (real toolchains, or the sim backend when configured)."""
    ws = session.workspace
    configure_logging(ws.logs_dir / "kernel.jsonl")
    with kernel_lock(ws.cyntra_dir / "kernel.lock"):
        from cyntra.sim.backend import sim_context  # the sim installs its adapter + virtual clock

        with sim_context(session) as profile, frozen_heap(profile is not None):
            kernel = Kernel(session, progress=progress)
            try:
                return asyncio.run(kernel.run(once=once, until_idle=until_idle, watch=watch, issue_id=issue_id,
                                              max_concurrent=max_concurrent, speculate=speculate, until=until,
                                              poll_seconds=poll_seconds))
            finally:
                session.engine.close()


def _index_hook(session: KernelSession) -> Callable[[ArchivedRun], None]:
    """Feed each archived run into the similar-runs index, from the manifest, proof, archive
    meta and issue the dispatcher has just archived (no read-back of the archive)."""
    from cyntra.planner.run_summary import summarize_run

    index = session.index

    def hook(run: ArchivedRun) -> None:
        try:
            index.add(summarize_run(run.path, run.manifest, run.proof, meta=run.meta, issue=run.issue))
        except Exception as exc:  # indexing must never stop dispatch
            log.warning("index.add_failed", archive=str(run.path), error=str(exc))

    return hook
