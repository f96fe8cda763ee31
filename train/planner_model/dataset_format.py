"""The on-disk planner dataset format (``cyntra.planner_dataset.v1``), shared with the trainer.

See ``.helpers/DATASET_CONTRACT.md``: ``dataset.json`` (:class:`DatasetMeta`), ``vocab.json``
and ``{split}__{array}.npy`` files loaded with ``np.load(path, mmap_mode="r")``. No torch here.
``heads`` keys are in ``ACTION_FIELDS`` order (swarm_id, parallelism, max_run_minutes,
max_candidates) = the column order of ``labels.npy``; ``dataset.json`` is written unsorted to keep it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cyntra.errors import InputError
from cyntra.kernel.artifacts import load_json_object, parse_artifact
from cyntra.planner.action_space import (
    ACTION_FIELDS,
    MAX_CANDIDATES,
    MAX_RUN_MINUTES,
    PARALLELISM,
    ActionSpace,
    PlanAction,
)

DATASET_SCHEMA: Final = "cyntra.planner_dataset.v1"
SPLITS: Final[tuple[str, ...]] = ("train", "val", "test")
ARRAYS: Final[tuple[str, ...]] = (
    "inputs", "labels", "weights", "action", "reward", "propensity", "heuristic_action", "issue_key", "time",
)
BEST_OF_K_ARRAYS: Final[tuple[str, ...]] = (
    "target_action", "action_rewards", "action_passed", "action_spend", "passed", "spend", "pass_value", "fail_penalty",
)
LabelMode = Literal["executed", "best-of-k", "outcome"]
LABEL_MODES: Final[tuple[str, ...]] = ("executed", "best-of-k", "outcome")
DEFAULT_SEQ_LEN: Final = 96


class DatasetMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.planner_dataset.v1"] = DATASET_SCHEMA
    seq_len: int = Field(ge=1)
    vocab_size: int = Field(ge=4)
    vocab_sha256: str
    special_tokens: dict[str, int]
    heads: dict[str, list[Any]]
    actions: list[str]
    swarm_types: dict[str, str]
    label_mode: LabelMode
    splits: dict[str, int]
    split_boundaries: dict[str, str | None]
    n_similar: int = Field(ge=0)
    truncations: dict[str, int]
    dataset_sha256: str
    source: dict[str, Any]
    arrays: list[str]


def heads_for(space: ActionSpace) -> dict[str, list[Any]]:
    """One classification head per action field, values in index order."""
    return {
        "swarm_id": list(space.swarms),
        "parallelism": list(PARALLELISM),
        "max_run_minutes": list(MAX_RUN_MINUTES),
        "max_candidates": list(MAX_CANDIDATES),
    }


def head_labels(action: PlanAction, heads: dict[str, list[Any]]) -> list[int]:
    """The head-wise decomposition of an action (-1 where a value is not in a head)."""
    out = []
    for f in ACTION_FIELDS:
        v = getattr(action, f)
        out.append(heads[f].index(v) if v in heads[f] else -1)
    return out


def issue_key(issue_id: str) -> int:
    """A stable non-negative int64 per issue id (first 8 bytes of sha256, top bit cleared)."""
    return int.from_bytes(hashlib.sha256(issue_id.encode("utf-8")).digest()[:8], "big") & ((1 << 63) - 1)


def npy_bytes(arr: npt.NDArray[Any]) -> bytes:
    """An array as ``.npy`` file bytes (contiguous, no pickle), for atomic writes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def array_path(directory: str | Path, split: str, name: str) -> Path:
    return Path(directory) / f"{split}__{name}.npy"


def read_meta(directory: str | Path) -> DatasetMeta:
    path = Path(directory) / "dataset.json"
    return parse_artifact(DatasetMeta, load_json_object(path), path)


def load_split(directory: str | Path, split: str, meta: DatasetMeta | None = None) -> dict[str, npt.NDArray[Any]]:
    """Memory-mapped arrays of one split (every array listed in ``meta.arrays``)."""
    m = meta or read_meta(directory)
    out: dict[str, npt.NDArray[Any]] = {}
    for name in m.arrays:
        p = array_path(directory, split, name)
        if not p.exists():
            raise InputError(p, "file not found")
        out[name] = np.load(p, mmap_mode="r")
    return out
