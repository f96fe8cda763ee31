"""Evaluation: writes eval.json/eval.md/plots with intervals and baselines; logistic baseline learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from planner_model.baselines import fit_logistic  # noqa: E402
from planner_model.cli_commands import eval_cmd  # noqa: E402
from planner_model.config import TrainConfig  # noqa: E402
from planner_model.data import action_table, labels_to_actions, load_dataset_info, load_split  # noqa: E402
from planner_model.synthetic import write_synthetic_dataset  # noqa: E402
from planner_model.train import train  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = write_synthetic_dataset(tmp_path_factory.mktemp("d"), n=300, seq_len=12, min_len=4, n_noise_tokens=8, seed=3, use_tool=False)
    out = tmp_path_factory.mktemp("ck")
    train(data, out, TrainConfig(epochs=3, batch_size=32, lr=1e-2, quiet=True, device="cpu"), {"hidden": 16, "n_heads": 2, "loops": 2, "grad_loops": 1})
    return data, out


def test_eval_cli_writes_report_plots_and_baselines(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    result = CliRunner().invoke(eval_cmd, ["--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    for name in ("confusion.png", "reliability.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    m = report["model"]
    for key in ("exact_match", "ece", "ece_calibrated"):
        assert m[key]["lo"] <= m[key]["value"] <= m[key]["hi"]
    assert set(m["per_head_accuracy"]) == {"swarm_id", "parallelism", "max_run_minutes", "max_candidates"}
    assert set(report["baselines"]) == {"heuristic", "majority", "logistic_bag_of_tokens"}
    # the synthetic heuristic agrees with the labels ~90% of the time
    assert report["baselines"]["heuristic"]["exact_match"]["value"] > 0.7
    md = (tmp_path / "eval.md").read_text()
    assert "| heuristic |" in md and "ECE after" in md and "![reliability.png]" in md


def test_eval_refuses_checkpoint_of_another_universe(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    other = write_synthetic_dataset(tmp_path / "other", n=50, seq_len=12, min_len=4, seed=4, swarm_types={"serial_handoff": "serial_handoff", "race": "parallel_compete"})
    result = CliRunner().invoke(eval_cmd, ["--checkpoint", str(ckpt), "--data", str(other), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "mismatch" in str(result.exception)


def test_logistic_baseline_learns(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path, n=1200, seq_len=12, min_len=4, n_noise_tokens=8, seed=5, use_tool=False)
    info = load_dataset_info(data)
    table = action_table(info)
    tr, te = load_split(info, "train"), load_split(info, "test")
    model = fit_logistic(tr["inputs"], np.asarray(tr["labels"]), [len(v) for v in info.heads.values()], info.vocab_size, epochs=40, seed=0)
    pred = model.predict(te["inputs"], table)
    targets = labels_to_actions(np.asarray(te["labels"]), table)
    majority = np.bincount(labels_to_actions(np.asarray(tr["labels"]), table)).max() / len(tr)
    assert (pred == targets).mean() > majority + 0.15
