"""The URM encoder (Universal Reasoning Model, arXiv 2512.14693), sized for a planner.

Token embedding × √hidden → a stack of post-norm blocks (bidirectional attention with rotary
positions, then ConvSwiGLU) applied recurrently for ``loops`` iterations with the input embedding
re-injected each loop; only the last ``grad_loops`` loops are differentiated (truncated backprop
through loops). A pooled vector feeds one classification head per action field and an optional
value head Q(x, a).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner_model.config import URMConfig


def rotary_table(seq_len: int, head_dim: int, base: float) -> Tensor:
    """Unit complex rotations [seq_len, head_dim // 2] for rotary embeddings on (even, odd) pairs."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, rot: Tensor) -> Tensor:
    """Rotate each (even, odd) feature pair of ``x`` [..., head_dim] by its position's angle.

    ``rot`` broadcasts against ``x``'s leading dims (positions × heads). One complex multiply on a
    strided view (no copy in float32) instead of the rotate-half cat/neg/mul/add: cheaper on a CPU.
    """
    pairs = torch.view_as_complex(x.float().view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rot).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Bidirectional multi-head attention; pad keys are masked out."""

    def __init__(self, cfg: URMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.hidden // cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=False)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)

    def forward(self, x: Tensor, rot: Tensor, key_mask: Tensor | None, queries: int | None = None) -> Tensor:
        """``rot`` [L, 1, 1, head_dim // 2]; ``key_mask`` [B, 1, 1, L] (None: no padding);
        ``queries``: only the first rows attend (every row is still a key and a value)."""
        b, n, d = x.shape
        m = n if queries is None else queries
        qkv = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim)
        q, k = apply_rotary(qkv[:, :, :2], rot).permute(2, 0, 3, 1, 4)  # q and k rotated in one multiply
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(q[:, :, :m], k, v, attn_mask=key_mask)
        out: Tensor = self.out(y.transpose(1, 2).reshape(b, m, d))
        return out


class ConvSwiGLU(nn.Module):
    """SwiGLU whose gated hidden is mixed along the sequence by a short depthwise convolution."""

    def __init__(self, cfg: URMConfig) -> None:
        super().__init__()
        inner = int(cfg.expansion * cfg.hidden)
        self.gate_up = nn.Linear(cfg.hidden, 2 * inner, bias=False)
        self.conv = nn.Conv1d(
            inner, inner, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=inner, bias=False
        )
        self.down = nn.Linear(inner, cfg.hidden, bias=False)

    def forward(self, x: Tensor, pad_mask: Tensor | None, rows: int | None = None) -> Tensor:
        """``rows``: only the first output rows are wanted; ``x`` must then hold at least the
        rows they read (``rows + kernel // 2``, or all of the sequence)."""
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        h = F.silu(gate) * up
        if pad_mask is not None:
            h = h * pad_mask[:, : h.shape[1]]  # pad positions contribute nothing to their neighbours
        out: Tensor = self.down(self._depthwise(h, rows))
        return out

    def _depthwise(self, h: Tensor, rows: int | None = None) -> Tensor:
        """The depthwise convolution as k shifted multiply-adds on [B, L, C] (same result as
        ``self.conv`` on [B, C, L]); the oneDNN depthwise kernel is ~20x slower at these sizes.
        Positions past the end of ``h`` read as zero (the conv's padding)."""
        k = self.conv.kernel_size[0]
        w = self.conv.weight[:, 0, :].to(h.dtype)  # [C, k]
        n = h.shape[1] if rows is None else rows
        if k == 1:
            return h[:, :n] * w[:, 0]
        pad = k // 2
        hp = F.pad(h[:, : n + pad], (0, 0, pad, pad))
        acc = hp[:, :n] * w[:, 0]
        for j in range(1, k):
            acc = torch.addcmul(acc, hp[:, j : j + n], w[:, j])
        return acc


class Block(nn.Module):
    """Post-norm transformer block: x = norm(x + attn(x)); x = norm(x + ConvSwiGLU(x))."""

    def __init__(self, cfg: URMConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.norm1 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.mlp = ConvSwiGLU(cfg)
        self.norm2 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)

    def forward(self, x: Tensor, rot: Tensor, key_mask: Tensor | None, pad_mask: Tensor | None,
                keep: int | None = None) -> Tensor:
        """``keep``: only the first ``keep`` output rows are wanted (the last block under ``cls``
        pooling reads row 0): queries and the MLP then run on just the rows those depend on."""
        if keep is None:
            x = self.norm1(x + self.attn(x, rot, key_mask))
            full: Tensor = self.norm2(x + self.mlp(x, pad_mask))
            return full
        n = x.shape[1]
        rows = min(keep, n)
        need = min(n, rows + self.mlp.conv.kernel_size[0] // 2)  # rows the convolution reads
        h = self.norm1(x[:, :need] + self.attn(x, rot, key_mask, queries=need))
        out: Tensor = self.norm2(h[:, :rows] + self.mlp(h, pad_mask, rows))
        return out


def token_bag(ids: Tensor, vocab_size: int) -> Tensor:
    """Which tokens each row holds [B, vocab] (1.0 present, padding excluded): the wide path's input."""
    bag = torch.zeros(ids.shape[0], vocab_size, device=ids.device)
    bag.scatter_(1, ids.long(), 1.0)
    bag[:, 0] = 0.0
    return bag


class URM(nn.Module):
    """The planner model: token ids [B, L] → per-head logits (+ optional per-action values)."""

    def __init__(self, cfg: URMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.embed_scale = math.sqrt(cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.hidden, n) for name, n in cfg.heads})
        self.value = nn.Linear(cfg.hidden, cfg.n_actions * cfg.value_outputs) if cfg.n_actions > 0 else None
        # Wide & deep: a linear map from which tokens are present to the value outputs, beside the
        # encoder's. Few parameters per effect and no interactions to overfit: on small histories
        # it fits the per-plan outcomes more stably than the encoder alone (docs/beat-the-heuristic.md).
        self.wide = (nn.Linear(cfg.vocab_size, cfg.n_actions * cfg.value_outputs)
                     if cfg.n_actions > 0 and cfg.value_wide else None)
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)
        self.rope: Tensor
        rope = rotary_table(cfg.seq_len, cfg.hidden // cfg.n_heads, cfg.rope_base)
        self.register_buffer("rope", rope, persistent=False)
        # Unit-variance input after the √hidden scale (as in URM); the pad row stays zero.
        nn.init.normal_(self.embed.weight, std=1.0 / self.embed_scale)
        with torch.no_grad():
            self.embed.weight[0].zero_()

    def _loop(self, h: Tensor, x_emb: Tensor, rot: Tensor, masks: tuple[Tensor | None, Tensor | None],
              last: bool = False) -> Tensor:
        """One recurrent loop. ``last`` under ``cls`` pooling: the final block keeps row 0 only
        (every other row of its output is never read, so the result and its gradients are the same)."""
        h = h + x_emb  # re-inject the input every loop
        final = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            keep = 1 if last and i == final and self.cfg.pool == "cls" else None
            h = block(h, rot, masks[0], masks[1], keep)
        return h

    def encode(self, ids: Tensor) -> Tensor:
        """Pooled representation [B, hidden]. Trailing all-pad columns are trimmed (same result)."""
        valid = ids != 0
        length = int(valid.sum(dim=1).max().item()) if ids.shape[0] else ids.shape[1]
        length = max(length, 1)
        ids, valid = ids[:, :length], valid[:, :length]
        x_emb = self.embed(ids) * self.embed_scale
        rot = self.rope[:length, None, None, :]
        # Without padding (always so at batch 1, after the trim) no mask is built or applied.
        padded = not bool(valid.all())
        pad_mask = valid[:, :, None].to(x_emb.dtype) if padded else None
        masks = (valid[:, None, None, :] if padded else None, pad_mask)
        h = torch.zeros_like(x_emb)
        n_free = self.cfg.loops - self.cfg.grad_loops
        if n_free:
            with torch.no_grad():
                for _ in range(n_free):
                    h = self._loop(h, x_emb, rot, masks)
            h = h.detach()
        for i in range(self.cfg.grad_loops):
            h = self._loop(h, x_emb, rot, masks, last=i == self.cfg.grad_loops - 1)
        if self.cfg.pool == "cls":
            return h[:, 0]
        if pad_mask is None:
            return h.mean(dim=1)
        return (h * pad_mask).sum(dim=1) / pad_mask.sum(dim=1).clamp_min(1.0)

    def forward(self, ids: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        pooled = self.encode(ids)
        logits = {name: head(pooled) for name, head in self.heads.items()}
        values = self.value(pooled) if self.value is not None else None
        if values is not None and self.wide is not None:
            values = values + self.wide(token_bag(ids, self.cfg.vocab_size).to(values.dtype))
        return logits, values

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def flops_per_example(cfg: URMConfig, seq_len: int | None = None) -> int:
    """Analytic forward FLOPs (2 per multiply-add) for one example of ``seq_len`` real tokens."""
    n = seq_len or cfg.seq_len
    d = cfg.hidden
    inner = int(cfg.expansion * d)
    per_block = (
        2 * n * d * 3 * d  # qkv
        + 2 * 2 * n * n * d  # scores + weighted sum
        + 2 * n * d * d  # out proj
        + 2 * n * d * 2 * inner  # gate/up
        + 2 * n * inner * cfg.conv_kernel  # depthwise conv
        + 2 * n * inner * d  # down
    )
    heads = 2 * d * (sum(n for _, n in cfg.heads) + cfg.n_actions * cfg.value_outputs)
    return per_block * cfg.layers * cfg.loops + heads
