"""What every toolchain adapter shares: the request, the result, the subprocess runner.

An adapter turns a :class:`RunRequest` (workcell, prompt, model, sampling, time budget) into an
:class:`AdapterResult`. Subprocess adapters differ only in their argv; everything else — the
prompt file, the environment, the time budget enforced by killing the whole process group,
stdout/stderr going straight to ``logs/``, telemetry, the exit-code → status mapping and a
best-effort read of token usage and cost — lives here, once. A toolchain failure is always a
result (``failed``/``timeout``/``error``), never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import structlog
from pydantic import BaseModel, ConfigDict, Field

from cyntra import clock
from cyntra.adapters import telemetry as tel
from cyntra.adapters.telemetry import TelemetryWriter
from cyntra.errors import CyntraError
from cyntra.fsutil import atomic_write_text
from cyntra.kernel.config import ToolchainConfig
from cyntra.state.issue import Issue

log = structlog.get_logger(__name__)

Status = Literal["success", "partial", "failed", "timeout", "error"]
PromptVia = Literal["file", "stdin", "arg"]

PROMPT_FILE = "prompt.md"
KILL_GRACE_SECONDS = 1.0
_USAGE_TAIL_BYTES = 2 * 1024 * 1024

# Confidence when the toolchain reports none (upstream's defaults).
DEFAULT_CONFIDENCE: dict[str, float] = {
    "success": 0.8,
    "partial": 0.5,
    "failed": 0.2,
    "timeout": 0.0,
    "error": 0.0,
}


def status_from_exit_code(code: int | None) -> Status:
    """0 → success, 1 → partial, anything else (incl. killed by a signal) → failed."""
    if code == 0:
        return "success"
    if code == 1:
        return "partial"
    return "failed"


class Sampling(BaseModel):
    temperature: float | None = None
    top_p: float | None = None


class RunRequest(BaseModel):
    """One candidate run of one toolchain in one workcell."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workcell_path: Path
    logs_dir: Path
    prompt: str
    model: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    timeout_seconds: float = Field(gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    issue_id: str | None = None
    workcell_id: str | None = None
    # The toolchain's `config:` block for this run (merged over the configured one).
    toolchain_config: dict[str, Any] = Field(default_factory=dict)
    telemetry: TelemetryWriter | None = Field(default=None, exclude=True)
    # The kernel's snapshot of the issue (what manifest.json holds) and which candidate of the
    # plan this run is (0: the first), for in-process adapters such as the simulator; a
    # subprocess agent gets the prompt and the workcell.
    issue: Issue | None = Field(default=None, exclude=True)
    candidate_index: int = Field(default=0, ge=0)

    @property
    def prompt_file(self) -> Path:
        return self.logs_dir / PROMPT_FILE


class AdapterResult(BaseModel):
    """What a run produced; the runner copies it into ``proof.json`` ``metadata``."""

    toolchain: str
    model: str | None = None
    exit_code: int | None = None
    status: Status
    started_at: datetime
    completed_at: datetime
    duration_ms: int = Field(ge=0)
    tokens_used: int | None = None
    cost_usd: float | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    error: str | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    argv: list[str] = Field(default_factory=list)


@runtime_checkable
class ToolchainAdapter(Protocol):
    """A toolchain the kernel can dispatch to."""

    name: str

    def available(self) -> bool: ...

    def unavailable_reason(self) -> str | None:
        """Why ``available()`` is False (None when it is available)."""
        ...

    def build_argv(self, request: RunRequest) -> list[str]: ...

    async def run(self, request: RunRequest) -> AdapterResult: ...


# --------------------------------------------------------------------------- subprocess runner


class ProcessResult(NamedTuple):
    exit_code: int | None
    timed_out: bool
    error: str | None = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the whole group, give it ``grace_s``, then SIGKILL whatever is left, and reap."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace_s)
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run_process(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None,
    stdin_text: str | None,
    timeout_s: float,
    stdout_path: Path,
    stderr_path: Path,
    *,
    kill_grace_s: float = KILL_GRACE_SECONDS,
) -> ProcessResult:
    """Run ``argv`` (no shell) in its own session; output goes straight to the two files.

    On timeout — or if the awaiting task is cancelled — the whole process group is killed and
    reaped. Members of the group still alive after a normal exit are killed too: a run never
    leaves processes behind in a workcell. Failure to start (missing binary, bad cwd) is
    returned as ``error``, never raised.
    """
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=asyncio.subprocess.PIPE if stdin_text is not None else asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            shown = argv[0] if argv else "<empty argv>"
            return ProcessResult(None, False, f"cannot start {shown!r}: {exc}")
        timed_out = False
        try:
            data = stdin_text.encode("utf-8") if stdin_text is not None else None
            await asyncio.wait_for(proc.communicate(data), timeout_s)
        except TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                await asyncio.shield(_kill_group(proc, kill_grace_s))
            else:
                _signal_group(proc.pid, signal.SIGKILL)  # stragglers the agent left running
    if timed_out:
        return ProcessResult(None, True, f"timed out after {timeout_s:g}s; process group killed")
    return ProcessResult(proc.returncode, False, None)


def build_env(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """``os.environ``, then each layer on top (toolchain env from config, then the request's)."""
    env = dict(os.environ)
    for layer in layers:
        if layer:
            env.update({str(k): str(v) for k, v in layer.items()})
    return env


def which(executable: str, env_path: str | None = None) -> str | None:
    """Where ``executable`` is: on PATH for a bare name, the path itself if it is executable."""
    if os.sep in executable:
        return executable if os.access(executable, os.X_OK) and Path(executable).is_file() else None
    return shutil.which(executable, path=env_path)


# --------------------------------------------------------------------------- output parsing


class Usage(NamedTuple):
    tokens_used: int | None = None
    cost_usd: float | None = None
    confidence: float | None = None


def _usage_from(obj: dict[str, Any]) -> Usage | None:
    tokens: int | None = None
    cost: float | None = None
    confidence: float | None = None
    if isinstance(obj.get("tokens_used"), int):
        tokens = int(obj["tokens_used"])
    usage = obj.get("usage")
    if tokens is None and isinstance(usage, dict):
        keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        parts = [usage[k] for k in keys if isinstance(usage.get(k), int)]
        if parts:
            tokens = sum(parts)
        elif isinstance(usage.get("total_tokens"), int):
            tokens = usage["total_tokens"]
    for key in ("total_cost_usd", "cost_usd", "cost"):
        value = obj.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            cost = float(value)
            break
    conf = obj.get("confidence")
    if isinstance(conf, int | float) and not isinstance(conf, bool) and 0 <= conf <= 1:
        confidence = float(conf)
    if tokens is None and cost is None and confidence is None:
        return None
    return Usage(tokens, cost, confidence)


def parse_usage(stdout_path: Path) -> Usage:
    """Token usage / cost / confidence from a JSON object in the output (Claude's
    ``--output-format json`` result, or a JSON last line). Best effort: never raises."""
    try:
        with open(stdout_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _USAGE_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return Usage()
    candidates: list[str] = [text] if text.startswith("{") else []
    candidates += [line.strip() for line in reversed(text.splitlines()) if line.strip().startswith("{")]
    for candidate in candidates:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            found = _usage_from(obj)
            if found is not None:
                return found
    return Usage()


# --------------------------------------------------------------------------- subprocess adapter


class SubprocessAdapter:
    """Base of every CLI-backed adapter: subclasses say how to build the argv."""

    kind = "subprocess"
    default_binary = ""
    default_prompt_via: PromptVia = "stdin"

    def __init__(self, name: str, config: ToolchainConfig | None = None) -> None:
        self.name = name
        self.config = config or ToolchainConfig()

    # -- configuration

    @property
    def executable(self) -> str:
        return self.config.path or self.default_binary or self.name

    @property
    def prompt_via(self) -> PromptVia:
        return self.config.prompt_via or self.default_prompt_via

    def options(self, request: RunRequest | None = None) -> dict[str, Any]:
        """The ``config:`` block, with the request's values on top."""
        merged = dict(self.config.config)
        if request is not None:
            merged.update(request.toolchain_config)
        return merged

    def model_for(self, request: RunRequest) -> str | None:
        return request.model or self.config.default_model

    def unavailable_reason(self) -> str | None:
        if which(self.executable) is None:
            return f"toolchain {self.name!r}: executable {self.executable!r} not found on PATH"
        return None

    def available(self) -> bool:
        return self.unavailable_reason() is None

    # -- hooks

    def prompt_text(self, request: RunRequest) -> str:
        return request.prompt

    def build_argv(self, request: RunRequest) -> list[str]:
        raise NotImplementedError

    def stdin_text(self, request: RunRequest, prompt: str) -> str | None:
        return prompt if self.prompt_via == "stdin" else None

    # -- run

    async def run(self, request: RunRequest) -> AdapterResult:
        started = clock.now()
        t0 = time.monotonic()
        model = self.model_for(request)
        stdout_path = request.logs_dir / f"{self.name}-stdout.log"
        stderr_path = request.logs_dir / f"{self.name}-stderr.log"

        def result(status: Status, *, exit_code: int | None = None, error: str | None = None,
                   argv: list[str] | None = None, usage: Usage | None = None) -> AdapterResult:
            usage = usage or Usage()
            confidence = usage.confidence
            if confidence is None:
                confidence = DEFAULT_CONFIDENCE[status]
            return AdapterResult(
                toolchain=self.name,
                model=model,
                exit_code=exit_code,
                status=status,
                started_at=started,
                completed_at=clock.now(),
                duration_ms=int((time.monotonic() - t0) * 1000),
                tokens_used=usage.tokens_used,
                cost_usd=usage.cost_usd,
                stdout_path=stdout_path if stdout_path.exists() else None,
                stderr_path=stderr_path if stderr_path.exists() else None,
                error=error,
                confidence=confidence,
                argv=argv or [],
            )

        try:
            request.logs_dir.mkdir(parents=True, exist_ok=True)
            prompt = self.prompt_text(request)
            atomic_write_text(request.prompt_file, prompt)
            argv = self.build_argv(request)
            stdin = self.stdin_text(request, prompt)
        except (CyntraError, OSError, ValueError, KeyError) as exc:
            res = result("error", error=f"cannot prepare {self.name} run: {exc}")
            self._emit(request, tel.ERROR, {"error": res.error})
            return res

        self._emit(request, tel.STARTED, {
            "model": model,
            "argv": argv,
            "timeout_seconds": request.timeout_seconds,
            "sampling": request.sampling.model_dump(),
            "prompt_via": self.prompt_via,
        })
        env = build_env(self.config.env, request.env)
        proc = await run_process(
            argv, request.workcell_path, env, stdin, request.timeout_seconds, stdout_path, stderr_path
        )
        if proc.timed_out:
            res = result("timeout", error=proc.error, argv=argv)
            self._emit(request, tel.TIMEOUT, {"timeout_seconds": request.timeout_seconds,
                                              "duration_ms": res.duration_ms})
            return res
        if proc.error is not None:
            res = result("error", error=proc.error, argv=argv)
            self._emit(request, tel.ERROR, {"error": proc.error})
            return res
        status = status_from_exit_code(proc.exit_code)
        res = result(status, exit_code=proc.exit_code, argv=argv, usage=parse_usage(stdout_path))
        self._emit(request, tel.COMPLETED, {
            "status": status,
            "exit_code": proc.exit_code,
            "duration_ms": res.duration_ms,
            "tokens_used": res.tokens_used,
            "cost_usd": res.cost_usd,
        })
        return res

    def _emit(self, request: RunRequest, event_type: str, data: dict[str, Any]) -> None:
        """Telemetry is a record, not a dependency: a write failure is logged, never fatal."""
        if request.telemetry is None:
            return
        try:
            request.telemetry.emit(
                event_type, data, issue_id=request.issue_id, workcell_id=request.workcell_id,
                toolchain=self.name,
            )
        except OSError as exc:
            log.warning("telemetry_write_failed", toolchain=self.name, error=str(exc))
