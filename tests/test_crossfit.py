"""Cross-fitting folds: every row is held out exactly once, never beside its own issue in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cyntra.errors import CyntraError
from planner_model.crossfit import write_folds
from planner_model.data import load_dataset_info, load_split
from planner_model.dataset_format import SPLITS


def _dataset(d: Path, n_issues: int = 40) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True)
    keys = rng.integers(0, 2**62, size=n_issues)
    sizes = {"train": 60, "val": 15, "test": 15}
    for split, n in sizes.items():
        np.save(d / f"{split}__inputs.npy", rng.integers(1, 9, size=(n, 6)).astype(np.int32))
        np.save(d / f"{split}__labels.npy", np.zeros((n, 4), dtype=np.int64))
        for name in ("weights", "reward", "propensity"):
            np.save(d / f"{split}__{name}.npy", rng.random(n).astype(np.float32))
        for name in ("action", "heuristic_action", "time"):
            np.save(d / f"{split}__{name}.npy", rng.integers(0, 20, size=n).astype(np.int64))
        np.save(d / f"{split}__issue_key.npy", rng.choice(keys, size=n).astype(np.int64))
    (d / "vocab.json").write_text(json.dumps({"tokens": ["<pad>", "<unk>", "<cls>", "<sep>"]}))
    arrays = ["inputs", "labels", "weights", "action", "reward", "propensity", "heuristic_action", "issue_key", "time"]
    (d / "dataset.json").write_text(json.dumps({
        "seq_len": 6, "vocab_size": 4, "vocab_sha256": "x", "heads": {"swarm_id": ["a"], "parallelism": [1],
        "max_run_minutes": [15], "max_candidates": [1]}, "actions": [], "swarm_types": {}, "label_mode": "executed",
        "splits": sizes, "dataset_sha256": "abc", "source": {}, "arrays": arrays}))
    return d


def test_folds_partition_rows_by_issue(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "data")
    every = {name: np.concatenate([np.load(src / f"{s}__{name}.npy") for s in SPLITS]) for name in ("issue_key", "inputs")}
    folds = write_folds(src, tmp_path / "folds", 3)
    held_rows = []
    for f, d in enumerate(folds):
        info = load_dataset_info(d)
        assert {s: len(load_split(info, s)) for s in SPLITS} == info.splits  # the trainer reads the fold
        parts = {s: {n: np.load(d / f"{s}__{n}.npy") for n in ("issue_key", "inputs")} for s in SPLITS}
        assert sum(info.splits.values()) == len(every["issue_key"])
        held = set(parts["test"]["issue_key"].tolist())
        seen = set(parts["train"]["issue_key"].tolist()) | set(parts["val"]["issue_key"].tolist())
        assert not held & seen  # no issue is both trained on and held out
        assert all(k % 3 == f for k in held)
        held_rows.extend(map(bytes, np.asarray(parts["test"]["inputs"])))
        assert info.dataset_sha256 != "abc"
        assert json.loads((d / "dataset.json").read_text())["source"]["crossfit"] == {"of": str(src), "fold": f, "folds": 3}
        assert (d / "vocab.json").read_bytes() == (src / "vocab.json").read_bytes()
    assert sorted(held_rows) == sorted(map(bytes, every["inputs"]))  # each row held out exactly once


def test_fewer_than_two_folds_or_an_empty_fold_is_refused(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="at least 2 folds"):
        write_folds(src, tmp_path / "folds", 1)
    one_issue = _dataset(tmp_path / "one", n_issues=1)
    with pytest.raises(CyntraError, match="has no training decisions"):
        write_folds(one_issue, tmp_path / "folds1", 2)
    assert not (tmp_path / "folds1").exists()  # nothing half-written
