"""Cross-fitting: K copies of a planner dataset, each holding one fold of issues out.

Off-policy estimates of a learned policy computed on the decisions it was trained on are biased
upwards: where the logged plan happened to pass, an over-fitted model predicts a high value for
it, picks it, and so "matches" the log on exactly the lucky decisions. Cross-fitting removes
that: every decision is scored by a model trained without its issue. Fold ``f`` of ``k`` holds
the issues with ``issue_key % k == f`` as its test split; the other issues are its train split,
except one in nine (by a second digit of the same hash), which is its validation split (epoch
selection). Arrays, vocabulary and action space are the source dataset's, so the fold models
decode exactly as the full one does. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cyntra.errors import CyntraError
from cyntra.fsutil import atomic_write_bytes, atomic_write_json
from planner_model.dataset_format import SPLITS, array_path, npy_bytes

VAL_EVERY = 9  # one in VAL_EVERY of the training issues validates


def write_folds(data_dir: str | Path, out_root: str | Path, k: int) -> list[Path]:
    """Write ``out_root/fold{f}`` for f in 0..k-1 and return their paths (``k`` ≥ 2)."""
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {k}")
    src = Path(data_dir)
    meta: dict[str, Any] = json.loads((src / "dataset.json").read_text(encoding="utf-8"))
    names = list(meta["arrays"])
    rows = {name: np.concatenate([np.load(array_path(src, s, name)) for s in SPLITS]) for name in names}
    keys = rows["issue_key"].astype(np.int64)
    fold = keys % k
    second = (keys // k) % VAL_EVERY
    for f in range(k):  # check every fold before writing any
        if not (~(fold == f) & (second != 0)).any():
            raise CyntraError(f"{src}: cross-fitting fold {f} of {k} has no training decisions "
                              f"({len(keys)} decisions in all): use fewer folds or more history")
    out: list[Path] = []
    for f in range(k):
        held = fold == f
        masks = {"train": ~held & (second != 0), "val": ~held & (second == 0), "test": held}
        d = Path(out_root) / f"fold{f}"
        d.mkdir(parents=True, exist_ok=True)
        for split, mask in masks.items():
            for name in names:
                atomic_write_bytes(array_path(d, split, name), npy_bytes(rows[name][mask]))
        atomic_write_bytes(d / "vocab.json", (src / "vocab.json").read_bytes())
        digest = hashlib.sha256(f"{meta['dataset_sha256']}|fold {f} of {k}".encode()).hexdigest()
        atomic_write_json(d / "dataset.json", {
            **meta, "splits": {s: int(m.sum()) for s, m in masks.items()}, "dataset_sha256": digest,
            "split_boundaries": {"train_end": None, "val_end": None},  # folds are by issue, not by time
            "source": {**meta.get("source", {}), "crossfit": {"of": str(src), "fold": f, "folds": k}},
        })
        out.append(d)
    return out
