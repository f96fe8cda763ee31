"""Decision records: what each strategy proposed, what the clamp did, what ran, and later how it went.

Shaped like Vowpal Wabbit's logged decisions (context hash, action, probability, later reward):
the ``propensity`` of the applied plan and the outcome joined by ``decision_id`` are what make
off-policy evaluation possible.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cyntra.kernel.plan import TraceStep
from cyntra.planner.action_space import ACTION_FIELDS, PlanAction
from cyntra.strategy.clamp import Violation

DECISION_SCHEMA: Literal["cyntra.decision.v1"] = "cyntra.decision.v1"
OUTCOME_SCHEMA: Literal["cyntra.decision_outcome.v1"] = "cyntra.decision_outcome.v1"
PROMOTION_SCHEMA: Literal["cyntra.promotion.v1"] = "cyntra.promotion.v1"

ProposalStatus = Literal["ok", "error", "timeout", "invalid", "unavailable", "skipped"]
AppliedSource = Literal["heuristic", "candidate", "exploration"]


class Proposal(BaseModel):
    """One strategy's answer for one issue (or why it has none)."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    status: ProposalStatus
    action: PlanAction | None = None
    toolchains: list[str] = Field(default_factory=list)
    trace: list[TraceStep] = Field(default_factory=list)
    probabilities: dict[str, dict[str, float]] | None = None
    confidence: float | None = None
    expected_utility: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    clamp: list[Violation] = Field(default_factory=list)


class AppliedPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: PlanAction
    toolchains: list[str]
    source: AppliedSource


class DecisionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.decision.v1"] = DECISION_SCHEMA
    kind: Literal["decision"] = "decision"
    decision_id: str
    issue_id: str
    timestamp: str
    job_type: str = "code"
    mode: str  # the configured strategy mode: heuristic | shadow | urm | <plugin>
    planner_input_hash: str | None = None
    heuristic: Proposal
    candidate: Proposal | None = None
    agreement: dict[str, bool] | None = None
    applied: AppliedPlan
    clamp: list[Violation] = Field(default_factory=list)
    propensity: float = Field(ge=0, le=1)
    exploration: dict[str, Any] | None = None
    fallback_reason: str | None = None
    checkpoint_id: str | None = None
    checkpoint_sha256: str | None = None
    policy_sha256: str | None = None
    universe_id: str | None = None
    world_id: str | None = None
    objective_id: str | None = None


class OutcomeRecord(BaseModel):
    """The reward half of a decision, appended when the dispatch ends."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.decision_outcome.v1"] = OUTCOME_SCHEMA
    kind: Literal["outcome"] = "outcome"
    decision_id: str
    issue_id: str
    timestamp: str
    status: str  # success | failed | timeout | error | partial
    gates_passed: bool
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: int | None = None
    cost_usd: float | None = None
    tokens_used: int | None = None
    candidates_run: int = 0
    winner_toolchain: str | None = None
    utility: float | None = None


class PromotionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.promotion.v1"] = PROMOTION_SCHEMA
    kind: Literal["promotion", "rollback"] = "promotion"
    timestamp: str
    who: str
    from_strategy: str
    to_strategy: str
    evidence: dict[str, Any] = Field(default_factory=dict)


def agreement(a: PlanAction, b: PlanAction) -> dict[str, bool]:
    """Per-field agreement between two plans (``all`` = exact match)."""
    out = {f: getattr(a, f) == getattr(b, f) for f in ACTION_FIELDS}
    out["all"] = all(out.values())
    return out
