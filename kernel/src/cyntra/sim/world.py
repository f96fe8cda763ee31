"""The simulated agent world: how one candidate run of a toolchain on an issue turns out.

Model (all parameters from the profile, see ``docs/sim.md``):

* hidden difficulty ``d`` of an issue = base + size + risk + Σ tag effects + title keyword effects
  + ``noise_sd``·z, where z is a deterministic standard normal of (profile seed, issue id, title).
  It is never written anywhere: it is recomputed from observable features here.
* a run is *on track* with probability ``q = sigmoid(bias + Σ skill[tag] + drift − d)``.
* needed minutes ~ LogNormal(ln(base[size]·speed) + slope·d, sigma); an off-track (stuck) run's
  log-median is shifted by ``stuck_shift`` and its spread is ``stuck_sigma``.
* needed > budget ⇒ timeout: exit code None, every gate fails, it costs the whole budget.
* an on-track run that finishes passes each gate with probability (1 − fail[risk])·(1 − flake);
  an off-track run that finishes always fails ``test`` (exit 2 with ``hard_fail_prob``, else 1).
* cost = price_per_minute × duration; tokens ∝ duration.

Draws are seeded by blake2b(profile seed, issue id, attempt, toolchain) — never Python's ``hash``
— so a result is the same in every process, and independent of the budget (common random
numbers: a larger budget only un-truncates the same run). :class:`CandidateModel` exposes the
same quantities in closed form for the oracle.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cyntra.sim.profile import GATE_NAMES, RISKS, SIZES, DurationModel, SimProfile
from cyntra.state.issue import Issue

_TWO_PI = 2.0 * math.pi
_INV_2_32 = 1.0 / 4294967296.0
_SQRT2 = math.sqrt(2.0)
_blake2b = hashlib.blake2b
_unpack = struct.Struct("<16I").unpack
# Off-track runs that finish: P(typecheck fails), P(lint fails) when the exit code is 1.
OFF_TRACK_TYPECHECK_FAIL = 0.4
OFF_TRACK_LINT_FAIL = 0.3
# Patch size (median diff lines) by issue size; reported, not part of the objective.
DIFF_BASE: dict[str, float] = {"XS": 8.0, "S": 25.0, "M": 80.0, "L": 200.0, "XL": 450.0}


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _uniforms(key: str) -> tuple[float, ...]:
    """16 uniforms in (0, 1) from a stable hash of ``key``."""
    raw = struct.unpack("<16I", hashlib.blake2b(key.encode("utf-8"), digest_size=64).digest())
    return tuple((x + 0.5) * _INV_2_32 for x in raw)


def _normal_pair(u1: float, u2: float) -> tuple[float, float]:
    """Box–Muller: two independent standard normals from two uniforms."""
    r = math.sqrt(-2.0 * math.log(u1))
    return r * math.cos(_TWO_PI * u2), r * math.sin(_TWO_PI * u2)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(slots=True)
class CandidateOutcome:
    """What one candidate run did: the sim adapter writes this; the verifier reads the gates.

    Treat as immutable (not frozen only because frozen construction is 3x slower).
    """

    toolchain: str
    attempt: int
    candidate_index: int
    budget_minutes: float
    needed_minutes: float
    duration_minutes: float
    timed_out: bool
    exit_code: int | None  # 0 success, 1 partial, 2 failed, None timeout
    gates: dict[str, bool]
    flaky_gates: tuple[str, ...]  # gates that failed spuriously (telemetry only)
    all_passed: bool
    tokens_used: int
    cost_usd: float
    confidence: float
    diff_lines: int
    files_changed: int

    @property
    def status(self) -> str:
        """proof.json vocabulary: success | partial | failed | timeout."""
        if self.timed_out:
            return "timeout"
        if self.exit_code == 0:
            return "success"
        return "partial" if self.exit_code == 1 else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "toolchain": self.toolchain,
            "attempt": self.attempt,
            "candidate_index": self.candidate_index,
            "budget_minutes": self.budget_minutes,
            "needed_minutes": self.needed_minutes,
            "duration_minutes": self.duration_minutes,
            "timed_out": self.timed_out,
            "exit_code": self.exit_code,
            "status": self.status,
            "gates": dict(self.gates),
            "flaky_gates": list(self.flaky_gates),
            "all_passed": self.all_passed,
            "tokens_used": self.tokens_used,
            "cost_usd": self.cost_usd,
            "confidence": self.confidence,
            "diff_lines": self.diff_lines,
            "files_changed": self.files_changed,
        }


@dataclass(frozen=True, slots=True)
class CandidateModel:
    """The closed-form law of one candidate run (given the hidden difficulty) — for the oracle."""

    toolchain: str
    q: float  # P(on track)
    mu_ok: float
    sigma_ok: float
    mu_stuck: float
    sigma_stuck: float
    gate_pass: float  # P(all gates pass | on track, finished)
    price_per_minute: float

    def p_finish_ok(self, budget: float) -> float:
        return _phi((math.log(budget) - self.mu_ok) / self.sigma_ok)

    def p_pass(self, budget: float) -> float:
        return self.q * self.p_finish_ok(budget) * self.gate_pass

    def expected_duration(self, budget: float) -> float:
        """E[min(needed, budget)] of the on-track/stuck mixture."""
        lb = math.log(budget)
        return self.q * _emin(self.mu_ok, self.sigma_ok, budget, lb) + (1.0 - self.q) * _emin(
            self.mu_stuck, self.sigma_stuck, budget, lb
        )

    def expected_cost(self, budget: float) -> float:
        return self.price_per_minute * self.expected_duration(budget)

    def duration_cdf(self, x: float, budget: float) -> float:
        """P(min(needed, budget) ≤ x)."""
        if x >= budget:
            return 1.0
        if x <= 0:
            return 0.0
        lx = math.log(x)
        return self.q * _phi((lx - self.mu_ok) / self.sigma_ok) + (1.0 - self.q) * _phi(
            (lx - self.mu_stuck) / self.sigma_stuck
        )


def _emin(mu: float, sigma: float, budget: float, log_budget: float) -> float:
    """E[min(N, B)] for N ~ LogNormal(mu, sigma)."""
    below = math.exp(mu + 0.5 * sigma * sigma) * _phi((log_budget - mu - sigma * sigma) / sigma)
    return below + budget * (1.0 - _phi((log_budget - mu) / sigma))


@dataclass(slots=True)
class _Tool:
    bias: float
    skill: dict[str, float]
    log_speed: float
    price: float
    tpm: float
    drift: list[tuple[datetime, float, frozenset[str] | None]]


@dataclass(frozen=True, slots=True)
class IssueFeatures:
    """What the world derives from an issue's observable fields (plus its hidden difficulty)."""

    difficulty: float
    tags: tuple[str, ...]
    size: str
    risk: str


@dataclass(slots=True)
class SimWorld:
    """A profile compiled into lookup tables, so a sample costs a hash and a few float ops."""

    profile: SimProfile
    _prefix: str = ""
    _tools: dict[str, _Tool] = field(default_factory=dict)
    _size_d: dict[str, float] = field(default_factory=dict)
    _risk_d: dict[str, float] = field(default_factory=dict)
    _tag_d: dict[str, float] = field(default_factory=dict)
    _kw_d: dict[str, float] = field(default_factory=dict)
    _kw_re: re.Pattern[str] | None = None
    _log_base: dict[str, float] = field(default_factory=dict)
    _gate_fail: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    _flake: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _gate_pass: dict[str, float] = field(default_factory=dict)
    _features: dict[tuple[Any, ...], IssueFeatures] = field(default_factory=dict)
    _duration: DurationModel = field(init=False)
    _hard_fail: float = 0.5

    def __post_init__(self) -> None:
        p = self.profile
        self._prefix = f"{p.seed}|"
        for name, tc in p.toolchains.items():
            drift = [
                (_utc(d.start), d.delta, frozenset(d.domains) if d.domains is not None else None)
                for d in p.drift
                if d.toolchain == name
            ]
            self._tools[name] = _Tool(
                tc.bias, dict(tc.skill), math.log(tc.speed), tc.price_per_minute, tc.tokens_per_minute, drift
            )
        diff = p.difficulty
        self._size_d = {s: diff.size.get(s, 0.0) for s in SIZES}
        self._risk_d = {r: diff.risk.get(r, 0.0) for r in RISKS}
        self._tag_d = dict(diff.tags)
        self._kw_d = {kw.word.lower(): kw.effect for kw in p.population.keywords}
        if self._kw_d:
            alternation = "|".join(re.escape(w) for w in sorted(self._kw_d, key=len, reverse=True))
            self._kw_re = re.compile(rf"\b({alternation})\b")
        self._log_base = {s: math.log(p.duration.base_minutes[s]) for s in SIZES}
        self._duration = p.duration
        self._hard_fail = p.gates.hard_fail_prob
        gates = [getattr(p.gates, g) for g in GATE_NAMES]
        self._flake = (gates[0].flake, gates[1].flake, gates[2].flake)
        for r in RISKS:
            fails = (gates[0].fail_by_risk[r], gates[1].fail_by_risk[r], gates[2].fail_by_risk[r])
            self._gate_fail[r] = fails
            self._gate_pass[r] = math.prod((1.0 - f) * (1.0 - fl) for f, fl in zip(fails, self._flake, strict=True))

    # --- hidden difficulty ----------------------------------------------------------------

    def features(self, issue: Issue) -> IssueFeatures:
        key = (issue.id, issue.title, tuple(issue.tags), issue.dk_size, issue.dk_risk)
        hit = self._features.get(key)
        if hit is None:
            hit = self._compute_features(issue, key[2])
            if len(self._features) > 200_000:
                self._features.clear()
            self._features[key] = hit
        return hit

    def _compute_features(self, issue: Issue, tags: tuple[str, ...]) -> IssueFeatures:
        d = self.profile.difficulty.base + self._size_d[issue.dk_size] + self._risk_d[issue.dk_risk]
        uniq = tuple(dict.fromkeys(tags))
        for t in uniq:
            d += self._tag_d.get(t, 0.0)
        if self._kw_re is not None and issue.title:
            for word in set(self._kw_re.findall(issue.title.lower())):
                d += self._kw_d[word]
        sd = self.profile.difficulty.noise_sd
        if sd > 0:
            u = _uniforms(f"{self._prefix}difficulty|{issue.id}|{issue.title}")
            d += sd * _normal_pair(u[0], u[1])[0]
        return IssueFeatures(d, uniq, issue.dk_size, issue.dk_risk)

    def difficulty(self, issue: Issue) -> float:
        return self.features(issue).difficulty

    # --- per-candidate law ----------------------------------------------------------------

    def _tool(self, toolchain: str) -> _Tool:
        tool = self._tools.get(toolchain)
        if tool is None:
            raise KeyError(f"toolchain {toolchain!r} is not in sim profile {self.profile.name!r}")
        return tool

    def on_track_logit(self, feats: IssueFeatures, toolchain: str, at: datetime | None) -> float:
        tool = self._tool(toolchain)
        x = tool.bias - feats.difficulty
        skill = tool.skill
        for t in feats.tags:
            x += skill.get(t, 0.0)
        if tool.drift and at is not None:
            at = _utc(at)
            for start, delta, domains in tool.drift:
                if at >= start and (domains is None or not domains.isdisjoint(feats.tags)):
                    x += delta
        return x

    def candidate_model(self, issue: Issue, toolchain: str, at: datetime | None) -> CandidateModel:
        feats = self.features(issue)
        tool = self._tool(toolchain)
        dur = self.profile.duration
        mu = self._log_base[feats.size] + tool.log_speed + dur.difficulty_slope * feats.difficulty
        return CandidateModel(
            toolchain=toolchain,
            q=_sigmoid(self.on_track_logit(feats, toolchain, at)),
            mu_ok=mu,
            sigma_ok=dur.sigma,
            mu_stuck=mu + dur.stuck_shift,
            sigma_stuck=dur.stuck_sigma,
            gate_pass=self._gate_pass[feats.risk],
            price_per_minute=tool.price,
        )

    # --- sampling -------------------------------------------------------------------------

    def sample(
        self,
        issue: Issue,
        toolchain: str,
        attempt: int,
        budget_minutes: float,
        candidate_index: int = 0,
        at: datetime | None = None,
    ) -> CandidateOutcome:
        feats = self.features(issue)
        tool = self._tool(toolchain)
        logit = self.on_track_logit(feats, toolchain, at)
        q = _sigmoid(logit)
        raw = _unpack(_blake2b(f"{self._prefix}{issue.id}|{attempt}|{toolchain}".encode(), digest_size=64).digest())
        on_track = (raw[0] + 0.5) * _INV_2_32 < q
        # Box–Muller pairs: (duration, confidence) and (diff size, tokens).
        r1 = math.sqrt(-2.0 * math.log((raw[1] + 0.5) * _INV_2_32))
        a1 = _TWO_PI * (raw[2] + 0.5) * _INV_2_32
        r2 = math.sqrt(-2.0 * math.log((raw[3] + 0.5) * _INV_2_32))
        a2 = _TWO_PI * (raw[4] + 0.5) * _INV_2_32
        z_dur = r1 * math.cos(a1)
        dur = self._duration
        mu = self._log_base[feats.size] + tool.log_speed + dur.difficulty_slope * feats.difficulty
        if on_track:
            needed = math.exp(mu + dur.sigma * z_dur)
        else:
            needed = math.exp(mu + dur.stuck_shift + dur.stuck_sigma * z_dur)
        budget = float(budget_minutes)
        timed_out = needed > budget
        duration = budget if timed_out else needed
        flaky: tuple[str, ...] = ()
        exit_code: int | None
        if timed_out:
            gates = {"test": False, "typecheck": False, "lint": False}
            exit_code = None
        elif on_track:
            fails = self._gate_fail[feats.risk]
            flake = self._flake
            results = []
            for i in range(3):
                ug = (raw[5 + i] + 0.5) * _INV_2_32
                f = fails[i]
                if ug < f:
                    results.append(False)
                elif ug < f + (1.0 - f) * flake[i]:
                    results.append(False)
                    flaky = (*flaky, GATE_NAMES[i])
                else:
                    results.append(True)
            gates = {"test": results[0], "typecheck": results[1], "lint": results[2]}
            exit_code = 0 if results[0] and results[1] and results[2] else 1
        elif (raw[8] + 0.5) * _INV_2_32 < self._hard_fail:
            gates = {"test": False, "typecheck": False, "lint": False}
            exit_code = 2
        else:
            gates = {
                "test": False,
                "typecheck": (raw[6] + 0.5) * _INV_2_32 >= OFF_TRACK_TYPECHECK_FAIL,
                "lint": (raw[7] + 0.5) * _INV_2_32 >= OFF_TRACK_LINT_FAIL,
            }
            exit_code = 1
        if timed_out:
            confidence = 0.0
        else:
            confidence = round(
                _sigmoid(0.6 * logit + (1.0 if on_track else -1.0) + 0.7 * r1 * math.sin(a1)), 4
            )
        diff_lines = int(DIFF_BASE[feats.size] * math.exp(0.6 * r2 * math.cos(a2)))
        if exit_code == 2:
            diff_lines //= 4
        if diff_lines < 1:
            diff_lines = 1
        return CandidateOutcome(
            toolchain,
            attempt,
            candidate_index,
            budget,
            needed,
            duration,
            timed_out,
            exit_code,
            gates,
            flaky,
            exit_code == 0,
            int(tool.tpm * duration * math.exp(0.25 * r2 * math.sin(a2))),
            tool.price * duration,
            confidence,
            diff_lines,
            1 + diff_lines // 60,
        )


_WORLDS: dict[int, tuple[SimProfile, SimWorld]] = {}


def world_for(profile: SimProfile) -> SimWorld:
    """The compiled world of a profile (cached per profile object; profiles are not mutated)."""
    hit = _WORLDS.get(id(profile))
    if hit is not None and hit[0] is profile:
        return hit[1]
    world = SimWorld(profile)
    if len(_WORLDS) > 64:
        _WORLDS.clear()
    _WORLDS[id(profile)] = (profile, world)
    return world


def hidden_difficulty(profile: SimProfile, issue: Issue) -> float:
    """The issue's hidden difficulty (simulator internal: never persisted)."""
    return world_for(profile).difficulty(issue)


def sample_candidate(
    profile: SimProfile,
    issue: Issue,
    toolchain: str,
    attempt: int,
    budget_minutes: float,
    candidate_index: int = 0,
    at: datetime | None = None,
) -> CandidateOutcome:
    """Draw one candidate run; same arguments ⇒ same outcome in any process."""
    return world_for(profile).sample(issue, toolchain, attempt, budget_minutes, candidate_index, at)
