"""The decision engine: heuristic always, a candidate beside it, the clamp, exploration, records.

Modes (``strategy:`` in config):

* ``heuristic`` — the heuristic's plan is applied.
* ``shadow`` — the heuristic's plan is applied; the candidate (``planner.candidate``, default
  ``urm``) runs beside it and is recorded. Like GitHub Scientist: the candidate can raise, hang
  or return garbage and dispatch neither changes nor waits longer than the latency budget.
* ``urm`` or any other registered name — that strategy's plan is applied after the clamp, with
  a recorded fallback to the heuristic on any failure or low confidence.

Exploration (``exploration.epsilon``) sometimes applies another plan the clamp allows and logs
its propensity, so that off-policy evaluation has support.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cyntra.clock import isoformat_z
from cyntra.kernel.config import KernelConfig
from cyntra.kernel.plan import DispatchPlan, TraceStep
from cyntra.log import get_logger
from cyntra.planner.action_space import ACTION_FIELDS, ActionSpace, PlanAction
from cyntra.state.issue import Issue
from cyntra.strategy.base import (
    DispatchStrategy,
    StrategyContext,
    StrategyDecision,
    StrategyEnv,
    StrategyUnavailable,
    build_strategy,
)
from cyntra.strategy.clamp import Clamp, Violation
from cyntra.strategy.heuristic import HeuristicStrategy
from cyntra.strategy.policy import LoadedPolicy
from cyntra.strategy.record import AppliedPlan, DecisionRecord, Proposal, agreement

log = get_logger("cyntra.strategy")


@dataclass
class Decision:
    record: DecisionRecord
    plan: DispatchPlan


def decision_id_for(issue_id: str, attempt: int, timestamp: str, salt: str = "") -> str:
    """Deterministic ids: the same history replays to the same ids (sim archives are byte-identical)."""
    digest = hashlib.sha256(f"{issue_id}|{attempt}|{timestamp}|{salt}".encode()).hexdigest()
    return f"dec-{digest[:20]}"


def _run_with_budget(
    fn: Any, budget_s: float
) -> tuple[str, Any, float, threading.Thread]:
    """Run ``fn()`` in a daemon thread; never wait past ``budget_s``. Returns (status, value, ms, thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # a plugin may raise anything; it must not reach dispatch
            box["error"] = exc

    start = time.perf_counter()
    thread = threading.Thread(target=target, name="cyntra-candidate", daemon=True)
    thread.start()
    thread.join(budget_s)
    elapsed = (time.perf_counter() - start) * 1000.0
    if thread.is_alive():
        return "timeout", None, elapsed, thread
    if "error" in box:
        err = box["error"]
        if isinstance(err, StrategyUnavailable):
            return "unavailable", str(err), elapsed, thread
        return "error", f"{type(err).__name__}: {err}", elapsed, thread
    return "ok", box.get("value"), elapsed, thread


def _check_decision(obj: Any, space: ActionSpace) -> str | None:
    """Why a candidate's answer is unusable (None when it is fine)."""
    if not isinstance(obj, StrategyDecision):
        return f"returned {type(obj).__name__}, not a StrategyDecision"
    problems = space.violations(obj.action)
    if problems:
        return "invalid action: " + "; ".join(problems)
    if obj.confidence is not None and not (math.isfinite(obj.confidence) and 0.0 <= obj.confidence <= 1.0):
        return f"confidence {obj.confidence!r} is not a probability"
    if obj.expected_utility is not None and not math.isfinite(obj.expected_utility):
        return "expected_utility is not finite"
    for field, dist in (obj.probabilities or {}).items():
        for value, p in dist.items():
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                return f"probability {field}={value}: {p!r} is not a probability"
    return None


def exploration_key(issue_id: str, attempt: int, job_type: str, decision_id: str) -> str:
    """What seeds a decision's exploration draws: the issue's attempt, not the decision's time.

    The scheduler re-decides an issue whose plan did not fit the free lanes at a later cycle,
    i.e. with a new decision id. A draw seeded by the decision id was then drawn again each
    cycle until one fitted -- narrow plans won, wide ones lost, and the recorded propensities
    (and every OPE estimate built on them) no longer described what was applied. One draw per
    (issue, attempt) makes the applied plan's probability the recorded one: a drawn plan that
    does not fit waits for lanes, as the heuristic's own does. World decisions (``cyntra
    evolve``) are never re-decided and share one synthetic issue, so they keep the decision id.
    """
    return f"{issue_id}|{attempt}|{job_type}" if job_type == "code" else decision_id


class DecisionEngine:
    def __init__(
        self,
        *,
        env: StrategyEnv,
        clamp: Clamp,
        policy: LoadedPolicy,
        mode: str | None = None,
        candidate: DispatchStrategy | None = None,
        candidate_error: str | None = None,
    ) -> None:
        self.env = env
        self.config: KernelConfig = env.config
        self.space = env.space
        self.clamp = clamp
        self.policy = policy
        self.mode = mode or env.config.strategy
        self.heuristic = HeuristicStrategy()
        self.candidate = candidate
        self.candidate_error = candidate_error
        self.candidate_name = self._candidate_name()
        # A call that overran its budget and is still running: the candidate is not called again
        # until it returns, so a hung plugin costs one thread, not one per cycle.
        self._overrunning: threading.Thread | None = None
        if self.candidate is None and self.mode != "heuristic" and candidate_error is None:
            try:
                self.candidate = build_strategy(self.candidate_name, env)
            except StrategyUnavailable as exc:
                self.candidate_error = str(exc)
            except Exception as exc:  # a broken plugin must not stop the kernel
                self.candidate_error = f"{type(exc).__name__}: {exc}"

    def close(self, timeout_s: float = 5.0) -> None:
        """Give an overrunning candidate call a moment to finish before the process exits."""
        if self._overrunning is not None and self._overrunning.is_alive():
            self._overrunning.join(timeout_s)

    def _candidate_name(self) -> str:
        if self.mode == "shadow":
            return self.config.planner.candidate or "urm"
        return self.mode

    @property
    def candidate_info(self) -> dict[str, Any]:
        describe = getattr(self.candidate, "describe", None)
        return dict(describe()) if callable(describe) else {}

    # -- the decision ---------------------------------------------------------------------

    def decide(self, ctxs: Sequence[StrategyContext], *, attempt_of: dict[str, int] | None = None) -> list[Decision]:
        if not ctxs:
            return []
        heur: list[Proposal] = []
        for ctx in ctxs:
            start = time.perf_counter()
            d = self.heuristic.decide(ctx)
            heur.append(
                Proposal(
                    strategy="heuristic",
                    status="ok",
                    action=d.action,
                    toolchains=ctx.heuristic.candidate_toolchains(),
                    trace=d.trace,
                    confidence=d.confidence,
                    latency_ms=(time.perf_counter() - start) * 1000.0,
                )
            )
        cand = self._candidate_proposals(ctxs) if self.mode != "heuristic" else [None] * len(ctxs)

        out: list[Decision] = []
        for ctx, h, c in zip(ctxs, heur, cand, strict=True):
            attempt = (attempt_of or {}).get(ctx.issue.id, ctx.issue.dk_attempts)
            out.append(self._decide_one(ctx, h, c, attempt))
        return out

    def _candidate_proposals(self, ctxs: Sequence[StrategyContext]) -> list[Proposal | None]:
        name = self.candidate_name
        if self.candidate is None:
            reason = self.candidate_error or f"strategy {name!r} unavailable"
            return [Proposal(strategy=name, status="unavailable", error=reason) for _ in ctxs]
        budget_s = self.config.planner.latency_budget_ms / 1000.0 * max(1, len(ctxs))
        if self._overrunning is not None and self._overrunning.is_alive():
            err = "not called: a previous call is still running past its latency budget"
            return [Proposal(strategy=name, status="timeout", error=err, latency_ms=0.0) for _ in ctxs]
        candidate = self.candidate
        status, value, elapsed, thread = _run_with_budget(lambda: candidate.decide_batch(list(ctxs)), budget_s)
        self._overrunning = thread if status == "timeout" else None
        per_ms = elapsed / max(1, len(ctxs))
        if status != "ok":
            err = value if isinstance(value, str) else f"exceeded latency budget {budget_s * 1000:.1f} ms"
            return [Proposal(strategy=name, status=status, error=err, latency_ms=per_ms) for _ in ctxs]  # type: ignore[arg-type]
        if not isinstance(value, list) or len(value) != len(ctxs):
            return [
                Proposal(strategy=name, status="invalid", error="batch answer has the wrong length", latency_ms=per_ms)
                for _ in ctxs
            ]
        out: list[Proposal | None] = []
        for ctx, dec in zip(ctxs, value, strict=True):
            problem = _check_decision(dec, self.space)
            if problem is not None:
                out.append(Proposal(strategy=name, status="invalid", error=problem, latency_ms=per_ms))
                continue
            out.append(
                Proposal(
                    strategy=name,
                    status="ok",
                    action=dec.action,
                    toolchains=self._runnable(ctx, dec.action),
                    trace=dec.trace,
                    probabilities=dec.probabilities,
                    confidence=dec.confidence,
                    expected_utility=dec.expected_utility,
                    latency_ms=per_ms,
                )
            )
        return out

    def _runnable(self, ctx: StrategyContext, action: PlanAction) -> list[str]:
        """The toolchains that would actually run under ``action`` (as the heuristic's proposal records)."""
        tcs = ctx.toolchains_for(action, self.space)
        parallel = self.space.kind(action.swarm_id) == "parallel_compete"
        return tcs[: action.parallelism if parallel else action.max_candidates]

    def _decide_one(self, ctx: StrategyContext, h: Proposal, c: Proposal | None, attempt: int) -> Decision:
        issue = ctx.issue
        timestamp = isoformat_z(ctx.now)
        decision_id = decision_id_for(issue.id, attempt, timestamp, ctx.job_type)
        assert h.action is not None
        h_clamp = self.clamp.apply(h.action, issue)
        h.clamp = h_clamp.violations
        # What the candidate would apply if it decided: its clamped plan above the confidence
        # floor. Shadow records the same floor (so its log describes the candidate as deployed)
        # and directs exploration only towards a plan the candidate would really apply.
        c_would: tuple[PlanAction, list[Violation]] | None = None
        low_confidence: str | None = None
        if c is not None and c.status == "ok" and c.action is not None:
            c_res = self.clamp.apply(c.action, issue)
            c.clamp = c_res.violations
            floor, floor_rule = self.clamp.min_confidence(issue)
            floor = max(floor, self.config.planner.min_confidence)
            conf = c.confidence if c.confidence is not None else 0.0
            if conf < floor:
                low_confidence = f"low confidence {conf:.3f} < {floor:.3f} ({floor_rule})"
                c.clamp = [*c.clamp, Violation(rule_id=floor_rule, field="confidence", requested=conf,
                                               limit={"min_confidence": floor}, applied="heuristic", mode="enforce")]
            else:
                c_would = c_res.applied, c_res.violations

        fallback: str | None = None
        source = "heuristic"
        chosen = h_clamp.applied
        clamp_violations: list[Violation] = list(h_clamp.violations)
        if self.mode not in ("heuristic", "shadow"):
            if c is None or c.status != "ok" or c.action is None:
                fallback = f"candidate {c.status if c else 'missing'}: {c.error if c else ''}".strip()
            elif c_would is None:
                fallback = low_confidence
            else:
                chosen, clamp_violations = c_would
                source = "candidate"

        propensity = 1.0
        exploration: dict[str, Any] | None = None
        eps = self.config.exploration.epsilon
        if eps > 0:
            # shadow only: where the candidate decides, exploring around its own plan is uniform
            toward = c_would[0] if self.mode == "shadow" and c_would is not None else None
            key = exploration_key(issue.id, attempt, ctx.job_type, decision_id)
            explored, propensity, exploration = self._explore(issue, key, chosen, toward)
            assert explored is not None  # only a preview leaves the plan open
            chosen = explored
            if exploration and exploration.get("explored"):
                source = "exploration"

        toolchains = ctx.toolchains_for(chosen, self.space)
        speculate = self.space.kind(chosen.swarm_id) == "parallel_compete"
        trace = list(ctx.heuristic.trace)
        trace.append(TraceStep(step="strategy", detail=f"mode={self.mode} applied={source} {chosen.label()}",
                               data={"fallback_reason": fallback}))
        if clamp_violations:
            trace.append(TraceStep(step="clamp", detail="; ".join(f"{v.rule_id}:{v.field}" for v in clamp_violations)))
        plan = DispatchPlan(
            issue_id=issue.id,
            action=chosen,
            toolchains=toolchains,
            speculate=speculate,
            temperature=ctx.heuristic.temperature,
            controller_mode=ctx.heuristic.controller_mode,
            trace=trace,
        )
        info = self.candidate_info if c is not None else {}
        record = DecisionRecord(
            decision_id=decision_id,
            issue_id=issue.id,
            timestamp=timestamp,
            job_type=ctx.job_type,
            mode=self.mode,
            planner_input_hash=ctx.extras.get("planner_input_hash"),
            heuristic=h,
            candidate=c,
            agreement=agreement(h.action, c.action) if (c is not None and c.action is not None) else None,
            applied=AppliedPlan(action=chosen, toolchains=plan.candidate_toolchains(), source=source),  # type: ignore[arg-type]
            clamp=clamp_violations,
            propensity=propensity,
            exploration=exploration,
            fallback_reason=fallback,
            checkpoint_id=info.get("checkpoint_id"),
            checkpoint_sha256=info.get("checkpoint_sha256"),
            policy_sha256=self.policy.sha256,
            universe_id=ctx.extras.get("universe_id"),
            world_id=ctx.extras.get("world_id"),
            objective_id=ctx.extras.get("objective_id"),
        )
        return Decision(record=record, plan=plan)

    def preview_action(self, issue: Issue, heuristic_action: PlanAction, now: datetime,
                       job_type: str = "code") -> PlanAction | None:
        """The action :meth:`decide` would apply, computed without deciding -- only where the
        heuristic fixes it (modes ``heuristic`` and ``shadow``: clamp, then exploration, seeded
        by the same decision id). ``None`` where a candidate decides. The scheduler uses it to
        pass over issues whose plan cannot fit without paying for a full decision."""
        if self.mode not in ("heuristic", "shadow"):
            return None
        chosen = self.clamp.project(heuristic_action, issue)
        if self.config.exploration.epsilon > 0:
            decision_id = decision_id_for(issue.id, issue.dk_attempts, isoformat_z(now), job_type)
            key = exploration_key(issue.id, issue.dk_attempts, job_type, decision_id)
            previewed, _, _ = self._explore(issue, key, chosen, preview=True)
            return previewed  # None: the draw goes to the candidate's plan, unknown before deciding
        return chosen

    def _explore(self, issue: Issue, key: str, greedy: PlanAction, candidate: PlanAction | None = None,
                 preview: bool = False) -> tuple[PlanAction | None, float, dict[str, Any]]:
        """Epsilon-greedy inside the clamp: alternatives are only plans the clamp allows. The
        draws are seeded by ``key`` (:func:`exploration_key`).

        With ``candidate_share`` s > 0, an exploring draw applies ``candidate`` (the candidate's
        clamped plan, when it is an alternative) with probability s, else a uniform alternative:
        the candidate's plan then has probability ε·s + ε(1−s)/k, every other alternative
        ε(1−s)/k (ε/k when there is no candidate plan). The draws do not depend on the candidate,
        so a ``preview`` (no candidate known) follows the same ones and returns ``None`` where the
        candidate's plan would be applied.
        """
        cfg = self.config.exploration
        allowed = self.clamp.allowed(issue)
        fields = cfg.fields or list(ACTION_FIELDS)
        fixed = [f for f in ACTION_FIELDS if f not in fields]
        alternatives = [a for a in allowed if a != greedy and all(getattr(a, f) == getattr(greedy, f) for f in fixed)]
        k = len(alternatives)
        share = cfg.candidate_share
        toward = candidate if share > 0 and candidate is not None and candidate in alternatives else None

        def info(explored: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"epsilon": cfg.epsilon, "explored": explored, "alternatives": k}
            if explored:
                out["greedy"] = greedy.label()
            out["fields"] = list(fields)
            if share > 0 and k:
                out.update(candidate=toward.label() if toward is not None else None, candidate_share=share)
            return out

        if not alternatives:
            return greedy, 1.0, info(False)
        uniform = cfg.epsilon * (1.0 - share) / k if toward is not None else cfg.epsilon / k
        seed = int(hashlib.sha256(f"{cfg.seed}|{key}".encode()).hexdigest()[:16], 16)
        rng = random.Random(seed)
        if rng.random() < cfg.epsilon:
            if share > 0 and rng.random() < share:
                if preview:
                    return None, 0.0, info(True)
                pick = toward if toward is not None else alternatives[rng.randrange(k)]
            else:
                pick = alternatives[rng.randrange(k)]
            return pick, uniform + (cfg.epsilon * share if pick == toward else 0.0), info(True)
        return greedy, 1.0 - cfg.epsilon, info(False)
