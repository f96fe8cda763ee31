"""PNG plots for the evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def confusion_matrices(
    path: Path, heads: dict[str, list[Any]], labels: np.ndarray, predicted: np.ndarray
) -> None:
    """One confusion matrix per head (rows: label, columns: prediction), row-normalised."""
    fig, axes = plt.subplots(1, len(heads), figsize=(4 * len(heads), 4), squeeze=False)
    for h, (name, values) in enumerate(heads.items()):
        k = len(values)
        keep = labels[:, h] >= 0
        cm = np.zeros((k, k))
        np.add.at(cm, (labels[keep, h], predicted[keep, h]), 1)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax = axes[0, h]
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(k), [str(v) for v in values], rotation=45, fontsize=7)
        ax.set_yticks(range(k), [str(v) for v in values], fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_diagram(path: Path, curves: dict[str, list[dict[str, float]]]) -> None:
    """Accuracy vs confidence per bin, one line per curve (e.g. before / after temperature)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    for name, bins in curves.items():
        pts = [(b["confidence"], b["accuracy"]) for b in bins if b["count"] > 0]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_curves(path: Path, metrics_jsonl: Path) -> bool:
    """Train/val loss and val exact match per epoch; False when there is no metrics file."""
    if not metrics_jsonl.exists():
        return False
    rows = [json.loads(line) for line in metrics_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return False
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.plot(epochs, [r["train_loss"] for r in rows], label="train")
    a.plot(epochs, [r["val_loss"] for r in rows], label="val")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [r["val_exact_match"] for r in rows], color="green")
    b.set_xlabel("epoch")
    b.set_ylabel("val exact match")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
