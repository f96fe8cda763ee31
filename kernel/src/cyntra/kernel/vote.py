"""The speculate vote: pick one winner among parallel candidates whose gates all passed.

Upstream's formula (ARCHITECTURE §3), for a passing candidate::

    40 + 20·confidence + 15·(1 − diff_lines/max_diff) + risk points + 10·(1 − duration/max_duration)

with risk points low 15, medium 10, high 5, critical 0, and the maxima taken over the *passing*
candidates (a zero maximum gives the full term). The best score wins if it reaches
``vote_threshold·100``; otherwise the most confident passing candidate wins (a weak field still
yields a result, but on the candidates' own judgement). Confidence is the adapter's
``proof.confidence``; adapters that cannot judge leave the default 0.5. Ties break
deterministically: higher score, then shorter duration, then lower candidate index.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from cyntra.kernel.artifacts import DEFAULT_CONFIDENCE, Proof, RiskLevel

RISK_POINTS: dict[str, float] = {"low": 15.0, "medium": 10.0, "high": 5.0, "critical": 0.0}
BASE_POINTS = 40.0
CONFIDENCE_POINTS = 20.0
DIFF_POINTS = 15.0
DURATION_POINTS = 10.0
DEFAULT_VOTE_THRESHOLD = 0.7


class VoteCandidate(BaseModel):
    """The facts about one candidate that the vote looks at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    toolchain: str
    passed: bool
    confidence: float = Field(default=DEFAULT_CONFIDENCE, ge=0, le=1)
    diff_lines: int = Field(default=0, ge=0)
    duration_ms: int = Field(default=0, ge=0)
    risk: RiskLevel = "medium"

    @classmethod
    def from_proof(cls, index: int, proof: Proof) -> VoteCandidate:
        return cls(
            index=index,
            toolchain=proof.metadata.toolchain,
            passed=proof.verification.all_passed,
            confidence=proof.confidence,
            diff_lines=proof.patch.diff_lines,
            duration_ms=proof.metadata.duration_ms,
            risk=proof.risk_classification,
        )


class CandidateScore(BaseModel):
    """One candidate's score and its parts (``score`` is None for a candidate that failed gates)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    toolchain: str
    score: float | None
    passed: bool
    components: dict[str, float] = Field(default_factory=dict)


class VoteResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    winner_index: int | None
    scores: list[CandidateScore]
    reason: str
    threshold: float

    def score_of(self, index: int) -> CandidateScore | None:
        return next((s for s in self.scores if s.index == index), None)


def _ratio_term(points: float, value: float, maximum: float) -> float:
    return points if maximum <= 0 else points * (1.0 - value / maximum)


def score_components(
    candidate: VoteCandidate, max_diff_lines: int, max_duration_ms: int
) -> dict[str, float]:
    """The formula's terms for one passing candidate (they sum to its score)."""
    return {
        "base": BASE_POINTS,
        "confidence": CONFIDENCE_POINTS * candidate.confidence,
        "diff": _ratio_term(DIFF_POINTS, candidate.diff_lines, max_diff_lines),
        "risk": RISK_POINTS[candidate.risk],
        "duration": _ratio_term(DURATION_POINTS, candidate.duration_ms, max_duration_ms),
    }


def vote(
    candidates: Sequence[VoteCandidate], vote_threshold: float = DEFAULT_VOTE_THRESHOLD
) -> VoteResult:
    """Score the candidates and pick the winner (None when no candidate passed its gates)."""
    indices = [c.index for c in candidates]
    if len(set(indices)) != len(indices):
        raise ValueError(f"candidate indices must be unique, got {indices}")
    passing = [c for c in candidates if c.passed]
    max_diff = max((c.diff_lines for c in passing), default=0)
    max_duration = max((c.duration_ms for c in passing), default=0)
    scores: list[CandidateScore] = []
    by_index: dict[int, float] = {}
    for c in candidates:
        if c.passed:
            components = score_components(c, max_diff, max_duration)
            total = round(sum(components.values()), 6)
            by_index[c.index] = total
            scores.append(
                CandidateScore(
                    index=c.index,
                    toolchain=c.toolchain,
                    score=total,
                    passed=True,
                    components={k: round(v, 6) for k, v in components.items()},
                )
            )
        else:
            scores.append(
                CandidateScore(index=c.index, toolchain=c.toolchain, score=None, passed=False)
            )
    threshold_points = vote_threshold * 100.0
    if not passing:
        return VoteResult(
            winner_index=None,
            scores=scores,
            threshold=threshold_points,
            reason="no candidate passed all gates",
        )
    best = min(passing, key=lambda c: (-by_index[c.index], c.duration_ms, c.index))
    if by_index[best.index] >= threshold_points:
        reason = (
            f"candidate {best.index} ({best.toolchain}) scored {by_index[best.index]:.2f}"
            f" >= threshold {threshold_points:.2f}"
        )
        return VoteResult(
            winner_index=best.index, scores=scores, threshold=threshold_points, reason=reason
        )
    confident = min(
        passing, key=lambda c: (-c.confidence, -by_index[c.index], c.duration_ms, c.index)
    )
    reason = (
        f"best score {by_index[best.index]:.2f} < threshold {threshold_points:.2f}; "
        f"most confident passing candidate {confident.index} ({confident.toolchain},"
        f" confidence {confident.confidence:.2f}) wins"
    )
    return VoteResult(
        winner_index=confident.index, scores=scores, threshold=threshold_points, reason=reason
    )


def vote_proofs(
    proofs: Sequence[Proof], vote_threshold: float = DEFAULT_VOTE_THRESHOLD
) -> VoteResult:
    """Vote over proofs; candidate ``i`` is ``proofs[i]``."""
    return vote([VoteCandidate.from_proof(i, p) for i, p in enumerate(proofs)], vote_threshold)
