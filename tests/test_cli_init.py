"""A new user's first commands: `cyntra init`, then `cyntra status` and `cyntra run --dry-run`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cyntra.cli import main
from cyntra.strategy.policy import bundled_default_policy_path


def test_init_then_status_and_dry_run(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["init", "-w", str(tmp_path)])
    assert res.exit_code == 0, res.output
    policy = tmp_path / "policies" / "default.yaml"
    assert policy.read_text() == bundled_default_policy_path().read_text()
    (tmp_path / ".beads" / "issues.jsonl").write_text(
        json.dumps({"id": "1", "title": "Fix login", "status": "open", "dk_risk": "critical"}) + "\n"
        + json.dumps({"id": "2", "title": "Docs", "status": "open"}) + "\n")
    (tmp_path / ".beads" / "deps.jsonl").write_text(json.dumps({"from": "1", "to": "2"}) + "\n")

    status = runner.invoke(main, ["status", "-w", str(tmp_path), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["ready"] == ["1"] and data["blocked_by"] == {"2": ["1"]}

    dry = runner.invoke(main, ["run", "--dry-run", "-w", str(tmp_path), "--json"])
    assert dry.exit_code == 0, dry.output
    assert [s["issue_id"] for s in json.loads(dry.output)["scheduled"]] == ["1"]


def test_an_issue_created_in_the_future_is_neither_ready_nor_scheduled(tmp_path: Path) -> None:
    """Status and the dry run agree with the runner, which admits an issue only once its
    ``created`` time has come: until then it is listed as not arrived and holds back its
    dependents."""
    runner = CliRunner()
    assert runner.invoke(main, ["init", "-w", str(tmp_path)]).exit_code == 0
    (tmp_path / ".beads" / "issues.jsonl").write_text(
        json.dumps({"id": "1", "title": "Now", "status": "open"}) + "\n"
        + json.dumps({"id": "2", "title": "Later", "status": "open", "created": "2999-01-01T00:00:00Z"}) + "\n"
        + json.dumps({"id": "3", "title": "Also now", "status": "open"}) + "\n")
    (tmp_path / ".beads" / "deps.jsonl").write_text(json.dumps({"from": "2", "to": "1"}) + "\n")
    data = json.loads(runner.invoke(main, ["status", "-w", str(tmp_path), "--json"]).output)
    assert data["ready"] == ["3"] and data["blocked_by"] == {"1": ["2"]} and data["not_arrived"] == ["2"]
    dry = runner.invoke(main, ["run", "--dry-run", "-w", str(tmp_path), "--json"])
    assert dry.exit_code == 0, dry.output
    assert [s["issue_id"] for s in json.loads(dry.output)["scheduled"]] == ["3"]


def test_init_keeps_an_edited_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policies" / "default.yaml"
    policy.parent.mkdir()
    policy.write_text("# mine\n")
    res = CliRunner().invoke(main, ["init", "-w", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert policy.read_text() == "# mine\n"
