"""Per-workcell artifacts: ``manifest.json``, ``proof.json``, telemetry events and ``rollout.json``.

These files outlive the run: they are archived and later become run summaries and training data,
so every model is strict (``extra="forbid"``), every timestamp is an explicit ISO-8601 field
(never a file mtime) and each model has a hand-written JSON Schema in ``kernel/schemas/cyntra/``
that a test keeps in agreement with it. Reads name the file and the failing field.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import InputError
from cyntra.fsutil import atomic_write_json

MANIFEST_SCHEMA_VERSION: Final = "cyntra.manifest.v1"
PROOF_SCHEMA_VERSION: Final = "cyntra.proof.v1"
ROLLOUT_SCHEMA_VERSION: Final = "cyntra.rollout.v1"

ProofStatus = Literal["success", "partial", "failed", "timeout", "error"]
RiskLevel = Literal["low", "medium", "high", "critical"]
ControlMode = Literal["trap", "chaos", "balanced", "disabled"]
WorkspaceBackend = Literal["git", "directory"]

PROOF_STATUSES: tuple[str, ...] = ("success", "partial", "failed", "timeout", "error")

# Adapters that cannot judge their own work get this confidence (the vote's neutral middle).
DEFAULT_CONFIDENCE = 0.5


def _iso(value: Any) -> Any:
    """Normalise a timestamp (datetime or ISO string) to upstream's ``...Z`` form."""
    if isinstance(value, datetime):
        return isoformat_z(value)
    if isinstance(value, str):
        try:
            return isoformat_z(parse_ts(value))
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- manifest ----------------------------------------------------------------------------------


class SpeculateSpec(_Strict):
    """Whether this candidate is one of several run in parallel, and its tag among them."""

    enabled: bool = False
    parallelism: int | None = Field(default=None, ge=1)
    tag: str | None = None


class ControlSpec(_Strict):
    """The exploration controller's state when the candidate was dispatched."""

    mode: ControlMode = "disabled"
    domain: str = "code"
    temperature: float | None = None
    action_rate: float | None = None


class SamplingSpec(_Strict):
    """The sampling actually handed to the toolchain (recorded so rollouts need not guess)."""

    temperature: float | None = None
    top_p: float | None = None


class PlanSpec(_Strict):
    """The applied plan (action tuple + toolchains) and which candidate of it this workcell is."""

    swarm_id: str
    parallelism: int = Field(ge=1)
    max_run_minutes: int = Field(ge=1)
    max_candidates: int = Field(ge=1)
    toolchains: list[str]
    candidate_index: int = Field(default=0, ge=0)


class Manifest(_Strict):
    """What a workcell was asked to do, fixed at dispatch time."""

    schema_version: Literal["cyntra.manifest.v1"] = MANIFEST_SCHEMA_VERSION
    workcell_id: str = Field(min_length=1)
    issue: dict[str, Any]
    job_type: str = Field(default="code", min_length=1)
    toolchain: str = Field(min_length=1)
    toolchain_config: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    quality_gates: dict[str, str | None] = Field(default_factory=dict)
    speculate: SpeculateSpec = Field(default_factory=SpeculateSpec)
    control: ControlSpec = Field(default_factory=ControlSpec)
    sampling: SamplingSpec | None = None
    plan: PlanSpec
    planner: dict[str, Any] | None = None  # the decision record (open object, see strategy/)
    universe_id: str | None = None
    created_at: str
    branch: str | None = None
    base_commit: str | None = None
    workspace_backend: WorkspaceBackend

    @field_validator("issue", mode="before")
    @classmethod
    def _issue_snapshot(cls, v: Any) -> Any:
        if isinstance(v, BaseModel):
            v = v.model_dump(mode="json")
        if isinstance(v, dict) and not isinstance(v.get("id"), str):
            raise ValueError("the issue snapshot must carry a string 'id'")
        return v

    @field_validator("created_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _iso(v)

    @property
    def issue_id(self) -> str:
        return str(self.issue["id"])


# --- proof -------------------------------------------------------------------------------------


class FileChange(_Strict):
    """One changed path; ``kind`` is e.g. added, modified, deleted, renamed."""

    path: str
    kind: str


class PatchStats(_Strict):
    files_changed: list[FileChange] = Field(default_factory=list)
    diff_lines: int = Field(default=0, ge=0)
    head_commit: str | None = None
    base_commit: str | None = None


class GateResult(_Strict):
    """One quality gate's outcome (after retries: ``attempts`` counts the runs)."""

    passed: bool
    exit_code: int | None
    duration_ms: int = Field(ge=0)
    command: str
    log_path: str | None = None
    timed_out: bool = False
    attempts: int = Field(default=1, ge=0)


class Verification(_Strict):
    """All gates of a candidate. Every gate blocks: ``all_passed`` ⇔ no blocking failure."""

    gates: dict[str, GateResult] = Field(default_factory=dict)
    all_passed: bool = True
    blocking_failures: list[str] = Field(default_factory=list)

    @classmethod
    def from_gates(cls, gates: dict[str, GateResult]) -> Verification:
        failures = [name for name, g in gates.items() if not g.passed]
        return cls(gates=dict(gates), all_passed=not failures, blocking_failures=failures)


class ProofMetadata(_Strict):
    toolchain: str
    model: str | None = None
    started_at: str
    completed_at: str
    duration_ms: int = Field(ge=0)
    exit_code: int | None = None
    tokens_used: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)

    @field_validator("started_at", "completed_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _iso(v)


class ProofVote(_Strict):
    """This candidate's part in a speculate vote (absent for single runs)."""

    candidate_index: int = Field(ge=0)
    score: float | None = None
    winner: bool
    reason: str = ""


class Proof(_Strict):
    """What a workcell produced and whether it passed its gates."""

    schema_version: Literal["cyntra.proof.v1"] = PROOF_SCHEMA_VERSION
    workcell_id: str = Field(min_length=1)
    issue_id: str = Field(min_length=1)
    status: ProofStatus
    patch: PatchStats = Field(default_factory=PatchStats)
    verification: Verification = Field(default_factory=Verification)
    metadata: ProofMetadata
    confidence: float = Field(default=DEFAULT_CONFIDENCE, ge=0, le=1)
    risk_classification: RiskLevel
    fail_codes: list[str] = Field(default_factory=list)
    vote: ProofVote | None = None


def derive_fail_codes(status: str, exit_code: int | None, verification: Verification) -> list[str]:
    """Machine-readable failure reasons: ``timeout``, ``error``, ``exit:<n>``, ``gate:<name>``."""
    codes: list[str] = []
    if status == "timeout":
        codes.append("timeout")
    elif status == "error":
        codes.append("error")
    if exit_code not in (None, 0):
        codes.append(f"exit:{exit_code}")
    codes.extend(f"gate:{name}" for name in verification.blocking_failures)
    return codes


# --- telemetry ---------------------------------------------------------------------------------


class TelemetryEvent(_Strict):
    """One line of ``telemetry.jsonl``; anything toolchain-specific goes into ``data``."""

    type: str = Field(min_length=1)
    timestamp: str
    issue_id: str | None = None
    workcell_id: str | None = None
    toolchain: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _iso(v)


# --- rollout (cyntra.rollout.v1; compatible with upstream's schema, stricter) --------------------


class RolloutSampling(_Strict):
    temperature: float | None = None
    top_p: float | None = None


class RolloutSpeculate(_Strict):
    enabled: bool = False
    parallelism: int | None = None
    tag: str | None = None


class RolloutPolicy(_Strict):
    toolchain: str
    model: str | None = None
    prompt_genome_id: str | None = None
    sampling: RolloutSampling = Field(default_factory=RolloutSampling)
    speculate: RolloutSpeculate = Field(default_factory=RolloutSpeculate)


class RolloutInputs(_Strict):
    manifest_path: str
    repo_commit_base: str | None = None
    repo_commit_head: str | None = None


class RolloutTrajectory(_Strict):
    telemetry_path: str
    telemetry_missing_reason: str | None = None
    telemetry_invalid_lines: int = Field(default=0, ge=0)
    tool_summary: dict[str, int] = Field(default_factory=dict)
    file_changes: list[FileChange] = Field(default_factory=list)
    commands_executed: list[dict[str, Any]] = Field(default_factory=list)


class RolloutVerification(_Strict):
    all_passed: bool
    blocking_failures: list[str]
    gates: dict[str, GateResult] = Field(default_factory=dict)


class RolloutOutcomes(_Strict):
    verification: RolloutVerification
    status: ProofStatus


class RolloutScores(_Strict):
    risk: RiskLevel
    diff_lines: int = Field(ge=0)
    cost_usd: float | None = None
    duration_ms: int | None = None


class RolloutArtifacts(_Strict):
    manifest: str
    proof: str
    telemetry: str


class Rollout(_Strict):
    """The normalised summary of one candidate run (manifest + proof + telemetry)."""

    schema_version: Literal["cyntra.rollout.v1"] = ROLLOUT_SCHEMA_VERSION
    rollout_id: str
    workcell_id: str
    issue_id: str
    job_type: str
    policy: RolloutPolicy
    inputs: RolloutInputs
    trajectory: RolloutTrajectory
    outcomes: RolloutOutcomes
    scores: RolloutScores
    planner: dict[str, Any] | None = None
    artifacts: RolloutArtifacts
    generated_at: str

    @field_validator("generated_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _iso(v)

    def to_json(self) -> dict[str, Any]:
        """The document as written: upstream's schema types ``planner`` as an object, never null."""
        data = self.model_dump(mode="json")
        if data.get("planner") is None:
            data.pop("planner", None)
        return data


# --- files -------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_json_object(path: str | Path) -> dict[str, Any]:
    """Read a JSON object from ``path``; every failure is an :class:`InputError` naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(p, f"cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(p, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError(p, f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_artifact(model: type[_M], data: Any, path: str | Path | None = None) -> _M:
    """Validate ``data`` as ``model``; the error names the file and the first failing field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(path, err["msg"], field=_format_loc(tuple(err["loc"]))) from None


def read_manifest(path: str | Path) -> Manifest:
    return parse_artifact(Manifest, load_json_object(path), path)


def read_proof(path: str | Path) -> Proof:
    return parse_artifact(Proof, load_json_object(path), path)


def read_rollout(path: str | Path) -> Rollout:
    return parse_artifact(Rollout, load_json_object(path), path)


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    atomic_write_json(path, manifest.model_dump(mode="json"))


def write_proof(path: str | Path, proof: Proof) -> None:
    atomic_write_json(path, proof.model_dump(mode="json"))
