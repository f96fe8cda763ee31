"""Reading a planner dataset directory (DATASET_CONTRACT): metadata, vocab and memory-mapped splits.

Only reads; every problem is an InputError naming the file and field, never a silent fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyntra.errors import InputError
from cyntra.planner.action_space import ACTION_FIELDS, ActionSpace

REQUIRED_ARRAYS: dict[str, tuple[str, int]] = {  # name -> (dtype kind, ndim)
    "inputs": ("i", 2),
    "labels": ("i", 2),
    "weights": ("f", 1),
    "action": ("i", 1),
    "reward": ("f", 1),
    "propensity": ("f", 1),
    "heuristic_action": ("i", 1),
}
OPTIONAL_ARRAYS: dict[str, tuple[str, int]] = {
    "target_action": ("i", 1), "action_rewards": ("f", 2),
    # the factored value objective's targets and prices (best-of-K datasets; train.py)
    "action_passed": ("f", 2), "action_spend": ("f", 2), "passed": ("f", 1), "spend": ("f", 1),
    "pass_value": ("f", 1), "fail_penalty": ("f", 1),
}


@dataclass(frozen=True)
class DatasetInfo:
    """The parts of ``dataset.json`` the trainer and evaluator depend on."""

    path: Path
    seq_len: int
    vocab_size: int
    vocab_sha256: str
    heads: dict[str, list[Any]]
    actions: list[str]
    swarm_types: dict[str, str]
    label_mode: str
    dataset_sha256: str
    splits: dict[str, int]

    @property
    def head_sizes(self) -> list[tuple[str, int]]:
        return [(name, len(values)) for name, values in self.heads.items()]


def load_dataset_info(data_dir: str | Path) -> DatasetInfo:
    path = Path(data_dir) / "dataset.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "dataset.json not found (is this a planner dataset directory?)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object")

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise InputError(path, "missing field", field=key)
        if not isinstance(raw[key], kind):
            raise InputError(path, f"expected {kind}, got {type(raw[key]).__name__}", field=key)
        return raw[key]

    heads_raw = need("heads", dict)
    # Label columns follow the action fields' order; JSON writers may sort keys, so reorder.
    order = [f for f in ACTION_FIELDS if f in heads_raw] + [f for f in heads_raw if f not in ACTION_FIELDS]
    heads = {name: heads_raw[name] for name in order}
    for name, values in heads.items():
        if not isinstance(values, list) or not values:
            raise InputError(path, "each head needs a non-empty list of values", field=f"heads.{name}")
    return DatasetInfo(
        path=Path(data_dir),
        seq_len=need("seq_len", int),
        vocab_size=need("vocab_size", int),
        vocab_sha256=need("vocab_sha256", str),
        heads=heads,
        actions=list(need("actions", list)),
        swarm_types=dict(need("swarm_types", dict)),
        label_mode=str(raw.get("label_mode", "executed")),
        dataset_sha256=need("dataset_sha256", str),
        splits={str(k): int(v) for k, v in need("splits", dict).items()},
    )


def load_vocab(data_dir: str | Path) -> tuple[list[str], str]:
    """The vocabulary tokens and the sha256 of ``vocab.json``'s bytes."""
    path = Path(data_dir) / "vocab.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "vocab.json not found") from None
    try:
        tokens = json.loads(data)["tokens"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(path, "expected {\"tokens\": [...]}", field="tokens") from None
    return [str(t) for t in tokens], hashlib.sha256(data).hexdigest()


def action_table(info: DatasetInfo) -> np.ndarray:
    """[n_actions, n_heads] index of each valid action's field value in each head's value list."""
    space = ActionSpace(info.swarm_types)  # type: ignore[arg-type]
    by_label = {a.label(): a for a in space.actions}
    rows = []
    for i, label in enumerate(info.actions):
        act = by_label.get(label)
        if act is None:
            raise InputError(info.path / "dataset.json", f"action {label!r} is not a valid action of its swarm types", field=f"actions[{i}]")
        row = []
        for head, values in info.heads.items():
            value = getattr(act, head, None)
            if value not in values:
                raise InputError(info.path / "dataset.json", f"{head}={value!r} of {label!r} not in the head's values", field=f"heads.{head}")
            row.append(values.index(value))
        rows.append(row)
    return np.asarray(rows, dtype=np.int64)


def labels_to_actions(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map head-wise label rows to action indices (-1 where a head is ignored or the tuple is invalid)."""
    lookup = {tuple(int(v) for v in row): i for i, row in enumerate(table)}
    return np.asarray([lookup.get(tuple(int(v) for v in row), -1) for row in labels], dtype=np.int64)


@dataclass
class Split:
    """The arrays of one split (memory-mapped, read-only)."""

    name: str
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.arrays["inputs"].shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def get(self, key: str) -> np.ndarray | None:
        return self.arrays.get(key)


def load_split(info: DatasetInfo, split: str) -> Split:
    arrays: dict[str, np.ndarray] = {}
    for name, (kind, ndim) in {**REQUIRED_ARRAYS, **OPTIONAL_ARRAYS}.items():
        path = info.path / f"{split}__{name}.npy"
        if not path.exists():
            if name in REQUIRED_ARRAYS:
                raise InputError(path, "missing array file")
            continue
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InputError(path, f"not a readable .npy array: {exc}") from None
        if arr.dtype.kind != kind or arr.ndim != ndim:
            raise InputError(path, f"expected {ndim}-d array of kind {kind!r}, got {arr.ndim}-d {arr.dtype}")
        arrays[name] = arr
    n = arrays["inputs"].shape[0]
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise InputError(info.path / f"{split}__{name}.npy", f"{arr.shape[0]} rows, inputs has {n}")
    if arrays["inputs"].shape[1] != info.seq_len:
        raise InputError(info.path / f"{split}__inputs.npy", f"seq_len {arrays['inputs'].shape[1]} != dataset.json seq_len {info.seq_len}")
    if arrays["labels"].shape[1] != len(info.heads):
        raise InputError(info.path / f"{split}__labels.npy", f"{arrays['labels'].shape[1]} label columns for {len(info.heads)} heads")
    return Split(split, arrays)


def batched_dataset(split: Split) -> Any:
    """A torch Dataset over the memmaps whose ``__getitems__`` returns one batch of tensors."""
    import torch
    from torch.utils.data import Dataset

    class PlannerDataset(Dataset[dict[str, torch.Tensor]]):
        def __init__(self, data: Split) -> None:
            self.data = data

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return {k: v[0] for k, v in self.__getitems__([index]).items()}

        def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
            idx = np.sort(np.asarray(indices, dtype=np.int64))
            d = self.data
            return {
                "inputs": torch.from_numpy(np.asarray(d["inputs"][idx], dtype=np.int64)),
                "labels": torch.from_numpy(np.asarray(d["labels"][idx], dtype=np.int64)),
                "weights": torch.from_numpy(np.asarray(d["weights"][idx], dtype=np.float32)),
                "action": torch.from_numpy(np.asarray(d["action"][idx], dtype=np.int64)),
                "reward": torch.from_numpy(np.asarray(d["reward"][idx], dtype=np.float32)),
            }

    return PlannerDataset(split)
