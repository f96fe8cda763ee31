"""Training loop for the URM planner: single process or ``torchrun`` (DDP), CPU or CUDA.

Output directory layout: the best checkpoint at the top level (``model.safetensors`` +
``checkpoint.json`` + ``checkpoint.sha256``, temperature fitted on validation), ``metrics.jsonl``
(one line per epoch) and ``resume/`` (last epoch's weights + optimizer/EMA state, for ``--resume``).
Rank 0 alone writes files and logs.

Two objectives (``tc.extra["objective"]``):

* ``imitation`` (default) — per-head cross-entropy on the dataset's labels (the executed or
  best-of-K plan), optionally with the value head regressed on the executed plan's reward.
* ``value`` — the value head Q(x, a) (one output per action) is regressed on observed utilities:
  every plan a best-of-K label row executed (or derived) for the decision, weight 1, plus the
  executed plan's logged reward with an importance weight ``min(ips_clip, 1/propensity)``
  rescaled to mean 1 (so explored plans, logged with a small propensity, count for the plans the
  logging policy rarely tried). Targets are standardised (shift/scale stored in the checkpoint's
  ``train_config.extra``); the classification heads still learn the dataset's labels (they give
  the decision's confidence). The checkpoint records ``decision: value`` and the best epoch is
  the one with the lowest validation value loss. The strategy then picks argmax Q among the
  plans the clamp allows. ``tc.extra["relative_weight"]`` (default 0) adds a within-decision
  centred term to the value loss (see :func:`value_loss`).
* ``factored`` — the objective's own structure, U = pass_value·passed − fail_penalty − spend
  (``pass_value`` = value of a pass + fail penalty, known per issue from the workspace's
  ``objective:``; ``spend`` = agents' cost + the price of waiting): the value head has two outputs
  per action, a pass logit (binary cross-entropy on the observed gates result) and the spend
  (MSE, standardised), on the same observed plans and weights as ``value``. Q is composed at
  decision time (:func:`planner_model.decode.factored_q`), so the network never has to learn the
  product of an issue's worth and its pass probability from noisy utilities. The best epoch is the
  one whose composed Q predicts the observed validation utilities best.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from cyntra.errors import CyntraError
from cyntra.fsutil import append_jsonl
from planner_model.calibration import fit_temperature
from planner_model.checkpoint import (
    CheckpointError,
    load_training_state,
    optimizer_from_flat,
    optimizer_to_flat,
    read_checkpoint_meta,
    read_verified_tensors,
    save_checkpoint,
    save_training_state,
)
from planner_model.config import TrainConfig, URMConfig
from planner_model.data import (
    DatasetInfo,
    Split,
    action_table,
    batched_dataset,
    labels_to_actions,
    load_dataset_info,
    load_split,
    load_vocab,
)
from planner_model.decode import fast_decode
from planner_model.model import URM


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    return DistInfo(
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a fallback."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        return torch.device("cuda", local_rank) if requested == "cuda" else torch.device(requested)
    if requested != "cpu":
        raise TrainingInputError(f"unknown device {requested!r} (auto | cpu | cuda)")
    return torch.device("cpu")


def lr_at(step: int, total: int, tc: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_frac`` of the peak."""
    warmup = max(1, int(tc.warmup_frac * total))
    if step < warmup:
        return tc.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return tc.lr * (tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def class_weight_tensors(train: Split, info: DatasetInfo, device: torch.device) -> list[Tensor]:
    """Inverse-frequency weights per head (mean 1 over present classes)."""
    labels = np.asarray(train["labels"])
    out = []
    for h, (_, size) in enumerate(info.head_sizes):
        col = labels[:, h]
        counts = np.bincount(col[col >= 0], minlength=size).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
        out.append(torch.tensor(w, dtype=torch.float32, device=device))
    return out


OBJECTIVES = ("imitation", "value", "factored")


class TrainingInputError(CyntraError, ValueError):
    """A dataset or setting the trainer cannot use (the CLI reports it without a traceback)."""


def objective_of(tc: TrainConfig) -> str:
    obj = str(tc.extra.get("objective", "imitation"))
    if obj not in OBJECTIVES:
        raise TrainingInputError(f"unknown objective {obj!r} (expected one of {list(OBJECTIVES)})")
    return obj


def observed_plans(split: Split, n_actions: int, ips_clip: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observed utilities, gates results and spends [N, A] (NaN where unknown) and weights [N, A] (0 = unobserved).

    Best-of-K ``action_rewards`` count 1 each; an executed plan's reward not already covered by
    them counts ``min(ips_clip, 1/propensity)`` rescaled so the logged weights average 1.
    """
    n = len(split)
    target = np.full((n, n_actions), np.nan, dtype=np.float64)
    passed = np.full((n, n_actions), np.nan, dtype=np.float64)
    spend = np.full((n, n_actions), np.nan, dtype=np.float64)
    weight = np.zeros((n, n_actions), dtype=np.float64)
    ar = split.get("action_rewards")
    if ar is not None and ar.shape[1] == n_actions:
        arr = np.asarray(ar, dtype=np.float64)
        seen = np.isfinite(arr)
        target[seen] = arr[seen]
        weight[seen] = 1.0
        ap, asp = split.get("action_passed"), split.get("action_spend")
        if ap is not None and ap.shape == ar.shape:
            passed[seen] = np.asarray(ap, dtype=np.float64)[seen]
        if asp is not None and asp.shape == ar.shape:
            spend[seen] = np.asarray(asp, dtype=np.float64)[seen]
    action = np.asarray(split["action"], dtype=np.int64)
    reward = np.asarray(split["reward"], dtype=np.float64)
    prop = np.asarray(split["propensity"], dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(reward) & (action >= 0) & (action < n_actions))
    rows = rows[~np.isfinite(target[rows, action[rows]])]
    if rows.size:
        w = np.minimum(ips_clip, 1.0 / np.clip(prop[rows], 1e-6, 1.0))
        w = w / w.mean()
        target[rows, action[rows]] = reward[rows]
        weight[rows, action[rows]] = w
        logged, logged_spend = split.get("passed"), split.get("spend")
        if logged is not None:
            passed[rows, action[rows]] = np.asarray(logged, dtype=np.float64)[rows]
        if logged_spend is not None:
            spend[rows, action[rows]] = np.asarray(logged_spend, dtype=np.float64)[rows]
    return target, passed, spend, weight


def value_targets(split: Split, n_actions: int, ips_clip: float,
                  norm: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Standardised Q targets [N, A] (0 where unobserved) and their weights [N, A] (0 = unobserved)."""
    target, _, _, weight = observed_plans(split, n_actions, ips_clip)
    observed = weight > 0
    if norm is None:
        vals = target[observed]
        shift = float(vals.mean()) if vals.size else 0.0
        scale = float(vals.std()) if vals.size > 1 else 1.0
        norm = (shift, scale if scale > 1e-6 else 1.0)
    z = np.where(observed, (np.nan_to_num(target) - norm[0]) / norm[1], 0.0)
    return z.astype(np.float32), weight.astype(np.float32), norm


def factored_targets(split: Split, n_actions: int, ips_clip: float, norm: tuple[float, float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Targets [N, 2A] — gates result (0/1) | standardised spend — and weights [N, 2A] (0 = unobserved).

    spend = cost + wall_cost[priority]·minutes, what the plan cost in the objective's units (the
    dataset prices the recorded cost and minutes); only plans whose gates result and spend are known count.
    """
    if any(name not in split.arrays for name in ("action_passed", "action_spend", "pass_value", "fail_penalty")):
        raise TrainingInputError("the factored objective needs the action_passed/action_spend/pass_value/fail_penalty arrays "
                         "(build the dataset with best-of-K attached)")
    _, passed, spend, weight = observed_plans(split, n_actions, ips_clip)
    weight = np.where(np.isfinite(passed) & np.isfinite(spend), weight, 0.0)
    observed = weight > 0
    spend = np.where(observed, spend, 0.0)
    if norm is None:
        vals = spend[observed]
        shift = float(vals.mean()) if vals.size else 0.0
        scale = float(vals.std()) if vals.size > 1 else 1.0
        norm = (shift, scale if scale > 1e-6 else 1.0)
    z = np.where(observed, (spend - norm[0]) / norm[1], 0.0)
    target = np.concatenate([np.where(observed, np.nan_to_num(passed), 0.0), z], axis=1)
    return target.astype(np.float32), np.concatenate([weight, weight], axis=1).astype(np.float32), norm


def factored_loss(values: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Weighted binary cross-entropy of the pass logits + weighted MSE of the standardised spend."""
    a = values.shape[1] // 2
    w = batch["value_weight"][:, :a]
    t = batch["value_target"]
    v = values.float()
    bce = F.binary_cross_entropy_with_logits(v[:, :a], t[:, :a], reduction="none")
    mse = (v[:, a:] - t[:, a:]) ** 2
    return (w * (bce + mse)).sum() / w.sum().clamp_min(1e-8)


def val_factored_loss(model: URM, split: Split, n_actions: int, ips_clip: float, spend_norm: tuple[float, float],
                      utility_scale: float, device: torch.device) -> float:
    """Weighted MSE of the composed Q against the observed utilities (priced as the dataset prices them:
    pass_value·passed − fail_penalty − spend), in units of the train utilities' std."""
    from planner_model.decode import factored_q

    _, passed, spend, weight = observed_plans(split, n_actions, ips_clip)
    weight = np.where(np.isfinite(passed) & np.isfinite(spend), weight, 0.0)
    if float(weight.sum()) <= 0:
        return float("nan")
    pv = np.asarray(split["pass_value"], dtype=np.float64)
    fp = np.asarray(split["fail_penalty"], dtype=np.float64)
    utility = pv[:, None] * np.nan_to_num(passed) - fp[:, None] - np.nan_to_num(spend)
    q = factored_q(predict_values(model, split["inputs"], device), pv, fp, spend_norm)
    err = np.where(weight > 0, (q - utility) / utility_scale, 0.0)
    return float((weight * err**2).sum() / weight.sum())


LINEAR_L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def fit_linear_value(model: URM, train_split: Split, val_split: Split, n_actions: int, ips_clip: float,
                     spend_norm: tuple[float, float], utility_scale: float, device: torch.device,
                     steps: int = 600, l2_grid: tuple[float, ...] = LINEAR_L2_GRID) -> dict[str, Any]:
    """Refit the factored value as a linear function of which tokens the input holds.

    The encoder's value head is zeroed and the wide path (``value_wide``) becomes the whole value:
    per plan, a pass logit and a standardised spend, each a sum of per-token weights. The loss is
    the factored loss plus ``l2``·‖W‖², minimised full-batch from zero (convex: no seed or epoch to
    draw), for each ``l2`` in the grid; the kept ``l2`` predicts the validation utilities best (the
    epoch criterion). Without a validation split with observed plans there is nothing to choose by:
    the middle of the grid is kept and ``selection`` says so. The bag of tokens is a sparse matrix
    (rows × vocabulary would not fit densely at scale). Why a linear value at all: on histories of
    a few thousand decisions the encoder's value varies with the training seed as much as it gains,
    and this fit does not (docs/beat-the-heuristic.md).
    """
    if model.wide is None or model.value is None:
        raise TrainingInputError("the linear value needs a model with value_wide")
    vocab = model.cfg.vocab_size
    ids = np.asarray(train_split["inputs"], dtype=np.int64)
    rows, cols = [], []
    for i, row in enumerate(ids):
        present = np.unique(row[(row > 0) & (row < vocab)])
        rows.append(np.full(present.size, i))
        cols.append(present)
    index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    x = torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (len(ids), vocab),
                                check_invariants=True).coalesce().to(device)
    t, w, _ = factored_targets(train_split, n_actions, ips_clip, spend_norm)
    batch = {"value_target": torch.from_numpy(t).to(device), "value_weight": torch.from_numpy(w).to(device)}
    with torch.no_grad():
        model.value.weight.zero_()
        model.value.bias.zero_()

    # Something to choose by: validation rows with an observed gates result and spend.
    selecting = len(val_split) > 0 and bool((factored_targets(val_split, n_actions, ips_clip, spend_norm)[1] > 0).any())

    def score() -> float:
        return val_factored_loss(model, val_split, n_actions, ips_clip, spend_norm, utility_scale, device) \
            if selecting else float("nan")

    grid = l2_grid if selecting else (l2_grid[len(l2_grid) // 2],)
    fits: list[dict[str, Any]] = []
    best: tuple[float, float, Tensor, Tensor] | None = None  # (val loss, l2, weight, bias)
    for l2 in grid:
        weight = torch.zeros(2 * n_actions, vocab, device=device, requires_grad=True)
        bias = torch.zeros(2 * n_actions, device=device, requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=3e-2)
        for _ in range(steps):
            loss = factored_loss(torch.sparse.mm(x, weight.T) + bias, batch) + l2 * (weight**2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        with torch.no_grad():
            model.wide.weight.copy_(weight)
            model.wide.bias.copy_(bias)
        val = score()
        fits.append({"l2": l2, "train_loss": round(float(loss.item()), 6),
                     "val_value_loss": None if math.isnan(val) else round(val, 6)})
        if best is None or (not math.isnan(val) and val < best[0]):
            best = (val, l2, weight.detach().clone(), bias.detach().clone())
    assert best is not None
    with torch.no_grad():
        model.wide.weight.copy_(best[2])
        model.wide.bias.copy_(best[3])
    return {"model": "linear", "l2": best[1], "selection": "validation" if selecting else "none (no validation split)",
            "val_value_loss": None if math.isnan(best[0]) else best[0], "grid": fits}


def _with_values(dataset: Any, vt: np.ndarray, vw: np.ndarray) -> Any:
    """The batched dataset plus each row's Q targets and weights (same sorted row order)."""
    from torch.utils.data import Dataset

    class WithValues(Dataset[dict[str, Tensor]]):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, index: int) -> dict[str, Tensor]:
            return {k: v[0] for k, v in self.__getitems__([index]).items()}

        def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
            out: dict[str, Tensor] = dataset.__getitems__(indices)
            idx = np.sort(np.asarray(indices, dtype=np.int64))
            out["value_target"] = torch.from_numpy(vt[idx])
            out["value_weight"] = torch.from_numpy(vw[idx])
            return out

    return WithValues()


def value_loss(values: Tensor, batch: dict[str, Tensor], relative_weight: float = 1.0) -> Tensor:
    """Weighted MSE of Q over the observed (row, action) cells, plus ``relative_weight`` × the MSE of
    Q and target each centred on the row's observed cells (rows with ≥ 2 observed plans).

    The plans replayed for one decision share their random draws (the same toolchain attempts),
    so differences between plans are far less noisy than their levels; the centred term fits
    exactly those differences — what the argmax needs — while the plain term keeps Q in
    utility units.
    """
    w = batch["value_weight"]
    q, t = values.float(), batch["value_target"]
    plain = (w * (q - t) ** 2).sum() / w.sum().clamp_min(1e-8)
    if relative_weight <= 0:
        return plain
    m = (w > 0).float()
    n = m.sum(dim=1, keepdim=True)
    rows = (n >= 2).float() * m
    qc = q - (q * m).sum(dim=1, keepdim=True) / n.clamp_min(1.0)
    tc = t - (t * m).sum(dim=1, keepdim=True) / n.clamp_min(1.0)
    rel = (rows * (qc - tc) ** 2).sum() / rows.sum().clamp_min(1e-8)
    return plain + relative_weight * rel


def compute_loss(
    logits: dict[str, Tensor],
    values: Tensor | None,
    batch: dict[str, Tensor],
    tc: TrainConfig,
    class_weights: list[Tensor] | None,
) -> Tensor:
    """Σ_heads weighted CE (ignore -1) / Σ sample weights, + optional value-head MSE.

    With Q targets in the batch (the ``value`` objective) the value term is :func:`value_loss`.
    """
    weights = batch["weights"]
    labels = batch["labels"]
    total = torch.zeros((), device=weights.device)
    for h, head_logits in enumerate(logits.values()):
        cw = class_weights[h] if class_weights is not None else None
        ce = F.cross_entropy(head_logits.float(), labels[:, h], weight=cw, ignore_index=-1, reduction="none")
        valid = (labels[:, h] >= 0).float()
        total = total + (ce * weights).sum() / (weights * valid).sum().clamp_min(1e-8)
    if values is not None and "value_target" in batch and objective_of(tc) == "factored":
        total = total + max(tc.value_loss_weight, 0.0) * factored_loss(values, batch)
    elif values is not None and "value_target" in batch:
        rel = float(tc.extra.get("relative_weight", 0.0))
        total = total + max(tc.value_loss_weight, 0.0) * value_loss(values, batch, rel)
    elif values is not None and tc.value_loss_weight > 0:
        reward = batch["reward"]
        observed = ~torch.isnan(reward) & (batch["action"] >= 0)
        if observed.any():
            pred = values.float().gather(1, batch["action"].clamp_min(0)[:, None])[:, 0]
            mse = (pred - torch.nan_to_num(reward)) ** 2
            total = total + tc.value_loss_weight * (mse * observed).sum() / observed.sum()
    return total


@torch.no_grad()
def predict_logits(model: URM, inputs: np.ndarray, device: torch.device, batch_size: int = 1024) -> list[np.ndarray]:
    """Per-head logits (float32 numpy) for a whole split, in head order."""
    model.eval()
    chunks: list[list[np.ndarray]] = []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    for lo in range(0, len(inputs), batch_size):
        ids = torch.from_numpy(np.asarray(inputs[lo : lo + batch_size], dtype=np.int64)).to(device)
        with amp:
            logits, _ = model(ids)
        chunks.append([x.float().cpu().numpy() for x in logits.values()])
    n_heads = len(model.cfg.heads)
    if not chunks:
        return [np.zeros((0, n), dtype=np.float32) for _, n in model.cfg.heads]
    return [np.concatenate([c[h] for c in chunks]) for h in range(n_heads)]


@torch.no_grad()
def predict_values(model: URM, inputs: np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Value-head outputs [N, n_actions × value_outputs] (standardised units) for a whole split."""
    model.eval()
    out: list[np.ndarray] = []
    for lo in range(0, len(inputs), batch_size):
        ids = torch.from_numpy(np.asarray(inputs[lo : lo + batch_size], dtype=np.int64)).to(device)
        _, values = model(ids)
        if values is None:
            raise ValueError("the model has no value head")
        out.append(values.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.n_actions * model.cfg.value_outputs), dtype=np.float32)


def val_value_loss(model: URM, inputs: np.ndarray, targets: tuple[np.ndarray, np.ndarray], device: torch.device,
                   relative_weight: float = 1.0) -> float:
    """:func:`value_loss` over a whole split (NaN when nothing is observed)."""
    q = predict_values(model, inputs, device)
    vt, vw = targets
    if float(vw.sum()) <= 0:
        return float("nan")
    batch = {"value_target": torch.from_numpy(vt), "value_weight": torch.from_numpy(vw)}
    return float(value_loss(torch.from_numpy(q), batch, relative_weight).item())


def evaluate_split(model: URM, split: Split, table: np.ndarray, device: torch.device) -> dict[str, Any]:
    """Loss, per-head accuracy (of the decoded valid tuple) and exact match on one split."""
    logits = predict_logits(model, split["inputs"], device)
    labels = np.asarray(split["labels"])
    nll = 0.0
    for h, x in enumerate(logits):
        t = torch.from_numpy(x)
        nll += float(F.cross_entropy(t, torch.tensor(labels[:, h]), ignore_index=-1).item()) if (labels[:, h] >= 0).any() else 0.0
    best, _ = fast_decode(logits, table)
    decoded = table[best]
    acc = {}
    for h, (name, _) in enumerate(model.cfg.heads):
        valid = labels[:, h] >= 0
        acc[name] = float((decoded[valid, h] == labels[valid, h]).mean()) if valid.any() else float("nan")
    targets = labels_to_actions(labels, table)
    exact = float((best[targets >= 0] == targets[targets >= 0]).mean()) if (targets >= 0).any() else float("nan")
    return {"loss": nll, "acc": acc, "exact_match": exact, "logits": logits, "targets": targets}


class EMA:
    """Exponential moving average of the weights (float32 shadow copies)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)


def _progress(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), transient=True)
    progress.start()
    progress.add_task(description, total=total, loss="")
    return progress


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    temperature: float
    epochs_run: int
    stopped_early: bool


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    tc: TrainConfig,
    model_overrides: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on ``data_dir`` and write the best checkpoint to ``out_dir`` (see module docstring).

    ``stop_after`` ends this invocation after that many epochs (a time box), leaving ``resume/`` to
    continue the same schedule later; ``tc.epochs`` always defines the LR schedule.
    """
    di = dist_info_from_env()
    device = select_device(tc.device, di.local_rank)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    distributed = di.world_size > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)

    out = Path(out_dir)
    info = load_dataset_info(data_dir)
    vocab, _ = load_vocab(data_dir)  # the dataset's own vocab_sha256 is what checkpoints carry
    table = action_table(info)
    train_split, val_split = load_split(info, "train"), load_split(info, "val")
    if len(train_split) == 0:
        raise TrainingInputError(f"{data_dir}: the train split is empty")

    objective = objective_of(tc)
    if objective in ("value", "factored"):  # a copy: the value normalisation is recorded in tc.extra
        tc = TrainConfig.from_dict({**tc.to_dict(), "value_loss_weight": tc.value_loss_weight if tc.value_loss_weight > 0 else 1.0})
    cfg_dict: dict[str, Any] = {"vocab_size": info.vocab_size, "heads": info.head_sizes, "seq_len": info.seq_len, "n_actions": len(info.actions),
                                "value_outputs": 2 if objective == "factored" else 1}
    linear_value = objective == "factored" and tc.extra.get("value_model") == "linear"
    if linear_value:
        cfg_dict["value_wide"] = True
    elif tc.extra.get("value_model", "encoder") != "encoder":
        vm = tc.extra.get("value_model")
        raise TrainingInputError(f"value_model {vm!r} is not available with the {objective} objective "
                                 "(encoder, or linear with the factored objective)")
    cfg_dict.update(model_overrides or {})
    resume_dir = out / "resume"
    state: dict[str, Any] = {}
    resume_tensors: dict[str, Tensor] = {}
    if resume:
        resume_tensors, state = load_training_state(resume_dir)
        meta = read_checkpoint_meta(resume_dir)
        if meta.get("dataset_sha256") != info.dataset_sha256:
            raise CheckpointError("cannot resume: the dataset changed since the run started")
        cfg_dict = dict(meta["model_config"])
        tc = TrainConfig.from_dict({**state["train_config"], "epochs": tc.epochs, "quiet": tc.quiet, "device": tc.device})
        # the run's own objective and value model, not this call's
        objective = objective_of(tc)
        linear_value = objective == "factored" and tc.extra.get("value_model") == "linear"
    cfg = URMConfig.from_dict(cfg_dict)
    if linear_value and not (cfg.value_wide and cfg.n_actions > 0):
        raise TrainingInputError("value_model linear needs a model with value_wide and a value head "
                                 "(the resumed run, or a model override, has none)")
    model = URM(cfg).to(device)
    if resume:
        weights, _ = read_verified_tensors(resume_dir / "model.safetensors", read_checkpoint_meta(resume_dir).get("weights_sha256"))
        model.load_state_dict(weights)
    ddp_model: nn.Module = model
    if distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=cfg.n_actions > 0 and tc.value_loss_weight <= 0,
        )

    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    ema = EMA(model, tc.ema_decay) if tc.ema else None
    if resume:
        optimizer_from_flat(opt, {k: v.to(device) for k, v in resume_tensors.items() if k.startswith("opt.")}, state["optimizer"])
        if ema is not None:
            for k in ema.shadow:
                if f"ema.{k}" in resume_tensors:
                    ema.shadow[k] = resume_tensors[f"ema.{k}"].to(device)

    dataset = batched_dataset(train_split)
    val_values: tuple[np.ndarray, np.ndarray] | None = None
    val_metric: Callable[[URM], float] | None = None
    if objective == "factored":
        clip = float(tc.extra.get("ips_clip", 20.0))
        stored = tc.extra.get("spend_norm")
        ft, fw, fnorm = factored_targets(train_split, len(info.actions), clip, tuple(stored) if stored else None)  # type: ignore[arg-type]
        if not (fw > 0).any():
            raise TrainingInputError(f"{data_dir}: the factored objective needs rewards with gates results (best-of-K labels)")
        tc.extra["spend_norm"] = [fnorm[0], fnorm[1]]
        if "utility_scale" not in tc.extra:
            _, _, unorm = value_targets(train_split, len(info.actions), clip)
            tc.extra["utility_scale"] = unorm[1]
        dataset = _with_values(dataset, ft, fw)
        if len(val_split):
            uscale = float(tc.extra["utility_scale"])

            def val_metric(m: URM) -> float:
                return val_factored_loss(m, val_split, len(info.actions), clip, fnorm, uscale, device)
    elif objective == "value":
        clip = float(tc.extra.get("ips_clip", 20.0))
        stored = tc.extra.get("value_norm")
        vt, vw, norm = value_targets(train_split, len(info.actions), clip,
                                     tuple(stored) if stored else None)  # type: ignore[arg-type]
        if not (vw > 0).any():
            raise TrainingInputError(f"{data_dir}: the value objective needs rewards (best-of-K action_rewards or logged utilities)")
        tc.extra["value_norm"] = [norm[0], norm[1]]
        dataset = _with_values(dataset, vt, vw)
        if len(val_split):
            vvt, vvw, _ = value_targets(val_split, len(info.actions), clip, norm)
            val_values = (vvt, vvw)
    sampler: DistributedSampler[dict[str, Tensor]] = DistributedSampler(dataset, num_replicas=di.world_size, rank=di.rank, shuffle=True, seed=tc.seed)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, collate_fn=lambda b: b, num_workers=0)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * tc.epochs
    class_weights = class_weight_tensors(train_split, info, device) if tc.class_weights else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    start_epoch = int(state.get("epoch", 0))
    step = int(state.get("step", 0))
    best = dict(state.get("best", {"exact_match": -1.0, "loss": float("inf"), "epoch": 0}))
    best.setdefault("score", best["exact_match"])  # resume states written before "score" existed
    bad_epochs = int(state.get("bad_epochs", 0))
    stopped_early = False
    metrics_path = out / "metrics.jsonl"
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and metrics_path.exists():
            metrics_path.unlink()
    meta_common: dict[str, Any] = {
        "vocab": vocab, "vocab_sha256": info.vocab_sha256, "heads": info.heads, "actions": info.actions,
        "swarm_types": info.swarm_types, "dataset_sha256": info.dataset_sha256,
    }

    epoch = start_epoch
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        ddp_model.train()
        progress = _progress(di.is_main and not tc.quiet, steps_per_epoch, f"epoch {epoch + 1}/{tc.epochs}")
        loss_sum, n_batches = 0.0, 0
        for batch_cpu in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch_cpu.items()}
            lr = lr_at(step, total_steps, tc)
            for group in opt.param_groups:
                group["lr"] = lr
            with amp:
                logits, values = ddp_model(batch["inputs"])
            loss = compute_loss(logits, values, batch, tc, class_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_sum += float(loss.item())
            n_batches += 1
            if progress is not None:
                progress.update(0, advance=1, loss=f"loss {loss_sum / n_batches:.4f}")
        if progress is not None:
            progress.stop()
        train_loss = loss_sum / max(1, n_batches)
        if distributed:
            t = torch.tensor([train_loss], device=device)
            dist.all_reduce(t)
            train_loss = float(t.item()) / di.world_size

        stop = torch.zeros(1, device=device)
        if di.is_main:
            live = {k: v.clone() for k, v in model.state_dict().items()}
            if ema is not None:
                model.load_state_dict({k: v.to(live[k].dtype) for k, v in ema.shadow.items()})
            ev: dict[str, Any] = evaluate_split(model, val_split, table, device) if len(val_split) else {"loss": float("nan"), "acc": {}, "exact_match": float("nan")}
            if val_metric is not None:
                ev["value_loss"] = val_metric(model)
            elif val_values is not None:
                ev["value_loss"] = val_value_loss(model, val_split["inputs"], val_values, device,
                                                  float(tc.extra.get("relative_weight", 0.0)))
            eval_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(live)
            elapsed = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1, "step": step, "train_loss": train_loss, "val_loss": ev["loss"],
                "val_acc": ev["acc"], "val_exact_match": ev["exact_match"], "lr": lr_at(step - 1, total_steps, tc),
                **({"val_value_loss": ev["value_loss"]} if "value_loss" in ev else {}),
                "time_s": round(elapsed, 4), "examples_per_s": round(len(train_split) / elapsed, 1),
            }
            append_jsonl(metrics_path, record)
            if not tc.quiet:
                print(f"epoch {epoch + 1}: train_loss {train_loss:.4f} val_loss {ev['loss']:.4f} val_exact {ev['exact_match']:.4f} ({elapsed:.1f}s)", flush=True)
            score = ev["exact_match"] if not math.isnan(ev["exact_match"]) else -ev["loss"]
            if "value_loss" in ev and not math.isnan(ev["value_loss"]):
                score = -ev["value_loss"]  # value objectives keep the epoch that predicts utility best
            improved = score > best["score"] + 1e-9 or (abs(score - best["score"]) <= 1e-9 and ev["loss"] < best["loss"])
            if improved or best["epoch"] == 0:
                best = {"score": score, "exact_match": ev["exact_match"], "loss": ev["loss"], "epoch": epoch + 1,
                        **({"value_loss": ev["value_loss"]} if "value_loss" in ev else {})}
                bad_epochs = 0
                temperature = 1.0
                if len(val_split) and "logits" in ev:
                    temperature = fit_temperature(ev["logits"], table, ev["targets"])
                save_checkpoint(out, eval_weights, cfg, **meta_common, metrics={**record, "best_epoch": epoch + 1}, temperature=temperature, train_config={**tc.to_dict(), "decision": objective})
            else:
                bad_epochs += 1
            # resume point: last epoch's live weights + optimizer/EMA state
            save_checkpoint(resume_dir, model.state_dict(), cfg, **meta_common, metrics=record, train_config={**tc.to_dict(), "decision": objective})
            opt_tensors, opt_info = optimizer_to_flat(opt)
            if ema is not None:
                opt_tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
            save_training_state(resume_dir, opt_tensors, {
                "epoch": epoch + 1, "step": step, "best": best, "bad_epochs": bad_epochs,
                "optimizer": opt_info, "train_config": tc.to_dict(),
            })
            if tc.patience > 0 and bad_epochs >= tc.patience:
                stop[0] = 1.0
        if distributed:
            dist.broadcast(stop, src=0)
        if stop.item() > 0:
            stopped_early = True
            break
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
            break

    finished = stopped_early or epoch + 1 >= tc.epochs
    if linear_value and finished and di.is_main and (out / "checkpoint.json").exists():
        # The kept epoch's encoder (imitation heads, confidence), with the value refitted linearly.
        meta = read_checkpoint_meta(out)
        weights, _ = read_verified_tensors(out / "model.safetensors", meta.get("weights_sha256"))
        model.load_state_dict({k: v.to(device) for k, v in weights.items()})
        fnorm_kept = tuple(tc.extra["spend_norm"])
        fit = fit_linear_value(model, train_split, val_split, len(info.actions), float(tc.extra.get("ips_clip", 20.0)),
                               (float(fnorm_kept[0]), float(fnorm_kept[1])), float(tc.extra["utility_scale"]), device)
        # What the kept value scores is now the refitted one's (the epoch's wide & deep value is gone).
        refit_loss = fit["val_value_loss"]
        best = {**best, "value_fit": fit, "value_loss": refit_loss,
                "score": -refit_loss if refit_loss is not None else best["score"]}
        save_checkpoint(out, {k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg, **meta_common,
                        metrics={**meta.get("metrics", {}), "val_value_loss": refit_loss, "value_fit": fit},
                        temperature=float(meta.get("temperature", 1.0)),
                        train_config={**tc.to_dict(), "decision": objective})

    result_temp = 1.0
    if di.is_main and (out / "checkpoint.json").exists():
        result_temp = float(read_checkpoint_meta(out).get("temperature", 1.0))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(out, int(best["epoch"]), best, result_temp, epoch + 1 - start_epoch if tc.epochs > start_epoch else 0, stopped_early)


def main() -> None:
    """``python -m planner_model.train`` / ``torchrun -m planner_model.train``: same options as ``cyntra planner train``."""
    from planner_model.cli_commands import train_cmd

    train_cmd(prog_name="planner_model.train")


if __name__ == "__main__":
    main()
