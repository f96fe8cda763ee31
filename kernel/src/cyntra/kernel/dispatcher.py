"""The dispatcher: carries out one applied plan for one issue.

``speculate_vote`` runs ``parallelism`` toolchains at once in separate workcells and votes among
the candidates whose gates all passed; ``serial_handoff`` runs one toolchain and, while gates
fail and candidates remain, hands off to the next. Every candidate — winners and losers — is
archived with its manifest, proof, telemetry and rollout: they are tomorrow's training data.

Timestamps: each candidate runs under the kernel clock. In simulation every dispatch gets a
task-local virtual clock starting at its start time, so concurrent runs in virtual time each
stamp their own artifacts (see :func:`cyntra.clock.task_clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from cyntra import clock
from cyntra.adapters import AdapterResult, RunRequest, Sampling, TelemetryWriter, build_adapter
from cyntra.adapters.telemetry import TELEMETRY_FILE
from cyntra.control.controller import issue_domain
from cyntra.kernel.artifacts import (
    ControlSpec,
    Manifest,
    PatchStats,
    PlanSpec,
    Proof,
    ProofMetadata,
    ProofVote,
    SamplingSpec,
    SpeculateSpec,
    Verification,
    derive_fail_codes,
    write_manifest,
    write_proof,
)
from cyntra.kernel.plan import DispatchPlan
from cyntra.kernel.prompt import render_prompt
from cyntra.kernel.verifier import gate_spec, resolve_gates, run_gates
from cyntra.kernel.vote import vote_proofs
from cyntra.rollouts.builder import build_rollout_model, write_rollout
from cyntra.state.issue import Issue
from cyntra.strategy.record import DecisionRecord
from cyntra.workcell import Archived, Workcell, WorkcellManager
from cyntra.workcell.manager import MergeConflictError, WorkcellError


@dataclass
class CandidateRun:
    index: int
    toolchain: str
    workcell: Workcell
    manifest: Manifest
    result: AdapterResult
    verification: Verification
    proof: Proof
    archive: Archived | None = None

    @property
    def archive_path(self) -> Path | None:
        return self.archive.path if self.archive is not None else None

    @property
    def passed(self) -> bool:
        return self.proof.status in ("success", "partial") and self.verification.all_passed


class CandidateSummary(BaseModel):
    index: int
    toolchain: str
    workcell_id: str
    status: str
    passed: bool
    duration_ms: int
    cost_usd: float | None
    tokens_used: int | None
    winner: bool = False
    archive: str | None = None


class DispatchOutcome(BaseModel):
    """How one dispatch of one issue ended (the runner turns it into store updates and a reward)."""

    issue_id: str
    decision_id: str
    swarm_id: str
    passed: bool
    status: str  # success | failed | timeout | error
    winner_index: int | None = None
    winner_toolchain: str | None = None
    started_at: datetime
    completed_at: datetime
    duration_ms: int
    cost_usd: float = 0.0
    tokens_used: int = 0
    candidates: list[CandidateSummary] = Field(default_factory=list)
    merged_commit: str | None = None
    failure_summary: str = ""
    vote_reason: str | None = None


@dataclass(frozen=True)
class ArchivedRun:
    """One candidate run just archived: what the similar-runs index is fed (no read-back)."""

    path: Path
    meta: dict[str, Any]  # its archive_meta.json
    manifest: Manifest
    proof: Proof
    issue: Issue  # the issue the manifest snapshots


@dataclass
class Dispatcher:
    """Runs plans. Stateless between dispatches apart from its collaborators."""

    workspace: Path
    config: Any  # KernelConfig
    manager: WorkcellManager
    universe_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    on_archived: Callable[[ArchivedRun], None] | None = None  # the similar-runs index hook

    async def dispatch(self, issue: Issue, plan: DispatchPlan, record: DecisionRecord) -> DispatchOutcome:
        started = clock.now()
        snapshot = issue.model_dump(mode="json", exclude_none=True)
        if plan.speculate:
            runs = await self._speculate(issue, snapshot, plan, record)
            proofs = [r.proof for r in runs]
            result = vote_proofs(proofs, self.config.speculation.vote_threshold)
            winner = result.winner_index
            for r in runs:
                score = result.score_of(r.index)
                r.proof = r.proof.model_copy(update={"vote": ProofVote(
                    candidate_index=r.index, score=score.score if score else None,
                    winner=r.index == winner, reason=result.reason)})
                write_proof(r.workcell.path / "proof.json", r.proof)
            vote_reason: str | None = result.reason
        else:
            runs = await self._serial(issue, snapshot, plan, record)
            passing = [r for r in runs if r.passed]
            winner = passing[0].index if passing else None
            vote_reason = None

        merged: str | None = None
        failure = ""
        winner_run = next((r for r in runs if r.index == winner), None)
        if winner_run is not None and issue.dk_apply_patch and winner_run.workcell.backend == "git":
            try:
                merged = await asyncio.to_thread(self.manager.merge, winner_run.workcell)
            except (MergeConflictError, WorkcellError) as exc:
                failure = f"merge failed: {exc}"
                winner_run = None
                winner = None
        if winner_run is None and not failure:
            failure = "; ".join(
                f"{r.toolchain}: {r.proof.status}"
                + (f" (gates failed: {', '.join(r.verification.blocking_failures)})"
                   if r.verification.blocking_failures else "")
                for r in runs
            ) or "no candidate ran"

        # Archive every candidate (losers marked), then remove the workcells.
        for r in runs:
            self._write_rollout(r)
            loser = plan.speculate and r.index != winner
            r.archive = await self._archive(r.workcell, loser)
            if self.on_archived is not None:
                self.on_archived(ArchivedRun(r.archive.path, r.archive.meta, r.manifest, r.proof, issue))

        completed = max((_parse(r.proof.metadata.completed_at) for r in runs), default=started)
        if not plan.speculate and runs:
            completed = _parse(runs[-1].proof.metadata.completed_at)
        status = "success" if winner_run is not None else _worst_status(runs)
        return DispatchOutcome(
            issue_id=issue.id,
            decision_id=record.decision_id,
            swarm_id=plan.action.swarm_id,
            passed=winner_run is not None,
            status=status,
            winner_index=winner,
            winner_toolchain=winner_run.toolchain if winner_run else None,
            started_at=started,
            completed_at=completed,
            duration_ms=max(0, int((completed - started).total_seconds() * 1000)),
            cost_usd=round(sum(r.proof.metadata.cost_usd or 0.0 for r in runs), 6),
            tokens_used=sum(r.proof.metadata.tokens_used or 0 for r in runs),
            candidates=[
                CandidateSummary(
                    index=r.index, toolchain=r.toolchain, workcell_id=r.workcell.id, status=r.proof.status,
                    passed=r.passed, duration_ms=r.proof.metadata.duration_ms,
                    cost_usd=r.proof.metadata.cost_usd, tokens_used=r.proof.metadata.tokens_used,
                    winner=r.index == winner, archive=str(r.archive_path) if r.archive_path else None,
                )
                for r in runs
            ],
            merged_commit=merged,
            failure_summary=failure,
            vote_reason=vote_reason,
        )

    # -- swarms -------------------------------------------------------------------------

    async def _speculate(self, issue: Issue, snapshot: dict[str, Any], plan: DispatchPlan,
                         record: DecisionRecord) -> list[CandidateRun]:
        toolchains = plan.candidate_toolchains()
        start = clock.now()

        async def one(i: int, tc: str) -> CandidateRun:
            # Each parallel candidate starts at the same (virtual) instant on its own timeline.
            with _fork_clock(start):
                return await self._run_candidate(issue, snapshot, plan, record, tc, i, f"spec{i + 1}")

        return list(await asyncio.gather(*(one(i, tc) for i, tc in enumerate(toolchains))))

    async def _serial(self, issue: Issue, snapshot: dict[str, Any], plan: DispatchPlan,
                      record: DecisionRecord) -> list[CandidateRun]:
        runs: list[CandidateRun] = []
        for i, tc in enumerate(plan.candidate_toolchains()):
            run = await self._run_candidate(issue, snapshot, plan, record, tc, i, f"h{i + 1}" if i else None)
            runs.append(run)
            if run.passed:
                break
        return runs

    # -- one candidate ------------------------------------------------------------------

    async def _run_candidate(self, issue: Issue, snapshot: dict[str, Any], plan: DispatchPlan,
                             record: DecisionRecord, toolchain: str, index: int, tag: str | None) -> CandidateRun:
        cfg = self.config
        tc_cfg = cfg.toolchain(toolchain)
        wc = await self._create_workcell(issue.id, tag)
        gates_all = gate_spec(issue, cfg.gates)
        gates = resolve_gates(issue, cfg.gates)
        sampling = _sampling(issue, plan)
        manifest = Manifest(
            workcell_id=wc.id,
            issue=snapshot,
            job_type="code",
            toolchain=toolchain,
            toolchain_config=dict(tc_cfg.config),
            model=tc_cfg.default_model,
            quality_gates=gates_all,
            speculate=SpeculateSpec(enabled=plan.speculate, parallelism=plan.action.parallelism if plan.speculate else None,
                                    tag=tag),
            control=ControlSpec(mode=_control_mode(plan.controller_mode), domain=issue_domain(issue),
                                temperature=plan.temperature),
            sampling=SamplingSpec(temperature=sampling.temperature, top_p=sampling.top_p),
            plan=PlanSpec(swarm_id=plan.action.swarm_id, parallelism=plan.action.parallelism,
                          max_run_minutes=plan.action.max_run_minutes, max_candidates=plan.action.max_candidates,
                          toolchains=plan.candidate_toolchains(), candidate_index=index),
            planner=archived_record(record),
            universe_id=self.universe_id,
            created_at=clock.now(),
            branch=wc.branch,
            base_commit=wc.base_commit,
            workspace_backend=wc.backend,
        )
        write_manifest(wc.path / "manifest.json", manifest)
        telemetry = TelemetryWriter(wc.path / TELEMETRY_FILE, issue_id=issue.id, workcell_id=wc.id,
                                    toolchain=toolchain)
        adapter = build_adapter(toolchain, tc_cfg)
        request = RunRequest(
            workcell_path=wc.path,
            logs_dir=wc.logs_dir,
            prompt=render_prompt(issue, gates),
            model=tc_cfg.default_model,
            sampling=sampling,
            timeout_seconds=_budget_seconds(plan.action.max_run_minutes, tc_cfg.hard_timeout_minutes),
            env=dict(self.env),
            issue_id=issue.id,
            workcell_id=wc.id,
            toolchain_config=dict(tc_cfg.config),
            telemetry=telemetry,
            issue=issue,
            candidate_index=index,
        )
        if adapter.available():
            try:
                result = await adapter.run(request)
            except Exception as exc:  # an adapter bug must not stop the kernel
                now = clock.now()
                result = AdapterResult(toolchain=toolchain, status="error", started_at=now, completed_at=now,
                                       duration_ms=0, error=f"{type(exc).__name__}: {exc}")
        else:
            now = clock.now()
            reason = adapter.unavailable_reason() or "toolchain not available"
            telemetry.emit("error", {"reason": reason})
            result = AdapterResult(toolchain=toolchain, status="error", started_at=now, completed_at=now,
                                   duration_ms=0, error=reason)

        if result.status in ("success", "partial"):
            verification = await run_gates(wc.path, gates, cfg.gates.timeout_seconds, wc.logs_dir,
                                           cfg.gates.retry_flaky, self.env)
        else:
            verification = Verification(all_passed=False, blocking_failures=[f"agent:{result.status}"])
        head = None
        if wc.backend == "git":
            changes, diff_lines = await asyncio.to_thread(self.manager.diff_stats, wc)
            head = await asyncio.to_thread(self.manager.commit_all, wc, f"cyntra: {issue.id} via {toolchain}")
        else:
            changes, diff_lines = self.manager.diff_stats(wc)
        proof = Proof(
            workcell_id=wc.id,
            issue_id=issue.id,
            status=result.status,
            patch=PatchStats(files_changed=[dict(c) for c in changes], diff_lines=diff_lines,  # type: ignore[misc]
                             head_commit=head, base_commit=wc.base_commit),
            verification=verification,
            metadata=ProofMetadata(toolchain=toolchain, model=result.model or tc_cfg.default_model,
                                   started_at=result.started_at, completed_at=result.completed_at,
                                   duration_ms=result.duration_ms, exit_code=result.exit_code,
                                   tokens_used=result.tokens_used, cost_usd=result.cost_usd),
            confidence=result.confidence if result.confidence is not None else 0.5,
            risk_classification=issue.dk_risk,
            fail_codes=derive_fail_codes(result.status, result.exit_code, verification),
        )
        write_proof(wc.path / "proof.json", proof)
        return CandidateRun(index, toolchain, wc, manifest, result, verification, proof)

    async def _create_workcell(self, issue_id: str, tag: str | None) -> Workcell:
        if self.manager.backend == "git":
            return await asyncio.to_thread(self.manager.create, issue_id, tag)
        return self.manager.create(issue_id, tag)

    async def _archive(self, wc: Workcell, loser: bool) -> Archived:
        def work() -> Archived:
            return self.manager.archive_and_remove(wc, loser=loser)

        if self.manager.backend == "git":
            return await asyncio.to_thread(work)
        return work()

    def _write_rollout(self, run: CandidateRun) -> None:
        # planner: the manifest's, i.e. the decision record as archived with the run
        # Paths recorded relative to the archive; the telemetry is read from the workcell.
        rollout = build_rollout_model(run.manifest, run.proof, TELEMETRY_FILE, "manifest.json",
                                      proof_path="proof.json",
                                      telemetry_file=run.workcell.path / TELEMETRY_FILE)
        write_rollout(run.workcell.path / "rollout.json", rollout)


def archived_record(record: DecisionRecord) -> dict[str, Any]:
    """The decision record as archived with the run.

    In a simulated history the archives are a pure function of (profile, seed): wall-clock
    measurements of the strategies (``latency_ms``) are kept out of them and live in the ledger
    and the structlog stream only. Real runs archive the full record.
    """
    data = record.model_dump(mode="json")
    if clock.is_virtual():
        for side in ("heuristic", "candidate"):
            if isinstance(data.get(side), dict):
                data[side]["latency_ms"] = None
    return data


def _budget_seconds(plan_minutes: int, hard_cap_minutes: float | None) -> float:
    """The plan's time budget, capped by the toolchain's ``hard_timeout_minutes`` if set."""
    seconds = float(plan_minutes * 60)
    if hard_cap_minutes is not None:
        seconds = min(seconds, hard_cap_minutes * 60.0)
    return seconds


def _parse(ts: str) -> datetime:
    return clock.parse_ts(ts)


def _worst_status(runs: list[CandidateRun]) -> str:
    if not runs:
        return "error"
    statuses = {r.proof.status for r in runs}
    for s in ("failed", "partial", "timeout", "error"):
        if s in statuses:
            return "failed" if s == "partial" else s
    return "failed"


def _sampling(issue: Issue, plan: DispatchPlan) -> Sampling:
    s = issue.dk_sampling or {}
    temperature = s.get("temperature", plan.temperature)
    return Sampling(temperature=temperature, top_p=s.get("top_p"))


def _control_mode(mode: str) -> Any:
    return mode if mode in ("trap", "chaos", "balanced", "disabled") else "disabled"


@contextlib.contextmanager
def _fork_clock(start: datetime) -> Any:
    """A parallel candidate's own timeline in simulation; the real clock needs nothing."""
    if clock.is_virtual():
        with clock.task_clock(clock.VirtualClock(start)):
            yield
    else:
        yield
