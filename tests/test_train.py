"""Training: learns a learnable task, deterministic on CPU, exact resume, DDP via torchrun."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from planner_model.config import TrainConfig  # noqa: E402
from planner_model.synthetic import write_synthetic_dataset  # noqa: E402
from planner_model.train import lr_at, select_device, train  # noqa: E402

TINY = {"hidden": 16, "n_heads": 2, "layers": 1, "loops": 3, "grad_loops": 2}


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("easy"), n=500, seq_len=12, min_len=4, n_noise_tokens=8, seed=1, use_tool=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("small"), n=100, seq_len=12, min_len=4, n_noise_tokens=8, seed=2, use_tool=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_learns_a_learnable_task(easy: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=10, batch_size=32, lr=1e-2, seed=0, quiet=True, device="cpu")
    result = train(easy, tmp_path, tc, TINY)
    rows = metrics(tmp_path)
    assert len(rows) == 10
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]  # type: ignore[operator]
    assert result.best_metrics["exact_match"] >= 0.9
    assert {"val_acc", "val_loss", "lr", "time_s"} <= set(rows[0])
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["metrics"]["best_epoch"] == result.best_epoch
    assert 0.05 <= meta["temperature"] <= 20


def test_same_seed_same_weights_and_exact_resume(small: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=2, batch_size=32, lr=5e-3, seed=7, quiet=True, device="cpu", ema=True)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(small, a, tc, TINY)
    train(small, b, tc, TINY)
    assert sha(a / "resume" / "model.safetensors") == sha(b / "resume" / "model.safetensors")
    assert sha(a / "model.safetensors") == sha(b / "model.safetensors")
    # c: stop after 1 epoch, then resume to 2 — same weights and optimizer state as straight through
    train(small, c, tc, TINY, stop_after=1)
    assert len(metrics(c)) == 1
    train(small, c, tc, None, resume=True)
    assert [r["epoch"] for r in metrics(c)] == [1, 2]
    assert sha(c / "resume" / "model.safetensors") == sha(a / "resume" / "model.safetensors")
    assert sha(c / "resume" / "optimizer.safetensors") == sha(a / "resume" / "optimizer.safetensors")


def test_other_seed_other_weights(small: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=1, batch_size=32, seed=1, quiet=True, device="cpu")
    train(small, tmp_path / "a", tc, TINY)
    train(small, tmp_path / "b", TrainConfig(**{**tc.to_dict(), "seed": 2}), TINY)
    assert sha(tmp_path / "a" / "model.safetensors") != sha(tmp_path / "b" / "model.safetensors")


def test_options_class_weights_value_head_early_stopping(small: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=5, batch_size=64, lr=0.0, seed=0, quiet=True, device="cpu", class_weights=True, value_loss_weight=1.0, patience=1)
    result = train(small, tmp_path, tc, TINY)
    assert result.stopped_early and result.epochs_run == 2


def test_device_selection_and_schedule() -> None:
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(ValueError):
        select_device("tpu")
    tc = TrainConfig(lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)
    lrs = [lr_at(s, 100, tc) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(x >= y - 1e-12 for x, y in itertools.pairwise(lrs[10:]))


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(small: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "planner_model.train", "--data", str(small),
         "--out", str(tmp_path), "--epochs", "1", "--device", "cpu", "--quiet", "--hidden", "16", "--heads", "2",
         "--layers", "1", "--loops", "2", "--grad-loops", "1", "--batch-size", "32"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(metrics(tmp_path)) == 1  # rank 0 only logs
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "checkpoint.sha256").exists()
    summary = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summary) == 1 and json.loads(summary[0])["epochs_run"] == 1
