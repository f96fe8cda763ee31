"""Temperature scaling of the joint valid-action distribution, and expected calibration error.

One scalar temperature divides every head's logits; it is fitted on validation NLL of the label
action under the decoder's own distribution (normalised over valid actions), so the calibrated
confidence is the one the kernel compares against a policy's min-confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from planner_model.decode import joint_log_probs


def joint_nll(
    head_logits: Sequence[np.ndarray], table: np.ndarray, targets: np.ndarray, temperature: float
) -> float:
    """Mean negative log-likelihood of ``targets`` (action indices; -1 rows ignored)."""
    keep = targets >= 0
    if not keep.any():
        return float("nan")
    lp = joint_log_probs([x[keep] for x in head_logits], table, temperature)
    return float(-lp[np.arange(int(keep.sum())), targets[keep]].mean())


def fit_temperature(
    head_logits: Sequence[np.ndarray],
    table: np.ndarray,
    targets: np.ndarray,
    *,
    lo: float = 0.05,
    hi: float = 20.0,
) -> float:
    """Grid search over log-temperature then golden-section refinement (NLL is smooth in log T)."""
    if not (targets >= 0).any():
        return 1.0
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), 41))
    losses = [joint_nll(head_logits, table, targets, float(t)) for t in grid]
    k = int(np.nanargmin(losses))
    a = float(np.log(grid[max(k - 1, 0)]))
    b = float(np.log(grid[min(k + 1, len(grid) - 1)]))
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(30):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if joint_nll(head_logits, table, targets, float(np.exp(c))) < joint_nll(
            head_logits, table, targets, float(np.exp(d))
        ):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2.0))


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: Σ_bins (n_b / N) · |accuracy_b − mean confidence_b|."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.mean() * abs(hit[sel].mean() - conf[sel].mean())
    return float(total)


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> list[dict[str, float]]:
    """Per-bin (lo, hi, count, mean confidence, accuracy) for a reliability diagram."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = bins == b
        out.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": float(sel.sum()),
                "confidence": float(conf[sel].mean()) if sel.any() else float("nan"),
                "accuracy": float(hit[sel].mean()) if sel.any() else float("nan"),
            }
        )
    return out
