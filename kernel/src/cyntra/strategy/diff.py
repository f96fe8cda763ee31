"""``cyntra strategy diff``: how the candidate strategy differs from the heuristic, from the ledger.

Everything is computed from ``.cyntra/decisions/*.jsonl`` joined with the issue snapshots in the
archives' manifests (``.cyntra/archives/*/manifest.json``, linked by ``planner.decision_id``),
which give each decision its risk, size, priority, tags and domain.

Methods, stated where they are used:

* agreement and confusion matrices compare the two *proposals* (before the clamp), over decisions
  where the candidate answered;
* OPE (``cyntra.strategy.ope``) estimates each strategy's mean utility; the candidate is evaluated
  as deployed (its clamped plan, or the heuristic's when it failed or fell below the confidence
  floor), both on the decisions that recorded a candidate proposal;
* priced deltas are the same doubly robust estimator applied to ``cost_usd`` and to agent-minutes
  (wall minutes × the plan's parallelism) instead of utility, times decisions per calendar day of
  the ledger; where OPE refuses (no support), so do they.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from cyntra import clock
from cyntra.errors import InputError
from cyntra.fsutil import atomic_write_text, dumps_json
from cyntra.kernel.config import load_config
from cyntra.planner.action_space import ACTION_FIELDS
from cyntra.planner.planner_input import domain_of_tags
from cyntra.strategy.ledger import JoinedDecision, Ledger
from cyntra.strategy.ope import N_BOOT, LedgerOPE, ledger_ope
from cyntra.workspace import Workspace

DIFF_SCHEMA: Literal["cyntra.strategy_diff.v1"] = "cyntra.strategy_diff.v1"
NO_CANDIDATE = "no candidate proposals recorded: run with strategy: shadow"
Format = Literal["text", "json", "md", "html"]
FORMATS: tuple[str, ...] = ("text", "json", "md", "html")
SLICE_DIMENSIONS: tuple[str, ...] = ("risk", "size", "domain", "tag")


class IssueSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    risk: str = "unknown"
    size: str = "unknown"
    priority: str = "unknown"
    tags: list[str] = Field(default_factory=list)
    domain: str = "code"

    @property
    def cell(self) -> str:
        """The coarse context cell of the OPE reward model."""
        return f"{self.risk}/{self.size}"


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decisions: int = 0
    with_outcome: int = 0
    with_candidate: int = 0
    candidate_ok: int = 0
    explored: int = 0
    with_issue_snapshot: int = 0


class AgreementSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = 0
    overall: float | None = None
    per_field: dict[str, float] = Field(default_factory=dict)


class ConfusionMatrix(BaseModel):
    """Rows: the heuristic's value; columns: the candidate's."""

    model_config = ConfigDict(extra="forbid")

    field: str
    labels: list[str]
    matrix: list[list[int]]


class SliceRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimension: str
    value: str
    decisions: int
    paired: int
    agreement: float | None
    mean_utility: float | None


class PricedQuantity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: str
    heuristic_per_day: float | None = None
    candidate_per_day: float | None = None
    delta_per_day: float | None = None
    delta_lower: float | None = None
    delta_upper: float | None = None
    reason: str | None = None


class PricedDeltas(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    days: int = 0
    decisions_per_day: float | None = None
    quantities: list[PricedQuantity] = Field(default_factory=list)
    reason: str | None = None


class ClampHit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    side: str  # heuristic | candidate | applied
    rule_id: str
    mode: str
    count: int
    fields: list[str]


class FallbackRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str
    count: int
    example: str | None = None


class LatencySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class DiffReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cyntra.strategy_diff.v1"] = DIFF_SCHEMA
    generated_at: str
    workspace: str
    since: str | None = None
    message: str | None = None
    modes: dict[str, int] = Field(default_factory=dict)
    candidate_strategies: dict[str, int] = Field(default_factory=dict)
    counts: Counts = Field(default_factory=Counts)
    agreement: AgreementSummary = Field(default_factory=AgreementSummary)
    confusion: list[ConfusionMatrix] = Field(default_factory=list)
    slices: list[SliceRow] = Field(default_factory=list)
    priced: PricedDeltas | None = None
    clamp_hits: list[ClampHit] = Field(default_factory=list)
    fallbacks: list[FallbackRow] = Field(default_factory=list)
    fallback_rate: float | None = None
    latency_ms: dict[str, LatencySummary] = Field(default_factory=dict)
    ope: LedgerOPE | None = None
    ledger_problems: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)

    # Raw latencies for the histogram (not part of the JSON artifact).
    _latencies: dict[str, list[float]] = PrivateAttr(default_factory=dict)


# -- inputs -------------------------------------------------------------------------------------


def issue_snapshots(archives_dir: Path) -> tuple[dict[str, IssueSnapshot], list[str]]:
    """decision_id → issue snapshot, scanning every archive manifest once; unreadable ones are reported."""
    out: dict[str, IssueSnapshot] = {}
    problems: list[str] = []
    if not archives_dir.is_dir():
        return out, problems
    for path in sorted(archives_dir.glob("*/manifest.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: <json>: {exc}")
            continue
        planner = data.get("planner") if isinstance(data, dict) else None
        issue = data.get("issue") if isinstance(data, dict) else None
        if not isinstance(planner, dict) or not isinstance(issue, dict):
            continue  # an archive without a decision (e.g. made before the strategy layer)
        dec = planner.get("decision_id")
        if not isinstance(dec, str) or dec in out:
            continue
        tags = [str(t) for t in issue.get("tags") or [] if isinstance(t, str | int)]
        out[dec] = IssueSnapshot(
            risk=str(issue.get("dk_risk") or "unknown"),
            size=str(issue.get("dk_size") or "unknown"),
            priority=str(issue.get("dk_priority") or "unknown"),
            tags=sorted(set(tags)),
            domain=domain_of_tags(tags),
        )
    return out, problems


def check_since(since: str | None) -> str | None:
    """``--since`` must be a date (``YYYY-MM-DD``) or an ISO timestamp."""
    if since is None:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?", since):
        raise InputError(None, f"--since {since!r} is not a date (YYYY-MM-DD) or ISO timestamp", field="since")
    try:
        date.fromisoformat(since[:10])
    except ValueError as exc:
        raise InputError(None, f"--since {since!r}: {exc}", field="since") from None
    return since


def _percentiles(values: Sequence[float]) -> LatencySummary:
    if not values:
        return LatencySummary(n=0)
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = (float(x) for x in np.percentile(arr, [50, 90, 99]))
    return LatencySummary(n=len(values), p50=p50, p90=p90, p99=p99, max=float(arr.max()))


def latencies(joined: Sequence[JoinedDecision]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"heuristic": [], "candidate": []}
    for j in joined:
        d = j.decision
        if d.heuristic.latency_ms is not None:
            out["heuristic"].append(d.heuristic.latency_ms)
        if d.candidate is not None and d.candidate.latency_ms is not None:
            out["candidate"].append(d.candidate.latency_ms)
    return out


def fallback_key(j: JoinedDecision) -> tuple[str, str | None] | None:
    """Why the candidate would not (or did not) decide this one: (reason, example), None when it would."""
    c = j.decision.candidate
    if c is None:
        return None
    if c.status != "ok":
        return c.status, c.error
    low = [v for v in c.clamp if v.field == "confidence" and v.mode == "enforce"]
    if low:
        return "low_confidence", f"confidence {low[0].requested} below {low[0].limit} ({low[0].rule_id})"
    return None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


# -- the report -----------------------------------------------------------------------------------


def _agreement(paired: Sequence[JoinedDecision]) -> tuple[AgreementSummary, list[ConfusionMatrix]]:
    if not paired:
        return AgreementSummary(), []
    per: dict[str, list[bool]] = defaultdict(list)
    pairs: dict[str, Counter[tuple[str, str]]] = {f: Counter() for f in ACTION_FIELDS}
    for j in paired:
        h, c = j.decision.heuristic.action, j.decision.candidate.action if j.decision.candidate else None
        assert h is not None and c is not None
        for f in ACTION_FIELDS:
            hv, cv = str(getattr(h, f)), str(getattr(c, f))
            per[f].append(hv == cv)
            pairs[f][(hv, cv)] += 1
        per["all"].append(h.key() == c.key())
    summary = AgreementSummary(n=len(paired), overall=float(np.mean(per["all"])),
                               per_field={f: float(np.mean(per[f])) for f in ACTION_FIELDS})
    matrices = []
    for f in ACTION_FIELDS:
        values = {v for pair in pairs[f] for v in pair}
        labels = sorted(values, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
        matrices.append(ConfusionMatrix(field=f, labels=labels,
                                        matrix=[[pairs[f][(hv, cv)] for cv in labels] for hv in labels]))
    return summary, matrices


def _slices(joined: Sequence[JoinedDecision], snaps: dict[str, IssueSnapshot]) -> list[SliceRow]:
    groups: dict[tuple[str, str], list[JoinedDecision]] = defaultdict(list)
    for j in joined:
        s = snaps.get(j.decision.decision_id, IssueSnapshot())
        groups[("risk", s.risk)].append(j)
        groups[("size", s.size)].append(j)
        groups[("domain", s.domain)].append(j)
        for t in s.tags or ["(none)"]:
            groups[("tag", t)].append(j)
    rows = []
    order = {d: i for i, d in enumerate(SLICE_DIMENSIONS)}
    for (dim, value), items in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        agree = [j.decision.agreement["all"] for j in items if j.decision.agreement is not None]
        utils = [j.outcome.utility for j in items if j.outcome is not None and j.outcome.utility is not None]
        rows.append(SliceRow(dimension=dim, value=value, decisions=len(items), paired=len(agree),
                             agreement=float(np.mean(agree)) if agree else None, mean_utility=_mean(utils)))
    return rows


def _clamp_hits(joined: Sequence[JoinedDecision]) -> list[ClampHit]:
    hits: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    for j in joined:
        d = j.decision
        sides = [("heuristic", d.heuristic.clamp), ("applied", d.clamp)]
        if d.candidate is not None:
            sides.append(("candidate", d.candidate.clamp))
        for side, violations in sides:
            for v in violations:
                key = (side, v.rule_id, v.mode)
                count, fields = hits.get(key, (0, set()))
                hits[key] = (count + 1, fields | {v.field})
    return [ClampHit(side=s, rule_id=r, mode=m, count=c, fields=sorted(f))
            for (s, r, m), (c, f) in sorted(hits.items())]


def _days(joined: Sequence[JoinedDecision]) -> int:
    stamps = sorted(j.decision.timestamp[:10] for j in joined)
    try:
        return (date.fromisoformat(stamps[-1]) - date.fromisoformat(stamps[0])).days + 1
    except ValueError:
        return len(set(stamps))


def _priced(paired_or_all: Sequence[JoinedDecision], snaps: dict[str, IssueSnapshot], n_decisions: int, days: int,
            explore_fields: Sequence[str] | None, seed: int, n_boot: int, has_candidate: bool) -> PricedDeltas:
    method = ("doubly robust OPE (cell-action reward model, logged propensities) of cost_usd and agent-minutes "
              "(wall minutes × parallelism) per decision, × decisions per calendar day")
    per_day = n_decisions / days if days > 0 else None
    if not has_candidate:
        return PricedDeltas(method=method, days=days, decisions_per_day=per_day, reason=NO_CANDIDATE)
    cells = {k: v.cell for k, v in snaps.items()}
    quantities = []
    for quantity in ("cost_usd", "agent_minutes"):
        res = ledger_ope(paired_or_all, cells, explore_fields=explore_fields, reward=quantity, seed=seed,
                         n_boot=n_boot)
        h, c = res.results["heuristic"].dr, res.results["candidate"].dr
        if per_day is None or h.estimate is None or c.estimate is None:
            reason = c.reason or h.reason or "no decisions"
            quantities.append(PricedQuantity(quantity=quantity, reason=f"not computable: {reason}"))
            continue
        quantities.append(PricedQuantity(
            quantity=quantity,
            heuristic_per_day=h.estimate * per_day,
            candidate_per_day=c.estimate * per_day,
            delta_per_day=(c.estimate - h.estimate) * per_day,
            # Conservative: the two intervals' extremes (they come from the same resamples' marginals).
            delta_lower=(c.lower - h.upper) * per_day if c.lower is not None and h.upper is not None else None,
            delta_upper=(c.upper - h.lower) * per_day if c.upper is not None and h.lower is not None else None,
        ))
    return PricedDeltas(method=method, days=days, decisions_per_day=per_day, quantities=quantities)


def build_diff(
    workspace: str | Path,
    *,
    since: str | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> DiffReport:
    """The whole diff report for a workspace's ledger (empty sections and a message when there is nothing)."""
    ws = Workspace.at(workspace)
    since = check_since(since)
    config, _ = load_config(ws.config_path)
    explore_fields = config.exploration.fields
    contents = Ledger(ws.decisions_dir).read(since)
    joined = contents.joined()
    report = DiffReport(generated_at=clock.now_iso(), workspace=str(ws.root), since=since,
                        ledger_problems=list(contents.problems))
    if not joined:
        where = f" since {since}" if since else ""
        report.message = f"no decisions recorded in {ws.decisions_dir}{where}"
        return report
    snaps, problems = issue_snapshots(ws.archives_dir)
    report.ledger_problems.extend(problems)
    with_cand = [j for j in joined if j.decision.candidate is not None]
    paired = [j for j in with_cand if j.decision.candidate is not None and j.decision.candidate.status == "ok"
              and j.decision.candidate.action is not None]
    report.modes = dict(sorted(Counter(j.decision.mode for j in joined).items()))
    report.candidate_strategies = dict(sorted(Counter(
        j.decision.candidate.strategy for j in with_cand if j.decision.candidate is not None).items()))
    report.counts = Counts(
        decisions=len(joined),
        with_outcome=sum(j.outcome is not None for j in joined),
        with_candidate=len(with_cand),
        candidate_ok=len(paired),
        explored=sum(j.decision.applied.source == "exploration" for j in joined),
        with_issue_snapshot=sum(j.decision.decision_id in snaps for j in joined),
    )
    if not paired:
        report.message = NO_CANDIDATE
    report.agreement, report.confusion = _agreement(paired)
    report.slices = _slices(joined, snaps)
    report.clamp_hits = _clamp_hits(joined)
    reasons: dict[str, list[str | None]] = defaultdict(list)
    for j in with_cand:
        key = fallback_key(j)
        if key is not None:
            reasons[key[0]].append(key[1])
    report.fallbacks = [FallbackRow(reason=r, count=len(ex), example=next((e for e in ex if e), None))
                        for r, ex in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    report.fallback_rate = sum(len(v) for v in reasons.values()) / len(with_cand) if with_cand else None
    lat = latencies(joined)
    report._latencies = lat
    report.latency_ms = {side: _percentiles(vals) for side, vals in lat.items() if side == "heuristic" or with_cand}
    cells = {k: v.cell for k, v in snaps.items()}
    has_candidate = bool(paired)
    targets = ("heuristic", "candidate") if has_candidate else ("heuristic",)
    population = with_cand if has_candidate else joined
    report.ope = ledger_ope(population, cells, targets=targets, explore_fields=explore_fields, seed=seed,
                            n_boot=n_boot)
    report.priced = _priced(population, snaps, len(joined), _days(joined), explore_fields, seed, n_boot,
                            has_candidate)
    return report


# -- rendering ------------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _ci(lo: float | None, hi: float | None) -> str:
    return "—" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def report_tables(report: DiffReport) -> list[Table]:
    """The report as plain tables: one source for the text, Markdown and HTML renderings."""
    tables: list[Table] = []
    c = report.counts
    tables.append(("Ledger", ["decisions", "with outcome", "with candidate", "candidate ok", "explored",
                              "with issue snapshot", "modes", "candidate strategies"],
                   [[str(c.decisions), str(c.with_outcome), str(c.with_candidate), str(c.candidate_ok),
                     str(c.explored), str(c.with_issue_snapshot),
                     ", ".join(f"{k}={v}" for k, v in report.modes.items()) or "—",
                     ", ".join(f"{k}={v}" for k, v in report.candidate_strategies.items()) or "—"]]))
    if report.agreement.n:
        a = report.agreement
        tables.append(("Agreement (proposals before the clamp)", ["field", "agreement"],
                       [["all", _pct(a.overall)]] + [[f, _pct(v)] for f, v in a.per_field.items()]))
        for cm in report.confusion:
            tables.append((f"Confusion: {cm.field} (rows heuristic, columns candidate)", ["heuristic \\ candidate",
                                                                                            *cm.labels],
                           [[lab, *(str(x) for x in row)] for lab, row in zip(cm.labels, cm.matrix, strict=True)]))
    if report.ope is not None:
        o = report.ope
        rows = [["logging (on-policy)", "mean", _f(o.logging.estimate), _ci(o.logging.lower, o.logging.upper),
                 "—", "—", o.logging.reason or ""]]
        for name, res in o.results.items():
            d = res.diagnostics
            for est in (res.ips, res.snips, res.dr):
                rows.append([name, est.method, _f(est.estimate), _ci(est.lower, est.upper),
                             f"{d.ess:.1f}", f"{d.matches} / {_pct(d.support_fraction)}", est.reason or ""])
        tables.append((f"OPE of mean utility — {o.population} (n={o.n})",
                       ["strategy", "estimator", "estimate", "95% CI", "ESS", "matches / support", "refused"], rows))
    if report.priced is not None:
        p = report.priced
        rows = [[q.quantity, _f(q.heuristic_per_day, 2), _f(q.candidate_per_day, 2), _f(q.delta_per_day, 2),
                 _ci(q.delta_lower, q.delta_upper), q.reason or ""] for q in p.quantities]
        if not rows:
            rows = [["—", "—", "—", "—", "—", p.reason or ""]]
        tables.append((f"Priced deltas per day ({_f(p.decisions_per_day, 1)} decisions/day over {p.days} days; "
                       f"{p.method})", ["quantity", "heuristic/day", "candidate/day", "delta/day", "delta range",
                                        "note"], rows))
    if report.slices:
        tables.append(("Slices", ["dimension", "value", "decisions", "paired", "agreement", "mean utility"],
                       [[s.dimension, s.value, str(s.decisions), str(s.paired), _pct(s.agreement),
                         _f(s.mean_utility)] for s in report.slices]))
    if report.clamp_hits:
        tables.append(("Clamp hits per rule", ["side", "rule", "mode", "count", "fields"],
                       [[h.side, h.rule_id, h.mode, str(h.count), ", ".join(h.fields)] for h in report.clamp_hits]))
    if report.counts.with_candidate:
        rows = [[f.reason, str(f.count), (f.example or "")[:100]] for f in report.fallbacks] or [["none", "0", ""]]
        tables.append((f"Candidate fallbacks and failures (rate {_pct(report.fallback_rate)})",
                       ["reason", "count", "example"], rows))
    if report.latency_ms:
        tables.append(("Latency (ms)", ["side", "n", "p50", "p90", "p99", "max"],
                       [[side, str(s.n), _f(s.p50), _f(s.p90), _f(s.p99), _f(s.max)]
                        for side, s in report.latency_ms.items()]))
    return tables


def _header(report: DiffReport) -> list[str]:
    lines = [f"Strategy diff — {report.workspace}" + (f" since {report.since}" if report.since else ""),
             f"generated {report.generated_at}"]
    if report.message:
        lines.append(report.message)
    lines.extend(f"ledger problem: {p}" for p in report.ledger_problems[:20])
    return lines


def render_text(report: DiffReport, width: int = 140) -> str:
    """Rich tables, exported as plain text."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    for line in _header(report):
        console.print(line, highlight=False, markup=False)
    for title, header, rows in report_tables(report):
        t = RichTable(title=title, title_justify="left")
        for h in header:
            t.add_column(h, overflow="fold")
        for row in rows:
            t.add_row(*(Text(c) for c in row))
        console.print(t)
    return console.export_text()


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: DiffReport) -> str:
    out = [f"# {_md_escape(_header(report)[0])}", "", *(f"{_md_escape(x)}  " for x in _header(report)[1:]), ""]
    for title, header, rows in report_tables(report):
        out += [f"## {_md_escape(title)}", "", "| " + " | ".join(_md_escape(h) for h in header) + " |",
                "|" + "---|" * len(header)]
        out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
        out.append("")
    for plot in report.plots:
        out += [f"![{plot}]({plot})", ""]
    return "\n".join(out)


def render_html(report: DiffReport) -> str:
    e = html.escape
    head = _header(report)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(head[0])}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}</style>",
             "</head><body>", f"<h1>{e(head[0])}</h1>", *(f"<p>{e(x)}</p>" for x in head[1:])]
    for title, header, rows in report_tables(report):
        parts += [f"<h2>{e(title)}</h2>", "<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [f"<p><img src=\"{e(p)}\" alt=\"{e(p)}\"></p>" for p in report.plots]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: DiffReport, fmt: str, out_dir: Path) -> list[Path]:
    """Write ``diff.<ext>`` (and, for md/html, the PNG plots) into ``out_dir``; returns the files."""
    if fmt not in FORMATS:
        raise InputError(None, f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", field="format")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt in ("md", "html"):
        from cyntra.strategy.report_plots import write_plots

        plots = write_plots(report, out_dir)
        report.plots = [p.name for p in plots]
        written.extend(plots)
    if fmt == "json":
        path, text = out_dir / "diff.json", dumps_json(report.model_dump(mode="json"))
    elif fmt == "md":
        path, text = out_dir / "diff.md", render_markdown(report)
    elif fmt == "html":
        path, text = out_dir / "diff.html", render_html(report)
    else:
        path, text = out_dir / "diff.txt", render_text(report)
    atomic_write_text(path, text)
    return [path, *written]


def report_json(report: DiffReport) -> dict[str, Any]:
    data: dict[str, Any] = report.model_dump(mode="json")
    return data
