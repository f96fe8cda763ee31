"""Configuration dataclasses for the URM planner model and its training run.

Plain dataclasses (not pydantic) so that a config round-trips through the checkpoint's JSON with
``to_dict``/``from_dict`` and the model file stays readable in one sitting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Pool = Literal["cls", "mean"]


@dataclass
class URMConfig:
    """Shape of the URM encoder. Defaults are sized for ~1 ms CPU inference at batch 1, seq_len 96."""

    vocab_size: int
    heads: list[tuple[str, int]]  # (head name, number of classes) in label-column order
    seq_len: int = 96
    n_actions: int = 0  # > 0 adds a value head predicting a utility per action: Q(x, a)
    value_outputs: int = 1  # outputs per action: 1 = Q(x, a); 2 = [pass logit, spend] (the factored objective)
    value_wide: bool = False  # add a linear path from the bag of input tokens to the value outputs (wide & deep)
    hidden: int = 32
    n_heads: int = 2
    layers: int = 1
    loops: int = 4
    grad_loops: int = 2  # truncated backprop: only the last `grad_loops` loops get gradients
    expansion: float = 2.0  # SwiGLU inner width = expansion * hidden
    conv_kernel: int = 3  # depthwise conv over the sequence inside ConvSwiGLU (odd: "same" padding)
    pool: Pool = "cls"
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        problems = []
        if self.hidden % self.n_heads or (self.hidden // self.n_heads) % 2:
            problems.append("hidden must be divisible by n_heads with an even head dim")
        if not 1 <= self.grad_loops <= self.loops:
            problems.append("need 1 <= grad_loops <= loops")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append("conv_kernel must be odd and >= 1")
        if self.pool not in ("cls", "mean"):
            problems.append("pool must be 'cls' or 'mean'")
        if not self.heads:
            problems.append("at least one head is needed")
        if self.value_outputs not in (1, 2):
            problems.append("value_outputs must be 1 (Q) or 2 (pass logit | spend)")
        if problems:
            raise ValueError("invalid URMConfig: " + "; ".join(problems))

        self.heads = [(str(name), int(size)) for name, size in self.heads]

    @property
    def head_sizes(self) -> dict[str, int]:
        return dict(self.heads)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["heads"] = [[name, size] for name, size in self.heads]  # a list keeps the order in JSON
        if self.value_outputs == 1:
            del out["value_outputs"]  # the default: checkpoints stay readable by versions that predate the key
        if not self.value_wide:
            del out["value_wide"]  # likewise
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> URMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown URMConfig keys: {unknown}")
        return cls(**data)


@dataclass
class TrainConfig:
    """Optimisation settings; stored in the checkpoint so that a resume uses the same schedule."""

    epochs: int = 10
    batch_size: int = 64  # small batches keep activations in cache on a 2-core CPU
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    grad_clip: float = 1.0
    ema: bool = False
    ema_decay: float = 0.995
    patience: int = 0  # 0 = no early stopping
    seed: int = 0
    class_weights: bool = False
    value_loss_weight: float = 0.0  # > 0 trains the value head on observed rewards
    device: str = "auto"
    quiet: bool = False
    num_threads: int = 0  # 0 = torch default
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
