"""``python -m planner_model.build_dataset``: the same command as ``cyntra planner build-dataset``."""

from __future__ import annotations

from cyntra.planner.cli import build_dataset_command

if __name__ == "__main__":
    build_dataset_command()
