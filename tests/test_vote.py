"""The speculate vote: upstream's formula, computed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyntra.kernel.artifacts import (
    GateResult,
    PatchStats,
    Proof,
    ProofMetadata,
    Verification,
)
from cyntra.kernel.vote import VoteCandidate, vote, vote_proofs


def cand(
    index: int,
    *,
    passed: bool = True,
    confidence: float = 0.5,
    diff: int = 0,
    dur: int = 0,
    risk: str = "medium",
    toolchain: str | None = None,
) -> VoteCandidate:
    return VoteCandidate.model_validate(
        {
            "index": index,
            "toolchain": toolchain or f"tc{index}",
            "passed": passed,
            "confidence": confidence,
            "diff_lines": diff,
            "duration_ms": dur,
            "risk": risk,
        }
    )


def test_formula_by_hand_and_failed_candidates_ignored() -> None:
    cands = [
        cand(0, confidence=0.8, diff=100, dur=60_000, risk="low"),
        cand(1, confidence=0.6, diff=50, dur=120_000, risk="medium"),
        cand(2, passed=False, confidence=1.0, diff=1000, dur=999_999, risk="low"),
    ]
    r = vote(cands)
    # c0: 40 + 20*.8 + 15*(1-100/100) + 15 + 10*(1-60/120) = 40+16+0+15+5 = 76
    # c1: 40 + 20*.6 + 15*(1-50/100)  + 10 + 10*(1-120/120) = 40+12+7.5+10+0 = 69.5
    assert [s.score for s in r.scores] == [76.0, 69.5, None]
    assert r.scores[0].components == {
        "base": 40.0,
        "confidence": 16.0,
        "diff": 0.0,
        "risk": 15.0,
        "duration": 5.0,
    }
    assert r.scores[2].passed is False and r.scores[2].components == {}
    assert r.winner_index == 0
    assert r.threshold == 70.0
    assert "76.00" in r.reason


def test_zero_maxima_give_full_points() -> None:
    r = vote([cand(0, confidence=0.5, diff=0, dur=0, risk="medium")])
    assert r.scores[0].score == 40 + 10 + 15 + 10 + 10
    assert r.winner_index == 0


def test_below_threshold_falls_back_to_most_confident() -> None:
    cands = [
        cand(0, confidence=0.3, diff=100, dur=100, risk="high"),  # 40+6+0+5+0 = 51
        cand(1, confidence=0.5, diff=100, dur=100, risk="critical"),  # 40+10+0+0+0 = 50
    ]
    r = vote(cands)
    assert [s.score for s in r.scores] == [51.0, 50.0]
    assert r.winner_index == 1
    assert "most confident" in r.reason


def test_threshold_is_configurable() -> None:
    cands = [
        cand(0, confidence=0.6, risk="low"),  # 40+12+15+15+10 = 92
        cand(1, confidence=0.9, risk="critical"),  # 40+18+15+0+10 = 83
    ]
    assert vote(cands, 0.7).winner_index == 0
    assert vote(cands, 0.95).winner_index == 1


def test_equal_scores_break_on_duration_then_index() -> None:
    cands = [
        cand(0, confidence=0.75, diff=10, dur=100, risk="low"),  # 40+15+0+15+0 = 70
        cand(1, confidence=0.5, diff=10, dur=50, risk="low"),  # 40+10+0+15+5 = 70
    ]
    r = vote(cands)
    assert [s.score for s in r.scores] == [70.0, 70.0]
    assert r.winner_index == 1  # exactly at the threshold counts; shorter run wins the tie
    twins = [cand(3, confidence=0.9), cand(1, confidence=0.9), cand(2, confidence=0.9)]
    assert vote(twins).winner_index == 1


def test_fallback_ties_break_deterministically() -> None:
    cands = [cand(0, confidence=0.2, dur=10), cand(1, confidence=0.2, dur=5)]
    r = vote(cands, 1.0)
    assert r.winner_index == 1  # equal confidence: better score (shorter run)


def test_no_passing_candidate_means_no_winner() -> None:
    r = vote([cand(0, passed=False), cand(1, passed=False)])
    assert r.winner_index is None
    assert all(s.score is None for s in r.scores)
    assert vote([]).winner_index is None


def test_duplicate_indices_are_refused() -> None:
    with pytest.raises(ValueError):
        vote([cand(0), cand(0)])


def _proof(tc: str, *, passed: bool, conf: float, diff: int, dur: int, risk: str) -> Proof:
    gates = {
        "test": GateResult(passed=passed, exit_code=0 if passed else 1, duration_ms=1, command="t")
    }
    return Proof.model_validate(
        {
            "workcell_id": f"wc-{tc}",
            "issue_id": "7",
            "status": "success" if passed else "failed",
            "patch": PatchStats(diff_lines=diff),
            "verification": Verification.from_gates(gates),
            "metadata": ProofMetadata(
                toolchain=tc,
                started_at="2025-01-01T00:00:00Z",
                completed_at="2025-01-01T00:01:00Z",
                duration_ms=dur,
            ),
            "confidence": conf,
            "risk_classification": risk,
        }
    )


def test_vote_over_proofs() -> None:
    proofs = [
        _proof("codex", passed=False, conf=0.9, diff=1, dur=1, risk="low"),
        _proof("claude", passed=True, conf=0.8, diff=100, dur=60_000, risk="low"),
        _proof("opencode", passed=True, conf=0.6, diff=50, dur=120_000, risk="medium"),
    ]
    r = vote_proofs(proofs)
    assert r.winner_index == 1
    assert [s.toolchain for s in r.scores] == ["codex", "claude", "opencode"]
    assert [s.score for s in r.scores] == [None, 76.0, 69.5]


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.floats(0, 1),
            st.integers(0, 5000),
            st.integers(0, 10**7),
            st.sampled_from(["low", "medium", "high", "critical"]),
        ),
        max_size=5,
    ),
    st.floats(0, 1),
)
def test_vote_properties(rows: list[tuple[bool, float, int, int, str]], threshold: float) -> None:
    cands = [
        cand(i, passed=p, confidence=c, diff=d, dur=t, risk=r)
        for i, (p, c, d, t, r) in enumerate(rows)
    ]
    r = vote(cands, threshold)
    passing = [c for c in cands if c.passed]
    if not passing:
        assert r.winner_index is None
        return
    assert r.winner_index is not None and cands[r.winner_index].passed
    for s in r.scores:
        if s.passed:
            assert s.score is not None and 40 <= s.score <= 100
            assert abs(sum(s.components.values()) - s.score) < 1e-4
    best = max(s.score for s in r.scores if s.score is not None)
    winner_score = r.scores[r.winner_index].score
    if best >= threshold * 100:
        assert winner_score == best
    else:
        assert cands[r.winner_index].confidence == max(c.confidence for c in passing)
    assert vote(list(reversed(cands)), threshold).winner_index == r.winner_index
