"""Value-aware decisions: Q(x, a) regressed on observed utilities (or composed from a factored head's
pass probability and spend), argmax Q among clamp-allowed plans.

A synthetic dataset where the imitation label (what was executed) and the best plan by reward
differ: the value objective must learn the reward's argmax, the imitation objective the label.
The ``urm`` strategy loaded from a value checkpoint must pick the argmax-Q plan among the allowed
ones — given explicitly, or from the workspace's clamp — and the kernel must never apply a plan
outside the clamp's allowed set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cyntra.clock import parse_ts  # noqa: E402
from cyntra.kernel.config import KernelConfig  # noqa: E402
from cyntra.kernel.plan import DispatchPlan  # noqa: E402
from cyntra.kernel.runner import run_kernel  # noqa: E402
from cyntra.kernel.session import KernelSession  # noqa: E402
from cyntra.planner.action_space import ActionSpace  # noqa: E402
from cyntra.planner.index import SimilarRunsIndex  # noqa: E402
from cyntra.planner.planner_input import build_planner_input  # noqa: E402
from cyntra.planner.tokenizer import Vocabulary, encode  # noqa: E402
from cyntra.sim.cli import init_workspace  # noqa: E402
from cyntra.state.issue import Issue  # noqa: E402
from cyntra.strategy.base import StrategyContext, StrategyEnv  # noqa: E402
from cyntra.strategy.ledger import Ledger  # noqa: E402
from cyntra.strategy.urm import build_urm_strategy  # noqa: E402
from planner_model.checkpoint import load_checkpoint  # noqa: E402
from planner_model.config import TrainConfig  # noqa: E402
from planner_model.data import Split  # noqa: E402
from planner_model.decode import factored_parts, factored_q  # noqa: E402
from planner_model.synthetic import write_synthetic_dataset  # noqa: E402
from planner_model.train import factored_targets, predict_values, train, value_targets  # noqa: E402

TINY = {"hidden": 32, "n_heads": 2, "layers": 1, "loops": 2, "grad_loops": 1}
SHIFT = 7  # the best plan by reward is (executed label + SHIFT) mod 20


def _attach(d: Path, by_split: dict[str, dict[str, np.ndarray]]) -> Path:
    """Save extra arrays beside a synthetic dataset and list them in its dataset.json."""
    for split, arrays in by_split.items():
        for name, arr in arrays.items():
            np.save(d / f"{split}__{name}.npy", arr)
    meta = json.loads((d / "dataset.json").read_text())
    meta["arrays"] += list(next(iter(by_split.values())))
    (d / "dataset.json").write_text(json.dumps(meta))
    return d


def _synthetic(out: Path, seed: int, rng_seed: int,
               arrays: Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]) -> Path:
    """A synthetic dataset plus, per split, the extra arrays ``arrays(executed actions, rng)`` gives."""
    d = write_synthetic_dataset(out, n=600, seq_len=12, min_len=4, n_noise_tokens=8, seed=seed, use_tool=False)
    rng = np.random.default_rng(rng_seed)
    return _attach(d, {split: arrays(np.load(d / f"{split}__action.npy"), rng) for split in ("train", "val", "test")})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def arrays(action: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        best = (action + SHIFT) % 20
        rewards = rng.normal(0.0, 0.1, size=(len(action), 20)).astype(np.float32)
        rewards[np.arange(len(action)), best] += 10.0
        rewards[rng.random(rewards.shape) < 0.3] = np.nan  # best-of-K covers only some plans
        rewards[np.arange(len(action)), best] = 10.0
        return {"target_action": best.astype(np.int64), "action_rewards": rewards}

    return _synthetic(tmp_path_factory.mktemp("vdata"), 3, 0, arrays)


def _trained(data: Path, out: Path, epochs: int, **extra: str) -> Path:
    """A tiny checkpoint trained on ``data`` with ``extra`` (objective, value model) in the recipe."""
    tc = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, seed=0, quiet=True, device="cpu", num_threads=1,
                     extra=dict(extra))
    train(data, out, tc, TINY)
    return out


@pytest.fixture(scope="module")
def value_ckpt(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(data, tmp_path_factory.mktemp("vckpt"), 25, objective="value")


def test_value_targets_weights_and_precedence() -> None:
    arrays = {
        "inputs": np.zeros((4, 3), dtype=np.int32),
        "action": np.array([0, 1, 2, 3]),
        "reward": np.array([5.0, 1.0, np.nan, 2.0], dtype=np.float32),
        "propensity": np.array([0.8, 0.01, 0.8, 0.5], dtype=np.float32),
        "action_rewards": np.full((4, 4), np.nan, dtype=np.float32),
    }
    arrays["action_rewards"][0, 0] = 9.0  # best-of-K already ran the executed plan: it wins
    arrays["action_rewards"][0, 2] = 3.0
    vt, vw, (shift, scale) = value_targets(Split("train", arrays), 4, ips_clip=20.0)
    assert vw[0, 0] == 1.0 and vw[0, 2] == 1.0  # best-of-K cells weigh 1
    assert vw[2].sum() == 0  # no reward, no label
    logged = np.array([vw[1, 1], vw[3, 3]])
    assert logged.mean() == pytest.approx(1.0)
    assert logged[0] / logged[1] == pytest.approx(20.0 / 2.0)  # 1/p clipped at 20
    observed = np.array([9.0, 3.0, 1.0, 2.0])
    assert shift == pytest.approx(observed.mean()) and scale == pytest.approx(observed.std())
    assert vt[0, 0] == pytest.approx((9.0 - shift) / scale)


def test_value_objective_learns_the_reward_not_the_label(data: Path, value_ckpt: Path, tmp_path: Path) -> None:
    meta = json.loads((value_ckpt / "checkpoint.json").read_text())
    assert meta["train_config"]["decision"] == "value"
    assert len(meta["train_config"]["extra"]["value_norm"]) == 2
    assert "val_value_loss" in json.loads((value_ckpt / "metrics.jsonl").read_text().splitlines()[0])
    loaded = load_checkpoint(value_ckpt)
    inputs = np.load(data / "test__inputs.npy")
    best = np.load(data / "test__target_action.npy")
    q = predict_values(loaded.model, inputs, torch.device("cpu"))
    assert (q.argmax(axis=1) == best).mean() >= 0.8
    # The imitation objective on the same data follows the executed label instead.
    imit = tmp_path / "imit"
    train(data, imit, TrainConfig(epochs=8, batch_size=32, lr=1e-2, seed=0, quiet=True, device="cpu", num_threads=1),
          TINY)
    assert json.loads((imit / "checkpoint.json").read_text())["train_config"]["decision"] == "imitation"


def _ctx(issue: Issue, space: ActionSpace, allowed: list[str] | None) -> StrategyContext:
    pi = build_planner_input(issue, "2025-03-01T00:00:00Z", index=SimilarRunsIndex.from_summaries([]),
                             universe_id=None)
    heur = DispatchPlan(issue_id=issue.id, action=space.actions[0], toolchains=["codex"], speculate=False)
    extras: dict[str, object] = {"planner_input_model": pi}
    if allowed is not None:
        extras["allowed_actions"] = allowed
    return StrategyContext(issue=issue, heuristic=heur, serial_toolchains=["codex"], speculate_toolchains=["codex"],
                           now=parse_ts("2025-03-01T00:00:00Z"), extras=extras)


def _issue(i: int, size: str, risk: str) -> Issue:
    return Issue(id=str(i), title=f"issue {i}", status="open", dk_size=size, dk_risk=risk)


def test_value_decision_is_argmax_q_among_allowed(value_ckpt: Path, tmp_path: Path) -> None:
    space = ActionSpace()
    env = StrategyEnv(workspace=tmp_path, config=KernelConfig.model_validate(
        {"planner": {"checkpoint": str(value_ckpt), "device": "cpu"}}), space=space)
    strategy = build_urm_strategy(env)
    assert strategy.describe()["decision"] == "value"
    rng = random.Random(0)
    labels = [a.label() for a in space.actions]
    sizes, risks = ["XS", "S", "M", "L", "XL"], ["low", "medium", "high"]
    ctxs, allowed_sets = [], []
    for i in range(40):
        allowed = rng.sample(labels, rng.randint(1, 20))
        allowed_sets.append(allowed)
        ctxs.append(_ctx(_issue(i, sizes[i % 5], risks[i % 3]), space, allowed))
    decisions = strategy.decide_batch(ctxs)
    vocab = Vocabulary(list(strategy.meta["vocab"]))
    ids = np.stack([encode(c.extras["planner_input_model"], vocab, strategy.seq_len)[0] for c in ctxs])
    with torch.inference_mode():
        _, values = strategy.model(torch.from_numpy(ids.astype(np.int64)))
    q = values.numpy().astype(np.float64) * strategy.value_scale + strategy.value_shift
    order = [a.label() for a in strategy.actions]
    for d, allowed, row in zip(decisions, allowed_sets, q, strict=True):
        assert d.action.label() in allowed
        best = max(allowed, key=lambda lab: row[order.index(lab)])
        assert d.action.label() == best
        assert d.expected_utility == pytest.approx(row[order.index(best)], rel=1e-5)
        assert d.confidence is not None and 0.0 <= d.confidence <= 1.0
    # Without an explicit set the strategy uses the workspace's clamp (bundled default policy).
    crit = strategy.decide_batch([_ctx(_issue(100 + i, "M", "critical"), space, None) for i in range(5)])
    assert all(d.action.max_run_minutes >= 30 for d in crit)
    small = strategy.decide_batch([_ctx(_issue(200 + i, "XS", "low"), space, None) for i in range(5)])
    assert all(d.action.max_candidates <= 2 and d.action.parallelism <= 2 for d in small)


def test_kernel_never_applies_a_plan_outside_the_clamp(value_ckpt: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    init_workspace(ws, n_issues=25, seed=5)
    cfg = ws / ".cyntra" / "config.yaml"
    text = cfg.read_text().replace("strategy: heuristic", "strategy: urm")
    cfg.write_text(text + f"\nplanner:\n  checkpoint: {json.dumps(str(value_ckpt))}\n  device: cpu\n"
                          "  latency_budget_ms: 2000\n")
    session = KernelSession.open(ws)
    run_kernel(session, once=False, until_idle=True)
    session = KernelSession.open(ws)
    issues = session.store.load().issues
    records = Ledger(session.workspace.decisions_dir).read().decisions
    assert len(records) >= 25
    for rec in records:
        assert rec.applied.source == "candidate", rec.fallback_reason
        assert rec.candidate is not None and rec.candidate.action is not None
        allowed = session.clamp.allowed(issues[rec.issue_id])
        assert rec.applied.action in allowed
        assert rec.candidate.action == rec.applied.action  # already allowed: the clamp changed nothing
        assert rec.candidate.expected_utility is not None


# -- the factored objective: Q = pass_value·P(pass) − fail_penalty − spend ------------------------

PASS_VALUE = 10.0


def _spend(a: np.ndarray) -> np.ndarray:
    return 1.0 + (np.asarray(a) % 5)  # plans 0, 5, 10, 15 are the cheapest


@pytest.fixture(scope="module")
def factored_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plan (executed + SHIFT) passes with p 0.9, every other with p 0.1; spend 1–5 by plan."""
    def arrays(action: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(action)
        good = (action + SHIFT) % 20
        p = np.full((n, 20), 0.1)
        p[np.arange(n), good] = 0.9
        passed = (rng.random((n, 20)) < p).astype(np.float32)
        spend = np.broadcast_to(_spend(np.arange(20))[None, :], (n, 20)).astype(np.float32).copy()
        rewards = (PASS_VALUE * passed - spend).astype(np.float32)
        hidden = rng.random((n, 20)) < 0.3
        for arr in (rewards, passed, spend):
            arr[hidden] = np.nan
        no_log = np.full(n, np.nan, dtype=np.float32)  # no logged plans: best-of-K cells only
        return {"target_action": good.astype(np.int64), "action_rewards": rewards, "action_passed": passed,
                "action_spend": spend, "passed": no_log, "spend": no_log,
                "pass_value": np.full(n, PASS_VALUE, dtype=np.float32), "fail_penalty": np.zeros(n, dtype=np.float32)}

    return _synthetic(tmp_path_factory.mktemp("fdata"), 4, 1, arrays)


@pytest.fixture(scope="module")
def factored_ckpt(factored_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(factored_data, tmp_path_factory.mktemp("fckpt"), 25, objective="factored")


def test_factored_targets_weights_and_precedence() -> None:
    nan = np.nan
    arrays = {
        "inputs": np.zeros((3, 3), dtype=np.int32),
        "action": np.array([0, 1, 2]),
        "reward": np.array([nan, 4.0, -3.0], dtype=np.float32),
        "propensity": np.array([1.0, 0.1, 0.5], dtype=np.float32),
        "passed": np.array([nan, 1.0, 0.0], dtype=np.float32),
        "spend": np.array([nan, 6.0, 1.0], dtype=np.float32),
        "pass_value": np.array([10.0, 12.0, 6.0], dtype=np.float32),
        "fail_penalty": np.array([2.0, 2.0, 2.0], dtype=np.float32),
        "action_rewards": np.array([[5.0, -4.0, nan], [nan] * 3, [nan] * 3], dtype=np.float32),
        "action_passed": np.array([[1.0, 0.0, nan], [nan] * 3, [nan] * 3], dtype=np.float32),
        "action_spend": np.array([[3.0, 2.0, nan], [nan] * 3, [nan] * 3], dtype=np.float32),
    }
    ft, fw, (shift, scale) = factored_targets(Split("train", arrays), 3, ips_clip=20.0)
    assert ft.shape == (3, 6) and fw.shape == (3, 6)
    assert (fw[:, :3] == fw[:, 3:]).all()
    spend = {(0, 0): 3.0, (0, 1): 2.0, (1, 1): 6.0, (2, 2): 1.0}  # best-of-K cells, then logged plans
    assert set(zip(*np.nonzero(fw[:, :3]), strict=True)) == set(spend)
    values = np.array(list(spend.values()))
    assert shift == pytest.approx(values.mean()) and scale == pytest.approx(values.std())
    for (r, a), v in spend.items():
        assert ft[r, 3 + a] == pytest.approx((v - shift) / scale)
    assert ft[0, 0] == 1.0 and ft[0, 1] == 0.0 and ft[1, 1] == 1.0 and ft[2, 2] == 0.0
    assert fw[0, 0] == 1.0 and fw[1, 1] / fw[2, 2] == pytest.approx(10.0 / 2.0)  # logged: 1/propensity
    # The composition gives back U = pass_value·passed − fail_penalty − spend.
    logits = np.where(ft[:, :3] > 0.5, 30.0, -30.0)
    q = factored_q(np.concatenate([logits, ft[:, 3:]], axis=1), arrays["pass_value"], arrays["fail_penalty"],
                   (shift, scale))
    assert q[0, 0] == pytest.approx(5.0) and q[0, 1] == pytest.approx(-4.0)
    assert q[1, 1] == pytest.approx(4.0) and q[2, 2] == pytest.approx(-3.0)
    # A dataset without the factored arrays is refused with a reason.
    del arrays["action_spend"]
    with pytest.raises(ValueError, match="best-of-K attached"):
        factored_targets(Split("train", arrays), 3, ips_clip=20.0)


def test_factored_objective_learns_pass_probability_and_spend(factored_data: Path, factored_ckpt: Path) -> None:
    meta = json.loads((factored_ckpt / "checkpoint.json").read_text())
    assert meta["train_config"]["decision"] == "factored"
    assert meta["model_config"]["value_outputs"] == 2
    extra = meta["train_config"]["extra"]
    loaded = load_checkpoint(factored_ckpt)
    inputs = np.load(factored_data / "test__inputs.npy")
    good = np.load(factored_data / "test__target_action.npy")
    raw = predict_values(loaded.model, inputs, torch.device("cpu"))
    assert raw.shape == (len(inputs), 40)
    q = factored_q(raw, PASS_VALUE, 0.0, extra["spend_norm"])
    assert (q.argmax(axis=1) == good).mean() >= 0.8
    p_pass, _ = factored_parts(raw, extra["spend_norm"])
    rows = np.arange(len(good))
    assert p_pass[rows, good].mean() > 0.7 and np.delete(p_pass, good, axis=1).mean() < 0.25


def test_factored_decision_reprices_with_the_objective(factored_ckpt: Path, tmp_path: Path) -> None:
    """Same checkpoint, same issues: a pass worth 10 picks the likely-passing plan; a pass worth
    almost nothing picks the cheapest allowed plan — no retraining."""
    space = ActionSpace()
    labels = [a.label() for a in space.actions]

    def decide(value: float) -> list[str]:
        cfg = KernelConfig.model_validate({
            "planner": {"checkpoint": str(factored_ckpt), "device": "cpu"},
            "objective": {"value_by_priority": {"P2": value}, "value_size_factor": {"M": 1.0},
                          "fail_penalty": 0.0}})
        strategy = build_urm_strategy(StrategyEnv(workspace=tmp_path, config=cfg, space=space))
        assert strategy.describe()["decision"] == "factored"
        ctxs = [_ctx(_issue(i, "M", "low"), space, labels) for i in range(30)]
        decisions = strategy.decide_batch(ctxs)
        vocab = Vocabulary(list(strategy.meta["vocab"]))
        ids = np.stack([encode(c.extras["planner_input_model"], vocab, strategy.seq_len)[0] for c in ctxs])
        with torch.inference_mode():
            _, raw = strategy.model(torch.from_numpy(ids.astype(np.int64)))
        q = factored_q(raw.numpy(), value, 0.0, strategy.spend_norm)
        order = [a.label() for a in strategy.actions]
        for d, row in zip(decisions, q, strict=True):
            assert d.action.label() == order[int(row.argmax())]
            assert d.expected_utility == pytest.approx(float(row.max()), rel=1e-4, abs=1e-4)
        return [d.action.label() for d in decisions]

    worth = decide(PASS_VALUE)
    cheap = decide(0.01)
    cheapest = {labels[a] for a in range(20) if a % 5 == 0}
    assert sum(lab in cheapest for lab in cheap) >= 27
    assert sum(lab in cheapest for lab in worth) <= 10


def test_a_checkpoint_whose_decision_does_not_match_its_head_is_unavailable(factored_ckpt: Path, tmp_path: Path) -> None:
    import shutil

    from cyntra.strategy.base import StrategyUnavailable

    bad = tmp_path / "bad"
    shutil.copytree(factored_ckpt, bad)
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["train_config"]["decision"] = "value"  # a value decision over a pass|spend head would be nonsense
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    env = StrategyEnv(workspace=tmp_path, config=KernelConfig.model_validate(
        {"planner": {"checkpoint": str(bad), "device": "cpu"}}), space=ActionSpace())
    with pytest.raises(StrategyUnavailable, match="does not match its value head"):
        build_urm_strategy(env)


def test_train_cli_refuses_factored_without_its_arrays(data: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from planner_model.cli_commands import train_cmd

    res = CliRunner().invoke(train_cmd, ["--data", str(data), "--out", str(tmp_path / "ck"), "--objective", "factored",
                                         "--epochs", "1", "--device", "cpu", "--quiet"])
    assert res.exit_code == 2
    assert "error: the factored objective needs the action_passed/action_spend" in res.output
    assert not (tmp_path / "ck" / "checkpoint.json").exists()


@pytest.fixture(scope="module")
def linear_ckpt(factored_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(factored_data, tmp_path_factory.mktemp("lckpt"), 6, objective="factored", value_model="linear")


def test_linear_value_is_refitted_on_tokens_and_decides(factored_data: Path, linear_ckpt: Path, tmp_path: Path) -> None:
    """``value_model: linear``: the kept epoch's encoder, its value head zeroed, the wide path fitted
    full-batch for each L2 in the grid; the kept L2 is the one with the lowest validation loss. The
    strategy decides by argmax Q with it, on torch and on the numpy runtime alike."""
    from planner_model.runtime import load_numpy_checkpoint
    from planner_model.train import LINEAR_L2_GRID

    meta = json.loads((linear_ckpt / "checkpoint.json").read_text())
    assert meta["model_config"]["value_wide"] is True and meta["train_config"]["decision"] == "factored"
    fit = meta["metrics"]["value_fit"]
    assert [g["l2"] for g in fit["grid"]] == list(LINEAR_L2_GRID) and fit["selection"] == "validation"
    assert fit["l2"] == min(fit["grid"], key=lambda g: g["val_value_loss"])["l2"]
    assert meta["metrics"]["val_value_loss"] == fit["val_value_loss"]  # the refitted value's, not the epoch's
    loaded = load_checkpoint(linear_ckpt)
    # The installed weights are the kept fit's: recomputing their validation loss gives its number.
    from planner_model.data import load_dataset_info, load_split
    from planner_model.train import val_factored_loss

    extra = meta["train_config"]["extra"]
    val = load_split(load_dataset_info(factored_data), "val")
    again = val_factored_loss(loaded.model, val, 20, 20.0, tuple(extra["spend_norm"]), extra["utility_scale"],
                              torch.device("cpu"))
    assert again == pytest.approx(fit["val_value_loss"], rel=1e-4)
    assert loaded.model.value is not None and loaded.model.wide is not None
    assert float(loaded.model.value.weight.detach().abs().max()) == 0.0 == float(loaded.model.value.bias.detach().abs().max())
    inputs = np.load(factored_data / "test__inputs.npy")
    good = np.load(factored_data / "test__target_action.npy")
    raw = predict_values(loaded.model, inputs, torch.device("cpu"))
    q = factored_q(raw, PASS_VALUE, 0.0, meta["train_config"]["extra"]["spend_norm"])
    assert (q.argmax(axis=1) == good).mean() >= 0.3  # chance 0.05; a linear map misses the task's interactions
    _, np_raw = load_numpy_checkpoint(linear_ckpt).model(inputs[:8])
    np.testing.assert_allclose(np_raw, raw[:8], atol=1e-4)
    space = ActionSpace()
    labels = [a.label() for a in space.actions]
    cfg = KernelConfig.model_validate({"planner": {"checkpoint": str(linear_ckpt), "device": "cpu"}})
    strategy = build_urm_strategy(StrategyEnv(workspace=tmp_path, config=cfg, space=space))
    assert strategy.describe()["decision"] == "factored"
    decisions = strategy.decide_batch([_ctx(_issue(i, "M", "low"), space, labels) for i in range(4)])
    assert all(d.action.label() in labels and d.expected_utility is not None for d in decisions)


def test_linear_value_needs_the_factored_objective(data: Path, tmp_path: Path) -> None:
    from planner_model.train import TrainingInputError

    for extra in ({"objective": "value", "value_model": "linear"}, {"objective": "factored", "value_model": "forest"}):
        tc = TrainConfig(epochs=1, quiet=True, device="cpu", extra=extra)
        with pytest.raises(TrainingInputError, match="value_model"):
            train(data, tmp_path / "x", tc, TINY)


def test_linear_value_refits_once_when_a_time_boxed_run_finishes(factored_data: Path, tmp_path: Path) -> None:
    """``stop_after`` leaves the run unfinished: no refit yet. The resumed run -- even when the
    resuming call does not repeat ``value_model`` -- finishes with the run's own linear refit."""
    out = tmp_path / "run"
    tc = TrainConfig(epochs=4, batch_size=32, lr=1e-2, seed=0, quiet=True, device="cpu", num_threads=1,
                     extra={"objective": "factored", "value_model": "linear"})
    train(factored_data, out, tc, TINY, stop_after=2)
    assert "value_fit" not in json.loads((out / "checkpoint.json").read_text())["metrics"]
    plain = TrainConfig(epochs=4, quiet=True, device="cpu", extra={"objective": "factored"})
    result = train(factored_data, out, plain, TINY, resume=True)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["train_config"]["extra"]["value_model"] == "linear" and "value_fit" in meta["metrics"]
    assert result.best_metrics["value_fit"]["l2"] == meta["metrics"]["value_fit"]["l2"]


def test_linear_value_without_validation_keeps_the_grid_middle(factored_data: Path) -> None:
    from planner_model.config import URMConfig
    from planner_model.data import load_dataset_info, load_split
    from planner_model.model import URM
    from planner_model.train import LINEAR_L2_GRID, fit_linear_value

    info = load_dataset_info(factored_data)
    train_split = load_split(info, "train")
    empty = Split("val", {k: v[:0] for k, v in load_split(info, "val").arrays.items()})
    model = URM(URMConfig(vocab_size=info.vocab_size, heads=info.head_sizes, seq_len=info.seq_len, n_actions=20,
                          value_outputs=2, value_wide=True, **TINY))
    _, _, norm = factored_targets(train_split, 20, 20.0)
    fit = fit_linear_value(model, train_split, empty, 20, 20.0, norm, 1.0, torch.device("cpu"), steps=50)
    assert fit["selection"].startswith("none") and fit["val_value_loss"] is None
    assert fit["l2"] == LINEAR_L2_GRID[len(LINEAR_L2_GRID) // 2] and len(fit["grid"]) == 1
