"""Quality gates: run a candidate's test / typecheck / lint / build commands and record the verdict.

Gates are shell command strings (upstream writes e.g. ``cd kernel && pytest -q``), so each runs
under ``/bin/sh -c`` in the workcell root, in its own process group: a timeout kills the whole
group (the shell and everything it started), and stragglers left behind by a gate that exited are
killed too. A gate failing, hanging or naming a missing binary is a *result*, never an exception.
Gates run one after another in their configured order, so they never race on the same tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from cyntra.errors import InputError
from cyntra.kernel.artifacts import GateResult, Verification
from cyntra.kernel.config import GatesConfig
from cyntra.state.issue import Issue

# config.gates key -> gate name (the order is the run order).
CONFIG_GATES: tuple[tuple[str, str], ...] = (
    ("test_command", "test"),
    ("typecheck_command", "typecheck"),
    ("lint_command", "lint"),
    ("build_command", "build"),
)

# Shell exit codes for "command not found" / "not executable": retrying cannot help.
_NOT_RUNNABLE = (126, 127)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


# In-process gate schemes: a gate command ``<scheme>:<arg>`` is judged by a registered function
# instead of a shell (the simulator's ``sim:test`` reads the candidate's recorded outcome). This
# keeps gates on the normal verifier path without spawning tens of thousands of processes.
GateScheme = Callable[[str, str, Path], tuple[bool, str]]  # (name, arg, workcell) -> (passed, log line)
_SCHEMES: dict[str, GateScheme] = {}
_SCHEME_RE = re.compile(r"^([a-z][a-z0-9_]*):(\S*)$")


def register_gate_scheme(scheme: str, fn: GateScheme) -> None:
    _SCHEMES[scheme] = fn


def _scheme_of(command: str) -> tuple[GateScheme, str] | None:
    m = _SCHEME_RE.match(command.strip())
    if m and m.group(1) in _SCHEMES:
        return _SCHEMES[m.group(1)], m.group(2)
    return None


def normalise_gate_spec(value: Any, *, field: str = "dk_quality_gates") -> dict[str, str | None]:
    """Turn an issue's ``dk_quality_gates`` into ``{name: command|None}``.

    A mapping is taken as is (a null command disables that gate); a list of commands is named
    ``gate1..n``; a single string is one gate named ``gate1``. Anything else is refused, naming
    the field.
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = {f"gate{i + 1}": cmd for i, cmd in enumerate(value)}
    if not isinstance(value, Mapping):
        raise InputError(None, "expected a mapping of gate name to command", field=field)
    out: dict[str, str | None] = {}
    for name, cmd in value.items():
        if cmd is not None and not isinstance(cmd, str):
            raise InputError(
                None, "a gate command must be a string or null", field=f"{field}.{name}"
            )
        out[str(name)] = cmd
    return out


def config_gate_spec(config: GatesConfig) -> dict[str, str | None]:
    """The config's gates as ``{name: command|None}`` (what the manifest records)."""
    return {name: getattr(config, key) for key, name in CONFIG_GATES}


def gate_spec(
    issue: Issue | Mapping[str, Any] | None, config: GatesConfig
) -> dict[str, str | None]:
    """The gate set of a candidate: the issue's ``dk_quality_gates`` when set (even ``{}``: no
    gates), else the config's four commands. Nulls are kept: they show which gates are off."""
    override = (
        issue.dk_quality_gates
        if isinstance(issue, Issue)
        else (issue or {}).get("dk_quality_gates")
    )
    if override is not None:
        return normalise_gate_spec(override)
    return config_gate_spec(config)


def resolve_gates(issue: Issue | Mapping[str, Any] | None, config: GatesConfig) -> dict[str, str]:
    """The gates to run: :func:`gate_spec` without the disabled (null or blank) ones."""
    return {
        name: cmd
        for name, cmd in gate_spec(issue, config).items()
        if cmd is not None and cmd.strip()
    }


def gate_log_path(logs_dir: str | Path, name: str) -> Path:
    """``logs/gate-<name>.log``; the name is made safe (issue data may name a gate ``../x``)."""
    return Path(logs_dir) / f"gate-{_SAFE_NAME.sub('_', name) or '_'}.log"


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _run_once(
    command: str,
    cwd: Path,
    log: BinaryIO,
    timeout_seconds: float,
    env: dict[str, str],
    kill_grace_seconds: float,
) -> tuple[int | None, bool]:
    """One attempt: (exit code or None if it could not start, timed out?)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log.write(f"[cyntra] gate could not start: {exc}\n".encode())
        log.flush()
        return None, False
    pgid = proc.pid  # start_new_session: the shell leads its own group
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout=timeout_seconds)
    except TimeoutError:
        timed_out = True
        _killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=kill_grace_seconds)
        except TimeoutError:
            _killpg(pgid, signal.SIGKILL)
            await proc.wait()
    except asyncio.CancelledError:
        _killpg(pgid, signal.SIGKILL)
        raise
    # Whatever the gate left running in its group (e.g. `server &`) goes too.
    _killpg(pgid, signal.SIGKILL)
    return proc.returncode, timed_out


async def run_gate(
    name: str,
    command: str,
    workcell_path: str | Path,
    *,
    timeout_seconds: float,
    logs_dir: str | Path,
    retry_flaky: int = 0,
    env: Mapping[str, str] | None = None,
    kill_grace_seconds: float = 2.0,
) -> GateResult:
    """Run one gate, retrying a plain failure up to ``retry_flaky`` times (not a timeout, not a
    missing command: those would only fail again, slower). The log keeps every attempt."""
    scheme = _scheme_of(command)
    if scheme is not None:  # judged in-process; its verdict is the whole log, kept in the proof
        fn, arg = scheme
        try:
            ok, _note = fn(name, arg, Path(workcell_path))
        except Exception:  # a broken scheme is a failed gate, never a crash
            ok = False
        return GateResult(passed=ok, exit_code=0 if ok else 1, duration_ms=0, command=command,
                          log_path=None, timed_out=False, attempts=1)
    log_path = gate_log_path(logs_dir, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    started = time.monotonic()
    attempts = 0
    exit_code: int | None = None
    timed_out = False
    log_path.write_bytes(b"")
    with open(log_path, "ab") as log:  # O_APPEND: our notes and the gate's output interleave safely
        while True:
            attempts += 1
            log.write(f"[cyntra] gate {name} attempt {attempts}: {command}\n".encode())
            log.flush()
            exit_code, timed_out = await _run_once(
                command, Path(workcell_path), log, timeout_seconds, full_env, kill_grace_seconds
            )
            if timed_out:
                log.write(f"\n[cyntra] gate {name} timed out after {timeout_seconds}s\n".encode())
            else:
                log.write(f"\n[cyntra] gate {name} exit code {exit_code}\n".encode())
            log.flush()
            passed = exit_code == 0 and not timed_out
            retryable = not timed_out and exit_code is not None and exit_code not in _NOT_RUNNABLE
            if passed or not retryable or attempts > retry_flaky:
                break
    return GateResult(
        passed=passed,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - started) * 1000),
        command=command,
        log_path=str(log_path),
        timed_out=timed_out,
        attempts=attempts,
    )


async def run_gates(
    workcell_path: str | Path,
    gates: Mapping[str, str],
    timeout_seconds: float,
    logs_dir: str | Path,
    retry_flaky: int = 0,
    env: Mapping[str, str] | None = None,
    *,
    kill_grace_seconds: float = 2.0,
) -> Verification:
    """Run every gate in order (``timeout_seconds`` each). No gates: all passed, nothing run.

    ``env`` is laid over the kernel's environment (so PATH survives).
    """
    results: dict[str, GateResult] = {}
    for name, command in gates.items():
        results[name] = await run_gate(
            name,
            command,
            workcell_path,
            timeout_seconds=timeout_seconds,
            logs_dir=logs_dir,
            retry_flaky=retry_flaky,
            env=env,
            kill_grace_seconds=kill_grace_seconds,
        )
    return Verification.from_gates(results)


async def verify(
    workcell_path: str | Path,
    issue: Issue | Mapping[str, Any] | None,
    config: GatesConfig,
    logs_dir: str | Path,
    env: Mapping[str, str] | None = None,
) -> Verification:
    """The candidate's gates (issue override or config) under the config's timeout and retries."""
    return await run_gates(
        workcell_path,
        resolve_gates(issue, config),
        config.timeout_seconds,
        logs_dir,
        config.retry_flaky,
        env,
    )
