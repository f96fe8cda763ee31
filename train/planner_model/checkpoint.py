"""Safe checkpoints: safetensors weights + JSON metadata + sha256; never pickle.

A checkpoint directory holds ``model.safetensors``, ``checkpoint.json`` (config, vocabulary and
its hash, heads, action space, swarm types, dataset hash, metrics, temperature, code version) and
``checkpoint.sha256``. Loading verifies the hash and that the action space, swarms and vocabulary
match the workspace, and refuses with a ``CheckpointError`` naming the reason otherwise.
Training state for ``--resume`` (optimizer moments, EMA weights) is stored the same way.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import cyntra
from cyntra.clock import now_iso
from cyntra.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from planner_model.checkpoint_files import (  # re-exported: the torch-free half of this module
    HASH,
    META,
    SCHEMA_VERSION,
    WEIGHTS,
    CheckpointError,
    Loaded,
    model_config,
    read_checkpoint_meta,
    read_weights_bytes,
    sha256_bytes,
    verified_meta,
)
from planner_model.config import URMConfig
from planner_model.model import URM

__all__ = ["HASH", "META", "SCHEMA_VERSION", "WEIGHTS", "CheckpointError", "LoadedCheckpoint", "load_checkpoint",
           "read_checkpoint_meta", "read_verified_tensors", "save_checkpoint", "sha256_bytes"]

@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``cyntra.__version__`` plus ``git describe`` of the source tree when available."""
    version = str(cyntra.__version__)
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        described = ""
    return f"{version}+{described}" if described else version


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors to safetensors bytes (contiguous CPU copies, no shared storage)."""
    return bytes(st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}))


def save_checkpoint(
    out_dir: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: URMConfig,
    *,
    vocab: list[str],
    vocab_sha256: str,
    heads: dict[str, list[Any]],
    actions: list[str],
    swarm_types: dict[str, str],
    dataset_sha256: str,
    metrics: dict[str, Any] | None = None,
    temperature: float = 1.0,
    train_config: dict[str, Any] | None = None,
) -> str:
    """Write the checkpoint atomically (weights, then hash, then metadata); returns the sha256."""
    out = Path(out_dir)
    data = tensors_bytes(state_dict)
    digest = sha256_bytes(data)
    atomic_write_bytes(out / WEIGHTS, data)
    atomic_write_text(out / HASH, f"{digest}  {WEIGHTS}\n")
    meta = {
        "schema_version": SCHEMA_VERSION,
        "model_config": config.to_dict(),
        "train_config": train_config or {},
        "vocab_sha256": vocab_sha256,
        "vocab": vocab,
        "heads": heads,
        "actions": actions,
        "swarm_types": swarm_types,
        "dataset_sha256": dataset_sha256,
        "metrics": metrics or {},
        "temperature": float(temperature),
        "weights_sha256": digest,
        "code_version": code_version(),
        "created_at": now_iso(),
    }
    atomic_write_json(out / META, meta)
    return digest


LoadedCheckpoint = Loaded[URM]  # a verified checkpoint with the torch model in eval mode


def read_verified_tensors(path: Path, expected_sha256: str | None) -> tuple[dict[str, torch.Tensor], str]:
    data, digest = read_weights_bytes(path, expected_sha256)
    try:
        return st_load(data), digest
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}") from None


def load_checkpoint(
    ckpt_dir: str | Path,
    *,
    expected_actions: list[str] | None = None,
    expected_swarms: list[str] | dict[str, str] | None = None,
    expected_vocab_sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load and verify a checkpoint; raise ``CheckpointError(reason)`` if it must not be used."""
    root = Path(ckpt_dir)
    meta, recorded = verified_meta(root, expected_actions=expected_actions, expected_swarms=expected_swarms,
                                   expected_vocab_sha256=expected_vocab_sha256)
    tensors, digest = read_verified_tensors(root / WEIGHTS, recorded)
    config = model_config(meta)
    model = URM(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit the model config: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedCheckpoint(model=model, config=config, meta=meta, sha256=digest, path=root)


def save_training_state(
    out_dir: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Optimizer/EMA tensors in ``optimizer.safetensors``; everything else in ``state.json``."""
    out = Path(out_dir)
    data = tensors_bytes(tensors)
    atomic_write_bytes(out / "optimizer.safetensors", data)
    atomic_write_json(out / "state.json", {**state, "optimizer_sha256": sha256_bytes(data)})


def load_training_state(out_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    out = Path(out_dir)
    try:
        state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no training state to resume from in {out}") from None
    tensors, _ = read_verified_tensors(out / "optimizer.safetensors", state.get("optimizer_sha256"))
    return tensors, dict(state)


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into named tensors and a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, extra in info.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
