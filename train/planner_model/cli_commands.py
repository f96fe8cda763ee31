"""Click commands mounted by the kernel CLI as ``cyntra planner train`` and ``cyntra planner eval``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cyntra.errors import CyntraError


@click.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="dataset directory (dataset.json + *.npy)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="output directory for the checkpoint")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), show_default=True)
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--weight-decay", default=0.01, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--ema/--no-ema", default=False, show_default=True)
@click.option("--patience", default=0, show_default=True, type=int, help="early stopping after P epochs without improvement (0 = off)")
@click.option("--class-weights/--no-class-weights", default=False, show_default=True)
@click.option("--value-loss-weight", default=0.0, show_default=True, type=float)
@click.option("--objective", type=click.Choice(["imitation", "value", "factored"]), default="imitation", show_default=True,
              help="imitation: reproduce the executed plans; value: learn each plan's utility and decide by it; "
                   "factored: learn each plan's pass probability and spend, and decide by the objective's utility")
@click.option("--resume", is_flag=True, help="continue from OUT/resume (optimizer, schedule and epoch included)")
@click.option("--hidden", type=int, default=None)
@click.option("--heads", "n_heads", type=int, default=None)
@click.option("--layers", type=int, default=None)
@click.option("--loops", type=int, default=None)
@click.option("--grad-loops", type=int, default=None)
@click.option("--pool", type=click.Choice(["cls", "mean"]), default=None)
@click.option("--value-model", type=click.Choice(["encoder", "linear"]), default="encoder", show_default=True,
              help="factored objective: the value from the encoder's head, or refitted linearly on the input tokens")
@click.option("--value-wide", is_flag=True, default=None,
              help="value objectives: add a linear path from the input tokens to the value outputs (wide & deep)")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
@click.option("--quiet", is_flag=True)
def train_cmd(
    data_dir: Path, out_dir: Path, device: str, epochs: int, batch_size: int, lr: float,
    weight_decay: float, seed: int, ema: bool, patience: int, class_weights: bool,
    value_loss_weight: float, resume: bool, hidden: int | None, n_heads: int | None,
    layers: int | None, loops: int | None, grad_loops: int | None, pool: str | None,
    threads: int, quiet: bool, objective: str = "imitation", value_wide: bool | None = None,
    value_model: str = "encoder",
) -> None:
    """Train the URM planner on a dataset directory (also: torchrun -m planner_model.train)."""
    from planner_model.config import TrainConfig
    from planner_model.train import dist_info_from_env, train

    tc = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, ema=ema,
        patience=patience, class_weights=class_weights, value_loss_weight=value_loss_weight,
        device=device, quiet=quiet, num_threads=threads,
        extra={**({"objective": objective} if objective != "imitation" else {}),
               **({"value_model": value_model} if value_model != "encoder" else {})},
    )
    overrides: dict[str, Any] = {
        k: v for k, v in {"hidden": hidden, "n_heads": n_heads, "layers": layers, "loops": loops,
                          "grad_loops": grad_loops, "pool": pool, "value_wide": value_wide or None}.items()
        if v is not None
    }
    try:
        result = train(data_dir, out_dir, tc, overrides, resume=resume)
    except CyntraError as exc:  # an unusable dataset or setting (TrainingInputError, InputError): say why
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if dist_info_from_env().is_main:
        click.echo(json.dumps({
            "checkpoint": str(result.out_dir), "best_epoch": result.best_epoch,
            "val_exact_match": result.best_metrics.get("exact_match"),
            **({"val_value_loss": result.best_metrics["value_loss"]} if "value_loss" in result.best_metrics else {}),
            "temperature": result.temperature, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
        }, sort_keys=True))


@click.command("eval")
@click.option("--checkpoint", "ckpt_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--bootstrap", default=1000, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
def eval_cmd(ckpt_dir: Path, data_dir: Path, out_dir: Path, split: str, device: str, bootstrap: int, seed: int) -> None:
    """Evaluate a checkpoint against the heuristic, majority and logistic baselines."""
    from planner_model.evaluate import evaluate

    report = evaluate(ckpt_dir, data_dir, out_dir, split=split, device=device, n_bootstrap=bootstrap, seed=seed)
    model = report["model"]
    click.echo(json.dumps({
        "eval": str(out_dir / "eval.json"), "exact_match": model["exact_match"]["value"],
        "ece_calibrated": model["ece_calibrated"]["value"],
    }, sort_keys=True))
