"""Decoding restricted to valid action tuples (ARCHITECTURE §4).

Each valid action is scored as the sum of its fields' per-head log-probabilities; the argmax over
valid (optionally clamp-allowed) actions is the decision, and the softmax of those scores over the
same set is its confidence. Heads alone never emit an invalid tuple.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    z = x - m
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return out


def action_scores(
    head_logits: Sequence[np.ndarray], table: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """[N, n_actions] sum of per-head log-probs (at ``temperature``) of each action's fields."""
    total = np.zeros((head_logits[0].shape[0], table.shape[0]), dtype=np.float64)
    for h, logits in enumerate(head_logits):
        lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
        total += lp[:, table[:, h]]
    return total


def joint_log_probs(
    head_logits: Sequence[np.ndarray],
    table: np.ndarray,
    temperature: float = 1.0,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Log-probabilities normalised over the valid (and allowed) actions; -inf elsewhere."""
    scores = action_scores(head_logits, table, temperature)
    if allowed is not None:
        mask = np.broadcast_to(np.asarray(allowed, dtype=bool), scores.shape)
        if not mask.any(axis=1).all():
            raise ValueError("allowed mask leaves a row with no action")
        scores = np.where(mask, scores, -np.inf)
    return log_softmax(scores)


@dataclass(frozen=True)
class Decision:
    """One decoded plan: index into the action list, its label, confidence and per-head probabilities."""

    action_index: int
    action: str
    confidence: float
    head_probs: dict[str, dict[str, float]]
    joint: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_index": self.action_index,
            "action": self.action,
            "confidence": self.confidence,
            "head_probs": self.head_probs,
        }


def decode(
    head_logits: Mapping[str, np.ndarray],
    heads: Mapping[str, Sequence[Any]],
    actions: Sequence[str],
    table: np.ndarray,
    *,
    allowed: np.ndarray | None = None,
    temperature: float = 1.0,
) -> list[Decision]:
    """Decode a batch. ``allowed``: bool [n_actions] or [N, n_actions] (the clamp's set)."""
    names = list(heads)
    logits = [np.asarray(head_logits[n], dtype=np.float64) for n in names]
    joint = joint_log_probs(logits, table, temperature, allowed)
    best = joint.argmax(axis=1)
    probs = [np.exp(log_softmax(x / temperature)) for x in logits]
    out = []
    for i, a in enumerate(best):
        head_probs = {
            name: {str(v): float(p) for v, p in zip(heads[name], probs[h][i], strict=True)}
            for h, name in enumerate(names)
        }
        out.append(
            Decision(
                action_index=int(a),
                action=str(actions[int(a)]),
                confidence=float(np.exp(joint[i, a])),
                head_probs=head_probs,
                joint=np.exp(joint[i]).tolist(),
            )
        )
    return out


def fast_decode(
    head_logits: Sequence[np.ndarray], table: np.ndarray, temperature: float = 1.0,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised (action index, confidence) for a batch, without per-head dictionaries."""
    joint = joint_log_probs(head_logits, table, temperature, allowed)
    best = joint.argmax(axis=1)
    return best, np.exp(joint[np.arange(len(best)), best])


def factored_parts(raw_values: np.ndarray, spend_norm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(P(pass) [N, A], spend [N, A]) from a factored value head's raw outputs [N, 2A] (pass logit | spend z)."""
    raw = np.asarray(raw_values, dtype=np.float64)
    a = raw.shape[1] // 2
    p_pass = 1.0 / (1.0 + np.exp(-np.clip(raw[:, :a], -60.0, 60.0)))
    spend = raw[:, a:] * float(spend_norm[1]) + float(spend_norm[0])
    return p_pass, spend


def factored_q(
    raw_values: np.ndarray, pass_value: np.ndarray | float, fail_penalty: np.ndarray | float,
    spend_norm: Sequence[float],
) -> np.ndarray:
    """Expected utility [N, A] from a factored value head's raw outputs [N, 2A] (pass logit | spend z).

    Q(x, a) = pass_value·P(pass | x, a) − fail_penalty − spend(x, a), with ``pass_value`` (value of a
    pass + fail penalty) and ``fail_penalty`` per row, or scalars, taken from the objective.
    """
    p_pass, spend = factored_parts(raw_values, spend_norm)
    pv = np.asarray(pass_value, dtype=np.float64).reshape(-1, 1)
    fp = np.asarray(fail_penalty, dtype=np.float64).reshape(-1, 1)
    q: np.ndarray = pv * p_pass - fp - spend
    return q
