"""Baselines the model must beat: the heuristic's own plans, the majority class, and a
multinomial logistic regression on bag-of-tokens features (numpy only, no new dependency)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner_model.decode import fast_decode, log_softmax


def majority_action(train_actions: np.ndarray, n_actions: int) -> int:
    """The most frequent label action in train (a valid tuple, unlike per-head majorities)."""
    known = train_actions[train_actions >= 0]
    return int(np.bincount(known, minlength=n_actions).argmax()) if known.size else 0


def majority_per_head(train_labels: np.ndarray, head_sizes: list[int]) -> np.ndarray:
    out = []
    for h, size in enumerate(head_sizes):
        col = train_labels[:, h]
        col = col[col >= 0]
        out.append(int(np.bincount(col, minlength=size).argmax()) if col.size else 0)
    return np.asarray(out, dtype=np.int64)


def bag_of_tokens(inputs: np.ndarray, vocab_size: int) -> np.ndarray:
    """Binary presence features [N, vocab_size] (PAD column zeroed)."""
    ids = np.asarray(inputs, dtype=np.int64)
    x = np.zeros((ids.shape[0], vocab_size), dtype=np.float32)
    np.put_along_axis(x, np.clip(ids, 0, vocab_size - 1), 1.0, axis=1)
    x[:, 0] = 0.0
    return x


@dataclass
class LogisticBaseline:
    """One softmax regression per head over bag-of-tokens, decoded to valid tuples like the model."""

    weights: list[np.ndarray]  # per head [vocab_size + 1, n_classes] (last row = bias)
    vocab_size: int

    def head_logits(self, inputs: np.ndarray, batch: int = 4096) -> list[np.ndarray]:
        outs: list[list[np.ndarray]] = [[] for _ in self.weights]
        for lo in range(0, len(inputs), batch):
            x = bag_of_tokens(inputs[lo : lo + batch], self.vocab_size)
            for h, w in enumerate(self.weights):
                outs[h].append(x @ w[:-1] + w[-1])
        return [np.concatenate(o) if o else np.zeros((0, w.shape[1])) for o, w in zip(outs, self.weights, strict=True)]

    def predict(self, inputs: np.ndarray, table: np.ndarray) -> np.ndarray:
        best, _ = fast_decode(self.head_logits(inputs), table)
        return best


def fit_logistic(
    inputs: np.ndarray,
    labels: np.ndarray,
    head_sizes: list[int],
    vocab_size: int,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    l2: float = 1e-4,
    batch: int = 512,
    seed: int = 0,
) -> LogisticBaseline:
    """Mini-batch Adam on the per-head cross-entropy (rows with label -1 skipped per head)."""
    rng = np.random.default_rng(seed)
    ws = [np.zeros((vocab_size + 1, k), dtype=np.float64) for k in head_sizes]
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    t = 0
    n = len(inputs)
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch):
            idx = np.sort(order[lo : lo + batch])
            x = bag_of_tokens(inputs[idx], vocab_size).astype(np.float64)
            xb = np.concatenate([x, np.ones((len(idx), 1))], axis=1)
            t += 1
            for h, w in enumerate(ws):
                y = np.asarray(labels[idx, h])
                keep = y >= 0
                if not keep.any():
                    continue
                p = np.exp(log_softmax(xb[keep] @ w))
                p[np.arange(int(keep.sum())), y[keep]] -= 1.0
                grad = xb[keep].T @ p / keep.sum() + l2 * w
                m[h] = 0.9 * m[h] + 0.1 * grad
                v[h] = 0.999 * v[h] + 0.001 * grad**2
                w -= lr * (m[h] / (1 - 0.9**t)) / (np.sqrt(v[h] / (1 - 0.999**t)) + 1e-8)
    return LogisticBaseline([w.astype(np.float32) for w in ws], vocab_size)
