"""The torch-free half of checkpoints: file names, metadata, hashes and the workspace checks.

``planner_model.checkpoint`` (torch) and ``planner_model.runtime.load_numpy_checkpoint`` (numpy
only, for kernels installed without torch) verify a checkpoint through the same code here, so both
refuse the same checkpoints for the same reasons.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from planner_model.config import URMConfig

M = TypeVar("M")

SCHEMA_VERSION = "cyntra.planner_checkpoint.v1"
WEIGHTS = "model.safetensors"
META = "checkpoint.json"
HASH = "checkpoint.sha256"


class CheckpointError(Exception):
    """A checkpoint that must not be used; ``reason`` says why (for the decision record)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class Loaded(Generic[M]):
    """A verified checkpoint: its model (torch ``URM`` or ``NumpyURM``) plus its metadata."""

    model: M
    config: URMConfig
    meta: dict[str, Any]
    sha256: str
    path: Path

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checkpoint_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / META
    if not Path(ckpt_dir).is_dir():
        raise CheckpointError(f"checkpoint directory {ckpt_dir} does not exist")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {META} in {ckpt_dir}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{META} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{META} is not a {SCHEMA_VERSION} checkpoint")
    return meta


def verified_meta(
    root: Path,
    *,
    expected_actions: list[str] | None = None,
    expected_swarms: list[str] | dict[str, str] | None = None,
    expected_vocab_sha256: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The checkpoint's metadata and recorded weights hash, after the checks that need no weights:
    schema, hash file, action space, swarms and vocabulary. Raises ``CheckpointError``."""
    meta = read_checkpoint_meta(root)
    try:
        recorded = (root / HASH).read_text(encoding="utf-8").split()[0]
    except (FileNotFoundError, IndexError):
        raise CheckpointError(f"missing or empty {HASH} in {root}") from None
    if meta.get("weights_sha256") not in (None, recorded):
        raise CheckpointError(f"{HASH} and {META} disagree on the weights hash")
    if expected_actions is not None and list(meta.get("actions", [])) != list(expected_actions):
        raise CheckpointError(
            f"action space mismatch: checkpoint has {len(meta.get('actions', []))} actions "
            f"{meta.get('actions', [])[:3]}…, workspace has {len(expected_actions)} {list(expected_actions)[:3]}…"
        )
    if expected_swarms is not None:
        ours = sorted(meta.get("swarm_types", {}))
        theirs = sorted(expected_swarms)
        same_types = not isinstance(expected_swarms, dict) or dict(expected_swarms) == meta.get("swarm_types")
        if ours != theirs or not same_types:
            raise CheckpointError(f"swarm mismatch: checkpoint trained for {meta.get('swarm_types')}, workspace has {expected_swarms}")
    if expected_vocab_sha256 is not None and meta.get("vocab_sha256") != expected_vocab_sha256:
        raise CheckpointError(
            f"vocabulary mismatch: checkpoint vocab sha256 {str(meta.get('vocab_sha256'))[:12]}…, expected {expected_vocab_sha256[:12]}…"
        )
    return meta, recorded


def expected_shapes(cfg: URMConfig) -> dict[str, tuple[int, ...]]:
    """Every weight ``URM(cfg).state_dict()`` holds, with its shape (a test checks this against
    torch): what lets a loader without torch refuse what ``load_state_dict(strict=True)`` refuses."""
    d, inner = cfg.hidden, int(cfg.expansion * cfg.hidden)
    out: dict[str, tuple[int, ...]] = {"embed.weight": (cfg.vocab_size, d)}
    for i in range(cfg.layers):
        p = f"blocks.{i}."
        out.update({f"{p}attn.qkv.weight": (3 * d, d), f"{p}attn.out.weight": (d, d), f"{p}norm1.weight": (d,),
                    f"{p}mlp.gate_up.weight": (2 * inner, d), f"{p}mlp.conv.weight": (inner, 1, cfg.conv_kernel),
                    f"{p}mlp.down.weight": (d, inner), f"{p}norm2.weight": (d,)})
    for name, n in cfg.heads:
        out[f"heads.{name}.weight"], out[f"heads.{name}.bias"] = (n, d), (n,)
    if cfg.n_actions > 0:
        k = cfg.n_actions * cfg.value_outputs
        out["value.weight"], out["value.bias"] = (k, d), (k,)
        if cfg.value_wide:
            out["wide.weight"], out["wide.bias"] = (k, cfg.vocab_size), (k,)
    return out


def shape_problems(cfg: URMConfig, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and wrongly shaped weights (empty: the weights fit the config)."""
    want = expected_shapes(cfg)
    out = [f"missing {k}" for k in sorted(set(want) - set(shapes))]
    out += [f"unexpected {k}" for k in sorted(set(shapes) - set(want))]
    out += [f"{k} is {shapes[k]}, the config needs {want[k]}" for k in sorted(set(want) & set(shapes))
            if tuple(shapes[k]) != want[k]]
    return out


def model_config(meta: dict[str, Any]) -> URMConfig:
    """The checkpoint's model config, or ``CheckpointError`` naming what is wrong with it."""
    try:
        return URMConfig.from_dict(dict(meta["model_config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model_config in {META}: {exc}") from None


def read_weights_bytes(path: Path, expected_sha256: str | None) -> tuple[bytes, str]:
    """The weights file's bytes and sha256, refused when it does not match the recorded hash."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path.name} in {path.parent}") from None
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(
            f"{path.name} is corrupt: sha256 {digest[:12]}… does not match the recorded {expected_sha256[:12]}…"
        )
    return data, digest
