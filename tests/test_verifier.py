"""Quality gates run as real shell commands in real process groups."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cyntra.errors import InputError
from cyntra.kernel.artifacts import Verification
from cyntra.kernel.config import GatesConfig
from cyntra.kernel.verifier import (
    config_gate_spec,
    gate_log_path,
    gate_spec,
    normalise_gate_spec,
    resolve_gates,
    run_gates,
    verify,
)
from cyntra.state.issue import Issue


def _run(
    workcell: Path,
    gates: dict[str, str],
    *,
    timeout: float = 10.0,
    retry: int = 0,
    env: dict[str, str] | None = None,
    grace: float = 2.0,
) -> Verification:
    return asyncio.run(
        run_gates(workcell, gates, timeout, workcell / "logs", retry, env, kill_grace_seconds=grace)
    )


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def workcell(tmp_path: Path) -> Path:
    wc = tmp_path / "wc"
    wc.mkdir()
    return wc


def test_passing_gate_runs_in_workcell_and_logs(workcell: Path) -> None:
    (workcell / "marker.txt").write_text("x")
    v = _run(workcell, {"test": "test -f marker.txt && echo gate-output-ok"})
    assert v.all_passed and v.blocking_failures == []
    g = v.gates["test"]
    assert g.passed and g.exit_code == 0 and not g.timed_out and g.attempts == 1
    assert g.command == "test -f marker.txt && echo gate-output-ok"
    assert g.log_path == str(workcell / "logs" / "gate-test.log")
    assert "gate-output-ok" in Path(g.log_path).read_text()


def test_failing_gate_records_exit_code_and_stderr(workcell: Path) -> None:
    v = _run(workcell, {"lint": "true", "test": "echo broken-thing >&2; exit 3"})
    assert not v.all_passed
    assert v.blocking_failures == ["test"]
    assert list(v.gates) == ["lint", "test"]  # configured order kept
    assert v.gates["lint"].passed
    t = v.gates["test"]
    assert not t.passed and t.exit_code == 3 and not t.timed_out
    log = Path(t.log_path or "").read_text()
    assert "broken-thing" in log and "exit code 3" in log


def test_no_gates_is_a_pass(workcell: Path) -> None:
    v = _run(workcell, {})
    assert v.all_passed and v.gates == {} and v.blocking_failures == []


def test_timeout_kills_the_whole_group(workcell: Path) -> None:
    started = time.monotonic()
    v = _run(workcell, {"test": "sleep 30 & echo $! > child.pid; wait"}, timeout=0.5)
    elapsed = time.monotonic() - started
    g = v.gates["test"]
    assert g.timed_out and not g.passed and v.blocking_failures == ["test"]
    assert elapsed < 5
    child = int((workcell / "child.pid").read_text())
    assert _wait_dead(child), "the gate's background child survived the timeout"
    assert "timed out" in Path(g.log_path or "").read_text()


def test_timeout_escalates_to_sigkill_when_term_is_ignored(workcell: Path) -> None:
    cmd = "trap '' TERM; sleep 30 & echo $! > child.pid; wait"
    started = time.monotonic()
    v = _run(workcell, {"test": cmd}, timeout=0.3, grace=0.3)
    assert v.gates["test"].timed_out
    assert time.monotonic() - started < 5
    assert _wait_dead(int((workcell / "child.pid").read_text()))


def test_stragglers_of_a_finished_gate_are_killed(workcell: Path) -> None:
    v = _run(workcell, {"build": "sleep 30 >/dev/null 2>&1 & echo $! > child.pid; exit 0"})
    assert v.all_passed
    assert _wait_dead(int((workcell / "child.pid").read_text()))


def test_missing_command_is_a_failure_not_an_exception(workcell: Path) -> None:
    v = _run(workcell, {"typecheck": "cyntra-no-such-binary-xyz --check"}, retry=2)
    g = v.gates["typecheck"]
    assert not g.passed and g.exit_code == 127
    assert g.attempts == 1  # retrying a missing binary cannot help
    assert "cyntra-no-such-binary-xyz" in Path(g.log_path or "").read_text()


def test_missing_workcell_directory_is_a_failure(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    v = asyncio.run(run_gates(gone, {"test": "true"}, 5, tmp_path / "logs"))
    g = v.gates["test"]
    assert not g.passed and g.exit_code is None and not v.all_passed
    assert "could not start" in Path(g.log_path or "").read_text()


FLAKY = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"


def test_retry_flaky_until_pass(workcell: Path) -> None:
    v = _run(workcell, {"test": FLAKY}, retry=2)
    g = v.gates["test"]
    assert g.passed and g.attempts == 3
    assert (workcell / "count").read_text().strip() == "3"
    log = Path(g.log_path or "").read_text()
    assert "attempt 1" in log and "attempt 3" in log


def test_retry_flaky_gives_up(workcell: Path) -> None:
    v = _run(workcell, {"test": FLAKY}, retry=1)
    g = v.gates["test"]
    assert not g.passed and g.attempts == 2 and g.exit_code == 1


def test_no_retry_by_default(workcell: Path) -> None:
    v = _run(workcell, {"test": "exit 1"})
    assert v.gates["test"].attempts == 1


def test_timeouts_are_not_retried(workcell: Path) -> None:
    v = _run(workcell, {"test": "sleep 30"}, timeout=0.3, retry=3)
    assert v.gates["test"].attempts == 1 and v.gates["test"].timed_out


def test_env_is_laid_over_the_kernel_environment(workcell: Path) -> None:
    v = _run(workcell, {"test": 'test "$CYNTRA_T" = bar && command -v sh'}, env={"CYNTRA_T": "bar"})
    assert v.all_passed


def test_gate_names_cannot_escape_the_logs_dir(tmp_path: Path) -> None:
    p = gate_log_path(tmp_path / "logs", "../../evil name")
    assert p.parent == tmp_path / "logs" and p.name == "gate-.._.._evil_name.log"


# --- which gates -------------------------------------------------------------------------------


def _cfg() -> GatesConfig:
    return GatesConfig(test_command="pytest -q", lint_command="ruff check .", timeout_seconds=5)


def test_config_gates_skip_nulls_in_canonical_order() -> None:
    assert config_gate_spec(_cfg()) == {
        "test": "pytest -q",
        "typecheck": None,
        "lint": "ruff check .",
        "build": None,
    }
    assert resolve_gates(None, _cfg()) == {"test": "pytest -q", "lint": "ruff check ."}
    assert resolve_gates(Issue(id="a"), _cfg()) == {"test": "pytest -q", "lint": "ruff check ."}


def test_issue_quality_gates_override_config() -> None:
    issue = Issue(id="a", dk_quality_gates={"unit": "make unit", "lint": None, "blank": "  "})
    assert gate_spec(issue, _cfg()) == {"unit": "make unit", "lint": None, "blank": "  "}
    assert resolve_gates(issue, _cfg()) == {"unit": "make unit"}
    assert resolve_gates(Issue(id="b", dk_quality_gates={}), _cfg()) == {}


def test_raw_issue_gates_list_and_errors() -> None:
    assert resolve_gates({"id": "x", "dk_quality_gates": ["make a", "make b"]}, _cfg()) == {
        "gate1": "make a",
        "gate2": "make b",
    }
    assert normalise_gate_spec("make all") == {"gate1": "make all"}
    with pytest.raises(InputError) as exc:
        normalise_gate_spec({"test": 3})
    assert exc.value.field == "dk_quality_gates.test"
    with pytest.raises(InputError):
        normalise_gate_spec(42)


def test_verify_runs_the_issue_gates_with_config_limits(workcell: Path) -> None:
    cfg = GatesConfig(test_command="exit 9", timeout_seconds=5, retry_flaky=1)
    issue = Issue(id="i-1", dk_quality_gates={"own": "echo own > own.txt"})
    v = asyncio.run(verify(workcell, issue, cfg, workcell / "logs"))
    assert list(v.gates) == ["own"] and v.all_passed
    assert (workcell / "own.txt").exists()
    v2 = asyncio.run(verify(workcell, Issue(id="i-2"), cfg, workcell / "logs"))
    assert v2.blocking_failures == ["test"] and v2.gates["test"].attempts == 2
