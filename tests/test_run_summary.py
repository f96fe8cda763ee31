"""run_summary.v1: summaries come from the archive's own files; broken archives are named and skipped.

The helpers here write archives and ledger records shaped exactly like the kernel runner writes
them (artifact models + DecisionRecord/OutcomeRecord + Ledger); the other planner tests import them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cyntra.clock import isoformat_z
from cyntra.errors import InputError
from cyntra.fsutil import atomic_write_json
from cyntra.kernel.artifacts import (
    Manifest,
    PlanSpec,
    Proof,
    ProofMetadata,
    ProofVote,
    Verification,
    write_manifest,
    write_proof,
)
from cyntra.planner.action_space import PlanAction
from cyntra.planner.run_summary import RunSummary, problem_kind, scan_archives, summarize_archive
from cyntra.schemas import schema_errors
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import AppliedPlan, DecisionRecord, OutcomeRecord, Proposal
from cyntra.workspace import Workspace

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SERIAL = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=30, max_candidates=2)
SPEC2 = PlanAction(swarm_id="speculate_vote", parallelism=2, max_run_minutes=60, max_candidates=2)


def issue_row(issue_id: str, tags: list[str], **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": issue_id,
        "title": kw.pop("title", f"Fix the flaky parser in module {issue_id}"),
        "status": "open",
        "tags": tags,
        "dk_priority": "P1",
        "dk_risk": "high",
        "dk_size": "M",
        "dk_attempts": "1",
        "dk_estimated_tokens": 40000,
    }
    row.update(kw)
    return row


def make_decision(
    issue_id: str,
    when: datetime,
    action: PlanAction = SERIAL,
    *,
    decision_id: str | None = None,
    pi_hash: str | None = None,
    universe_id: str | None = "alpha",
    propensity: float = 1.0,
    heuristic: PlanAction | None = None,
) -> DecisionRecord:
    tcs = ["codex", "claude"] if action.parallelism > 1 else ["codex"]
    return DecisionRecord(
        decision_id=decision_id or f"d-{issue_id}-{int(when.timestamp())}",
        issue_id=issue_id,
        timestamp=isoformat_z(when),
        mode="heuristic",
        planner_input_hash=pi_hash,
        heuristic=Proposal(strategy="heuristic", status="ok", action=heuristic or action, toolchains=tcs),
        applied=AppliedPlan(action=action, toolchains=tcs, source="heuristic"),
        propensity=propensity,
        universe_id=universe_id,
    )


def write_archive(
    ws: Workspace,
    run_id: str,
    issue: dict[str, Any],
    decision: DecisionRecord | None,
    started: datetime,
    *,
    minutes: float = 10.0,
    status: str = "success",
    toolchain: str = "codex",
    candidate_index: int = 0,
    loser: bool | None = None,
    cost: float | None = 0.12,
    archive_meta: bool = True,
) -> Path:
    """One archive dir as the runner writes it: manifest, proof, archive_meta (+ empty telemetry)."""
    d = ws.archives_dir / run_id
    d.mkdir(parents=True, exist_ok=True)
    action = decision.applied.action if decision else SERIAL
    completed = started + timedelta(minutes=minutes)
    manifest = Manifest(
        workcell_id=run_id,
        issue=issue,
        toolchain=toolchain,
        plan=PlanSpec(
            swarm_id=action.swarm_id,
            parallelism=action.parallelism,
            max_run_minutes=action.max_run_minutes,
            max_candidates=action.max_candidates,
            toolchains=[toolchain],
            candidate_index=candidate_index,
        ),
        planner=decision.model_dump(mode="json") if decision else None,
        universe_id=decision.universe_id if decision else None,
        created_at=started,
        workspace_backend="directory",
    )
    passed = status == "success"
    verification = Verification(all_passed=passed, blocking_failures=[] if passed else ["test"])
    proof = Proof(
        workcell_id=run_id,
        issue_id=str(issue["id"]),
        status=status,  # type: ignore[arg-type]
        verification=verification,
        metadata=ProofMetadata(
            toolchain=toolchain,
            started_at=isoformat_z(started),
            completed_at=isoformat_z(completed),
            duration_ms=int(minutes * 60000),
            tokens_used=1234,
            cost_usd=cost,
        ),
        risk_classification="high",
        fail_codes=[] if passed else ["gate:test"],
        vote=ProofVote(candidate_index=candidate_index, winner=not loser) if loser is not None else None,
    )
    write_manifest(d / "manifest.json", manifest)
    write_proof(d / "proof.json", proof)
    (d / "telemetry.jsonl").write_text("", encoding="utf-8")
    if archive_meta:
        atomic_write_json(
            d / "archive_meta.json",
            {"loser": bool(loser), "archived_at": isoformat_z(completed + timedelta(seconds=5))},
        )
    return d


def record(ws: Workspace, rec: DecisionRecord | OutcomeRecord) -> None:
    Ledger(ws.decisions_dir).append(rec)


def outcome_for(decision: DecisionRecord, when: datetime, status: str, utility: float | None) -> OutcomeRecord:
    return OutcomeRecord(
        decision_id=decision.decision_id,
        issue_id=decision.issue_id,
        timestamp=isoformat_z(when),
        status=status,
        gates_passed=status == "success",
        utility=utility,
    )


# --- tests -----------------------------------------------------------------------------------


def test_summary_fields_come_from_the_artifacts(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    dec = make_decision("I-1", T0, SPEC2)
    d = write_archive(
        ws, "wc-1", issue_row("I-1", ["bug", "asset:mesh", "bug"]), dec, T0 + timedelta(minutes=1),
        minutes=12, status="failed", toolchain="claude", candidate_index=1, loser=True,
    )
    old = (T0 - timedelta(days=300)).timestamp()
    for f in d.iterdir():
        os.utime(f, (old, old))  # mtimes must not matter
    s = summarize_archive(d)
    assert s.run_id == "wc-1" and s.issue_id == "I-1" and s.decision_id == dec.decision_id
    assert s.domain == "fab_asset" and s.tags == ["asset:mesh", "bug"]
    assert s.plan_label == "speculate_vote/p2/60m/c2" and s.candidate_index == 1
    assert s.loser is True and s.status == "failed" and not s.all_passed
    assert s.failed_gates == ["test"] and s.fail_codes == ["gate:test"]
    assert s.started_at == "2025-03-01T09:01:00.000000Z"
    assert s.completed_at == "2025-03-01T09:13:00.000000Z"
    assert s.available_at == "2025-03-01T09:13:05.000000Z"
    assert s.decision_time == "2025-03-01T09:00:00.000000Z"
    assert s.duration_ms == 12 * 60000 and s.cost_usd == 0.12 and s.tokens_used == 1234
    assert s.issue.attempts == 1 and s.issue.title_keywords == ["fix", "flaky", "module", "parser"]
    assert schema_errors("run_summary", s.model_dump(mode="json")) == []
    assert RunSummary.model_validate_json(s.model_dump_json()) == s


def test_without_archive_meta_loser_comes_from_the_vote(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    d = write_archive(ws, "wc-2", issue_row("I-2", []), None, T0, loser=True, archive_meta=False)
    s = summarize_archive(d)
    assert s.loser is True and s.available_at == s.completed_at and s.decision_id is None


@pytest.mark.parametrize(
    ("breakage", "kind", "needle"),
    [
        ("missing_proof", "missing_proof", "proof.json: file not found"),
        ("truncated_manifest", "invalid_json", "invalid JSON"),
        ("unknown_version", "unknown_schema_version", "unknown schema_version 'cyntra.proof.v9'"),
    ],
)
def test_broken_archives_name_the_file(tmp_path: Path, breakage: str, kind: str, needle: str) -> None:
    ws = Workspace.at(tmp_path)
    good = write_archive(ws, "a-good", issue_row("I-1", ["x"]), None, T0)
    bad = write_archive(ws, "b-bad", issue_row("I-2", ["x"]), None, T0)
    if breakage == "missing_proof":
        (bad / "proof.json").unlink()
    elif breakage == "truncated_manifest":
        text = (bad / "manifest.json").read_text()
        (bad / "manifest.json").write_text(text[: len(text) // 2])
    else:
        data = json.loads((bad / "proof.json").read_text())
        data["schema_version"] = "cyntra.proof.v9"
        (bad / "proof.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        summarize_archive(bad)
    assert needle in str(exc.value) and str(bad) in str(exc.value)
    summaries, problems = scan_archives(ws)
    assert [s.run_id for s in summaries] == [summarize_archive(good).run_id]
    assert len(problems) == 1 and problem_kind(problems[0]) == kind
