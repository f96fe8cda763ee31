"""Toolchain adapters against fake agent CLIs (real executables in tests/fakes) and real git repos."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cyntra.adapters import (
    AdapterResult,
    CliAgentAdapter,
    CommandAdapter,
    RunRequest,
    Sampling,
    TelemetryWriter,
    UnavailableAdapter,
    build_adapter,
    parse_usage,
    register_adapter,
    run_process,
    status_from_exit_code,
)
from cyntra.clock import VirtualClock, parse_ts, use_clock
from cyntra.kernel.config import ToolchainConfig, load_config
from cyntra.workcell import Workcell, WorkcellManager

FAKES = Path(__file__).resolve().parent / "fakes"
IDENT = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
TELEMETRY_KEYS = {"type", "timestamp", "issue_id", "workcell_id", "toolchain", "data"}

UPSTREAM_BLOCKS: dict[str, dict[str, Any]] = {
    "codex": {"sandbox": "workspace-write", "ask_for_approval": "never", "model_reasoning_effort": "xhigh"},
    "claude": {"skip_permissions": True, "output_format": "json",
               "allowed_tools": ["Edit", "Write", "Bash", "Read"], "ultrathink": True},
    "opencode": {},
    "crush": {"auto_approve": True},
}


@pytest.fixture(autouse=True)
def fakes_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in list(os.environ):
        if var.startswith("FAKE_"):
            monkeypatch.delenv(var)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=ws, check=True)
    (ws / "README.md").write_text("hello\n")
    subprocess.run(["git", *IDENT, "add", "-A"], cwd=ws, check=True)
    subprocess.run(["git", *IDENT, "commit", "-q", "-m", "init"], cwd=ws, check=True)
    return ws


@pytest.fixture
def workcell(repo: Path) -> Workcell:
    return WorkcellManager(repo).create("1")


def request_for(wc: Workcell, **overrides: Any) -> RunRequest:
    fields: dict[str, Any] = {
        "workcell_path": wc.path,
        "logs_dir": wc.logs_dir,
        "prompt": "Fix the bug in README\nDetails follow.",
        "timeout_seconds": 30.0,
        "issue_id": wc.issue_id,
        "workcell_id": wc.id,
        "telemetry": TelemetryWriter(wc.path / "telemetry.jsonl"),
    }
    fields.update(overrides)
    return RunRequest(**fields)


def telemetry_events(wc: Workcell) -> list[dict[str, Any]]:
    lines = (wc.path / "telemetry.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        assert set(event) == TELEMETRY_KEYS
        parse_ts(event["timestamp"])
        assert isinstance(event["data"], dict)
    return events


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie is dead, only waiting for its (re)parent to reap it


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, "success"), (1, "partial"), (2, "failed"), (127, "failed"), (-9, "failed"), (None, "failed")],
)
def test_exit_code_to_status(code: int | None, status: str) -> None:
    assert status_from_exit_code(code) == status


# ---------------------------------------------------------------- argv table


def _req(tmp_path: Path, **kw: Any) -> RunRequest:
    fields: dict[str, Any] = {"workcell_path": tmp_path, "logs_dir": tmp_path / "logs",
                              "prompt": "P", "timeout_seconds": 5, **kw}
    return RunRequest(**fields)


ARGV_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("codex", {"default_model": "gpt-5.2", "config": UPSTREAM_BLOCKS["codex"]}, {},
     ["codex", "exec", "--model", "gpt-5.2", "--sandbox", "workspace-write",
      "-c", 'approval_policy="never"', "-c", 'model_reasoning_effort="xhigh"', "-"]),
    ("codex", {"path": "/opt/codex/bin/codex", "config": {"extra_args": ["--json"]}},
     {"model": "o3", "sampling": Sampling(temperature=0.3, top_p=0.9)},
     ["/opt/codex/bin/codex", "exec", "--model", "o3", "--sandbox", "workspace-write",
      "-c", 'approval_policy="never"', "-c", "temperature=0.3", "-c", "top_p=0.9", "--json", "-"]),
    ("claude", {"default_model": "claude-opus-4-5-20251101", "config": UPSTREAM_BLOCKS["claude"]}, {},
     ["claude", "-p", "--model", "claude-opus-4-5-20251101", "--output-format", "json",
      "--allowedTools", "Edit,Write,Bash,Read", "--dangerously-skip-permissions"]),
    ("claude", {"prompt_via": "file", "config": {"skip_permissions": False}}, {},
     ["claude", "-p", "@{prompt_file}"]),
    ("opencode", {"default_model": "openai/gpt-5-nano"}, {},
     ["opencode", "run", "--model", "openai/gpt-5-nano"]),
    ("opencode", {"prompt_via": "arg", "config": {"agent": "build"}}, {"model": "m"},
     ["opencode", "run", "--model", "m", "--agent", "build", "P"]),
    ("crush", {"config": UPSTREAM_BLOCKS["crush"]}, {}, ["crush", "-y", "run", "--quiet"]),
    ("crush", {"config": {"auto_approve": False}}, {"model": "gemini-2.5-pro"},
     ["crush", "run", "--quiet", "--model", "gemini-2.5-pro"]),
]


@pytest.mark.parametrize(("name", "tc", "req", "expected"), ARGV_CASES)
def test_cli_argv_table(tmp_path: Path, name: str, tc: dict[str, Any], req: dict[str, Any],
                        expected: list[str]) -> None:
    adapter = build_adapter(name, ToolchainConfig(**tc))
    assert isinstance(adapter, CliAgentAdapter)
    request = _req(tmp_path, **req)
    expected = [part.replace("{prompt_file}", str(request.prompt_file)) for part in expected]
    assert adapter.build_argv(request) == expected


def test_request_config_overrides_the_configured_block(tmp_path: Path) -> None:
    adapter = build_adapter("codex", ToolchainConfig(config={"sandbox": "read-only"}))
    argv = adapter.build_argv(_req(tmp_path, toolchain_config={"sandbox": "danger-full-access"}))
    assert argv[argv.index("--sandbox") + 1] == "danger-full-access"


def test_upstream_config_builds_every_toolchain(upstream_dir: Path) -> None:
    cfg, _ = load_config(upstream_dir / ".cyntra" / "config.yaml")
    adapters = {name: build_adapter(name, tc) for name, tc in cfg.toolchains.items()}
    assert {n for n, a in adapters.items() if isinstance(a, CliAgentAdapter)} == {
        "codex", "claude", "opencode", "crush"}
    for name in ("codex", "claude", "opencode", "crush"):
        assert adapters[name].available(), adapters[name].unavailable_reason()  # fakes on PATH
    # Non-LLM toolchains with no argv template cannot run here, and say why.
    for name in ("fab-world", "comfyui", "runpod"):
        assert not adapters[name].available()
        assert "argv" in (adapters[name].unavailable_reason() or "")


# ---------------------------------------------------------------- real runs of the fakes


@pytest.mark.parametrize("name", ["codex", "claude", "opencode", "crush"])
def test_fake_cli_really_edits_and_commits(name: str, workcell: Workcell, repo: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    invocations = tmp_path / "invocations.jsonl"
    monkeypatch.setenv("FAKE_AGENT_LOG", str(invocations))
    adapter = build_adapter(name, ToolchainConfig(default_model="m1", config=UPSTREAM_BLOCKS[name]))
    result = asyncio.run(adapter.run(request_for(workcell)))

    assert result.status == "success", result.error
    assert result.exit_code == 0 and result.toolchain == name and result.model == "m1"
    assert result.error is None and result.confidence == 0.8
    assert result.started_at <= result.completed_at
    assert result.stdout_path == workcell.logs_dir / f"{name}-stdout.log"
    assert f"{name}: edited" in result.stdout_path.read_text() or name == "claude"
    assert (workcell.logs_dir / "prompt.md").read_text().endswith("Fix the bug in README\nDetails follow.")

    record = json.loads(invocations.read_text())
    assert record["cwd"] == str(workcell.path)
    assert "Fix the bug in README" in record["stdin"]  # every upstream CLI gets the prompt on stdin
    assert record["argv"] == result.argv[1:]
    # The fake committed its file on the workcell branch; the workcell sees the change.
    log = subprocess.run(["git", "log", "--format=%s", "-1"], cwd=workcell.path,
                         capture_output=True, text=True).stdout
    assert log.startswith(f"{name}: edit")
    files, _ = WorkcellManager(repo).diff_stats(workcell)
    assert {"path": f"{name}_output.txt", "kind": "added"} in files

    events = telemetry_events(workcell)
    assert [e["type"] for e in events] == ["started", "completed"]
    assert {e["toolchain"] for e in events} == {name}
    assert {e["workcell_id"] for e in events} == {workcell.id}
    assert events[1]["data"]["status"] == "success"
    if name == "claude":
        assert result.tokens_used == 2000 and result.cost_usd == pytest.approx(0.0123)
        assert record["stdin"].startswith("ultrathink\n\n")
    else:
        assert result.tokens_used is None and result.cost_usd is None


@pytest.mark.parametrize(("mode", "status", "code"), [("exit1", "partial", 1), ("exit2", "failed", 2)])
def test_fake_cli_exit_codes_map_to_status(mode: str, status: str, code: int, workcell: Workcell,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OPENCODE_MODE", mode)
    result = asyncio.run(build_adapter("opencode").run(request_for(workcell)))
    assert (result.status, result.exit_code) == (status, code)
    if mode == "exit2":
        assert "simulated failure" in (result.stderr_path or Path("/nonexistent")).read_text()
    assert telemetry_events(workcell)[-1]["data"]["exit_code"] == code


def test_timeout_kills_the_whole_process_group(workcell: Workcell, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("FAKE_AGENT_MODE", "hang")
    monkeypatch.setenv("FAKE_AGENT_PIDFILE", str(pidfile))
    t0 = time.monotonic()
    result = asyncio.run(build_adapter("codex").run(request_for(workcell, timeout_seconds=1.0)))
    elapsed = time.monotonic() - t0

    assert result.status == "timeout" and result.exit_code is None
    assert result.confidence == 0.0 and "timed out" in (result.error or "")
    assert 1.0 <= elapsed < 3.0
    leader, child = (int(p) for p in pidfile.read_text().split())
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not (process_gone(leader) and process_gone(child)):
        time.sleep(0.02)
    assert process_gone(leader), "the agent itself survived the timeout"
    assert process_gone(child), "the agent's child survived: the group was not killed"
    assert [e["type"] for e in telemetry_events(workcell)] == ["started", "timeout"]


def test_cancelling_a_run_kills_the_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("FAKE_AGENT_MODE", "hang")
    monkeypatch.setenv("FAKE_AGENT_PIDFILE", str(pidfile))

    async def scenario() -> None:
        task = asyncio.create_task(build_adapter("crush").run(_req(tmp_path, timeout_seconds=60)))
        while not pidfile.exists():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 10))
    leader, child = (int(p) for p in pidfile.read_text().split())
    time.sleep(0.2)
    assert process_gone(leader) and process_gone(child)


def test_missing_binary_is_an_error_result_not_an_exception(workcell: Workcell) -> None:
    adapter = build_adapter("codex", ToolchainConfig(path="definitely-not-installed-xyz"))
    assert not adapter.available()
    assert "definitely-not-installed-xyz" in (adapter.unavailable_reason() or "")
    result = asyncio.run(adapter.run(request_for(workcell)))
    assert result.status == "error" and result.exit_code is None
    assert "definitely-not-installed-xyz" in (result.error or "")
    assert [e["type"] for e in telemetry_events(workcell)] == ["started", "error"]


def test_env_layers_config_then_request(workcell: Workcell, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    invocations = tmp_path / "inv.jsonl"
    monkeypatch.setenv("FAKE_AGENT_LOG", str(invocations))
    monkeypatch.setenv("FAKE_AGENT_MARKER", "from-os")
    adapter = build_adapter("claude", ToolchainConfig(env={"FAKE_AGENT_MARKER": "from-config",
                                                            "FAKE_AGENT_MODE": "noop"}))
    asyncio.run(adapter.run(request_for(workcell)))
    asyncio.run(adapter.run(request_for(workcell, env={"FAKE_AGENT_MARKER": "from-request"})))
    records = [json.loads(line) for line in invocations.read_text().splitlines()]
    assert [r["env_marker"] for r in records] == ["from-config", "from-request"]
    assert all(r["mode"] == "noop" for r in records)


def test_telemetry_uses_the_kernel_clock(workcell: Workcell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AGENT_MODE", "noop")
    when = datetime(2030, 1, 1, tzinfo=UTC)
    with use_clock(VirtualClock(when)):
        result = asyncio.run(build_adapter("opencode").run(request_for(workcell)))
    assert result.started_at == result.completed_at == when
    assert {parse_ts(e["timestamp"]) for e in telemetry_events(workcell)} == {when}


# ---------------------------------------------------------------- command adapter


AGENT_SCRIPT = """
import json, sys
out = {"argv": sys.argv[1:], "stdin": sys.stdin.read()}
open("agent_record.json", "w").write(json.dumps(out))
sys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)
"""


@pytest.fixture
def agent_script(tmp_path: Path) -> Path:
    path = tmp_path / "agent.py"
    path.write_text(AGENT_SCRIPT)
    return path


@pytest.mark.parametrize("via", ["file", "stdin", "arg"])
def test_command_adapter_template_and_prompt_delivery(via: str, workcell: Workcell,
                                                      agent_script: Path) -> None:
    tc = ToolchainConfig(
        argv=[sys.executable, str(agent_script), "{prompt_file}", "--model", "{model}",
              "--t={temperature}", "{issue_id}/{workcell_id}", "{workcell}"],
        prompt_via=via, default_model="local-1",
    )
    adapter = build_adapter("my-agent", tc)
    assert isinstance(adapter, CommandAdapter) and adapter.available()
    result = asyncio.run(adapter.run(request_for(workcell, sampling=Sampling(temperature=0.25))))
    assert result.status == "success", result.error

    record = json.loads((workcell.path / "agent_record.json").read_text())
    prompt_file = str(workcell.logs_dir / "prompt.md")
    base = [prompt_file, "--model", "local-1", "--t=0.25", f"1/{workcell.id}", str(workcell.path)]
    prompt = "Fix the bug in README\nDetails follow."
    assert (workcell.logs_dir / "prompt.md").read_text() == prompt
    if via == "arg":
        assert record["argv"] == [*base, prompt]
    else:
        assert record["argv"] == base
    assert record["stdin"] == (prompt if via == "stdin" else "")


def test_command_adapter_exit_code(workcell: Workcell, agent_script: Path) -> None:
    tc = ToolchainConfig(argv=[sys.executable, str(agent_script), "2"])
    result = asyncio.run(build_adapter("x", tc).run(request_for(workcell)))
    assert (result.status, result.exit_code) == ("failed", 2)


def test_command_adapter_unknown_placeholder_is_unavailable(workcell: Workcell) -> None:
    adapter = build_adapter("bad", ToolchainConfig(argv=["echo", "{promt}"]))
    assert not adapter.available()
    assert "argv[1]" in (adapter.unavailable_reason() or "") and "{promt}" in (adapter.unavailable_reason() or "")
    result = asyncio.run(adapter.run(request_for(workcell)))
    assert result.status == "error" and "promt" in (result.error or "")


# ---------------------------------------------------------------- registry


def test_registry_kinds(tmp_path: Path) -> None:
    assert isinstance(build_adapter("claude-fast", ToolchainConfig(adapter="claude")), CliAgentAdapter)
    fast = build_adapter("claude-fast", ToolchainConfig(adapter="claude"))
    assert fast.build_argv(_req(tmp_path))[0] == "claude"  # binary defaults to the adapter kind
    assert fast.name == "claude-fast"
    unknown = build_adapter("x", ToolchainConfig(adapter="nope"))
    assert isinstance(unknown, UnavailableAdapter) and "nope" in (unknown.unavailable_reason() or "")
    no_argv = build_adapter("fab-world")
    assert not no_argv.available() and "argv" in (no_argv.unavailable_reason() or "")
    result = asyncio.run(no_argv.run(_req(tmp_path)))
    assert result.status == "error"


def test_register_adapter_hook(tmp_path: Path) -> None:
    class Echo:
        def __init__(self, name: str, tc: ToolchainConfig) -> None:
            self.name = name

        def available(self) -> bool:
            return True

        def unavailable_reason(self) -> str | None:
            return None

        def build_argv(self, request: RunRequest) -> list[str]:
            return []

        async def run(self, request: RunRequest) -> AdapterResult:
            now = datetime(2030, 1, 1, tzinfo=UTC)
            return AdapterResult(toolchain=self.name, status="success", started_at=now,
                                 completed_at=now, duration_ms=0)

    register_adapter("echo-test", Echo)
    with pytest.raises(ValueError, match="already registered"):
        register_adapter("echo-test", Echo)
    assert isinstance(build_adapter("echo-test"), Echo)  # a registered name is its own kind
    assert isinstance(build_adapter("other", ToolchainConfig(adapter="echo-test")), Echo)


# ---------------------------------------------------------------- low level


def test_run_process_start_failures_are_returned(tmp_path: Path) -> None:
    out, err = tmp_path / "o", tmp_path / "e"
    missing = asyncio.run(run_process(["no-such-binary-xyz"], tmp_path, None, None, 5, out, err))
    assert missing.exit_code is None and not missing.timed_out
    assert "no-such-binary-xyz" in (missing.error or "")
    bad_cwd = asyncio.run(run_process(["true"], tmp_path / "nope", None, "x", 5, out, err))
    assert bad_cwd.error is not None


def test_parse_usage_is_best_effort(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_text("not json\n{broken\n")
    assert parse_usage(out) == (None, None, None)
    out.write_text('progress...\n{"tokens_used": 10, "cost_usd": 0.5, "confidence": 0.9}\n')
    assert parse_usage(out) == (10, 0.5, 0.9)
    out.write_text(json.dumps({"usage": {"input_tokens": 3, "output_tokens": 4}, "total_cost_usd": 1}))
    assert parse_usage(out) == (7, 1.0, None)
    assert parse_usage(tmp_path / "missing.log") == (None, None, None)
