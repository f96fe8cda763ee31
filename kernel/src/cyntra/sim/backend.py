"""The sim backend: plugs the simulated world into the normal kernel path.

When ``.cyntra/config.yaml`` has a ``sim:`` section, ``cyntra run`` installs (1) the ``sim``
adapter kind, so toolchains with ``adapter: sim`` (named codex, claude, ... so upstream routing
works unchanged) draw their outcome from the world profile instead of spawning a CLI, (2) the
``sim:`` gate scheme, so the verifier judges ``sim:test`` from the outcome the candidate recorded
in its workcell, and (3) a virtual clock, so months of history run in seconds. Everything else —
scheduler, strategy, clamp, runner, workcells, vote, handoff, escalation, archives — is the real
kernel. Nothing downstream reads this module: datasets come from archives only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from cyntra import clock
from cyntra.adapters import AdapterResult, RunRequest, register_adapter
from cyntra.fsutil import atomic_write_json, dumps_compact, set_durable
from cyntra.kernel.config import KernelConfig, ToolchainConfig
from cyntra.kernel.verifier import register_gate_scheme
from cyntra.sim.profile import SimProfile, bundled_profiles, load_profile
from cyntra.sim.world import sample_candidate
from cyntra.state.issue import Issue

OUTCOME_FILE = "sim_outcome.json"  # under the workcell's logs/ (never counted as a change)


def profile_for(config: KernelConfig, workspace: Path) -> SimProfile:
    sim = config.sim or {}
    ref = sim.get("profile")
    if ref and str(ref) in bundled_profiles():
        profile = load_profile(str(ref))  # a bundled profile by name ("default", "alt")
    else:
        path: Path | None = None
        if ref:
            path = Path(ref)
            if not path.is_absolute():
                path = workspace / path
        profile = load_profile(path)
    if "seed" in sim:
        profile = profile.with_seed(int(sim["seed"]))
    return profile


class SimAdapter:
    """A toolchain whose runs are drawn from the world profile (seeded by profile seed, issue,
    attempt and toolchain). Takes the issue from the request (the kernel's snapshot, the one in
    the workcell's manifest), or reads the manifest when a request carries none."""

    def __init__(self, name: str, profile: SimProfile) -> None:
        self.name = name
        self.profile = profile

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str | None:
        return None

    def build_argv(self, request: RunRequest) -> list[str]:
        return ["<sim>", self.name]

    async def run(self, request: RunRequest) -> AdapterResult:
        issue, index = request.issue, request.candidate_index
        if issue is None:
            manifest = json.loads((request.workcell_path / "manifest.json").read_text(encoding="utf-8"))
            issue = Issue.model_validate(manifest["issue"])
            index = int(manifest.get("plan", {}).get("candidate_index", 0))
        started = clock.now()
        out = sample_candidate(self.profile, issue, self.name, issue.dk_attempts,
                               request.timeout_seconds / 60.0, index, started)
        if request.telemetry is not None:
            request.telemetry.emit("started", {"budget_minutes": out.budget_minutes})
        logs = os.fspath(request.logs_dir)
        outcome = dumps_compact(out.to_dict()).encode("utf-8")
        try:  # the workcell made logs/ (no mkdir per run: an EEXIST costs more than the write)
            _write(os.path.join(logs, OUTCOME_FILE), outcome)
        except FileNotFoundError:
            os.makedirs(logs, exist_ok=True)
            _write(os.path.join(logs, OUTCOME_FILE), outcome)
        if out.diff_lines > 0 and not out.timed_out:
            _write(os.path.join(os.fspath(request.workcell_path), "patch.sim"), _patch_body(out.diff_lines))
        c = clock.get_clock()
        if isinstance(c, clock.VirtualClock):
            c.advance(timedelta(minutes=out.duration_minutes))
        completed = started + timedelta(minutes=out.duration_minutes)
        if request.telemetry is not None:
            request.telemetry.emit("timeout" if out.timed_out else "completed",
                                   {"exit_code": out.exit_code, "cost_usd": out.cost_usd,
                                    "tokens_used": out.tokens_used})
        return AdapterResult(
            toolchain=self.name, model=f"sim-{self.name}", exit_code=out.exit_code, status=out.status,  # type: ignore[arg-type]
            started_at=started, completed_at=completed,
            duration_ms=round(out.duration_minutes * 60000),
            tokens_used=out.tokens_used, cost_usd=round(out.cost_usd, 6), confidence=out.confidence,
            error="timed out" if out.timed_out else None,
        )


def _write(path: str, data: bytes) -> None:
    """A new file in the candidate's own workcell (nobody else writes there; the workcell as a
    whole is what recovery and archiving handle)."""
    with open(path, "wb") as f:
        f.write(data)


_PATCH_LINES: list[str] = []  # "# change <i>\n", grown on demand


def _patch_body(lines: int) -> bytes:
    """The simulated patch: one line per changed line, so the diff stats count them."""
    if len(_PATCH_LINES) < lines:
        _PATCH_LINES.extend(f"# change {i}\n" for i in range(len(_PATCH_LINES), lines))
    return "".join(_PATCH_LINES[:lines]).encode("utf-8")


def sim_gate(name: str, arg: str, workcell: Path) -> tuple[bool, str]:
    """``sim:<gate>``: the gate result the candidate's simulated run recorded."""
    path = os.path.join(os.fspath(workcell), "logs", OUTCOME_FILE)
    try:
        with open(path, "rb") as f:
            recorded = orjson.loads(f.read())
    except OSError:
        return False, f"no simulated outcome at {path}"
    gates: dict[str, Any] = recorded.get("gates", {})
    gate = arg or name
    if gate not in gates:
        return False, f"simulated outcome has no gate {gate!r}"
    return bool(gates[gate]), f"simulated {gate}: {'pass' if gates[gate] else 'fail'}"


@contextlib.contextmanager
def sim_context(session: Any) -> Iterator[SimProfile | None]:
    """Install the sim backend for a run when the workspace config has a ``sim:`` section."""
    config: KernelConfig = session.config
    if config.sim is None:
        yield None
        return
    profile = profile_for(config, session.workspace.root)

    def factory(name: str, tc: ToolchainConfig) -> Any:
        return SimAdapter(name, profile)

    register_adapter("sim", factory, replace=True)
    register_gate_scheme("sim", sim_gate)
    start = _start_time(session)
    previous = set_durable(False)
    virtual = clock.VirtualClock(start)
    try:
        with clock.use_clock(virtual):
            yield profile
    finally:
        set_durable(previous)
        atomic_write_json(session.workspace.cyntra_dir / "sim_clock.json", {"now": clock.isoformat_z(virtual.now())})


@contextlib.contextmanager
def sim_clock(session: Any, issues: Iterable[Issue] | None = None) -> Iterator[None]:
    """Only the virtual clock, where the next run would resume it, for reports on a sim workspace
    (`status`, `run --dry-run`, `strategy show`): they then show what the runner would do, not
    what the wall-clock date makes of a simulated timeline. Nothing is registered and nothing is
    written. ``issues``: the store's issues when the caller has loaded them already."""
    if session.config.sim is None:
        yield
        return
    with clock.use_clock(clock.VirtualClock(_start_time(session, issues))):
        yield


def _start_time(session: Any, issues: Iterable[Issue] | None = None) -> Any:
    """Virtual time resumes where the history left off: the latest of the last recorded event
    and the earliest issue arrival (so a second `cyntra run` continues the same timeline)."""
    times = []
    if issues is None:
        issues = session.store.load().issues.values()
    created = [i.created for i in issues if i.created is not None]
    if created:
        times.append(min(created))
    marker = session.workspace.cyntra_dir / "sim_clock.json"
    if marker.is_file():
        with contextlib.suppress(Exception):
            times.append(clock.parse_ts(json.loads(marker.read_text())["now"]))
    return max(times) if times else clock.SystemClock().now()
