"""Rollouts: the normalised ``rollout.json`` summary of each candidate run."""

from cyntra.rollouts.builder import (
    build_rollout,
    build_rollout_model,
    rollout_id_for,
    summarize_telemetry,
    write_rollout,
)

__all__ = [
    "build_rollout",
    "build_rollout_model",
    "rollout_id_for",
    "summarize_telemetry",
    "write_rollout",
]
