"""The ``urm`` strategy: the learned planner, loaded once, deciding a whole scheduling cycle in one batch.

Imported only when asked for. With torch installed the checkpoint loads into the torch model
(small CPU batches still run on the numpy forward); without torch it loads straight into the
numpy forward (CPU only), so a kernel installed without the ``model`` extra can still decide with
a trained planner. Every failure to load — ``device: cuda`` without torch, no checkpoint
configured, a missing, corrupt or mismatched checkpoint — raises ``StrategyUnavailable`` with the
reason, which the engine records before falling back. Inference
errors and non-finite outputs raise; the engine records those too. Decisions are restricted to
valid tuples and, when the engine passes the clamp's allowed set, to plans the policy allows.

Two ways to decide, chosen by the checkpoint (``decision`` in its train config):

* ``imitation`` — the most probable valid plan under the per-head classifiers (joint probability,
  temperature-calibrated on validation, is the confidence);
* ``value`` — the plan with the highest predicted utility among allowed plans (value head,
  trained with ``objective: value``; its standardised outputs are mapped back to utility units
  with the ``value_norm`` the checkpoint recorded); the confidence is the calibrated classifier
  probability of the chosen plan, so the policy's ``min_confidence`` keeps its meaning;
* ``factored`` — the same argmax over allowed plans, with Q composed from the objective:
  pass_value·P(pass) − fail_penalty − spend, where the model predicts P(pass) and the spend
  (objective ``factored``) and pass_value/fail_penalty come from the workspace's ``objective:``
  and the issue's priority and size. Changing what a pass is worth moves the decision without
  retraining; the price of waiting is inside the learned spend.

The allowed set is ``extras["allowed_actions"]`` when the kernel passes it; otherwise the
strategy builds the workspace's clamp itself (same policy file and universe limits as the
session), so a value decision is the best allowed plan rather than the best plan projected by the
clamp afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyntra.kernel.config import ObjectiveConfig
from cyntra.kernel.plan import TraceStep
from cyntra.planner.action_space import ACTION_FIELDS, ActionSpace
from cyntra.planner.tokenizer import Vocabulary, encode
from cyntra.strategy.base import (
    BaseStrategy,
    StrategyContext,
    StrategyDecision,
    StrategyEnv,
    StrategyUnavailable,
)

# Largest batch the numpy forward takes on CPU; above it torch is faster (docs/benchmarks.md).
NUMPY_MAX_BATCH = 2


def resolve_device(requested: str) -> str:
    import torch

    if requested == "cuda":
        if not torch.cuda.is_available():
            raise StrategyUnavailable("planner.device is cuda but CUDA is not available")
        return "cuda"
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


class URMStrategy(BaseStrategy):
    name = "urm"

    def __init__(self, loaded: Any, space: ActionSpace, device: str, clamp: Any = None,
                 objective: ObjectiveConfig | None = None) -> None:
        from planner_model.decode import factored_q, joint_log_probs

        self._joint = joint_log_probs
        self._factored_q = factored_q
        self.objective = objective or ObjectiveConfig()
        self.loaded = loaded
        self.model = loaded.model
        self.meta: dict[str, Any] = loaded.meta
        self.space = space
        self.device = device
        self.vocab = Vocabulary(list(self.meta["vocab"]))
        if self.vocab.sha256 != self.meta.get("vocab_sha256"):
            raise StrategyUnavailable("checkpoint vocabulary does not match its recorded sha256 (corrupt)")
        self.seq_len = int(loaded.config.seq_len)
        self.heads: dict[str, list[Any]] = {f: list(self.meta["heads"][f]) for f in ACTION_FIELDS}
        by_label = {a.label(): a for a in space.actions}
        self.actions = [by_label[label] for label in self.meta["actions"]]
        self.action_labels = [a.label() for a in self.actions]
        self.table = np.asarray(
            [[self.heads[f].index(getattr(a, f)) for f in ACTION_FIELDS] for a in self.actions], dtype=np.int64)
        self.temperature = float(loaded.temperature)
        train_config = self.meta.get("train_config") or {}
        self.decision_mode = str(train_config.get("decision", "imitation"))
        if self.decision_mode in ("value", "factored") and getattr(self.model, "value", None) is None:
            self.decision_mode = "imitation"
        factored_head = int(getattr(loaded.config, "value_outputs", 1)) == 2
        if (self.decision_mode == "factored") != factored_head and getattr(self.model, "value", None) is not None:
            raise StrategyUnavailable(f"checkpoint decision {self.decision_mode!r} does not match its value head "
                                      f"({'pass|spend' if factored_head else 'one output'} per action)")
        extra = train_config.get("extra") or {}
        norm = extra.get("value_norm") or [0.0, 1.0]
        self.value_shift, self.value_scale = float(norm[0]), float(norm[1])
        self.spend_norm = [float(x) for x in (extra.get("spend_norm") or [0.0, 1.0])]
        self.clamp = clamp
        # Small CPU batches run on the numpy forward (same outputs; a test checks it): at batch
        # 1-2 torch's per-op dispatch is most of the latency. Larger batches and CUDA use torch.
        # A checkpoint loaded without torch (``load_numpy_checkpoint``) runs every batch on numpy.
        from planner_model.runtime import NumpyURM

        self.torch_free = isinstance(self.model, NumpyURM)
        self.np_model: Any = self.model if self.torch_free else None
        if device == "cpu" and not self.torch_free:
            self.np_model = NumpyURM.from_model(self.model)

    def warm_up(self) -> None:
        """One forward pass at load, so the first real decision does not pay for lazy init."""
        if self.torch_free:
            self.np_model(np.ones((1, self.seq_len), dtype=np.int64))
            return
        import torch

        if self.device == "cpu":
            # Batch decisions of a tiny model gain nothing from intra-op threads, and spinning
            # OpenMP workers compete with the kernel loop for a small machine's cores.
            torch.set_num_threads(1)
        with torch.inference_mode():
            self.model(torch.zeros((1, self.seq_len), dtype=torch.int64, device=self.device))
        if self.np_model is not None:
            self.np_model(np.ones((1, self.seq_len), dtype=np.int64))  # not all-pad: no masked-out row

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint_id": f"{Path(self.loaded.path).name}@{self.meta.get('created_at', '')}",
            "checkpoint_sha256": self.loaded.sha256,
            "decision": self.decision_mode,
            "device": self.device,
            "runtime": ("numpy (torch not installed)" if self.torch_free
                        else f"numpy (batch <= {NUMPY_MAX_BATCH}), torch" if self.np_model is not None else "torch"),
        }

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        return self.decide_batch([ctx])[0]

    def _forward(self, ids: np.ndarray[Any, Any]) -> tuple[list[np.ndarray[Any, Any]], np.ndarray[Any, Any] | None]:
        """Per-head logits (``ACTION_FIELDS`` order) and raw values, as float32 numpy arrays."""
        if self.np_model is not None and (self.torch_free or len(ids) <= NUMPY_MAX_BATCH):
            logits, values = self.np_model(ids)
            return [logits[f] for f in ACTION_FIELDS], values
        import torch

        with torch.inference_mode():
            t_logits, t_values = self.model(torch.from_numpy(ids.astype(np.int64)).to(self.device))
            return ([t_logits[f].float().cpu().numpy() for f in ACTION_FIELDS],
                    t_values.float().cpu().numpy() if t_values is not None else None)

    def decide_batch(self, ctxs: Sequence[StrategyContext]) -> list[StrategyDecision]:
        if not ctxs:
            return []
        ids = np.zeros((len(ctxs), self.seq_len), dtype=np.int32)
        truncated = []
        for i, ctx in enumerate(ctxs):
            pi = ctx.extras.get("planner_input_model")
            if pi is None:
                raise ValueError("no planner input in the decision context")
            row, cut = encode(pi, self.vocab, self.seq_len)
            ids[i] = row
            truncated.append(cut)
        head_logits, raw_values = self._forward(ids)
        value_arr: np.ndarray[Any, Any] | None = None
        if raw_values is not None and self.decision_mode == "factored":
            obj = self.objective
            pass_value = np.asarray([
                obj.utility(priority=c.issue.dk_priority, size=c.issue.dk_size, passed=True, cost_usd=0.0,
                            wall_minutes=0.0) + obj.fail_penalty for c in ctxs])
            value_arr = self._factored_q(raw_values, pass_value, obj.fail_penalty, self.spend_norm)
        elif raw_values is not None:
            value_arr = raw_values.astype(np.float64) * self.value_scale + self.value_shift
        for arr in head_logits:
            if not np.isfinite(arr).all():
                raise FloatingPointError("model produced non-finite logits")
        allowed = np.ones((len(ctxs), len(self.actions)), dtype=bool)
        for i, ctx in enumerate(ctxs):
            labels = ctx.extras.get("allowed_actions")
            if labels is None and self.clamp is not None:
                labels = [a.label() for a in self.clamp.allowed(ctx.issue)]
            if labels:
                allowed_set = set(labels)
                allowed[i] = [label in allowed_set for label in self.action_labels]
        joint = self._joint(head_logits, self.table, self.temperature, allowed)
        out: list[StrategyDecision] = []
        for i in range(len(ctxs)):
            if self.decision_mode in ("value", "factored") and value_arr is not None:
                q = np.where(allowed[i], value_arr[i], -np.inf)
                best = int(np.argmax(q))
                eu: float | None = float(value_arr[i, best])
            else:
                best = int(np.argmax(joint[i]))
                eu = float(value_arr[i, best]) if value_arr is not None else None
            conf = float(math.exp(joint[i, best])) if np.isfinite(joint[i, best]) else 0.0
            probs = {}
            for f, arr in zip(ACTION_FIELDS, head_logits, strict=True):
                z = arr[i] / self.temperature
                p = np.exp(z - z.max())
                p /= p.sum()
                probs[f] = {str(v): round(float(pv), 6) for v, pv in zip(self.heads[f], p, strict=True)}
            action = self.actions[best]
            out.append(StrategyDecision(
                action=action,
                probabilities=probs,
                confidence=min(1.0, max(0.0, conf)),
                expected_utility=eu,
                trace=[TraceStep(step="urm", detail=f"{self.decision_mode}: {action.label()} (p={conf:.3f})",
                                 data={"truncated_tokens": truncated[i], "expected_utility": eu})],
            ))
        return out


def build_urm_strategy(env: StrategyEnv) -> URMStrategy:
    """Load the configured checkpoint: with torch when it is installed, else with the numpy runtime
    (CPU only; the same checks refuse the same checkpoints)."""
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    if not have_torch and env.config.planner.device == "cuda":
        raise StrategyUnavailable("planner.device is cuda but torch is not installed "
                                  "(pip install 'cyntra-swarm-planner[model]')")
    ref = env.config.planner.checkpoint
    if not ref:
        raise StrategyUnavailable("no planner.checkpoint configured")
    path = Path(ref)
    if not path.is_absolute():
        path = env.workspace / path
    if not path.is_dir():
        raise StrategyUnavailable(f"checkpoint {path} not found")
    from planner_model.checkpoint_files import CheckpointError

    actions = [a.label() for a in env.space.actions]
    swarms: dict[str, str] = dict(env.space.swarm_types)
    try:
        loaded: Any
        if have_torch:
            from planner_model.checkpoint import load_checkpoint

            device = resolve_device(env.config.planner.device)
            loaded = load_checkpoint(path, device=device, expected_actions=actions, expected_swarms=swarms)
        else:
            from planner_model.runtime import load_numpy_checkpoint

            device = "cpu"
            loaded = load_numpy_checkpoint(path, expected_actions=actions, expected_swarms=swarms)
    except CheckpointError as exc:
        raise StrategyUnavailable(f"checkpoint refused: {exc.reason}") from None
    except Exception as exc:  # a checkpoint must never stop the kernel
        raise StrategyUnavailable(f"checkpoint unreadable: {type(exc).__name__}: {exc}") from None
    strategy = URMStrategy(loaded, env.space, device, clamp=_clamp_for(env), objective=env.config.objective)
    strategy.warm_up()
    return strategy


def _clamp_for(env: StrategyEnv) -> Any:
    """The workspace's policy clamp (as the session builds it), or None when it cannot be built."""
    from cyntra.kernel.heuristic import UniverseLimits
    from cyntra.kernel.routing import rule_matches
    from cyntra.strategy.clamp import Clamp
    from cyntra.strategy.policy import bundled_default_policy_path, load_policy

    try:
        universe = env.options.get("universe")
        limits = (UniverseLimits.from_policies(universe.universe.policies.model_dump(exclude_none=True))
                  if universe is not None else UniverseLimits())
        path = Path(env.config.policy) if env.config.policy else bundled_default_policy_path()
        if not path.is_absolute():
            path = env.workspace / path
        return Clamp(load_policy(path).policy, env.space, rule_matches,
                     universe_max_run_minutes=limits.max_run_minutes,
                     universe_max_concurrent_workcells=limits.max_concurrent_workcells,
                     max_concurrent_workcells=env.config.scheduling.max_concurrent_workcells,
                     max_concurrent_tokens=env.config.scheduling.max_concurrent_tokens)
    except Exception:  # no clamp here: the engine still clamps the answer afterwards
        return None
