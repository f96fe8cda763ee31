"""The exploration controller: nudges temperature and parallelism by each domain's action rate.

It reads ``<workspace>/.cyntra/dynamics/dynamics_report.json`` once (build one controller per
scheduling cycle). Report format, read leniently::

    {"domains": {"code": {"action_rate": 0.3}, "fab_asset": {"action_rate": 0.05}},
     "action_rate": 0.2}

- ``domains.<name>.action_rate`` (or ``domains.<name>`` as a bare number) is that domain's rate;
- a top-level ``action_rate`` applies to every domain the ``domains`` map does not name;
- other keys are ignored. Rates must be finite numbers (booleans are refused).

Domain of an issue: ``fab_world`` with tag ``asset:world``, ``fab_asset`` with any other
``asset:*`` tag, else ``code``.

Modes per domain: ``trap`` (rate < action_low: the swarm is stuck, so explore more —
temperature base+step, parallelism +parallelism_step), ``chaos`` (rate > action_high:
temperature base−step, parallelism −step), ``balanced`` (base, 0), and ``disabled`` (no
adjustment, no temperature) when control is off, the report is missing or unreadable (also a
warning), or the report has no rate for that domain. Temperatures are clamped to
[temperature_min, temperature_max].
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cyntra.kernel.config import ControlConfig
from cyntra.state.issue import Issue

REPORT_PATH = Path(".cyntra") / "dynamics" / "dynamics_report.json"
DOMAINS: tuple[str, ...] = ("code", "fab_asset", "fab_world")
Mode = Literal["disabled", "trap", "balanced", "chaos"]


def issue_domain(issue: Issue) -> str:
    """``fab_world`` / ``fab_asset`` / ``code`` from the issue's ``asset:*`` tags."""
    domain = "code"
    for tag in issue.tags:
        if tag == "asset:world":
            return "fab_world"
        if tag.startswith("asset:"):
            domain = "fab_asset"
    return domain


class ControlDecision(BaseModel):
    """The controller's verdict for one domain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    domain: str
    action_rate: float | None = None
    temperature: float | None = None
    parallelism_delta: int = 0
    reason: str = ""


def _rate(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("action_rate")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    rate = float(value)
    return rate if math.isfinite(rate) else None


class ExplorationController:
    """Per-domain decisions from one read of the dynamics report."""

    def __init__(self, control: ControlConfig, workspace: str | Path | None) -> None:
        self.control = control
        self.warnings: list[str] = []
        self.report_path: Path | None = Path(workspace) / REPORT_PATH if workspace else None
        self.rates: dict[str, float] = {}
        self.default_rate: float | None = None
        self.status = self._load()
        self._cache: dict[str, ControlDecision] = {}

    def _load(self) -> str:
        """Read the report; returns why control is off, or '' when a report was loaded."""
        if not self.control.enabled:
            return "control.enabled is false"
        path = self.report_path
        if path is None:
            return "no workspace"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return f"no dynamics report at {REPORT_PATH.as_posix()}"
        except OSError:  # there but not readable: the parse says why, with a warning
            st = None
        key = (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None
        cached = _REPORTS.get(path)
        if key is not None and cached is not None and cached[0] == key:
            parsed = cached[1]
        else:
            parsed = _parse_report(path)
            # Like git's racily-clean index entries: a file changed within the last seconds may
            # change again within the same timestamp tick at the same size, so it is not cached.
            if key is not None and st is not None and time.time_ns() - st.st_mtime_ns > _SETTLED_NS:
                _REPORTS[path] = (key, parsed)
        status, rates, default_rate, warnings = parsed
        self.rates, self.default_rate = dict(rates), default_rate
        self.warnings.extend(warnings)
        return status

    def decide_domain(self, domain: str) -> ControlDecision:
        cached = self._cache.get(domain)
        if cached is None:
            cached = self._cache[domain] = self._decide(domain)
        return cached

    def decide(self, issue: Issue) -> ControlDecision:
        return self.decide_domain(issue_domain(issue))

    def _decide(self, domain: str) -> ControlDecision:
        if self.status:
            return ControlDecision(mode="disabled", domain=domain, reason=self.status)
        rate = self.rates.get(domain, self.default_rate)
        if rate is None:
            return ControlDecision(mode="disabled", domain=domain,
                                   reason=f"dynamics report has no action rate for {domain}")
        c = self.control
        mode: Mode
        if rate < c.action_low:
            mode, temp, delta = "trap", c.temperature_base + c.temperature_step, c.parallelism_step
            why = f"action rate {rate:g} < action_low {c.action_low:g}"
        elif rate > c.action_high:
            mode, temp, delta = "chaos", c.temperature_base - c.temperature_step, -c.parallelism_step
            why = f"action rate {rate:g} > action_high {c.action_high:g}"
        else:
            mode, temp, delta = "balanced", c.temperature_base, 0
            why = f"action rate {rate:g} within [{c.action_low:g}, {c.action_high:g}]"
        temp = round(min(max(temp, c.temperature_min), c.temperature_max), 6)
        return ControlDecision(mode=mode, domain=domain, action_rate=rate, temperature=temp,
                               parallelism_delta=delta, reason=why)

    def modes(self) -> dict[str, str]:
        """Mode of every known domain (and any other domain the report names)."""
        names = list(DOMAINS) + sorted(d for d in self.rates if d not in DOMAINS)
        return {d: self.decide_domain(d).mode for d in names}


# Parsed dynamics reports by path, with the (mtime, size, inode) they were read at: the kernel
# builds a controller every cycle, and the report rarely changes between two cycles.
_SETTLED_NS = 2_000_000_000
_REPORTS: dict[Path, tuple[tuple[int, int, int], tuple[str, dict[str, float], float | None, list[str]]]] = {}


def _parse_report(path: Path) -> tuple[str, dict[str, float], float | None, list[str]]:
    """(why control is off or '', rates by domain, default rate, warnings) of one report file."""
    warnings: list[str] = []
    rates: dict[str, float] = {}
    default_rate: float | None = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no dynamics report at {REPORT_PATH.as_posix()}", rates, None, warnings
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.append(f"{path}: unreadable dynamics report ({exc}); control disabled")
        return f"unreadable dynamics report {REPORT_PATH.as_posix()}", rates, None, warnings
    if not isinstance(data, dict):
        warnings.append(f"{path}: dynamics report must be a JSON object; control disabled")
        return f"unreadable dynamics report {REPORT_PATH.as_posix()}", rates, None, warnings
    if "action_rate" in data:
        default_rate = _rate(data["action_rate"])
        if default_rate is None:
            warnings.append(f"{path}: action_rate: not a number ({data['action_rate']!r})")
    domains = data.get("domains", {})
    if not isinstance(domains, dict):
        warnings.append(f"{path}: domains: expected an object, ignored")
        domains = {}
    for name, value in domains.items():
        rate = _rate(value)
        if rate is None:
            warnings.append(f"{path}: domains.{name}.action_rate: not a number, ignored")
        else:
            rates[str(name)] = rate
    return "", rates, default_rate, warnings


# Scheduler rank of each mode: stuck domains (trap) first, churning ones (chaos) last.
MODE_RANK: dict[str, int] = {"trap": 0, "balanced": 1, "disabled": 1, "chaos": 2}
