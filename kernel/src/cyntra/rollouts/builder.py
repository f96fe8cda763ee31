"""Build ``rollout.json`` (``cyntra.rollout.v1``) from a workcell's manifest, proof and telemetry.

The rollout is the normalised record of one candidate run that learning code reads; it must stay
valid against upstream's ``rollout.schema.json`` (closed top level), so the decision record goes
under ``planner`` and nothing else is added at the top. Paths are stored as given: pass paths
relative to the archive directory if the rollout must survive the workcell being archived.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyntra.clock import now_iso
from cyntra.fsutil import atomic_write_json
from cyntra.kernel.artifacts import (
    Manifest,
    Proof,
    Rollout,
    RolloutArtifacts,
    RolloutInputs,
    RolloutOutcomes,
    RolloutPolicy,
    RolloutSampling,
    RolloutScores,
    RolloutSpeculate,
    RolloutTrajectory,
    RolloutVerification,
    parse_artifact,
)

# Keys inside an event's ``data`` that name a shell command the agent ran.
_COMMAND_KEYS: tuple[str, ...] = ("command", "cmd")


def rollout_id_for(workcell_id: str) -> str:
    """Deterministic: rebuilding a workcell's rollout keeps its id."""
    return f"ro-{workcell_id}"


@dataclass
class TelemetrySummary:
    """What a rollout needs from ``telemetry.jsonl``: event counts and the commands executed."""

    tool_summary: dict[str, int] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    invalid_lines: int = 0
    missing_reason: str | None = None


def summarize_telemetry(path: str | Path) -> TelemetrySummary:
    """Count event types and collect commands; unreadable lines are counted, never fatal.

    A rollout is a summary, so a bad line must not lose the whole run: it is counted in
    ``telemetry_invalid_lines`` and the file itself (archived beside it) keeps the raw text.
    """
    summary = TelemetrySummary()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        summary.missing_reason = "telemetry file not found"
        return summary
    except OSError as exc:
        summary.missing_reason = f"telemetry file unreadable: {exc.strerror or exc}"
        return summary
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            summary.invalid_lines += 1
            continue
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            summary.invalid_lines += 1
            continue
        counts[event["type"]] += 1
        data = event.get("data")
        if isinstance(data, dict):
            command = next(
                (data[k] for k in _COMMAND_KEYS if isinstance(data.get(k), str | list)), None
            )
            if command is not None:
                entry: dict[str, Any] = {"type": event["type"], "command": command}
                for key in ("exit_code", "duration_ms"):
                    if key in data:
                        entry[key] = data[key]
                if "timestamp" in event:
                    entry["timestamp"] = event["timestamp"]
                summary.commands.append(entry)
    summary.tool_summary = dict(sorted(counts.items()))
    if not counts and not summary.invalid_lines:
        summary.missing_reason = "telemetry file is empty"
    return summary


def _sampling(manifest: Manifest) -> RolloutSampling:
    """Recorded sampling if the runner wrote it; else the issue's dk_sampling over the controller."""
    if manifest.sampling is not None:
        return RolloutSampling(
            temperature=manifest.sampling.temperature, top_p=manifest.sampling.top_p
        )
    temperature = manifest.control.temperature
    top_p: float | None = None
    dk = manifest.issue.get("dk_sampling")
    if isinstance(dk, dict):
        t = dk.get("temperature")
        if isinstance(t, int | float) and not isinstance(t, bool):
            temperature = float(t)
        p = dk.get("top_p")
        if isinstance(p, int | float) and not isinstance(p, bool):
            top_p = float(p)
    return RolloutSampling(temperature=temperature, top_p=top_p)


def build_rollout_model(
    manifest: Manifest,
    proof: Proof,
    telemetry_path: str | Path,
    manifest_path: str | Path,
    *,
    planner: dict[str, Any] | None = None,
    proof_path: str | Path | None = None,
    telemetry_file: str | Path | None = None,
) -> Rollout:
    """The rollout as a model. ``planner`` defaults to the manifest's decision record. The
    paths are recorded as given (the kernel records them relative to the archive);
    ``telemetry_file`` is where the telemetry is read from when ``telemetry_path`` is not
    (e.g. is relative to a workcell rather than to the current directory)."""
    telemetry = summarize_telemetry(telemetry_file if telemetry_file is not None else telemetry_path)
    if proof_path is None:
        proof_path = Path(manifest_path).with_name("proof.json")
    decision = planner if planner is not None else manifest.planner
    return Rollout(
        rollout_id=rollout_id_for(manifest.workcell_id),
        workcell_id=manifest.workcell_id,
        issue_id=proof.issue_id,
        job_type=manifest.job_type,
        policy=RolloutPolicy(
            toolchain=manifest.toolchain,
            model=proof.metadata.model if proof.metadata.model is not None else manifest.model,
            prompt_genome_id=None,
            sampling=_sampling(manifest),
            speculate=RolloutSpeculate(
                enabled=manifest.speculate.enabled,
                parallelism=manifest.speculate.parallelism,
                tag=manifest.speculate.tag,
            ),
        ),
        inputs=RolloutInputs(
            manifest_path=str(manifest_path),
            repo_commit_base=proof.patch.base_commit or manifest.base_commit,
            repo_commit_head=proof.patch.head_commit,
        ),
        trajectory=RolloutTrajectory(
            telemetry_path=str(telemetry_path),
            telemetry_missing_reason=telemetry.missing_reason,
            telemetry_invalid_lines=telemetry.invalid_lines,
            tool_summary=telemetry.tool_summary,
            file_changes=list(proof.patch.files_changed),
            commands_executed=telemetry.commands,
        ),
        outcomes=RolloutOutcomes(
            verification=RolloutVerification(
                all_passed=proof.verification.all_passed,
                blocking_failures=list(proof.verification.blocking_failures),
                gates=dict(proof.verification.gates),
            ),
            status=proof.status,
        ),
        scores=RolloutScores(
            risk=proof.risk_classification,
            diff_lines=proof.patch.diff_lines,
            cost_usd=proof.metadata.cost_usd,
            duration_ms=proof.metadata.duration_ms,
        ),
        planner=dict(decision) if decision is not None else None,
        artifacts=RolloutArtifacts(
            manifest=str(manifest_path),
            proof=str(proof_path),
            telemetry=str(telemetry_path),
        ),
        generated_at=now_iso(),
    )


def build_rollout(
    manifest: Manifest,
    proof: Proof,
    telemetry_path: str | Path,
    manifest_path: str | Path,
    *,
    planner: dict[str, Any] | None = None,
    proof_path: str | Path | None = None,
) -> dict[str, Any]:
    """The ``rollout.json`` document (valid against ours and upstream's rollout schema)."""
    return build_rollout_model(
        manifest, proof, telemetry_path, manifest_path, planner=planner, proof_path=proof_path
    ).to_json()


def write_rollout(path: str | Path, rollout: Rollout | dict[str, Any]) -> None:
    """Atomically write a rollout; a dict is validated through :class:`Rollout` first."""
    model = rollout if isinstance(rollout, Rollout) else parse_artifact(Rollout, rollout, path)
    atomic_write_json(path, model.to_json())
