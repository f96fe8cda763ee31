"""``run_summary.v1``: one archived candidate run, flattened to what planners and datasets need.

Built only from the archive's own files (``manifest.json``, ``proof.json``, ``archive_meta.json``);
every time comes from an explicit field, never a file mtime. A broken archive raises an
:class:`InputError` naming the file, so scans can report it and move on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import InputError
from cyntra.kernel.artifacts import (
    MANIFEST_SCHEMA_VERSION,
    PROOF_SCHEMA_VERSION,
    Manifest,
    Proof,
    load_json_object,
    parse_artifact,
)
from cyntra.planner.planner_input import IssueFeatures, domain_of_tags, issue_features
from cyntra.state.issue import Issue
from cyntra.workspace import Workspace

RUN_SUMMARY_SCHEMA: Final = "cyntra.run_summary.v1"
ARCHIVE_META: Final = "archive_meta.json"


def epoch_us(ts: datetime | str) -> int:
    """Exact integer microseconds since the epoch (no float rounding, so comparisons are exact)."""
    when = parse_ts(ts) if isinstance(ts, str) else ts
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # whole seconds are exact in a float timestamp; microseconds are added as an int
    return int(when.replace(microsecond=0).timestamp()) * 1_000_000 + when.microsecond


class ExecutedPlan(BaseModel):
    """The action tuple that actually ran (``manifest.plan``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    swarm_id: str
    parallelism: int = Field(ge=1)
    max_run_minutes: int = Field(ge=1)
    max_candidates: int = Field(ge=1)

    def label(self) -> str:
        return f"{self.swarm_id}/p{self.parallelism}/{self.max_run_minutes}m/c{self.max_candidates}"


class RunSummary(BaseModel):
    """One archived candidate run. ``available_at`` is when its outcome became observable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["cyntra.run_summary.v1"] = RUN_SUMMARY_SCHEMA
    run_id: str = Field(min_length=1)
    issue_id: str = Field(min_length=1)
    decision_id: str | None = None
    job_type: str = "code"
    domain: Literal["code", "fab_asset", "fab_world"] = "code"
    world_id: str | None = None
    objective_id: str | None = None
    universe_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    issue: IssueFeatures
    toolchain: str
    plan: ExecutedPlan
    candidate_index: int = Field(default=0, ge=0)
    loser: bool = False
    status: Literal["success", "partial", "failed", "timeout", "error"]
    all_passed: bool
    failed_gates: list[str] = Field(default_factory=list)
    fail_codes: list[str] = Field(default_factory=list)
    duration_ms: int = Field(ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    tokens_used: int | None = Field(default=None, ge=0)
    started_at: str
    completed_at: str
    available_at: str
    decision_time: str | None = None

    @property
    def plan_label(self) -> str:
        return self.plan.label()


def _check_version(data: dict[str, Any], expected: str, path: Path) -> None:
    version = data.get("schema_version", expected)
    if version != expected:
        raise InputError(path, f"unknown schema_version {version!r} (expected {expected!r})", field="schema_version")


def _norm_ts(value: Any, path: Path, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(path, f"expected an ISO-8601 timestamp, got {value!r}", field=field)
    try:
        return isoformat_z(parse_ts(value))
    except ValueError:
        raise InputError(path, f"not an ISO-8601 timestamp: {value!r}", field=field) from None


def summarize_archive(directory: str | os.PathLike[str]) -> RunSummary:
    """The summary of one archive directory, or an :class:`InputError` naming the bad file."""
    d = Path(directory)
    mpath, ppath = d / "manifest.json", d / "proof.json"
    mdata = load_json_object(mpath)
    _check_version(mdata, MANIFEST_SCHEMA_VERSION, mpath)
    manifest = parse_artifact(Manifest, mdata, mpath)
    pdata = load_json_object(ppath)
    _check_version(pdata, PROOF_SCHEMA_VERSION, ppath)
    proof = parse_artifact(Proof, pdata, ppath)
    return summarize_run(d, manifest, proof)


def summarize_run(
    directory: str | os.PathLike[str],
    manifest: Manifest,
    proof: Proof,
    *,
    meta: Mapping[str, Any] | None = None,
    issue: Issue | None = None,
) -> RunSummary:
    """The summary of an archived run from its manifest and proof, and its meta file (read
    unless ``meta`` gives its content). The kernel calls it with what it has just archived --
    models, meta and the :class:`Issue` the manifest snapshots (``issue``, which spares
    re-validating the snapshot) -- so the index is fed as runs finish without reading each
    archive back; :func:`summarize_archive` with the models parsed from the files. A test
    keeps the two equal."""
    d = Path(directory)
    mpath, apath = d / "manifest.json", d / ARCHIVE_META
    loser = proof.vote is not None and not proof.vote.winner
    available_at = proof.metadata.completed_at
    if meta is None and apath.exists():
        meta = load_json_object(apath)
    if meta is not None:
        if "loser" in meta:
            if not isinstance(meta["loser"], bool):
                raise InputError(apath, f"expected a boolean, got {meta['loser']!r}", field="loser")
            loser = meta["loser"]
        if meta.get("archived_at") is not None:
            available_at = _norm_ts(meta["archived_at"], apath, "archived_at")

    planner = manifest.planner or {}
    decision_time = planner.get("timestamp")
    feats = issue_features(issue if issue is not None else manifest.issue, path=str(mpath))
    plan = manifest.plan
    return RunSummary(
        run_id=manifest.workcell_id,
        issue_id=manifest.issue_id,
        decision_id=planner.get("decision_id"),
        job_type=manifest.job_type,
        domain=domain_of_tags(feats.tags),  # type: ignore[arg-type]
        world_id=planner.get("world_id"),
        objective_id=planner.get("objective_id"),
        universe_id=manifest.universe_id,
        tags=feats.tags,
        issue=feats,
        toolchain=manifest.toolchain,
        plan=ExecutedPlan(
            swarm_id=plan.swarm_id,
            parallelism=plan.parallelism,
            max_run_minutes=plan.max_run_minutes,
            max_candidates=plan.max_candidates,
        ),
        candidate_index=plan.candidate_index,
        loser=loser,
        status=proof.status,
        all_passed=proof.verification.all_passed,
        failed_gates=list(proof.verification.blocking_failures),
        fail_codes=list(proof.fail_codes),
        duration_ms=proof.metadata.duration_ms,
        cost_usd=proof.metadata.cost_usd,
        tokens_used=proof.metadata.tokens_used,
        started_at=proof.metadata.started_at,
        completed_at=proof.metadata.completed_at,
        available_at=available_at,
        decision_time=_norm_ts(decision_time, mpath, "planner.timestamp") if decision_time else None,
    )


def archive_dirs(ws: Workspace) -> list[Path]:
    """Archive directories in name order (deterministic)."""
    root = ws.archives_dir
    if not root.is_dir():
        return []
    return sorted((Path(e.path) for e in os.scandir(root) if e.is_dir()), key=lambda p: p.name)


def scan_archives(
    ws: Workspace | str | Path, progress: Callable[[list[Path]], Iterable[Path]] | None = None
) -> tuple[list[RunSummary], list[InputError]]:
    """Summaries of every readable archive, and one :class:`InputError` per archive skipped.
    ``progress`` wraps the list of archive directories (e.g. in a progress bar)."""
    w = ws if isinstance(ws, Workspace) else Workspace.at(ws)
    summaries: list[RunSummary] = []
    problems: list[InputError] = []
    dirs = archive_dirs(w)
    for d in progress(dirs) if progress is not None else dirs:
        try:
            summaries.append(summarize_archive(d))
        except InputError as exc:
            problems.append(exc)
    return summaries, problems


def scan_history(
    ws: Workspace | str | Path, progress: Callable[[list[Path]], Iterable[Path]] | None = None
) -> tuple[list[RunSummary], list[InputError]]:
    """Every run the planner learns from: issue archives, then world-run candidates (``.cyntra/runs/``).

    World runs are summarised by :func:`cyntra.kernel.evolve.world_run_summaries`, the same
    function the live index uses, so an offline rebuild equals what evolve indexed.
    """
    # Imported here: cyntra.kernel.evolve imports this module.
    from cyntra.kernel.evolve import world_run_dirs, world_run_summaries

    w = ws if isinstance(ws, Workspace) else Workspace.at(ws)
    summaries, problems = scan_archives(w, progress)
    for d in world_run_dirs(w.root):
        try:
            summaries.extend(world_run_summaries(d))
        except InputError as exc:
            problems.append(exc)
    return summaries, problems


def problem_kind(err: InputError) -> str:
    """A short category for reports: missing_proof, invalid_json, unknown_schema_version, ..."""
    name = Path(err.path).name if err.path else "?"
    stem = name.removesuffix(".json")
    if err.reason == "file not found":
        return f"missing_{stem}"
    if err.reason.startswith("invalid JSON"):
        return "invalid_json"
    if err.field == "schema_version":
        return "unknown_schema_version"
    return f"invalid_{stem}"


def summary_to_json_line(summary: RunSummary) -> str:
    return json.dumps(summary.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
