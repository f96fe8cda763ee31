"""The ``urm`` strategy in the real kernel path: it decides when its checkpoint is sound, and when it is
not — corrupted weights, a checkpoint from another universe, a missing directory, none configured,
no torch, CUDA asked for but absent — ``cyntra run`` keeps dispatching with the heuristic and the
decision record says why (under ``urm`` as a fallback reason; under ``shadow`` as the candidate's
``unavailable`` status).

The checkpoint is trained once per module on a small real sim history (sim init → run → dataset →
train), so the happy path exercises exactly what an operator would run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cyntra import clock
from cyntra.cli import main
from cyntra.kernel.session import KernelSession
from cyntra.sim.cli import init_workspace
from cyntra.strategy.base import StrategyUnavailable
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import DecisionRecord

HISTORY_ISSUES = 120
HISTORY_SEED = 7
FRESH_ISSUES = 12


# -- helpers ---------------------------------------------------------------------------------------


def _set_config(ws: Path, **updates: Any) -> None:
    path = ws / ".cyntra" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(updates)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _fresh_ws(root: Path, *, seed: int = 5, **config: Any) -> Path:
    """A new sim workspace with ready work and no history (what a team has on day one)."""
    ws = root / "ws"
    init_workspace(ws, n_issues=FRESH_ISSUES, seed=seed)
    _set_config(ws, **config)
    return ws


def _dispatch_once(ws: Path, *args: str) -> tuple[dict[str, Any], list[DecisionRecord]]:
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--once", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report, list(Ledger(ws / ".cyntra" / "decisions").read().decisions)


def _assert_fell_back(report: dict[str, Any], records: list[DecisionRecord], mode: str, cause: str) -> None:
    """Dispatch went on with the heuristic's plan and every record names ``cause``."""
    assert report["dispatched"] >= 1
    assert records and len(records) == report["dispatched"]
    for rec in records:
        assert rec.mode == mode
        assert rec.applied.source == "heuristic"
        assert rec.heuristic.action is not None and rec.applied.action == rec.heuristic.action
        assert rec.candidate is not None and rec.candidate.strategy == "urm"
        assert rec.candidate.status == "unavailable"
        assert rec.candidate.error is not None and cause in rec.candidate.error, rec.candidate.error
        assert rec.checkpoint_sha256 is None
        if mode == "urm":
            assert rec.fallback_reason is not None and cause in rec.fallback_reason, rec.fallback_reason
            assert rec.fallback_reason.startswith("candidate unavailable")
        else:
            assert rec.fallback_reason is None  # shadow applies the heuristic by design, not as a fallback


# -- the trained checkpoint (module-scoped: one sim history, one short training run) ---------------


@pytest.fixture(scope="module")
def torch_mod() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, torch_mod: Any) -> Path:
    from planner_model.config import TrainConfig
    from planner_model.dataset import build_dataset
    from planner_model.train import train

    root = tmp_path_factory.mktemp("urm-history")
    ws = root / "history"
    init_workspace(ws, n_issues=HISTORY_ISSUES, seed=HISTORY_SEED)
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--until-idle", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    build_dataset(ws, root / "data", quiet=True)
    train(root / "data", root / "ckpt", TrainConfig(epochs=3, quiet=True, device="cpu", seed=0))
    assert (root / "ckpt" / "model.safetensors").is_file()
    return root / "ckpt"


@pytest.fixture()
def ckpt_copy(trained: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns("resume", "metrics.jsonl"))
    return dest


# -- happy path ------------------------------------------------------------------------------------


def test_trained_checkpoint_decides_inside_the_clamp(trained: Path, tmp_path: Path) -> None:
    ws = _fresh_ws(tmp_path, strategy="urm", planner={"checkpoint": str(trained), "device": "cpu"})
    report, records = _dispatch_once(ws)
    assert report["strategy"] == "urm" and report["dispatched"] >= 1
    session = KernelSession.open(ws)
    issues = session.store.load().issues
    sha = (trained / "checkpoint.sha256").read_text().split()[0]
    for rec in records:
        cand = rec.candidate
        assert cand is not None and cand.status == "ok", cand
        assert rec.applied.source == "candidate" and rec.fallback_reason is None
        assert cand.action is not None and session.space.violations(cand.action) == []
        applied = rec.applied.action
        assert session.space.violations(applied) == []
        assert applied in session.clamp.allowed(issues[rec.issue_id])
        assert cand.confidence is not None and 0.0 <= cand.confidence <= 1.0
        assert cand.probabilities is not None
        assert set(cand.probabilities) == {"swarm_id", "parallelism", "max_run_minutes", "max_candidates"}
        for dist in cand.probabilities.values():
            assert all(0.0 <= p <= 1.0 for p in dist.values())
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-4)
        assert rec.checkpoint_sha256 == sha
        assert rec.checkpoint_id is not None and rec.checkpoint_id.startswith("ckpt@")
        assert cand.latency_ms is not None and cand.latency_ms >= 0.0


def test_allowed_actions_restrict_the_model_to_the_clamps_set(trained: Path, tmp_path: Path) -> None:
    """Given the clamp's allowed set, the model only ever proposes inside it (and normalises over it)."""
    from cyntra.control.controller import ExplorationController
    from cyntra.kernel.heuristic import HeuristicContext
    from cyntra.state.graph import IssueGraph
    from cyntra.strategy.base import StrategyEnv
    from cyntra.strategy.urm import NUMPY_MAX_BATCH, build_urm_strategy

    ws = _fresh_ws(tmp_path, planner={"checkpoint": str(trained), "device": "cpu"})
    session = KernelSession.open(ws)
    issue_set = session.store.load()
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps])
    hctx = HeuristicContext.create(session.config, universe=session.limits, graph=graph,
                                   controller=ExplorationController(session.config.control, ws), action_space=session.space)
    issues = list(issue_set.issues.values())[:6]
    ctxs = session.strategy_contexts(issues, hctx, clock.now())
    strategy = build_urm_strategy(StrategyEnv(workspace=ws, config=session.config, space=session.space))
    free = strategy.decide_batch(ctxs)
    # Forbid whatever the model likes best: it must move to something allowed, never stay.
    for ctx, d in zip(ctxs, free, strict=True):
        ctx.extras["allowed_actions"] = [a.label() for a in session.space.actions if a != d.action]
    fenced = strategy.decide_batch(ctxs)
    for ctx, before, after in zip(ctxs, free, fenced, strict=True):
        assert after.action != before.action
        assert after.action.label() in ctx.extras["allowed_actions"]
        assert after.confidence is not None and 0.0 <= after.confidence <= 1.0
    # Batch and single decisions agree (one batch per cycle must not change the answer); a single
    # decision runs on the numpy forward, a batch of 6 on torch.
    assert strategy.np_model is not None and len(ctxs) > NUMPY_MAX_BATCH
    for ctx, d in zip(ctxs, fenced, strict=True):
        single = strategy.decide(ctx)
        assert single.action == d.action
        assert single.confidence == pytest.approx(d.confidence, abs=1e-4)
        assert single.probabilities is not None and d.probabilities is not None
        for field, dist in d.probabilities.items():
            assert single.probabilities[field] == pytest.approx(dist, abs=1e-4)


def test_strategy_show_reports_the_urm_plan(trained: Path, tmp_path: Path) -> None:
    from cyntra.strategy.cli import strategy_group

    ws = _fresh_ws(tmp_path, strategy="shadow", planner={"checkpoint": str(trained), "device": "cpu"})
    issue_id = next(iter(KernelSession.open(ws).store.load().issues))
    result = CliRunner().invoke(strategy_group, ["show", issue_id, "-w", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {r["strategy"]: r for r in data["strategies"]}
    assert rows["urm"]["status"] == "ok", rows["urm"]
    assert 0.0 <= rows["urm"]["confidence"] <= 1.0
    assert rows["urm"]["label"] and rows["urm"]["probabilities"]
    human = CliRunner().invoke(strategy_group, ["show", issue_id, "-w", str(ws)])
    assert human.exit_code == 0 and "urm [ok]" in human.output


# -- every way the checkpoint can be unusable: the kernel dispatches with the heuristic ------------

MODES = ("urm", "shadow")


@pytest.mark.parametrize("mode", MODES)
def test_corrupted_weights_fall_back(ckpt_copy: Path, tmp_path: Path, mode: str) -> None:
    weights = ckpt_copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    for i in range(8 + header + 16, 8 + header + 48):  # tensor bytes: the file still parses
        raw[i] ^= 0xFF
    weights.write_bytes(bytes(raw))
    ws = _fresh_ws(tmp_path, strategy=mode, planner={"checkpoint": str(ckpt_copy), "device": "cpu"})
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, mode, "model.safetensors is corrupt: sha256")


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_with_other_swarms_falls_back(ckpt_copy: Path, tmp_path: Path, mode: str) -> None:
    """Same actions, but checkpoint.json says it was trained for another swarm catalog: refused."""
    meta_path = ckpt_copy / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["swarm_types"] = {"speculate_vote": "parallel_compete", "relay": "serial_handoff"}
    meta_path.write_text(json.dumps(meta))
    ws = _fresh_ws(tmp_path, strategy=mode, planner={"checkpoint": str(ckpt_copy), "device": "cpu"})
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, mode, "swarm mismatch")


@pytest.fixture(scope="module")
def other_universe_ckpt(tmp_path_factory: pytest.TempPathFactory, torch_mod: Any) -> Path:
    """A real (tiny) checkpoint trained on a dataset whose universe has a third swarm."""
    from planner_model.config import TrainConfig
    from planner_model.synthetic import write_synthetic_dataset
    from planner_model.train import train

    root = tmp_path_factory.mktemp("other-universe")
    swarms: Any = {"speculate_vote": "parallel_compete", "serial_handoff": "serial_handoff", "relay": "serial_handoff"}
    data = write_synthetic_dataset(root / "data", n=80, seq_len=32, min_len=12, swarm_types=swarms, use_tool=False)
    train(data, root / "ckpt", TrainConfig(epochs=1, quiet=True, device="cpu"), {"hidden": 16, "loops": 2, "grad_loops": 1})
    return root / "ckpt"


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_from_another_universe_falls_back(other_universe_ckpt: Path, tmp_path: Path, mode: str) -> None:
    ws = _fresh_ws(tmp_path, strategy=mode, planner={"checkpoint": str(other_universe_ckpt), "device": "cpu"})
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, mode, "action space mismatch")


@pytest.mark.parametrize("mode", MODES)
def test_missing_checkpoint_dir_falls_back(tmp_path: Path, mode: str) -> None:
    ws = _fresh_ws(tmp_path, strategy=mode, planner={"checkpoint": "checkpoints/never-trained"})
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, mode, f"checkpoint {ws / 'checkpoints' / 'never-trained'} not found")


@pytest.mark.parametrize("mode", MODES)
def test_no_checkpoint_configured_falls_back(tmp_path: Path, mode: str) -> None:
    ws = _fresh_ws(tmp_path, strategy=mode)
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, mode, "no planner.checkpoint configured")


def _run_without_torch(ws: Path) -> dict[str, Any]:
    """``cyntra run --once --json`` in a Python where ``import torch`` fails."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from cyntra.cli import main\n"
        f"sys.argv = ['cyntra', 'run', '-w', {str(ws)!r}, '--once', '--json']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.parametrize("mode", MODES)
def test_without_torch_a_missing_checkpoint_falls_back(tmp_path: Path, mode: str) -> None:
    """A Python in which ``import torch`` fails: the kernel still dispatches (and never needed torch)."""
    ws = _fresh_ws(tmp_path, strategy=mode, planner={"checkpoint": "ckpt"})
    report = _run_without_torch(ws)
    records = list(Ledger(ws / ".cyntra" / "decisions").read().decisions)
    _assert_fell_back(report, records, mode, "not found")


def test_without_torch_cuda_is_refused_with_the_reason(trained: Path, tmp_path: Path) -> None:
    ws = _fresh_ws(tmp_path, strategy="urm", planner={"checkpoint": str(trained), "device": "cuda"})
    report = _run_without_torch(ws)
    records = list(Ledger(ws / ".cyntra" / "decisions").read().decisions)
    _assert_fell_back(report, records, "urm", "planner.device is cuda but torch is not installed")


def test_without_torch_the_numpy_runtime_decides_as_torch_does(trained: Path, tmp_path: Path) -> None:
    """No torch: the checkpoint loads into the numpy forward and decides; same workspace, same
    decisions as the torch-loaded strategy (plans, checkpoint hash, confidences to 1e-4)."""
    planner = {"checkpoint": str(trained), "device": "cpu"}
    with_torch = _fresh_ws(tmp_path / "a", strategy="urm", planner=planner)
    without = _fresh_ws(tmp_path / "b", strategy="urm", planner=planner)
    report_t, records_t = _dispatch_once(with_torch)
    report_n = _run_without_torch(without)
    records_n = list(Ledger(without / ".cyntra" / "decisions").read().decisions)
    assert report_n["dispatched"] == report_t["dispatched"] >= 1
    assert len(records_n) == len(records_t)
    sha = (trained / "checkpoint.sha256").read_text().split()[0]
    for rt, rn in zip(records_t, records_n, strict=True):
        assert rn.candidate is not None and rn.candidate.status == "ok", rn.candidate
        assert rn.applied.source == "candidate" and rn.fallback_reason is None
        assert rn.checkpoint_sha256 == rt.checkpoint_sha256 == sha
        assert rt.candidate is not None and rn.candidate.action == rt.candidate.action
        assert rn.applied.action == rt.applied.action
        assert rn.candidate.confidence == pytest.approx(rt.candidate.confidence, abs=1e-4)


def _rewrite_weights(ckpt: Path, arrays: dict[str, np.ndarray]) -> None:
    """Replace a checkpoint's weights and record their hash (so only the content is wrong)."""
    import hashlib

    from safetensors.numpy import save as np_save

    data = np_save(arrays)
    (ckpt / "model.safetensors").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (ckpt / "checkpoint.sha256").write_text(digest + "\n")
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["weights_sha256"] = digest
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["extra", "missing-value", "wider-head", "corrupt", "actions"])
def test_numpy_loader_refuses_what_the_torch_loader_refuses(ckpt_copy: Path, damage: str) -> None:
    """Both loaders accept the intact checkpoint with the same outputs, and refuse each damaged one,
    naming the same kind of reason: an extra or a missing tensor, a wrongly shaped head, bytes
    that do not match the recorded hash, a foreign action space."""
    from safetensors.numpy import load as np_load

    from planner_model.checkpoint import CheckpointError, load_checkpoint
    from planner_model.runtime import NumpyURM, load_numpy_checkpoint

    ok = load_numpy_checkpoint(ckpt_copy)
    ids = np.ones((2, ok.config.seq_len), dtype=np.int64)
    want, _ = NumpyURM.from_model(load_checkpoint(ckpt_copy).model)(ids)
    got, _ = ok.model(ids)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    arrays = np_load((ckpt_copy / "model.safetensors").read_bytes())
    kwargs: dict[str, Any] = {}
    reason = "weights do not fit the model config"
    if damage == "extra":
        _rewrite_weights(ckpt_copy, {**arrays, "extra.weight": np.zeros((2, 2), dtype=np.float32)})
    elif damage == "missing-value":
        _rewrite_weights(ckpt_copy, {k: v for k, v in arrays.items() if not k.startswith("value.")})
    elif damage == "wider-head":
        name = next(k for k in arrays if k.startswith("heads.") and k.endswith(".weight"))
        wide = np.concatenate([arrays[name], arrays[name][:1]])
        _rewrite_weights(ckpt_copy, {**arrays, name: wide})
    elif damage == "corrupt":
        raw = bytearray((ckpt_copy / "model.safetensors").read_bytes())
        raw[-8:] = bytes(8)
        (ckpt_copy / "model.safetensors").write_bytes(bytes(raw))
        reason = "is corrupt: sha256"
    else:
        kwargs = {"expected_actions": ["serial_handoff/p1/15m/c1"]}
        reason = "action space mismatch"
    for loader in (load_numpy_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match=reason):
            loader(ckpt_copy, **kwargs)


# -- device selection ------------------------------------------------------------------------------


@pytest.fixture()
def cuda_available(torch_mod: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_available(value: bool) -> None:
        monkeypatch.setattr(torch_mod.cuda, "is_available", lambda: value)

    yield set_available


def test_device_auto_is_cpu_without_cuda_and_cuda_with_it(cuda_available: Any) -> None:
    from cyntra.strategy.urm import resolve_device

    cuda_available(False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    cuda_available(True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_cuda_requested_without_cuda_is_unavailable_with_a_reason(cuda_available: Any) -> None:
    from cyntra.strategy.urm import resolve_device

    cuda_available(False)
    with pytest.raises(StrategyUnavailable, match=r"planner\.device is cuda but CUDA is not available"):
        resolve_device("cuda")


def test_cuda_requested_without_cuda_falls_back_in_dispatch(trained: Path, tmp_path: Path, cuda_available: Any) -> None:
    cuda_available(False)
    ws = _fresh_ws(tmp_path, strategy="urm", planner={"checkpoint": str(trained), "device": "cuda"})
    report, records = _dispatch_once(ws)
    _assert_fell_back(report, records, "urm", "CUDA is not available")
