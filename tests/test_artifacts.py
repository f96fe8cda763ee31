"""Workcell artifacts: models, our JSON Schemas, upstream's rollout schema, and bad files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cyntra.clock import VirtualClock, use_clock
from cyntra.errors import InputError
from cyntra.kernel.artifacts import (
    FileChange,
    GateResult,
    Manifest,
    PatchStats,
    Proof,
    ProofMetadata,
    Rollout,
    TelemetryEvent,
    Verification,
    derive_fail_codes,
    read_manifest,
    read_proof,
    read_rollout,
    write_manifest,
    write_proof,
)
from cyntra.rollouts import build_rollout, build_rollout_model, summarize_telemetry, write_rollout
from cyntra.schemas import load_schema, schema_errors, validate
from cyntra.state.issue import Issue

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

DECISION = {
    "decision_id": "dec-0001",
    "issue_id": "42",
    "strategy": "shadow",
    "applied_plan": {"swarm_id": "speculate_vote", "parallelism": 2},
    "propensity": 1.0,
    "clamp": [{"rule_id": "r1", "field": "parallelism", "requested": 3, "limit": 2}],
    "fallback_reason": None,
}


def make_manifest(**over: Any) -> Manifest:
    data: dict[str, Any] = {
        "workcell_id": "wc-42-20250301T120000-a",
        "issue": {"id": "42", "title": "Fix parser", "dk_risk": "high", "custom_field": [1, 2]},
        "job_type": "code",
        "toolchain": "codex",
        "toolchain_config": {"sandbox": "workspace-write"},
        "model": "gpt-5-codex",
        "quality_gates": {"test": "pytest -q", "lint": None},
        "speculate": {"enabled": True, "parallelism": 2, "tag": "a"},
        "control": {"mode": "trap", "domain": "code", "temperature": 0.3, "action_rate": 0.05},
        "plan": {
            "swarm_id": "speculate_vote",
            "parallelism": 2,
            "max_run_minutes": 30,
            "max_candidates": 2,
            "toolchains": ["codex", "claude"],
            "candidate_index": 0,
        },
        "planner": DECISION,
        "universe_id": "medica",
        "created_at": T0,
        "branch": "wc/42-a",
        "base_commit": "a" * 40,
        "workspace_backend": "git",
    }
    data.update(over)
    return Manifest.model_validate(data)


def make_proof(**over: Any) -> Proof:
    gates = {
        "test": GateResult(
            passed=True,
            exit_code=0,
            duration_ms=1200,
            command="pytest -q",
            log_path="logs/gate-test.log",
        ),
        "lint": GateResult(
            passed=False, exit_code=1, duration_ms=300, command="ruff check .", attempts=2
        ),
    }
    verification = Verification.from_gates(gates)
    data: dict[str, Any] = {
        "workcell_id": "wc-42-20250301T120000-a",
        "issue_id": "42",
        "status": "failed",
        "patch": PatchStats(
            files_changed=[FileChange(path="src/p.py", kind="modified")],
            diff_lines=17,
            head_commit="b" * 40,
            base_commit="a" * 40,
        ),
        "verification": verification,
        "metadata": ProofMetadata(
            toolchain="codex",
            model="gpt-5-codex",
            started_at=T0,
            completed_at=T0 + timedelta(minutes=3),
            duration_ms=180_000,
            exit_code=2,
            tokens_used=12_345,
            cost_usd=0.42,
        ),
        "confidence": 0.7,
        "risk_classification": "high",
        "fail_codes": derive_fail_codes("failed", 2, verification),
    }
    data.update(over)
    return Proof.model_validate(data)


def write_telemetry(path: Path, extra_lines: list[str] | None = None) -> None:
    events = [
        TelemetryEvent(
            type="started", timestamp=T0, issue_id="42", workcell_id="w", toolchain="codex"
        ),
        TelemetryEvent(type="command", timestamp=T0, data={"command": "pytest -q", "exit_code": 1}),
        TelemetryEvent(type="command", timestamp=T0, data={"cmd": ["git", "status"]}),
        TelemetryEvent(type="completed", timestamp=T0, data={"exit_code": 2}),
    ]
    lines = [json.dumps(e.model_dump(mode="json")) for e in events] + (extra_lines or [])
    path.write_text("\n".join(lines) + "\n")


# --- schema / model agreement ------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return dict(node)
    return schema


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _check_agreement(
    model: type[BaseModel], schema: dict[str, Any], root: dict[str, Any], where: str
) -> None:
    schema = _resolve(schema, root)
    props = schema["properties"]
    assert set(props) == set(model.model_fields), f"{where}: properties differ from model fields"
    assert schema.get("additionalProperties") is False, (
        f"{where}: schema must be closed like the model"
    )
    model_required = {n for n, f in model.model_fields.items() if f.is_required()}
    schema_required = set(schema.get("required", []))
    # Every key the model needs, the schema needs; the schema may require more only where the
    # model always writes the key (defaults are always dumped).
    assert model_required <= schema_required <= set(props), f"{where}: required keys disagree"
    for name, field in model.model_fields.items():
        sub = _nested_model(field.annotation)
        if sub is None:
            continue
        sub_schema = _resolve(props[name], root)
        if sub_schema.get("type") == "array" or "items" in sub_schema:
            sub_schema = _resolve(sub_schema["items"], root)
        elif isinstance(sub_schema.get("additionalProperties"), dict):  # dict[str, Model]
            sub_schema = _resolve(sub_schema["additionalProperties"], root)
        _check_agreement(sub, sub_schema, root, f"{where}.{name}")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (Manifest, "manifest"),
        (Proof, "proof"),
        (TelemetryEvent, "telemetry_event"),
        (Rollout, "rollout"),
    ],
)
def test_schemas_match_models(model: type[BaseModel], name: str) -> None:
    schema = load_schema(name)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    _check_agreement(model, schema, schema, name)


# --- instances validate ------------------------------------------------------------------------


def test_manifest_dump_validates_and_round_trips(tmp_path: Path) -> None:
    m = make_manifest()
    data = m.model_dump(mode="json")
    assert data["schema_version"] == "cyntra.manifest.v1"
    assert data["created_at"] == "2025-03-01T12:00:00.000000Z"
    assert data["issue"]["custom_field"] == [1, 2]  # snapshot keeps unknown fields
    validate("manifest", data)
    path = tmp_path / "manifest.json"
    write_manifest(path, m)
    assert read_manifest(path) == m
    assert json.loads(path.read_text()) == data
    minimal = make_manifest(planner=None, speculate={"enabled": False}, universe_id=None)
    validate("manifest", minimal.model_dump(mode="json"))


def test_manifest_from_issue_model_snapshots_every_field() -> None:
    issue = Issue.model_validate({"id": "9", "title": "t", "dk_attempts": "2", "weird": {"x": 1}})
    m = make_manifest(issue=issue)
    assert m.issue["id"] == "9" and m.issue["dk_attempts"] == 2 and m.issue["weird"] == {"x": 1}
    assert m.issue_id == "9"
    validate("manifest", m.model_dump(mode="json"))


def test_proof_dump_validates_and_round_trips(tmp_path: Path) -> None:
    p = make_proof()
    data = p.model_dump(mode="json")
    validate("proof", data)
    assert data["verification"]["blocking_failures"] == ["lint"]
    assert data["fail_codes"] == ["exit:2", "gate:lint"]
    assert data["metadata"]["completed_at"] == "2025-03-01T12:03:00.000000Z"
    path = tmp_path / "proof.json"
    write_proof(path, p)
    assert read_proof(path) == p
    bare = Proof.model_validate(
        {
            "workcell_id": "w",
            "issue_id": "1",
            "status": "success",
            "metadata": {
                "toolchain": "sim",
                "started_at": "2025-01-01T00:00:00+00:00",
                "completed_at": "2025-01-01T00:00:01Z",
                "duration_ms": 1000,
            },
            "risk_classification": "low",
        }
    )
    assert bare.confidence == 0.5 and bare.verification.all_passed
    validate("proof", bare.model_dump(mode="json"))


def test_telemetry_event_validates() -> None:
    e = TelemetryEvent(type="tool_call", timestamp="2025-03-01T12:00:00Z", data={"tool": "bash"})
    validate("telemetry_event", e.model_dump(mode="json"))
    assert schema_errors("telemetry_event", {"type": "x", "timestamp": "t", "extra": 1})


def test_schemas_reject_what_models_reject() -> None:
    data = make_proof().model_dump(mode="json")
    bad_status = {**data, "status": "great"}
    assert schema_errors("proof", bad_status)
    with pytest.raises(ValueError):
        Proof.model_validate(bad_status)
    bad_conf = {**data, "confidence": 1.5}
    assert schema_errors("proof", bad_conf)
    with pytest.raises(ValueError):
        Proof.model_validate(bad_conf)
    m = make_manifest().model_dump(mode="json")
    unknown = {**m, "surprise": True}
    assert schema_errors("manifest", unknown)
    with pytest.raises(ValueError):
        Manifest.model_validate(unknown)


def test_derive_fail_codes() -> None:
    v = Verification.from_gates(
        {
            "test": GateResult(
                passed=False, exit_code=None, duration_ms=5, command="t", timed_out=True
            )
        }
    )
    assert derive_fail_codes("timeout", None, v) == ["timeout", "gate:test"]
    assert derive_fail_codes("error", 137, Verification()) == ["error", "exit:137"]
    assert derive_fail_codes("success", 0, Verification()) == []


# --- bad files ---------------------------------------------------------------------------------


def test_bad_manifest_names_file_and_field(tmp_path: Path) -> None:
    data = make_manifest().model_dump(mode="json")
    del data["workcell_id"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert exc.value.path == str(path) and exc.value.field == "workcell_id"
    assert str(path) in str(exc.value)

    data = make_manifest().model_dump(mode="json")
    data["plan"]["parallelism"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert exc.value.field == "plan.parallelism"

    data = make_manifest().model_dump(mode="json")
    data["issue"] = {"title": "no id"}
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert exc.value.field == "issue"


def test_bad_proof_names_file_and_field(tmp_path: Path) -> None:
    data = make_proof().model_dump(mode="json")
    data["metadata"]["started_at"] = "yesterday"
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        read_proof(path)
    assert exc.value.field == "metadata.started_at" and exc.value.path == str(path)

    data = make_proof().model_dump(mode="json")
    data["verification"]["gates"]["test"]["passed"] = "maybe"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        read_proof(path)
    assert exc.value.field == "verification.gates.test.passed"


def test_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "proof.json"
    path.write_text('{\n  "workcell_id": "w",\n  oops\n}')
    with pytest.raises(InputError) as exc:
        read_proof(path)
    assert exc.value.line == 3 and "invalid JSON" in exc.value.reason
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        read_proof(path)
    with pytest.raises(InputError, match="file not found"):
        read_manifest(tmp_path / "missing.json")


# --- rollout -----------------------------------------------------------------------------------


@pytest.fixture
def upstream_rollout_validator(upstream_dir: Path) -> jsonschema.protocols.Validator:
    schema = json.loads((upstream_dir / "schemas" / "rollout.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def _both_valid(doc: dict[str, Any], upstream: jsonschema.protocols.Validator) -> None:
    assert schema_errors("rollout", doc) == []
    assert [e.message for e in upstream.iter_errors(doc)] == []


def test_rollout_built_from_artifacts(tmp_path: Path, upstream_rollout_validator: Any) -> None:
    manifest_path = tmp_path / "manifest.json"
    telemetry_path = tmp_path / "telemetry.jsonl"
    write_telemetry(telemetry_path, ["not json", '{"no_type": 1}', ""])
    with use_clock(VirtualClock(T0 + timedelta(hours=1))):
        doc = build_rollout(make_manifest(), make_proof(), telemetry_path, manifest_path)
    _both_valid(doc, upstream_rollout_validator)
    assert doc["rollout_id"] == "ro-wc-42-20250301T120000-a"
    assert doc["generated_at"] == "2025-03-01T13:00:00.000000Z"
    assert doc["planner"] == DECISION  # the manifest's decision record by default
    assert doc["policy"] == {
        "toolchain": "codex",
        "model": "gpt-5-codex",
        "prompt_genome_id": None,
        "sampling": {"temperature": 0.3, "top_p": None},
        "speculate": {"enabled": True, "parallelism": 2, "tag": "a"},
    }
    assert doc["inputs"] == {
        "manifest_path": str(manifest_path),
        "repo_commit_base": "a" * 40,
        "repo_commit_head": "b" * 40,
    }
    traj = doc["trajectory"]
    assert traj["tool_summary"] == {"command": 2, "completed": 1, "started": 1}
    assert traj["telemetry_invalid_lines"] == 2 and traj["telemetry_missing_reason"] is None
    assert [c["command"] for c in traj["commands_executed"]] == ["pytest -q", ["git", "status"]]
    assert traj["commands_executed"][0]["exit_code"] == 1
    assert traj["file_changes"] == [{"path": "src/p.py", "kind": "modified"}]
    assert doc["outcomes"]["status"] == "failed"
    assert doc["outcomes"]["verification"]["blocking_failures"] == ["lint"]
    assert doc["outcomes"]["verification"]["gates"]["lint"]["attempts"] == 2
    assert doc["scores"] == {
        "risk": "high",
        "diff_lines": 17,
        "cost_usd": 0.42,
        "duration_ms": 180_000,
    }
    assert doc["artifacts"] == {
        "manifest": str(manifest_path),
        "proof": str(tmp_path / "proof.json"),
        "telemetry": str(telemetry_path),
    }


def test_rollout_planner_argument_wins_and_absent_planner_is_omitted(
    tmp_path: Path, upstream_rollout_validator: Any
) -> None:
    override = {**DECISION, "decision_id": "dec-override", "model_plan": {"probs": [0.1, 0.9]}}
    doc = build_rollout(
        make_manifest(), make_proof(), tmp_path / "t.jsonl", "manifest.json", planner=override
    )
    _both_valid(doc, upstream_rollout_validator)
    assert doc["planner"]["decision_id"] == "dec-override"
    doc = build_rollout(
        make_manifest(planner=None), make_proof(), tmp_path / "t.jsonl", "manifest.json"
    )
    assert "planner" not in doc  # upstream types planner as an object: never write null
    _both_valid(doc, upstream_rollout_validator)
    assert doc["trajectory"]["telemetry_missing_reason"] == "telemetry file not found"
    assert doc["trajectory"]["tool_summary"] == {}


def test_rollout_sampling_prefers_recorded_then_issue(tmp_path: Path) -> None:
    issue = {"id": "42", "dk_sampling": {"temperature": 0.9, "top_p": 0.95}}
    doc = build_rollout(make_manifest(issue=issue), make_proof(), tmp_path / "t", "m.json")
    assert doc["policy"]["sampling"] == {"temperature": 0.9, "top_p": 0.95}
    recorded = make_manifest(issue=issue, sampling={"temperature": 0.1, "top_p": None})
    doc = build_rollout(recorded, make_proof(), tmp_path / "t", "m.json")
    assert doc["policy"]["sampling"] == {"temperature": 0.1, "top_p": None}


def test_write_and_read_rollout(tmp_path: Path, upstream_rollout_validator: Any) -> None:
    model = build_rollout_model(make_manifest(), make_proof(), tmp_path / "t", "manifest.json")
    path = tmp_path / "rollout.json"
    write_rollout(path, model)
    on_disk = json.loads(path.read_text())
    _both_valid(on_disk, upstream_rollout_validator)
    assert read_rollout(path) == model
    write_rollout(path, model.to_json())
    assert json.loads(path.read_text()) == on_disk
    with pytest.raises(InputError) as exc:
        write_rollout(path, {**on_disk, "scores": {"risk": "high"}})
    assert exc.value.field == "scores.diff_lines"


def test_empty_telemetry_has_a_reason(tmp_path: Path) -> None:
    p = tmp_path / "telemetry.jsonl"
    p.write_text("")
    assert summarize_telemetry(p).missing_reason == "telemetry file is empty"


def test_our_rollout_schema_is_no_looser_than_upstreams(upstream_dir: Path) -> None:
    upstream = json.loads((upstream_dir / "schemas" / "rollout.schema.json").read_text())
    ours = load_schema("rollout")
    assert set(upstream["required"]) <= set(ours["required"])
    assert set(ours["properties"]) <= set(upstream["properties"])
    for key in ("policy", "inputs", "trajectory", "outcomes", "scores"):
        assert set(upstream["properties"][key].get("required", [])) <= set(
            ours["properties"][key].get("required", [])
        )
    for sub in ("sampling", "speculate"):
        assert set(ours["properties"]["policy"]["properties"][sub]["properties"]) <= set(
            upstream["properties"]["policy"]["properties"][sub]["properties"]
        )


_opt_text = st.none() | st.text(max_size=8)
_opt_num = st.none() | st.floats(-10, 10, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    model=_opt_text,
    temperature=_opt_num,
    top_p=_opt_num,
    tag=_opt_text,
    parallelism=st.none() | st.integers(1, 3),
    status=st.sampled_from(["success", "partial", "failed", "timeout", "error"]),
    risk=st.sampled_from(["low", "medium", "high", "critical"]),
    diff=st.integers(0, 10_000),
    cost=st.none() | st.floats(0, 100, allow_nan=False),
    planner=st.none()
    | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    changes=st.lists(
        st.tuples(st.text(max_size=10), st.sampled_from(["added", "modified", "deleted"])),
        max_size=3,
    ),
)
def test_every_rollout_we_build_is_valid_upstream(
    upstream_dir: Path,
    model: str | None,
    temperature: float | None,
    top_p: float | None,
    tag: str | None,
    parallelism: int | None,
    status: str,
    risk: str,
    diff: int,
    cost: float | None,
    planner: dict[str, Any] | None,
    changes: list[tuple[str, str]],
) -> None:
    upstream = json.loads((upstream_dir / "schemas" / "rollout.schema.json").read_text())
    manifest = make_manifest(
        model=model,
        sampling={"temperature": temperature, "top_p": top_p},
        speculate={"enabled": parallelism is not None, "parallelism": parallelism, "tag": tag},
        planner=planner,
    )
    proof = make_proof(
        status=status,
        risk_classification=risk,
        patch=PatchStats(
            files_changed=[FileChange(path=p, kind=k) for p, k in changes], diff_lines=diff
        ),
        metadata=ProofMetadata(
            toolchain="codex",
            model=None,
            started_at=T0,
            completed_at=T0,
            duration_ms=0,
            cost_usd=cost,
        ),
    )
    doc = build_rollout(manifest, proof, "/nonexistent/telemetry.jsonl", "manifest.json")
    assert schema_errors("rollout", doc) == []
    jsonschema.validate(doc, upstream)
