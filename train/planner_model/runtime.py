"""A numpy forward pass of the URM encoder, for CPU decisions in the kernel's dispatch path.

Same function as :class:`planner_model.model.URM` in eval mode (a test checks outputs against
torch to 1e-4 over configs, paddings and pools), written for the sizes the kernel meets: one
scheduling cycle of a few issues. At those sizes torch's eager per-op dispatch, not arithmetic, is
most of the time (a batch-1 decision runs ~150 small ops), and numpy's per-op cost is a fraction
of it. Training, CUDA and large batches stay on torch. Imports numpy only.

Weights come from a state dict (``URM.state_dict()`` names), so any checkpoint the torch loader
verified runs here unchanged; :func:`load_numpy_checkpoint` reads and verifies one without torch
(a kernel installed without the ``model`` extra still runs the ``urm`` strategy on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from planner_model.checkpoint_files import Loaded
from planner_model.config import URMConfig

F32 = npt.NDArray[np.float32]


def _f32(x: Any) -> F32:
    """A contiguous float32 copy of a tensor or array (``.detach().cpu()`` when it is torch)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


class _Block:
    """Weights of one post-norm block, pre-transposed for ``x @ W``."""

    def __init__(self, sd: Mapping[str, Any], prefix: str, cfg: URMConfig) -> None:
        self.w_qkv = _f32(sd[f"{prefix}attn.qkv.weight"]).T.copy()
        self.w_out = _f32(sd[f"{prefix}attn.out.weight"]).T.copy()
        self.w_gate_up = _f32(sd[f"{prefix}mlp.gate_up.weight"]).T.copy()
        self.w_down = _f32(sd[f"{prefix}mlp.down.weight"]).T.copy()
        self.conv = _f32(sd[f"{prefix}mlp.conv.weight"])[:, 0, :].T.copy()  # [k, C]
        self.norm1 = _f32(sd[f"{prefix}norm1.weight"])
        self.norm2 = _f32(sd[f"{prefix}norm2.weight"])
        self.inner = self.w_down.shape[0]


class NumpyURM:
    """``URM.forward`` in numpy: token ids [B, L] → (per-head logits, per-action values or None)."""

    def __init__(self, cfg: URMConfig, state_dict: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.hidden = cfg.hidden
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.hidden // cfg.n_heads
        self.eps = np.float32(cfg.norm_eps)
        self.embed = _f32(state_dict["embed.weight"]) * np.float32(math.sqrt(cfg.hidden))
        self.blocks = [_Block(state_dict, f"blocks.{i}.", cfg) for i in range(cfg.layers)]
        self.heads = {name: (_f32(state_dict[f"heads.{name}.weight"]).T.copy(), _f32(state_dict[f"heads.{name}.bias"]))
                      for name, _ in cfg.heads}
        self.value = ((_f32(state_dict["value.weight"]).T.copy(), _f32(state_dict["value.bias"]))
                      if cfg.n_actions > 0 else None)
        self.wide = ((_f32(state_dict["wide.weight"]).T.copy(), _f32(state_dict["wide.bias"]))
                     if cfg.value_wide and cfg.n_actions > 0 else None)
        # Rotary angles as in ``rotary_table`` (float32 angles, then cos/sin).
        inv_freq = 1.0 / (np.float32(cfg.rope_base) ** (np.arange(0, self.head_dim, 2, dtype=np.float32)
                                                         / np.float32(self.head_dim)))
        angles = np.outer(np.arange(cfg.seq_len, dtype=np.float32), inv_freq.astype(np.float32))
        self.cos = np.cos(angles).astype(np.float32)  # [L, head_dim / 2]
        self.sin = np.sin(angles).astype(np.float32)

    @classmethod
    def from_model(cls, model: Any) -> NumpyURM:
        """From a torch :class:`~planner_model.model.URM` (its config and state dict)."""
        return cls(model.cfg, model.state_dict())

    # -- pieces ---------------------------------------------------------------------------

    def _rms(self, x: F32, w: F32) -> F32:
        ms = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
        out: F32 = x / np.sqrt(ms + self.eps) * w
        return out

    def _rotate(self, qk: F32, cos: F32, sin: F32) -> F32:
        """Rotary on (even, odd) pairs of q and k: ``qk`` [B, n, 2, heads, head_dim]."""
        x0, x1 = qk[..., 0::2], qk[..., 1::2]
        out = np.empty_like(qk)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def _block(self, blk: _Block, h: F32, cos: F32, sin: F32, key_bias: F32 | None, pad: F32 | None,
               keep: int | None = None) -> F32:
        """One block. ``keep``: only the first ``keep`` output rows are wanted (the last block
        under ``cls`` pooling reads row 0): queries, the MLP and the convolution then run on
        just the rows those outputs depend on; keys and values still cover every position."""
        b, n, d = h.shape
        nh, hd = self.n_heads, self.head_dim
        k_size = blk.conv.shape[0]
        half = k_size // 2
        out_rows = n if keep is None else min(keep, n)
        need = n if keep is None else min(n, out_rows + half)  # rows the convolution reads
        qkv = h @ blk.w_qkv  # [B, n, 3d]
        qk = self._rotate(qkv[..., : 2 * d].reshape(b, n, 2, nh, hd), cos, sin)
        q = qk[:, :need, 0].transpose(0, 2, 1, 3)  # [B, heads, need, hd]
        k = qk[:, :, 1].transpose(0, 2, 3, 1)  # [B, heads, hd, n]
        v = qkv[..., 2 * d :].reshape(b, n, nh, hd).transpose(0, 2, 1, 3)
        s = (q @ k) * np.float32(1.0 / math.sqrt(hd))
        if key_bias is not None:
            s += key_bias
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        y: F32 = (s @ v).transpose(0, 2, 1, 3).reshape(b, need, d)
        h = self._rms(h[:, :need] + y @ blk.w_out, blk.norm1)
        gu = h @ blk.w_gate_up
        gate, up = gu[..., : blk.inner], gu[..., blk.inner :]
        act = gate / (np.float32(1.0) + np.exp(-gate)) * up  # silu(gate) * up
        if pad is not None:
            act *= pad[:, :need]
        if k_size == 1:
            mixed = act[:, :out_rows] * blk.conv[0]
        else:
            # zero padding on both ends, as the torch depthwise conv; rows past ``need`` are
            # never read by the ``out_rows`` outputs
            padded = np.zeros((b, out_rows + 2 * half, blk.inner), dtype=np.float32)
            padded[:, half : half + need] = act[:, : out_rows + half]
            mixed = padded[:, :out_rows] * blk.conv[0]
            for j in range(1, k_size):
                mixed += padded[:, j : j + out_rows] * blk.conv[j]
        out: F32 = self._rms(h[:, :out_rows] + mixed @ blk.w_down, blk.norm2)
        return out

    # -- forward --------------------------------------------------------------------------

    def encode(self, ids: npt.NDArray[np.integer[Any]]) -> F32:
        """Pooled representation [B, hidden]; trailing all-pad columns are trimmed as in torch."""
        ids = np.asarray(ids)
        valid = ids != 0
        length = max(int(valid.sum(axis=1).max()) if ids.shape[0] else ids.shape[1], 1)
        ids, valid = ids[:, :length], valid[:, :length]
        x = self.embed[ids]  # [B, n, d]
        cos = self.cos[:length, None, None, :]
        sin = self.sin[:length, None, None, :]
        padded = not bool(valid.all())
        pad = valid[:, :, None].astype(np.float32) if padded else None
        key_bias = np.where(valid, np.float32(0.0), np.float32(-np.inf))[:, None, None, :] if padded else None
        h = np.zeros_like(x)
        cls = self.cfg.pool == "cls"
        last = (self.cfg.loops - 1, len(self.blocks) - 1)
        for loop in range(self.cfg.loops):
            h = h + x  # the input is re-injected every loop
            for i, blk in enumerate(self.blocks):
                keep = 1 if cls and (loop, i) == last else None  # cls pooling reads row 0 only
                h = self._block(blk, h, cos, sin, key_bias, pad, keep)
        if cls:
            return np.ascontiguousarray(h[:, 0])
        if pad is None:
            mean: F32 = h.mean(axis=1)
            return mean
        pooled: F32 = (h * pad).sum(axis=1) / np.maximum(pad.sum(axis=1), np.float32(1.0))
        return pooled

    def __call__(self, ids: npt.NDArray[np.integer[Any]]) -> tuple[dict[str, F32], F32 | None]:
        pooled = self.encode(ids)
        logits = {name: pooled @ w + bias for name, (w, bias) in self.heads.items()}
        values = pooled @ self.value[0] + self.value[1] if self.value is not None else None
        if values is not None and self.wide is not None:
            w, bias = self.wide
            ids = np.asarray(ids)
            rows = [w[np.unique(r[r > 0])].sum(axis=0) for r in ids]  # Σ of the present tokens' rows
            values = values + np.stack(rows).astype(np.float32) + bias
        return logits, values


NumpyCheckpoint = Loaded[NumpyURM]  # a verified checkpoint loaded without torch (numpy forward)


def load_numpy_checkpoint(
    ckpt_dir: str | Path,
    *,
    expected_actions: list[str] | None = None,
    expected_swarms: list[str] | dict[str, str] | None = None,
    expected_vocab_sha256: str | None = None,
) -> NumpyCheckpoint:
    """``load_checkpoint`` for a kernel without torch: the same checks (shared code), safetensors'
    numpy reader, and the weights checked name by name and shape by shape against the config
    (``load_state_dict(strict=True)``'s check, without torch); non-finite outputs refuse it too.
    Raises ``CheckpointError``."""
    from safetensors.numpy import load as np_load

    from planner_model.checkpoint_files import (
        WEIGHTS,
        CheckpointError,
        model_config,
        read_weights_bytes,
        shape_problems,
        verified_meta,
    )

    root = Path(ckpt_dir)
    meta, recorded = verified_meta(root, expected_actions=expected_actions, expected_swarms=expected_swarms,
                                   expected_vocab_sha256=expected_vocab_sha256)
    data, digest = read_weights_bytes(root / WEIGHTS, recorded)
    try:
        arrays = np_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{WEIGHTS} is not a readable safetensors file: {exc}") from None
    config = model_config(meta)
    problems = shape_problems(config, {k: tuple(v.shape) for k, v in arrays.items()})
    if problems:
        raise CheckpointError(f"weights do not fit the model config: {'; '.join(problems[:3])}")
    try:
        model = NumpyURM(config, arrays)
        logits, values = model(np.ones((1, config.seq_len), dtype=np.int64))
        outputs = [*logits.values(), *([values] if values is not None else [])]
        if not all(np.isfinite(x).all() for x in outputs):
            raise ValueError("non-finite outputs")
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"weights do not fit the model config: {exc}") from None
    return NumpyCheckpoint(model=model, config=config, meta=meta, sha256=digest, path=root)
