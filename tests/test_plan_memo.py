"""PlanMemo: the runner's plans of waiting issues, kept across cycles, are used only while the
issue, its attempt, its place on the critical path and the controller's decisions stand."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from cyntra.cli import main
from cyntra.kernel.session import KernelSession, PlanMemo
from cyntra.state.issue import Issue

NOW = "2026-01-10T00:00:00Z"


def _workspace(root: Path) -> KernelSession:
    result = CliRunner().invoke(main, ["init", "-w", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg_path = root / ".cyntra" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["speculation"]["auto_trigger_risk_levels"] = ["medium"]  # no routing rule speculates on medium
    cfg_path.write_text(yaml.safe_dump(cfg))
    rows = [
        # R: medium risk, ready, alone (a 2-hour chain)
        {"id": "1", "title": "R", "status": "open", "dk_risk": "medium", "dk_size": "S"},
        # 2 -> 3: a 32-hour chain, the critical path while 2 is not done
        {"id": "2", "title": "C1", "status": "running", "dk_risk": "low", "dk_size": "XL"},
        {"id": "3", "title": "C2", "status": "open", "dk_risk": "low", "dk_size": "XL"},
    ]
    (root / ".beads" / "issues.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / ".beads" / "deps.jsonl").write_text(json.dumps({"from": "2", "to": "3", "type": "blocks"}) + "\n")
    return KernelSession.open(root)


def _cycle(session: KernelSession, issues: dict[str, Issue], memo: PlanMemo) -> dict[str, bool]:
    from cyntra.clock import parse_ts

    plan = session.plan_cycle(issues=issues, deps=[("2", "3", "blocks")], report=False, memo=memo,
                              max_concurrent=1, now=parse_ts(NOW))
    return {s.issue_id: s.plan.speculate for s in plan.schedule.scheduled}


def test_a_memoised_plan_is_dropped_when_the_issue_joins_the_critical_path(tmp_path: Path) -> None:
    session = _workspace(tmp_path / "ws")
    issues = dict(session.store.load().issues)
    memo = PlanMemo()
    # One lane, held by the running issue 2: issue 1 is previewed (serial: off the critical
    # path) and waits.
    assert _cycle(session, issues, memo) == {}
    assert len(memo) == 1
    # 2 and 3 finish (the runner forgets only the issues it changes): issue 1 is now the whole
    # critical path, and a medium-risk issue on the critical path speculates.
    issues["2"].status = issues["3"].status = "done"
    plan = session.plan_cycle(issues=issues, deps=[("2", "3", "blocks")], report=False, memo=memo)
    assert [(s.issue_id, s.plan.speculate) for s in plan.schedule.scheduled] == [("1", True)]


def test_a_memoised_plan_is_dropped_with_a_new_attempt_or_controller_decision(tmp_path: Path) -> None:
    session = _workspace(tmp_path / "ws")
    issues = dict(session.store.load().issues)
    memo = PlanMemo()
    _cycle(session, issues, memo)
    one = issues["1"]
    first = memo.get(one, critical=False)
    assert first is not None
    assert memo.get(one, critical=True) is None
    one.dk_attempts += 1
    assert memo.get(one, critical=False) is None
    one.dk_attempts -= 1
    # a dynamics report appears: the code domain is now in trap, every entry goes
    report = tmp_path / "ws" / ".cyntra" / "dynamics" / "dynamics_report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"domains": {"code": {"action_rate": 0.01}}}))
    _cycle(session, issues, memo)
    again = memo.get(one, critical=False)
    assert again is not None and again[0].controller_mode == "trap" != first[0].controller_mode
