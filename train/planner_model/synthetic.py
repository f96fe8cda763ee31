"""A synthetic planner dataset in the exact on-disk format of DATASET_CONTRACT (for tests and benches).

The label is a fixed random function of a few "feature" tokens (size × risk × tool) placed at random
positions among noise tokens, so a sequence model can learn it exactly, a bag-of-tokens linear
model only partly (the map has interactions), and a majority guess poorly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from cyntra.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, dumps_json
from cyntra.planner.action_space import (
    ACTION_FIELDS,
    MAX_CANDIDATES,
    MAX_RUN_MINUTES,
    PARALLELISM,
    ActionSpace,
    SwarmType,
)
from planner_model.dataset_format import npy_bytes

SPECIALS = ["<PAD>", "<UNK>", "<CLS>", "<SEP>"]
SIZES = ["size=XS", "size=S", "size=M", "size=L", "size=XL"]
RISKS = ["risk=low", "risk=medium", "risk=high"]
TOOLS = ["tool=codex", "tool=claude", "tool=opencode", "tool=crush"]
SPLITS = ("train", "val", "test")


def write_synthetic_dataset(
    out_dir: str | Path,
    *,
    n: int = 600,
    seq_len: int = 96,
    seed: int = 0,
    n_noise_tokens: int = 200,
    min_len: int = 24,
    label_noise: float = 0.0,
    heuristic_agreement: float = 0.9,
    swarm_types: dict[str, SwarmType] | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    use_tool: bool = True,
) -> Path:
    """Write ``n`` examples split time-ordered into train/val/test; returns the directory.

    ``use_tool=False`` makes the label depend on size × risk only (15 cases: learnable from a few
    hundred examples, for fast tests).
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = ActionSpace(swarm_types)
    actions = [a.label() for a in space.actions]
    heads: dict[str, list[str] | list[int]] = {
        "swarm_id": list(space.swarms),
        "parallelism": list(PARALLELISM),
        "max_run_minutes": list(MAX_RUN_MINUTES),
        "max_candidates": list(MAX_CANDIDATES),
    }
    table = np.array(
        [[list(heads[f]).index(getattr(a, f)) for f in ACTION_FIELDS] for a in space.actions],
        dtype=np.int64,
    )
    tokens = SPECIALS + SIZES + RISKS + TOOLS + [f"w{i}" for i in range(n_noise_tokens)]
    tok = {t: i for i, t in enumerate(tokens)}
    rule = rng.integers(0, len(actions), size=(len(SIZES), len(RISKS), len(TOOLS)))

    inputs = np.zeros((n, seq_len), dtype=np.int32)
    action = np.zeros(n, dtype=np.int64)
    length = rng.integers(min_len, seq_len + 1, size=n)
    first_noise = tok["w0"]
    for i in range(n):
        s, r, t = rng.integers(len(SIZES)), rng.integers(len(RISKS)), rng.integers(len(TOOLS))
        body = rng.integers(first_noise, len(tokens), size=int(length[i]) - 1).astype(np.int32)
        slots = rng.choice(len(body), size=3, replace=False)
        body[slots] = [tok[SIZES[s]], tok[RISKS[r]], tok[TOOLS[t]]]
        inputs[i, 0] = tok["<CLS>"]
        inputs[i, 1 : len(body) + 1] = body
        action[i] = rule[s, r, t if use_tool else 0]
    flip = rng.random(n) < label_noise
    action[flip] = rng.integers(0, len(actions), size=int(flip.sum()))
    heuristic = np.where(
        rng.random(n) < heuristic_agreement, action, rng.integers(0, len(actions), size=n)
    ).astype(np.int64)
    reward = rng.normal(0.5, 0.2, size=n).astype(np.float32)
    reward[rng.random(n) < 0.1] = np.nan
    arrays_all: dict[str, np.ndarray] = {
        "inputs": inputs,
        "labels": table[action],
        "weights": np.ones(n, dtype=np.float32),
        "action": action,
        "reward": reward,
        "propensity": np.ones(n, dtype=np.float32),
        "heuristic_action": heuristic,
        "issue_key": rng.integers(0, 2**62, size=n, dtype=np.int64),
        "time": (1_700_000_000_000 + np.arange(n, dtype=np.int64) * 60_000),
    }
    n_train = int(n * fractions[0])
    n_val = int(n * fractions[1])
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}

    vocab_text = dumps_json({"tokens": tokens})
    atomic_write_text(out / "vocab.json", vocab_text)
    digest = hashlib.sha256()
    for split in SPLITS:
        lo, hi = bounds[split]
        for name, arr in arrays_all.items():
            data = npy_bytes(np.ascontiguousarray(arr[lo:hi]))
            atomic_write_bytes(out / f"{split}__{name}.npy", data)
            digest.update(f"{split}__{name}".encode())
            digest.update(data)
    digest.update(vocab_text.encode())
    meta = {
        "schema_version": "cyntra.planner_dataset.v1",
        "seq_len": seq_len,
        "vocab_size": len(tokens),
        "vocab_sha256": hashlib.sha256(vocab_text.encode()).hexdigest(),
        "special_tokens": {"PAD": 0, "UNK": 1, "CLS": 2, "SEP": 3},
        "heads": heads,
        "actions": actions,
        "swarm_types": dict(space.swarm_types),
        "label_mode": "executed",
        "splits": {s: bounds[s][1] - bounds[s][0] for s in SPLITS},
        "split_boundaries": {"train_end": "synthetic", "val_end": "synthetic"},
        "n_similar": 8,
        "truncations": {"examples_truncated": 0, "tokens_dropped": 0},
        "dataset_sha256": digest.hexdigest(),
        "source": {"workspace": "synthetic", "runs": 0, "decisions": n, "skipped": {}, "seed": seed},
        "arrays": list(arrays_all),
    }
    atomic_write_json(out / "dataset.json", meta)
    return out


def main() -> None:
    """``python -m planner_model.synthetic OUT [N] [SEED]``."""
    import sys

    args = sys.argv[1:]
    if not args:
        raise SystemExit("usage: python -m planner_model.synthetic OUT_DIR [N] [SEED]")
    path = write_synthetic_dataset(
        args[0], n=int(args[1]) if len(args) > 1 else 600, seed=int(args[2]) if len(args) > 2 else 0
    )
    print(json.dumps({"dataset": str(path)}))


if __name__ == "__main__":
    main()
