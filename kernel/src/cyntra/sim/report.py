"""How well a workspace's decisions did, measured against the simulator's oracle.

For every decision in the ledger: the utility it realised (from its outcome record), the expected
utility of the plan it applied, and the oracle's best expected utility for the same issue at the
same time. Regret = oracle − expected (expected, not realised, so luck does not count). Intervals
are percentile bootstraps over decisions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from cyntra.clock import parse_ts
from cyntra.kernel.session import KernelSession
from cyntra.sim.backend import profile_for
from cyntra.sim.oracle import oracle_table
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.ope import cluster_bootstrap_means


class Interval(BaseModel):
    mean: float
    lo: float
    hi: float
    n: int


class SliceStats(BaseModel):
    n: int
    pass_rate: float
    realised: float
    expected: float
    oracle: float
    regret: float


class DecisionEval(BaseModel):
    decision_id: str
    issue_id: str
    risk: str
    size: str
    source: str
    action: str
    passed: bool | None
    cost_usd: float | None
    realised: float | None
    expected: float
    oracle: float
    oracle_action: str
    regret: float


class SimReport(BaseModel):
    schema_version: str = "cyntra.sim_report.v1"
    decisions: int
    with_outcome: int
    pass_rate: float | None
    cost_per_pass: float | None
    realised_utility: Interval | None
    expected_utility: Interval | None
    oracle_utility: Interval | None
    regret: Interval | None
    by_risk: dict[str, SliceStats] = Field(default_factory=dict)
    by_size: dict[str, SliceStats] = Field(default_factory=dict)
    by_source: dict[str, SliceStats] = Field(default_factory=dict)


def bootstrap(values: Sequence[float | None], *, seed: int = 0, n_boot: int = 1000,
              groups: Sequence[Any] | None = None) -> Interval | None:
    """Mean with a 95% percentile bootstrap interval; ``groups`` (one key per value, e.g. the
    issue id) resamples whole groups: an issue's retries depend on its earlier outcomes."""
    keep = [i for i, v in enumerate(values) if v is not None]
    xs = np.asarray([values[i] for i in keep], dtype=float)
    if xs.size == 0:
        return None
    rng = np.random.default_rng(seed)
    if groups is not None:
        means = cluster_bootstrap_means(xs, [groups[i] for i in keep], rng=rng, n_boot=n_boot)
    else:
        idx = rng.integers(0, xs.size, size=(n_boot, xs.size))
        means = xs[idx].mean(axis=1)
    return Interval(mean=float(xs.mean()), lo=float(np.percentile(means, 2.5)),
                    hi=float(np.percentile(means, 97.5)), n=int(xs.size))


def evaluate_decisions(session: KernelSession, *, since: str | None = None,
                       decision_ids: set[str] | None = None) -> tuple[SimReport, list[DecisionEval]]:
    profile = profile_for(session.config, session.workspace.root)
    ledger = Ledger(session.workspace.decisions_dir).read(since)
    issues = session.store.load().issues
    rows: list[DecisionEval] = []
    for joined in ledger.joined():
        rec, out = joined.decision, joined.outcome
        if decision_ids is not None and rec.decision_id not in decision_ids:
            continue
        issue = issues.get(rec.issue_id)
        if issue is None or rec.job_type != "code":
            continue
        serial, spec = session.routed_lists(issue)
        table = oracle_table(profile, issue, spec, serial, at=parse_ts(rec.timestamp))
        by_label = {row[0].label(): row for row in table}
        applied = rec.applied.action.label()
        if applied not in by_label:
            continue
        best = max(table, key=lambda r: r[1])
        expected = float(by_label[applied][1])
        rows.append(DecisionEval(
            decision_id=rec.decision_id, issue_id=rec.issue_id, risk=issue.dk_risk, size=issue.dk_size,
            source=rec.applied.source, action=applied,
            passed=out.gates_passed if out else None, cost_usd=out.cost_usd if out else None,
            realised=out.utility if out else None, expected=expected, oracle=float(best[1]),
            oracle_action=best[0].label(), regret=float(best[1]) - expected,
        ))
    return summarize(rows), rows


def _slice(rows: list[DecisionEval]) -> SliceStats:
    done = [r for r in rows if r.passed is not None]
    return SliceStats(
        n=len(rows),
        pass_rate=float(np.mean([r.passed for r in done])) if done else 0.0,
        realised=float(np.mean([r.realised for r in done if r.realised is not None])) if done else 0.0,
        expected=float(np.mean([r.expected for r in rows])) if rows else 0.0,
        oracle=float(np.mean([r.oracle for r in rows])) if rows else 0.0,
        regret=float(np.mean([r.regret for r in rows])) if rows else 0.0,
    )


def summarize(rows: list[DecisionEval]) -> SimReport:
    done = [r for r in rows if r.passed is not None]
    passes = [r for r in done if r.passed]
    cost = sum(r.cost_usd or 0.0 for r in done)
    issue_ids = [r.issue_id for r in rows]  # intervals resample whole issues (retries are not independent)

    def groups(key: str) -> dict[str, SliceStats]:
        g: dict[str, list[DecisionEval]] = defaultdict(list)
        for r in rows:
            g[str(getattr(r, key))].append(r)
        return {k: _slice(v) for k, v in sorted(g.items())}

    return SimReport(
        decisions=len(rows),
        with_outcome=len(done),
        pass_rate=len(passes) / len(done) if done else None,
        cost_per_pass=cost / len(passes) if passes else None,
        realised_utility=bootstrap([r.realised for r in done], seed=1, groups=[r.issue_id for r in done]),
        expected_utility=bootstrap([r.expected for r in rows], seed=2, groups=issue_ids),
        oracle_utility=bootstrap([r.oracle for r in rows], seed=3, groups=issue_ids),
        regret=bootstrap([r.regret for r in rows], seed=4, groups=issue_ids),
        by_risk=groups("risk"),
        by_size=groups("size"),
        by_source=groups("source"),
    )
