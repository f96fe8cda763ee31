"""`cyntra run` end to end on a real git repo with fake agent CLIs (real executables on PATH).

The fakes (tests/fakes/fake_agent.py, symlinked as codex/claude/opencode/crush) really edit and
commit files, fail, or hang; gates are real shell commands run in the workcell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cyntra.cli import main
from cyntra.kernel.artifacts import read_manifest, read_proof
from cyntra.schemas import schema_errors
from cyntra.state.store import BeadsStore
from cyntra.strategy.ledger import Ledger
from cyntra.workcell.manager import MARKER_NAME

FAKES = Path(__file__).parent / "fakes"
REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_ROLLOUT = REPO_ROOT.parent / "shared" / "upstream-cyntra" / "schemas" / "rollout.schema.json"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _config(tmp: Path, **overrides: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "scheduling": {"max_concurrent_workcells": 3},
        "toolchain_priority": ["codex", "claude", "opencode"],
        "toolchains": {
            "codex": {"path": "codex", "timeout_minutes": 15},
            "claude": {"path": "claude", "timeout_minutes": 15, "config": {"output_format": "json"}},
            "opencode": {"path": "opencode", "timeout_minutes": 15},
        },
        "routing": {
            "rules": [
                {"match": {"dk_tool_hint": "codex"}, "use": ["codex"]},
                {"match": {"dk_tool_hint": "claude"}, "use": ["claude"]},
                {"match": {"dk_risk": ["critical"]}, "speculate": True, "parallelism": 3,
                 "use": ["codex", "claude", "opencode"]},
                {"match": {"dk_risk": ["high"]}, "speculate": True, "parallelism": 2, "use": ["codex", "claude"]},
                {"match": {}, "use": ["claude"]},
            ],
            "fallbacks": {"codex": ["claude", "opencode"], "claude": ["codex", "opencode"], "opencode": ["claude"]},
        },
        "speculation": {"enabled": True, "auto_trigger_on_critical_path": False},
        "gates": {"test_command": "ls *_output.txt", "timeout_seconds": 30, "retry_flaky": 0},
        "workcells": {"backend": "git"},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "repo"
    ws.mkdir()
    _git(ws, "init", "-q", "-b", "main")
    (ws / "README.md").write_text("hello\n")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "init")
    (ws / ".cyntra").mkdir()
    (ws / ".beads").mkdir()
    (ws / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(_config(tmp_path)))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    for k in list(os.environ):
        if k.startswith("FAKE_"):
            monkeypatch.delenv(k)
    return ws


def _issues(ws: Path, *rows: dict[str, object]) -> None:
    with open(ws / ".beads" / "issues.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps({"status": "open", "created": "2026-01-01T00:00:00Z", **r}) + "\n")


def _run(ws: Path, *args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.output)
    return out


def _dead(pid: int) -> bool:
    """Gone, or a zombie (dead, only waiting to be reaped by its re-parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _archives(ws: Path) -> list[Path]:
    return sorted(p for p in (ws / ".cyntra" / "archives").iterdir() if p.is_dir())


def _check_artifacts(ws: Path) -> None:
    import jsonschema

    upstream = json.loads(UPSTREAM_ROLLOUT.read_text()) if UPSTREAM_ROLLOUT.is_file() else None
    for arch in _archives(ws):
        manifest = json.loads((arch / "manifest.json").read_text())
        assert schema_errors("manifest", manifest) == []
        assert schema_errors("proof", json.loads((arch / "proof.json").read_text())) == []
        rollout = json.loads((arch / "rollout.json").read_text())
        assert schema_errors("rollout", rollout) == []
        if upstream is not None:
            jsonschema.validate(rollout, upstream)
        types: dict[str, int] = {}
        for line in (arch / "telemetry.jsonl").read_text().splitlines():
            assert schema_errors("telemetry_event", json.loads(line)) == []
            types[json.loads(line)["type"]] = types.get(json.loads(line)["type"], 0) + 1
        # the trajectory summarises the run's own telemetry (read from its workcell)
        assert rollout["trajectory"]["telemetry_missing_reason"] is None
        assert rollout["trajectory"]["tool_summary"] == dict(sorted(types.items())) != {}
        assert rollout["trajectory"]["telemetry_path"] == "telemetry.jsonl"
        assert manifest["planner"]["decision_id"] == rollout["planner"]["decision_id"]


def test_single_success_merges_real_branch(repo: Path) -> None:
    _issues(repo, {"id": "1", "title": "Add a feature", "dk_tool_hint": "codex"})
    report = _run(repo, "--once")
    assert report["succeeded"] == 1
    assert BeadsStore(repo).load().issues["1"].status == "done"
    log = _git(repo, "log", "--oneline", "main")
    assert "Merge" in log or "codex" in log
    assert (repo / "codex_output.txt").is_file()  # merged into main
    (arch,) = _archives(repo)
    manifest = read_manifest(arch / "manifest.json")
    assert manifest.branch == arch.name  # the real branch name is recorded
    branches = _git(repo, "branch", "--list")
    assert arch.name not in branches  # branch removed after merge + cleanup
    assert _git(repo, "worktree", "list").count("\n") == 0
    _check_artifacts(repo)
    ledger = Ledger(repo / ".cyntra" / "decisions").read()
    (joined,) = ledger.joined()
    assert joined.outcome is not None and joined.outcome.gates_passed


def test_gate_failure_retry_then_escalation(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AGENT_MODE", "noop")  # agent "succeeds" but changes nothing: gate fails
    _issues(repo, {"id": "7", "title": "Impossible", "dk_tool_hint": "claude", "dk_max_attempts": 2})
    _run(repo, "--once")
    issue = BeadsStore(repo).load().issues["7"]
    assert issue.dk_attempts == 1 and issue.status == "open"
    _run(repo, "--once")
    issues = BeadsStore(repo).load().issues
    assert issues["7"].status == "escalated"
    esc = [i for i in issues.values() if i.dk_parent == "7"]
    assert len(esc) == 1 and esc[0].title == "[ESCALATION] Impossible"
    assert {"escalation", "needs-human"} <= set(esc[0].tags)
    proof = read_proof(_archives(repo)[0] / "proof.json")
    assert proof.verification.blocking_failures == ["test"]
    _check_artifacts(repo)


def test_timeout_kills_agent(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = yaml.safe_load((repo / ".cyntra" / "config.yaml").read_text())
    cfg["toolchains"]["codex"]["hard_timeout_minutes"] = 0.03  # 1.8 s: the kernel must kill it
    (repo / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("FAKE_AGENT_MODE", "hang")
    pidfile = repo.parent / "pids"
    monkeypatch.setenv("FAKE_AGENT_PIDFILE", str(pidfile))
    _issues(repo, {"id": "3", "title": "Hangs", "dk_tool_hint": "codex"})
    t0 = time.monotonic()
    _run(repo, "--once")
    assert time.monotonic() - t0 < 30
    proof = read_proof(_archives(repo)[0] / "proof.json")
    assert proof.status == "timeout"
    own, child = (int(x) for x in pidfile.read_text().split())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_dead(p) for p in (own, child)):
        time.sleep(0.1)
    assert _dead(own) and _dead(child)


def test_speculate_vote_with_three_candidates(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CODEX_MODE", "exit2")  # one candidate fails outright
    _issues(repo, {"id": "9", "title": "Critical change", "dk_risk": "critical"})
    report = _run(repo, "--once")
    assert report["succeeded"] == 1
    archives = _archives(repo)
    assert len(archives) == 3
    proofs = [read_proof(a / "proof.json") for a in archives]
    winners = [p for p in proofs if p.vote and p.vote.winner]
    assert len(winners) == 1 and winners[0].metadata.toolchain in ("claude", "opencode")
    losers = [json.loads((a / "archive_meta.json").read_text())["loser"] for a in archives]
    assert sorted(losers) == [False, True, True]
    _check_artifacts(repo)


def test_serial_handoff_falls_through_to_second_toolchain(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = repo / "policies" / "handoff.yaml"
    policy.parent.mkdir()
    policy.write_text("rules:\n  - id: two-tries\n    limits: {min_candidates: 2}\n")
    cfg = yaml.safe_load((repo / ".cyntra" / "config.yaml").read_text())
    cfg["policy"] = "policies/handoff.yaml"
    (repo / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "noop")  # first candidate passes its run but fails gates
    _issues(repo, {"id": "4", "title": "Handoff", "dk_tool_hint": "claude"})
    report = _run(repo, "--once")
    assert report["succeeded"] == 1
    proofs = [read_proof(a / "proof.json") for a in _archives(repo)]
    assert [p.metadata.toolchain for p in sorted(proofs, key=lambda p: p.metadata.started_at)] == ["claude", "codex"]
    rec = Ledger(repo / ".cyntra" / "decisions").read().decisions[0]
    assert rec.applied.action.max_candidates == 2
    assert any(v.rule_id == "two-tries" for v in rec.clamp)


def test_path_traversal_id_is_rejected_and_nothing_runs(repo: Path) -> None:
    _issues(repo, {"id": "../../x", "title": "evil"}, {"id": "ok", "title": "fine", "dk_tool_hint": "codex"})
    report = _run(repo, "--once")
    issues = BeadsStore(repo).load().issues
    assert issues["ok"].status == "done"
    assert issues["../../x"].status != "done"
    assert not (repo.parent.parent / "x").exists()
    assert report["failed"] >= 1


def test_recovery_removes_a_workcell_killed_while_it_was_created(repo: Path) -> None:
    """A kernel killed between `git worktree add` and the marker leaves a worktree, a branch and
    a directory nobody lists as a workcell; the next run removes all three (no agent ran there,
    so there is nothing to archive) and runs the issue."""
    _issues(repo, {"id": "5", "title": "Interrupted", "dk_tool_hint": "codex"})
    root = repo / ".cyntra" / "workcells"
    root.mkdir(parents=True)
    _git(repo, "worktree", "add", "-q", "-b", "wc-5-20260101T000000000000", str(root / "wc-5-20260101T000000000000"))
    (root / "wc-9-plain").mkdir()  # a directory-backend one: the directory only
    archiving = root / "wc-7-archiving"  # killed mid-archive: the agent's work is there, keep it
    archiving.mkdir()
    (archiving / "archive_meta.json").write_text("{}")
    (archiving / "result.txt").write_text("work\n")
    report = _run(repo, "--once")
    assert report["dispatched"] == 1 and BeadsStore(repo).load().issues["5"].status == "done"
    assert [p.name for p in root.glob("wc-*")] == ["wc-7-archiving"]
    assert (archiving / "result.txt").read_text() == "work\n"
    branches = subprocess.run(["git", "branch", "--list", "wc-*"], cwd=repo, capture_output=True, text=True).stdout
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    assert "wc-5-2026" not in branches and "wc-5-2026" not in worktrees


def test_recovery_after_kill(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AGENT_MODE", "hang")
    _issues(repo, {"id": "5", "title": "Killed mid-run", "dk_tool_hint": "codex"})
    proc = subprocess.Popen([sys.executable, "-m", "cyntra.cli", "run", "-w", str(repo), "--once"],
                            env=dict(os.environ), start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # the workcell is complete (its marker is written before the agent starts)
        if BeadsStore(repo).load().issues["5"].status == "running" and list(
                (repo / ".cyntra" / "workcells").glob(f"wc-*/{MARKER_NAME}")):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert BeadsStore(repo).load().issues["5"].status == "running"
    monkeypatch.setenv("FAKE_AGENT_MODE", "edit")
    report = _run(repo, "--once")
    assert report["recovered"] == ["5"]
    assert BeadsStore(repo).load().issues["5"].status == "done"
    assert not [p for p in (repo / ".cyntra" / "workcells").glob("wc-*")]
    assert len(_archives(repo)) == 2  # the orphan was archived, not lost


def test_watch_picks_up_new_issues_and_a_signal_stops_it_after_the_running_dispatch(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--watch`` polls for work someone adds to the issues file while it runs; SIGTERM starts no
    new dispatch, lets the running one finish and be recorded, and exits 0 with the report."""
    monkeypatch.setenv("FAKE_AGENT_DELAY", "1.5")
    _issues(repo, {"id": "1", "title": "First", "dk_tool_hint": "codex"})
    proc = subprocess.Popen([sys.executable, "-m", "cyntra.cli", "run", "-w", str(repo), "--watch",
                             "--poll-seconds", "0.1", "--json"],
                            env=dict(os.environ), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def wait_for(issue_id: str, status: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            issue = BeadsStore(repo).load().issues.get(issue_id)
            if issue is not None and issue.status == status:
                return
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        raise AssertionError(f"issue {issue_id} never became {status}")

    try:
        wait_for("1", "done")
        with open(repo / ".beads" / "issues.jsonl", "a") as fh:  # as another tool would add one
            fh.write(json.dumps({"id": "2", "title": "Second", "status": "open", "dk_tool_hint": "codex",
                                 "created": "2026-01-02T00:00:00Z"}) + "\n")
        wait_for("2", "running")
        with open(repo / ".beads" / "issues.jsonl", "a") as fh:  # arrives too late: never started
            fh.write(json.dumps({"id": "3", "title": "Third", "status": "open", "dk_tool_hint": "codex",
                                 "created": "2026-01-03T00:00:00Z"}) + "\n")
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["stopped_by"] == "SIGTERM"
    assert report["dispatched"] == report["succeeded"] == 2
    issues = BeadsStore(repo).load().issues
    assert (issues["1"].status, issues["2"].status, issues["3"].status) == ("done", "done", "open")
    assert not list((repo / ".cyntra" / "workcells").glob("wc-*"))
    assert len(_archives(repo)) == 2
    outcomes = [r for r in Ledger(repo / ".cyntra" / "decisions").read().joined() if r.outcome is not None]
    assert sorted(r.decision.issue_id for r in outcomes) == ["1", "2"]
