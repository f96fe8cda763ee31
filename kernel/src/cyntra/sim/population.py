"""The issue generator: a reproducible population of ``.beads`` rows and a DAG of ``blocks`` deps.

Rows carry only observable fields (title, description, tags, priority, risk, size, sometimes a
tool hint, timestamps). The hidden difficulty is not written: ``cyntra.sim.world`` recomputes it
from the profile seed and these fields, so nothing downstream can read simulator internals.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from cyntra.clock import isoformat_z
from cyntra.sim.profile import SimProfile

ESTIMATED_TOKENS: dict[str, int] = {"XS": 20000, "S": 35000, "M": 50000, "L": 80000, "XL": 120000}
GENERIC_VERBS: tuple[str, ...] = ("Add", "Update", "Improve", "Implement", "Extend", "Clean up")
WORK_START_HOUR = 8.0
WORK_HOURS = 12.0


def _rng(profile: SimProfile, seed: int, purpose: str) -> random.Random:
    digest = hashlib.blake2b(f"{profile.seed}|{seed}|{purpose}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _choice(rng: random.Random, mix: Mapping[str, float]) -> str:
    keys = list(mix)
    return rng.choices(keys, weights=[mix[k] for k in keys], k=1)[0]


def _arrivals(profile: SimProfile, n: int, rng: random.Random) -> list[float]:
    """Offsets in days from ``arrival.start``: weekday-weighted days, working-hours times, sorted."""
    arr = profile.population.arrival
    span = arr.span_days if arr.span_days is not None else n / arr.rate_per_day
    days = max(1, math.ceil(span))
    start_wd = arr.start.weekday()
    weights = [arr.weekday_weights[(start_wd + d) % 7] for d in range(days)]
    if not any(w > 0 for w in weights):
        weights = [1.0] * days
    picks = rng.choices(range(days), weights=weights, k=n)
    out = []
    for d in picks:
        frac = (WORK_START_HOUR + WORK_HOURS * rng.random()) / 24.0
        out.append(min(d + frac, span) if span >= 1 else span * rng.random())
    out.sort()
    return out


def _keyword(profile: SimProfile, domain: str, rng: random.Random) -> tuple[str, str] | None:
    """At most one keyword per issue: (word, template)."""
    u = rng.random()
    acc = 0.0
    eligible = [k for k in profile.population.keywords if k.domains is None or domain in k.domains]
    total = sum(k.rate for k in eligible)
    scale = 1.0 / total if total > 1.0 else 1.0
    for k in eligible:
        acc += k.rate * scale
        if u < acc:
            return k.word, k.template
    return None


def generate_issues(
    profile: SimProfile, n: int, seed: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``n`` issue rows (ids "1".."n" in arrival order) and ``blocks`` deps from earlier to later."""
    if n < 0:
        raise ValueError("n must be >= 0")
    s = profile.seed if seed is None else seed
    pop = profile.population
    rng = _rng(profile, s, "issues")
    offsets = _arrivals(profile, n, _rng(profile, s, "arrival"))
    start = pop.arrival.start
    domains = {k: v.weight for k, v in pop.domains.items()}
    rows: list[dict[str, Any]] = []
    for i in range(n):
        domain = _choice(rng, domains)
        dom = pop.domains[domain]
        priority = _choice(rng, pop.priority)
        risk = _choice(rng, dom.risk or pop.risk)
        size = _choice(rng, dom.size or pop.size)
        thing = rng.choice(dom.things)
        kw = _keyword(profile, domain, rng)
        if kw is not None:
            title = kw[1].format(thing=thing)
        else:
            title = f"{rng.choice(GENERIC_VERBS)} {thing}"
        tags = [domain]
        for tag, rate in pop.extra_tags.items():
            if rng.random() < rate and tag not in tags:
                tags.append(tag)
        hint = None
        if pop.tool_hint_mix and rng.random() < pop.tool_hint_rate:
            hint = _choice(rng, pop.tool_hint_mix)
        ts = isoformat_z(start + timedelta(days=offsets[i]))
        row: dict[str, Any] = {
            "id": str(i + 1),
            "title": title,
            "status": "open",
            "created": ts,
            "updated": ts,
            "description": f"{title}. Area: {domain}; component: {thing}.",
            "tags": tags,
            "dk_priority": priority,
            "dk_risk": risk,
            "dk_size": size,
            "dk_estimated_tokens": ESTIMATED_TOKENS[size],
        }
        if hint is not None:
            row["dk_tool_hint"] = hint
        rows.append(row)
    return rows, _deps(profile, n, _rng(profile, s, "deps"))


def _deps(profile: SimProfile, n: int, rng: random.Random) -> list[dict[str, str]]:
    """Each issue is blocked, with probability ``density``, by 1..max_blockers recent earlier ones."""
    model = profile.population.dependencies
    out: list[dict[str, str]] = []
    for i in range(1, n):
        if rng.random() >= model.density:
            continue
        pool = list(range(max(0, i - model.window), i))
        k = min(len(pool), rng.randint(1, model.max_blockers))
        for j in sorted(rng.sample(pool, k)):
            out.append({"from": str(j + 1), "to": str(i + 1), "type": "blocks"})
    return out


def domain_of(tags: Sequence[str], profile: SimProfile) -> str | None:
    """The issue's domain: its first tag that names a profile domain."""
    for t in tags:
        if t in profile.population.domains:
            return t
    return None
