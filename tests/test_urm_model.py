"""URM encoder: shapes, padding invariance, loop re-injection, truncated backprop; decoding validity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import Tensor  # noqa: E402

from cyntra.planner.action_space import ActionSpace  # noqa: E402
from planner_model.calibration import ece, fit_temperature, joint_nll  # noqa: E402
from planner_model.config import URMConfig  # noqa: E402
from planner_model.decode import decode, fast_decode  # noqa: E402
from planner_model.model import URM, flops_per_example  # noqa: E402
from planner_model.runtime import NumpyURM  # noqa: E402

HEADS = [("swarm_id", 2), ("parallelism", 3), ("max_run_minutes", 4), ("max_candidates", 3)]


def tiny(**kw: object) -> URMConfig:
    base: dict[str, object] = {"vocab_size": 50, "heads": HEADS, "seq_len": 24, "hidden": 16, "n_heads": 2, "layers": 1, "loops": 3, "grad_loops": 1, "n_actions": 20}
    base.update(kw)
    return URMConfig(**base)  # type: ignore[arg-type]


def ids_batch(seed: int = 0, n: int = 4, length: int = 24) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 50, (n, length), generator=g)
    ids[:, 0] = 2
    for i in range(n):
        ids[i, 6 + 3 * i :] = 0
    out: Tensor = ids
    return out


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_shapes(pool: str) -> None:
    torch.manual_seed(0)
    model = URM(tiny(pool=pool)).eval()
    logits, values = model(ids_batch())
    assert [tuple(x.shape) for x in logits.values()] == [(4, 2), (4, 3), (4, 4), (4, 3)]
    assert values is not None and tuple(values.shape) == (4, 20)
    assert flops_per_example(model.cfg) > 0


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_padding_does_not_change_pooled_output(pool: str) -> None:
    """The same tokens padded to 24 or to 12, alone or beside a longer row: same pooled vector."""
    torch.manual_seed(0)
    model = URM(tiny(pool=pool)).eval()
    ids = ids_batch()
    short = ids[:1, :12]  # row 0 has 6 real tokens
    with torch.no_grad():
        full = model.encode(ids)[0]
        alone = model.encode(short)[0]
        changed_pad = ids.clone()
        changed_pad[0, 6:] = 0
        mixed = model.encode(changed_pad)[0]
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full, mixed, atol=1e-5, rtol=1e-5)
    # and a real token beyond the pad boundary would change it (the mask is what protects it)
    with torch.no_grad():
        other = ids.clone()
        other[0, 7] = 9
        assert not torch.allclose(model.encode(other)[0], full)


def test_loops_reinject_input_embedding() -> None:
    torch.manual_seed(0)
    model = URM(tiny(loops=3, layers=1)).eval()
    ids = ids_batch()
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []

    def hook(_m: object, args: tuple[Tensor, ...], out: Tensor) -> None:
        inputs.append(args[0].detach())
        outputs.append(out.detach())

    model.blocks[0].register_forward_hook(hook)
    with torch.no_grad():
        model.encode(ids)
        x_emb = model.embed(ids[:, : int((ids != 0).sum(1).max())]) * model.embed_scale
    assert len(inputs) == 3
    torch.testing.assert_close(inputs[0], x_emb)
    for k in (1, 2):
        torch.testing.assert_close(inputs[k], outputs[k - 1] + x_emb)


def test_gradients_only_through_last_loops() -> None:
    ids = ids_batch()
    grad_enabled: list[bool] = []

    def grads(grad_loops: int) -> dict[str, Tensor]:
        torch.manual_seed(0)
        model = URM(tiny(loops=4, grad_loops=grad_loops))

        def hook(_m: object, _a: object, out: Tensor) -> None:
            grad_enabled.append(out.requires_grad)

        model.blocks[0].register_forward_hook(hook)
        logits, _ = model(ids)
        sum(x.sum() for x in logits.values()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g1 = grads(1)
    assert grad_enabled == [False, False, False, True]
    grad_enabled.clear()
    g4 = grads(4)
    assert grad_enabled == [True] * 4
    assert not torch.allclose(g1["blocks.0.attn.qkv.weight"], g4["blocks.0.attn.qkv.weight"])


def test_config_validation_and_round_trip() -> None:
    cfg = tiny()
    assert URMConfig.from_dict(cfg.to_dict()) == cfg
    assert "value_wide" not in cfg.to_dict()  # default omitted: older readers load the checkpoint
    wide = tiny(value_wide=True)
    assert URMConfig.from_dict(wide.to_dict()) == wide and wide.to_dict()["value_wide"] is True
    with pytest.raises(ValueError, match="grad_loops"):
        tiny(grad_loops=5)
    with pytest.raises(ValueError, match="conv_kernel"):
        tiny(conv_kernel=4)


def _table() -> tuple[list[str], np.ndarray, dict[str, list[object]]]:
    space = ActionSpace()
    heads: dict[str, list[object]] = {"swarm_id": list(space.swarms), "parallelism": [1, 2, 3], "max_run_minutes": [15, 30, 60, 120], "max_candidates": [1, 2, 3]}
    table = np.array([[heads[f].index(getattr(a, f)) for f in heads] for a in space.actions])
    return [a.label() for a in space.actions], table, heads


def test_decode_emits_only_valid_tuples_even_when_heads_prefer_invalid() -> None:
    actions, table, heads = _table()
    space = ActionSpace()
    rng = np.random.default_rng(0)
    logits = {name: rng.normal(0, 3, size=(200, len(v))) for name, v in heads.items()}
    # heads alone would pick serial_handoff with parallelism 3: invalid
    logits["swarm_id"][:, heads["swarm_id"].index("serial_handoff")] += 40
    logits["parallelism"][:, 2] += 20
    decisions = decode(logits, heads, actions, table)
    valid = {a.label() for a in space.actions}
    assert all(d.action in valid for d in decisions)
    assert all(d.action.startswith("serial_handoff/p1/") for d in decisions)
    assert all(abs(sum(d.joint) - 1) < 1e-9 and 0 < d.confidence <= 1 for d in decisions)
    assert set(decisions[0].head_probs["parallelism"]) == {"1", "2", "3"}


def test_decode_respects_allowed_mask() -> None:
    actions, table, heads = _table()
    rng = np.random.default_rng(1)
    logits = {name: rng.normal(0, 3, size=(50, len(v))) for name, v in heads.items()}
    allowed = np.array(["/15m/" in a or "/30m/" in a for a in actions])
    decisions = decode(logits, heads, actions, table, allowed=allowed)
    assert all(("/15m/" in d.action or "/30m/" in d.action) for d in decisions)
    assert all(abs(sum(p for p, ok in zip(d.joint, allowed, strict=True) if ok) - 1) < 1e-9 for d in decisions)
    best, _conf = fast_decode(list(logits.values()), table, allowed=allowed)
    assert [d.action_index for d in decisions] == best.tolist()
    with pytest.raises(ValueError):
        decode(logits, heads, actions, table, allowed=np.zeros(len(actions), dtype=bool))


def test_ece_on_known_inputs() -> None:
    # two bins: conf 0.9 with accuracy 0.5 (gap 0.4), conf 0.3 with accuracy 0.3 (gap 0)
    conf = np.array([0.9] * 10 + [0.3] * 10)
    correct = np.array([1] * 5 + [0] * 5 + [1] * 3 + [0] * 7)
    assert ece(conf, correct, n_bins=15) == pytest.approx(0.5 * 0.4)
    assert ece(np.array([1.0, 1.0]), np.array([1, 1])) == pytest.approx(0.0)


def test_temperature_scaling_reduces_nll_on_overconfident_toy() -> None:
    _, table, heads = _table()
    rng = np.random.default_rng(0)
    n = 2000
    targets = rng.integers(0, len(table), size=n)
    true_logits = [rng.normal(0, 1, size=(n, len(v))) for v in heads.values()]
    for h in range(4):
        true_logits[h][np.arange(n), table[targets, h]] += 1.0
    overconfident = [x * 6.0 for x in true_logits]
    t = fit_temperature(overconfident, table, targets)
    assert t > 2.0
    assert joint_nll(overconfident, table, targets, t) < joint_nll(overconfident, table, targets, 1.0) - 0.1


@pytest.mark.parametrize(
    "kw",
    [{}, {"pool": "mean"}, {"layers": 2, "conv_kernel": 5, "loops": 2, "grad_loops": 2}, {"conv_kernel": 1, "n_heads": 4},
     {"n_actions": 0}, {"value_wide": True, "value_outputs": 2}],
    ids=["default", "mean", "deep-k5", "k1-4heads", "no-value-head", "wide-factored"],
)
@pytest.mark.parametrize("batch", [1, 4])
def test_numpy_runtime_matches_torch(kw: dict[str, object], batch: int) -> None:
    """The kernel's CPU runtime computes URM.forward: logits and values to 1e-4, padded or not."""
    torch.manual_seed(1)
    model = URM(tiny(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than init so every path (masks, conv taps) matters
            p.normal_(0.0, 0.3)
    ids = ids_batch(seed=batch, n=batch)
    if batch == 1:
        ids[0, 6:] = torch.randint(4, 50, (18,))  # no padding at all: the mask-free path
    with torch.inference_mode():
        t_logits, t_values = model(ids)
    n_logits, n_values = NumpyURM.from_model(model)(ids.numpy())
    assert set(n_logits) == set(t_logits)
    for name, t in t_logits.items():
        np.testing.assert_allclose(n_logits[name], t.numpy(), atol=1e-4, rtol=1e-4)
    if t_values is None:
        assert n_values is None
    else:
        assert n_values is not None
        np.testing.assert_allclose(n_values, t_values.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"layers": 2, "conv_kernel": 5, "expansion": 3.0}, {"n_actions": 0},
                                {"value_wide": True, "value_outputs": 2}, {"value_wide": True, "n_actions": 0}])
def test_expected_shapes_are_the_torch_state_dict(kw: dict[str, object]) -> None:
    """What the torch-free loader checks weights against is exactly what torch would load."""
    from planner_model.checkpoint_files import expected_shapes

    cfg = tiny(**kw)
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in URM(cfg).state_dict().items()}


def test_wide_path_reads_which_tokens_are_present() -> None:
    """The wide path adds Σ of the present tokens' weights (once per token, padding excluded), so a
    repeated token or more padding changes nothing, and a token the row lacks contributes nothing."""
    torch.manual_seed(3)
    model = URM(tiny(value_wide=True)).eval()
    assert model.wide is not None
    with torch.no_grad():
        model.wide.weight.normal_(0.0, 1.0)
        model.wide.bias.normal_(0.0, 1.0)
    ids = torch.zeros((1, 24), dtype=torch.int64)
    ids[0, :4] = torch.tensor([1, 7, 9, 7])
    bag = torch.zeros(1, model.cfg.vocab_size)
    bag[0, [1, 7, 9]] = 1.0
    with torch.inference_mode():
        _, values = model(ids)
        pooled = model.encode(ids)
        assert model.value is not None and values is not None
        expected = model.value(pooled) + bag @ model.wide.weight.T + model.wide.bias
    np.testing.assert_allclose(values.numpy(), expected.numpy(), atol=1e-5)
    _, n_values = NumpyURM.from_model(model)(ids.numpy())
    assert n_values is not None
    np.testing.assert_allclose(n_values, values.numpy(), atol=1e-4)


@pytest.mark.parametrize("length", [1, 2, 3])
@pytest.mark.parametrize("conv_kernel", [1, 3, 5])
def test_numpy_runtime_matches_torch_on_very_short_inputs(length: int, conv_kernel: int) -> None:
    """Fewer real tokens than the convolution's reach (the cls fast path trims rows)."""
    torch.manual_seed(2)
    model = URM(tiny(conv_kernel=conv_kernel, layers=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    ids = torch.zeros((2, 24), dtype=torch.int64)
    ids[:, :length] = torch.randint(4, 50, (2, length))
    ids[1, max(1, length - 1):] = 0  # the second row is shorter still
    with torch.inference_mode():
        t_logits, t_values = model(ids)
    n_logits, n_values = NumpyURM.from_model(model)(ids.numpy())
    for name, t in t_logits.items():
        np.testing.assert_allclose(n_logits[name], t.numpy(), atol=1e-4, rtol=1e-4)
    assert n_values is not None and t_values is not None
    np.testing.assert_allclose(n_values, t_values.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"layers": 2, "conv_kernel": 5}, {"conv_kernel": 1}], ids=["default", "deep-k5", "k1"])
def test_cls_row_trimming_changes_neither_outputs_nor_gradients(kw: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """The last block under cls pooling computes only the rows row 0 depends on; the full
    computation (every row) gives the same logits and the same parameter gradients."""
    torch.manual_seed(3)
    model = URM(tiny(**kw, grad_loops=2))
    ids = ids_batch(seed=3, n=4)

    def run() -> tuple[dict[str, Tensor], list[Tensor]]:
        model.zero_grad()
        logits, values = model(ids)
        loss = sum(v.square().sum() for v in logits.values()) + (values.square().sum() if values is not None else 0)
        loss.backward()  # type: ignore[union-attr]
        return {k: v.detach().clone() for k, v in logits.items()}, [p.grad.clone() for p in model.parameters()
                                                                     if p.grad is not None]

    trimmed = run()
    original = URM._loop
    monkeypatch.setattr(URM, "_loop", lambda self, h, x, rot, masks, last=False: original(self, h, x, rot, masks))
    full = run()
    for name in trimmed[0]:
        torch.testing.assert_close(trimmed[0][name], full[0][name], atol=1e-5, rtol=1e-5)
    assert len(trimmed[1]) == len(full[1])
    for a, b in zip(trimmed[1], full[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
