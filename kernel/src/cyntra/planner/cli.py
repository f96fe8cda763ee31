"""``cyntra planner …``: planner data commands (the lead mounts :data:`planner` into ``cyntra``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from cyntra.errors import CyntraError


@click.group()
def planner() -> None:
    """Planner inputs and training data."""


@planner.command("build-dataset")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Workspace root (holds .cyntra/archives and .cyntra/decisions).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory for dataset.json, vocab.json and the .npy arrays.")
@click.option("--n-similar", type=click.IntRange(min=0), default=8, show_default=True,
              help="Similar past runs per planner input.")
@click.option("--labels", type=click.Choice(["executed", "best-of-k", "outcome"]), default="executed",
              show_default=True, help="Label mode (see planner_model.dataset).")
@click.option("--seq-len", type=click.IntRange(min=8), default=96, show_default=True,
              help="Tokens per example (longer inputs are truncated and counted).")
@click.option("--vocab-cap", type=click.IntRange(min=4), default=8192, show_default=True)
@click.option("--from-index", is_flag=True,
              help="Read run summaries from .cyntra/index/runs.jsonl instead of scanning archives.")
@click.option("--write-inputs", is_flag=True,
              help="Also write {split}__planner_inputs.jsonl (the planner input of every row).")
@click.option("--attach-best-of-k", is_flag=True,
              help="Keep every decision and attach best-of-K rewards where they exist (for --objective value).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def build_dataset_command(workspace: Path, out: Path, n_similar: int, labels: str, seq_len: int,
                          vocab_cap: int, from_index: bool, write_inputs: bool, attach_best_of_k: bool,
                          quiet: bool) -> None:
    """Build a leakage-safe planner dataset from the decisions ledger and the archives."""
    from planner_model.dataset import build_dataset

    console = Console()
    try:
        build_dataset(workspace, out, n_similar=n_similar, labels=labels, seq_len=seq_len,
                      vocab_cap=vocab_cap, from_index=from_index, write_inputs=write_inputs,
                      attach_best_of_k=attach_best_of_k, quiet=quiet,
                      echo=None if quiet else console.print)
    except CyntraError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        sys.exit(2)
