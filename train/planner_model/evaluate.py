"""Evaluate a checkpoint on a split against baselines → eval.json, eval.md and PNG plots.

Metrics (each with a seeded 95% bootstrap interval): per-head accuracy and exact match of the
decoded valid tuple, ECE of the joint confidence before and after temperature scaling (fitted on
validation). Baselines: the heuristic's plan, the majority class, logistic regression on tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyntra.clock import now_iso
from cyntra.fsutil import atomic_write_json, atomic_write_text
from planner_model import plots
from planner_model.baselines import fit_logistic, majority_action, majority_per_head
from planner_model.calibration import ece, fit_temperature, joint_nll, reliability_bins
from planner_model.checkpoint import load_checkpoint
from planner_model.data import action_table, labels_to_actions, load_dataset_info, load_split
from planner_model.decode import fast_decode
from planner_model.train import predict_logits, select_device


def bootstrap(
    stat: Callable[[np.ndarray], float], n: int, n_resamples: int, seed: int
) -> dict[str, float]:
    """Point estimate and percentile 95% interval of ``stat(indices)`` over row resamples."""
    value = stat(np.arange(n))
    if n == 0:
        return {"value": value, "lo": float("nan"), "hi": float("nan")}
    rng = np.random.default_rng(seed)
    samples = np.array([stat(rng.integers(0, n, size=n)) for _ in range(n_resamples)])
    lo, hi = np.nanpercentile(samples, [2.5, 97.5]) if np.isfinite(samples).any() else (np.nan, np.nan)
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda idx: float(values[idx].mean()) if len(idx) else float("nan")


def score_predictions(
    predicted: np.ndarray, labels: np.ndarray, targets: np.ndarray, table: np.ndarray,
    head_names: list[str], n_resamples: int, seed: int, coverage: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-head accuracy and exact match (with CIs) of predicted action indices (-1 = no answer)."""
    known = predicted >= 0
    pred_heads = np.where(known[:, None], table[np.clip(predicted, 0, None)], -2)
    out: dict[str, Any] = {"per_head_accuracy": {}}
    for h, name in enumerate(head_names):
        keep = labels[:, h] >= 0
        hit = (pred_heads[keep, h] == labels[keep, h]).astype(np.float64)
        out["per_head_accuracy"][name] = bootstrap(_mean_of(hit), len(hit), n_resamples, seed)
    keep = targets >= 0
    exact = (predicted[keep] == targets[keep]).astype(np.float64)
    out["exact_match"] = bootstrap(_mean_of(exact), len(exact), n_resamples, seed)
    out["coverage"] = float(known.mean()) if coverage is None else float(coverage.mean())
    return out


def evaluate(
    ckpt_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    device: str = "cpu",
    n_bootstrap: int = 1000,
    seed: int = 0,
    logistic_epochs: int = 20,
    logistic_max_train: int = 50_000,
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = load_dataset_info(data_dir)
    dev = select_device(device)
    ckpt = load_checkpoint(
        ckpt_dir, expected_actions=info.actions, expected_swarms=info.swarm_types,
        expected_vocab_sha256=info.vocab_sha256, device=dev,
    )
    table = action_table(info)
    head_names = list(info.heads)
    train_s, val_s, test_s = load_split(info, "train"), load_split(info, "val"), load_split(info, split)
    labels = np.asarray(test_s["labels"])
    targets = labels_to_actions(labels, table)

    with torch.no_grad():
        test_logits = predict_logits(ckpt.model, test_s["inputs"], dev)
        val_logits = predict_logits(ckpt.model, val_s["inputs"], dev) if len(val_s) else None
    val_targets = labels_to_actions(np.asarray(val_s["labels"]), table)
    temperature = fit_temperature(val_logits, table, val_targets) if val_logits is not None else ckpt.temperature

    best, conf_raw = fast_decode(test_logits, table, 1.0)
    _, conf_cal = fast_decode(test_logits, table, temperature)
    keep = targets >= 0
    correct = (best == targets)[keep].astype(np.float64)
    conf_raw_k, conf_cal_k = conf_raw[keep], conf_cal[keep]
    model = score_predictions(best, labels, targets, table, head_names, n_bootstrap, seed)
    model["ece"] = bootstrap(lambda i: ece(conf_raw_k[i], correct[i]), len(correct), n_bootstrap, seed)
    model["ece_calibrated"] = bootstrap(lambda i: ece(conf_cal_k[i], correct[i]), len(correct), n_bootstrap, seed)
    model["nll"] = joint_nll(test_logits, table, targets, 1.0)
    model["nll_calibrated"] = joint_nll(test_logits, table, targets, temperature)
    model["mean_confidence_calibrated"] = float(conf_cal_k.mean()) if conf_cal_k.size else float("nan")

    train_labels = np.asarray(train_s["labels"])
    train_targets = labels_to_actions(train_labels, table)
    heuristic = np.asarray(test_s["heuristic_action"])
    maj = majority_action(train_targets, len(info.actions))
    maj_heads = majority_per_head(train_labels, [len(v) for v in info.heads.values()])
    majority = score_predictions(np.full(len(labels), maj), labels, targets, table, head_names, n_bootstrap, seed)
    for h, name in enumerate(head_names):
        col = labels[:, h][labels[:, h] >= 0]
        majority["per_head_accuracy"][name] = bootstrap(_mean_of((col == maj_heads[h]).astype(np.float64)), len(col), n_bootstrap, seed)
    n_fit = min(len(train_s), logistic_max_train)
    logistic = fit_logistic(train_s["inputs"][:n_fit], train_labels[:n_fit], [len(v) for v in info.heads.values()], info.vocab_size, epochs=logistic_epochs, seed=seed)
    baselines = {
        "heuristic": score_predictions(heuristic, labels, targets, table, head_names, n_bootstrap, seed),
        "majority": majority,
        "logistic_bag_of_tokens": score_predictions(logistic.predict(test_s["inputs"], table), labels, targets, table, head_names, n_bootstrap, seed),
    }

    decoded_heads = table[best]
    plots.confusion_matrices(out / "confusion.png", info.heads, labels, decoded_heads)
    rel_raw = reliability_bins(conf_raw_k, correct)
    rel_cal = reliability_bins(conf_cal_k, correct)
    plots.reliability_diagram(out / "reliability.png", {"before (T=1)": rel_raw, f"after (T={temperature:.2f})": rel_cal})
    has_curves = plots.training_curves(out / "training_curves.png", Path(ckpt_dir) / "metrics.jsonl")

    report: dict[str, Any] = {
        "schema_version": "cyntra.planner_eval.v1",
        "created_at": now_iso(),
        "checkpoint": {"path": str(ckpt_dir), "sha256": ckpt.sha256, "code_version": ckpt.meta.get("code_version")},
        "dataset": {"path": str(data_dir), "sha256": info.dataset_sha256, "split": split, "n": len(labels), "label_mode": info.label_mode},
        "temperature": temperature,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "model": model,
        "baselines": baselines,
        "reliability": {"before": rel_raw, "after": rel_cal},
        "plots": ["confusion.png", "reliability.png"] + (["training_curves.png"] if has_curves else []),
    }
    atomic_write_json(out / "eval.json", report)
    atomic_write_text(out / "eval.md", render_markdown(report, head_names))
    return report


def _ci(m: dict[str, float]) -> str:
    return f"{m['value']:.4f} [{m['lo']:.4f}, {m['hi']:.4f}]"


def render_markdown(report: dict[str, Any], head_names: list[str]) -> str:
    ds = report["dataset"]
    lines = [
        "# URM planner evaluation",
        "",
        f"Split `{ds['split']}` (n={ds['n']}, label mode `{ds['label_mode']}`), dataset sha256 `{ds['sha256'][:12]}`, "
        f"checkpoint sha256 `{report['checkpoint']['sha256'][:12]}`. Intervals: 95% bootstrap, "
        f"{report['n_bootstrap']} resamples, seed {report['seed']}.",
        "",
        "| system | exact match | " + " | ".join(head_names) + " | coverage |",
        "|---|---|" + "---|" * len(head_names) + "---|",
    ]
    rows = {"URM model": report["model"], **report["baselines"]}
    for name, m in rows.items():
        heads = " | ".join(_ci(m["per_head_accuracy"][h]) for h in head_names)
        lines.append(f"| {name} | {_ci(m['exact_match'])} | {heads} | {m['coverage']:.3f} |")
    m = report["model"]
    lines += [
        "",
        "## Calibration (joint confidence over valid actions, 15 bins)",
        "",
        f"- temperature (fitted on validation NLL): {report['temperature']:.4f}",
        f"- ECE before: {_ci(m['ece'])}",
        f"- ECE after: {_ci(m['ece_calibrated'])}",
        f"- NLL before / after: {m['nll']:.4f} / {m['nll_calibrated']:.4f}",
        "",
        "Heuristic coverage < 1 means some rows had no recorded heuristic plan (counted as misses).",
        "",
    ] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
