"""``cyntra sim benchmark``: the whole learn-from-outcomes pipeline, end to end, against the oracle.

On a fresh sim workspace (one population of ``issues + eval_issues`` arrivals):

1. **history** — the first ``issues`` arrivals run under the heuristic with exploration
   (``exploration.epsilon``), so the ledger carries propensities;
2. **best-of-K** — :mod:`cyntra.planner.best_of_k` replays history decisions with K plans each
   through the kernel (by default every decision, retries included, with every plan the clamp
   allows: labelling retries is what taught urm-outcome to give up on hopeless issues);
3. **dataset** — one leakage-safe dataset (executed labels, best-of-K rewards attached);
4. **training** — ``urm-imitation`` (heads imitate the executed plans) and ``urm-outcome``
   (objective ``factored`` by default: pass probability and spend per plan, Q composed with the
   workspace's objective; ``value``: Q regressed on utilities), which decides argmax Q among
   clamp-allowed plans;
5. **OPE** — IPS/SNIPS/DR estimates (:mod:`cyntra.strategy.ope`) of each strategy's utility from
   the history ledger, made BEFORE any held-out issue runs; a learned strategy's choices are
   cross-fitted (``ope_folds`` folds by issue, :mod:`planner_model.crossfit`): each history
   decision is scored by a model of the same recipe trained without that issue, since a model
   scored on its own training decisions looks better than it is;
6. **shadow** — the next ``shadow_issues`` arrivals run as an operator would before promoting:
   ``strategy: shadow`` with urm-outcome beside the heuristic and exploration directed at the
   candidate's plan (``exploration.candidate_share``). The heuristic still decides (1 − ε), and
   OPE of both from this recent, candidate-supported log is the estimate the held-out run is
   checked against: the history's uniform exploration over dozens of plans leaves the
   candidate an effective sample of a few dozen decisions, and a world that drifts makes an
   old log describe the past (docs/beat-the-heuristic.md §4d);
7. **held-out evaluation** — the later ``eval_issues`` arrivals (new issues after the history
   window; dependencies on history issues dropped) run under each strategy in its own copy of
   the workspace (same history, same seeds: a paired comparison), without exploration, and are
   scored with :func:`cyntra.sim.report.evaluate_decisions` against the oracle.

Nothing the strategies learn from reads the simulator: datasets come from archives and the
ledger only; the oracle is used for scoring alone.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cyntra.clock import parse_ts
from cyntra.errors import CyntraError
from cyntra.fsutil import atomic_write_json, atomic_write_text
from cyntra.sim.report import DecisionEval, Interval, bootstrap
from cyntra.workspace import Workspace

STRATEGIES = ("heuristic", "urm-imitation", "urm-outcome")
ROWS = (*STRATEGIES, "oracle")


class StrategyRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str
    decisions: int
    issues: int
    pass_rate: Interval | None
    cost_per_pass: Interval | None
    utility: Interval | None  # realised (oracle row: expected)
    expected_utility: Interval | None
    regret: Interval | None
    fallbacks: int = 0
    wall_seconds: float = 0.0


class SliceRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimension: str
    value: str
    strategy: str
    n: int
    regret: Interval | None
    utility: Interval | None


class OPERow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str = "history"  # history: the heuristic with uniform exploration; shadow: the later shadow phase
    # decisions: every logged decision vs every held-out decision; first: each issue's first decision
    # on both sides (the same estimand: arrivals do not depend on the strategy, retries do)
    population: str = "decisions"
    strategy: str
    method: str
    estimate: float | None
    lower: float | None
    upper: float | None
    reason: str | None
    ess: float | None
    matches: int | None
    realised_held_out: Interval | None
    covered: bool | None  # the realised held-out mean lies inside the OPE interval
    # estimate − realised, with a 95% interval carrying both samples' error (normal approximation
    # from the two intervals: they come from different issues); agrees: it contains 0
    difference: Interval | None = None
    agrees: bool | None = None


class BenchmarkResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: str = "cyntra.sim_benchmark.v1"
    profile: str
    seed: int
    history_issues: int
    shadow_issues: int = 0
    candidate_share: float = 0.0
    eval_issues: int
    k: int
    epsilon: float
    quick: bool
    best_of_k: dict[str, Any]
    dataset: dict[str, Any]
    training: dict[str, Any]
    rows: list[StrategyRow]
    slices: list[SliceRow]
    ope: list[OPERow]
    ope_folds: int = 0  # ≥ 2: the learned strategies' OPE choices are cross-fitted on that many folds
    paired_regret_vs_heuristic: dict[str, Interval | None] = Field(default_factory=dict)
    target: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)


# -- workspace preparation ----------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _fresh_ids(rows: list[dict[str, Any]], deps: list[dict[str, Any]], taken: set[str]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The held-out rows and their deps with every id the history already uses replaced by a new one.

    ``sim init`` numbers all N + M issues up front, and the history run then files its escalation
    issues under the next free numbers -- the held-out issues' ids. Appended as they are, the held-out
    rows would shadow those escalations as duplicate ids.
    """
    numeric = [int(i) for i in taken | {str(r["id"]) for r in rows} if i.isascii() and i.isdigit()]
    top = max(numeric, default=0)
    renamed: dict[str, str] = {}
    for r in rows:
        rid = str(r["id"])
        if rid in taken:
            top += 1
            renamed[rid] = str(top)
    new_rows = [{**r, "id": renamed.get(str(r["id"]), r["id"])} for r in rows]
    new_deps = [{**d, "from": renamed.get(str(d["from"]), d["from"]), "to": renamed.get(str(d["to"]), d["to"])}
                for d in deps]
    return new_rows, new_deps


def _set_config(config_text: str, blocks: dict[str, str]) -> str:
    """Replace top-level ``key:`` sections of the generated config (comments elsewhere kept)."""
    lines = config_text.splitlines()
    out: list[str] = []
    skip = False
    for line in lines:
        m = re.match(r"^([A-Za-z_]+):", line)
        if m:
            skip = m.group(1) in blocks
        elif skip and line and not line.startswith((" ", "#")):
            skip = False
        if not skip:
            out.append(line)
    for text in blocks.values():
        out.append(text.rstrip())
    return "\n".join(out) + "\n"


def _copy_workspace(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("best_of_k", "workcells", "kernel.lock"))


# -- evaluation helpers -------------------------------------------------------------------------


def _ratio_interval(num: np.ndarray, den: np.ndarray, seed: int, groups: Sequence[str], n_boot: int = 1000
                    ) -> Interval | None:
    """Σnum / Σden with an interval from resampling whole groups (issues)."""
    if num.size == 0 or den.sum() <= 0:
        return None
    from cyntra.strategy.ope import cluster_ids

    cl = cluster_ids(groups)
    g = int(cl.max()) + 1
    num_g, den_g = np.bincount(cl, weights=num, minlength=g), np.bincount(cl, weights=den, minlength=g)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, size=(n_boot, g))
    d = den_g[idx].sum(axis=1)
    ratios = np.where(d > 0, num_g[idx].sum(axis=1) / np.maximum(d, 1e-12), np.nan)
    ratios = ratios[np.isfinite(ratios)]
    return Interval(mean=float(num.sum() / den.sum()), lo=float(np.percentile(ratios, 2.5)),
                    hi=float(np.percentile(ratios, 97.5)), n=int(num.size))


def _strategy_row(name: str, rows: list[DecisionEval], fallbacks: int, wall: float) -> StrategyRow:
    """One strategy's held-out figures; intervals resample whole issues (an issue's retries
    depend on its earlier outcomes, so its decisions are not independent draws)."""
    done = [r for r in rows if r.passed is not None]
    passed = np.asarray([1.0 if r.passed else 0.0 for r in done])
    cost = np.asarray([r.cost_usd or 0.0 for r in done])
    done_issues, all_issues = [r.issue_id for r in done], [r.issue_id for r in rows]
    return StrategyRow(
        strategy=name, decisions=len(rows), issues=len({r.issue_id for r in rows}),
        pass_rate=bootstrap(passed.tolist(), seed=11, groups=done_issues) if done else None,
        cost_per_pass=_ratio_interval(cost, passed, seed=12, groups=done_issues),
        utility=bootstrap([r.realised for r in done], seed=13, groups=done_issues),
        expected_utility=bootstrap([r.expected for r in rows], seed=14, groups=all_issues),
        regret=bootstrap([r.regret for r in rows], seed=15, groups=all_issues),
        fallbacks=fallbacks, wall_seconds=round(wall, 3),
    )


def _slices(name: str, rows: list[DecisionEval]) -> list[SliceRow]:
    out: list[SliceRow] = []
    for dim in ("risk", "size"):
        groups: dict[str, list[DecisionEval]] = defaultdict(list)
        for r in rows:
            groups[str(getattr(r, dim))].append(r)
        for value, g in sorted(groups.items()):
            out.append(SliceRow(dimension=dim, value=value, strategy=name, n=len(g),
                                regret=bootstrap([r.regret for r in g], seed=21, groups=[r.issue_id for r in g]),
                                utility=bootstrap([r.realised for r in g], seed=22,
                                                  groups=[r.issue_id for r in g])))
    return out


def _oracle_row(session: Any, eval_ids: set[str], first_time: dict[str, str]) -> StrategyRow:
    """The oracle's best plan per held-out issue (at the issue's first decision time): expected values."""
    from cyntra.sim.backend import profile_for
    from cyntra.sim.oracle import oracle_table

    profile = profile_for(session.config, session.workspace.root)
    issues = session.store.load().issues
    eu, pp, ec = [], [], []
    for iid in sorted(eval_ids):
        issue = issues.get(iid)
        if issue is None or iid not in first_time:
            continue
        serial, spec = session.routed_lists(issue)
        table = oracle_table(profile, issue, spec, serial, at=parse_ts(first_time[iid]))
        best = max(table, key=lambda r: r[1])
        eu.append(float(best[1]))
        pp.append(float(best[2]))
        ec.append(float(best[3]))
    u = bootstrap(eu, seed=31)
    return StrategyRow(strategy="oracle", decisions=len(eu), issues=len(eu), pass_rate=bootstrap(pp, seed=32),
                       cost_per_pass=_ratio_interval(np.asarray(ec), np.asarray(pp), seed=33,
                                                     groups=[str(i) for i in range(len(ec))]), utility=u,
                       expected_utility=u, regret=Interval(mean=0.0, lo=0.0, hi=0.0, n=len(eu)))


def _paired(base: list[DecisionEval], other: list[DecisionEval]) -> Interval | None:
    """Mean over issues of (other's − heuristic's) first-decision regret."""
    def first(rows: list[DecisionEval]) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in rows:
            out.setdefault(r.issue_id, r.regret)
        return out

    a, b = first(base), first(other)
    common = sorted(set(a) & set(b))
    return bootstrap([b[i] - a[i] for i in common], seed=41)


# -- OPE from the history ledger --------------------------------------------------------------


def _model_choices(ckpt: Path, data_dir: Path, allowed_of: Callable[[int, int], list[str] | None],
                   space_labels: list[str], splits: Sequence[str] = ("train", "val", "test")) -> dict[tuple[int, int], str]:
    """(issue_key, time_ms) → the plan a checkpoint picks for the rows of ``splits`` (allowed plans only)."""
    import torch

    from planner_model.checkpoint import load_checkpoint
    from planner_model.data import load_dataset_info, load_split
    from planner_model.decode import factored_q, joint_log_probs

    loaded = load_checkpoint(ckpt, expected_actions=space_labels, device="cpu")
    tc = loaded.meta.get("train_config") or {}
    decision = str(tc.get("decision", "imitation"))
    info = load_dataset_info(data_dir)
    from planner_model.data import action_table

    table = action_table(info)
    out: dict[tuple[int, int], str] = {}
    for split in splits:
        sp = load_split(info, split)
        if len(sp) == 0:
            continue
        with torch.inference_mode():
            logits, values = loaded.model(torch.from_numpy(np.asarray(sp["inputs"], dtype=np.int64)))
        heads = [logits[f].float().numpy() for f in info.heads]
        keys = np.load(data_dir / f"{split}__issue_key.npy")
        times = np.load(data_dir / f"{split}__time.npy")
        allowed = np.ones((len(sp), len(info.actions)), dtype=bool)
        for i in range(len(sp)):
            labels = allowed_of(int(keys[i]), int(times[i]))
            if labels is not None:
                allowed[i] = [a in set(labels) for a in info.actions]
        if decision == "factored" and values is not None:
            extra = tc.get("extra") or {}
            q_all = factored_q(values.float().numpy(), np.asarray(sp["pass_value"]), np.asarray(sp["fail_penalty"]),
                               extra.get("spend_norm") or [0.0, 1.0])
            best = np.where(allowed, q_all, -np.inf).argmax(axis=1)
        elif decision == "value" and values is not None:
            q = np.where(allowed, values.float().numpy(), -np.inf)
            best = q.argmax(axis=1)
        else:
            best = joint_log_probs(heads, table, float(loaded.temperature), allowed).argmax(axis=1)
        for i in range(len(sp)):
            out[(int(keys[i]), int(times[i]))] = info.actions[int(best[i])]
    return out


def _ope(session: Any, data_dir: Path, ckpts: dict[str, Path | list[tuple[Path, Path]]], seed: int) -> dict[str, Any]:
    """OPE results per strategy from the history ledger (None where the module is absent).

    ``ckpts`` maps a strategy to its checkpoint (choices on every history row), or to cross-fitted
    ``(fold checkpoint, fold dataset)`` pairs (each fold's choices on its held-out rows only).
    """
    try:
        from cyntra.strategy import ope
    except ImportError:
        return {}
    from cyntra.planner.action_space import ActionSpace
    from cyntra.planner.run_summary import epoch_us
    from cyntra.strategy.ledger import Ledger
    from planner_model.dataset_format import issue_key

    space = ActionSpace()
    labels = [a.label() for a in space.actions]
    index = {lab: i for i, lab in enumerate(labels)}
    joined = [j for j in Ledger(session.workspace.decisions_dir).read().joined()
              if j.outcome is not None and j.outcome.utility is not None and j.decision.job_type == "code"]
    issues = session.store.load().issues
    allowed_cache: dict[str, list[str]] = {}

    def allowed(issue_id: str) -> list[str] | None:
        if issue_id not in allowed_cache:
            issue = issues.get(issue_id)
            if issue is None:
                return None
            allowed_cache[issue_id] = [a.label() for a in session.clamp.allowed(issue)]
        return allowed_cache[issue_id]

    by_key = {issue_key(i): i for i in issues}
    def allowed_of(k: int, _t: int) -> list[str] | None:
        return allowed(by_key[k]) if k in by_key else None

    choices: dict[str, dict[tuple[int, int], str]] = {}
    for name, ref in ckpts.items():
        if isinstance(ref, Path):
            choices[name] = _model_choices(ref, data_dir, allowed_of, labels)
        else:
            choices[name] = {}
            for fold_ckpt, fold_data in ref:
                choices[name].update(_model_choices(fold_ckpt, fold_data, allowed_of, labels, splits=("test",)))
    rows: list[Any] = []
    targets: dict[str, list[int]] = {name: [] for name in ("heuristic", *ckpts)}
    for j in joined:
        rec = j.decision
        key = (issue_key(rec.issue_id), epoch_us(rec.timestamp) // 1000)
        heur = ope.target_label(rec, "heuristic")
        picks = {n: c.get(key) for n, c in choices.items()}
        if heur is None or any(p is None for p in picks.values()):
            continue
        rows.append(j)
        targets["heuristic"].append(index[heur])
        for n, p in picks.items():
            targets[n].append(index[str(p)])
    if not rows:
        return {}
    rewards = np.asarray([j.outcome.utility for j in rows if j.outcome is not None], dtype=np.float64)
    logged = np.asarray([index[j.decision.applied.action.label()] for j in rows], dtype=np.int64)
    props = np.asarray([j.decision.propensity for j in rows], dtype=np.float64)
    logging = np.asarray([[ope.logging_probability(j.decision, lab) for lab in labels] for j in rows])
    cell_names: dict[str, int] = {}
    cells = []
    for j in rows:
        issue = issues.get(j.decision.issue_id)
        name = _cell(issue)
        cells.append(cell_names.setdefault(name, len(cell_names)))
    out: dict[str, Any] = {}
    for name, tgt in targets.items():
        out[name] = ope.evaluate(rewards, logged, props, np.asarray(tgt, dtype=np.int64), n_actions=len(labels),
                                 logging=logging, contexts=np.asarray(cells), target_name=name, seed=seed,
                                 groups=[j.decision.issue_id for j in rows])
    return out


def _cell(issue: Any) -> str:
    """The OPE reward model's context cell: risk/size."""
    return f"{issue.dk_risk}/{issue.dk_size}" if issue is not None else "unknown"


def _shadow_ope(session: Any, before: set[str], seed: int, *, first_of: set[str] | None = None) -> dict[str, Any]:
    """OPE of the heuristic and the candidate (urm-outcome) from the shadow phase's decisions: the
    ledger's own targets (:func:`cyntra.strategy.ope.ledger_ope`), cells as in :func:`_ope`.

    ``first_of``: only the first decision of each of these issues (the shadow phase's arrivals)."""
    from cyntra.strategy import ope

    joined = [j for j in _ledger_joined(session.workspace.root)
              if j.decision.decision_id not in before and j.decision.job_type == "code"]
    if first_of is not None:
        joined = list(_first_decisions(joined, first_of).values())
    issues = session.store.load().issues
    cell_of = {j.decision.decision_id: _cell(issues.get(j.decision.issue_id)) for j in joined}
    res = ope.ledger_ope(joined, cell_of, seed=seed)
    return {"heuristic": res.results["heuristic"], "urm-outcome": res.results["candidate"]}


def _first_decisions(joined: list[Any], issue_ids: set[str]) -> dict[str, Any]:
    """Each listed issue's earliest decision (by timestamp, then ledger order)."""
    first: dict[str, Any] = {}
    for j in sorted(joined, key=lambda j: j.decision.timestamp):  # stable: ledger order breaks ties
        if j.decision.issue_id in issue_ids:
            first.setdefault(j.decision.issue_id, j)
    return first


# -- the pipeline -------------------------------------------------------------------------------


def run_benchmark(
    out: str | Path,
    *,
    profile: str = "default",
    n_issues: int = 600,
    eval_issues: int | None = None,
    shadow_issues: int | None = None,
    candidate_share: float = 0.75,
    seed: int = 0,
    k: int = 20,
    epsilon: float = 0.2,
    bok_issues: int | None = None,
    bok_per_issue: int | None = None,
    epochs: int | None = None,
    quick: bool = False,
    model: dict[str, Any] | None = None,
    outcome_objective: str = "factored",
    ope_folds: int = 3,
    train_seed: int | None = None,
    outcome_value: str = "linear",
    echo: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Run the pipeline in ``out`` (history/, eval/<strategy>/, data/, ckpt/) and write the reports."""
    from cyntra.kernel.runner import run_kernel
    from cyntra.kernel.session import KernelSession
    from cyntra.planner.best_of_k import collect_best_of_k
    from cyntra.sim.cli import init_workspace
    from cyntra.sim.report import evaluate_decisions
    from planner_model.config import TrainConfig
    from planner_model.dataset import build_dataset
    from planner_model.train import train

    say = echo or (lambda _m: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    n_eval = eval_issues if eval_issues is not None else max(20, n_issues // 2)
    n_shadow = shadow_issues if shadow_issues is not None else n_eval
    n_bok = bok_issues if bok_issues is not None else n_issues
    n_epochs = epochs if epochs is not None else (6 if quick else 30)
    overrides = dict(model or {"hidden": 64, "n_heads": 2, "layers": 1, "loops": 2, "grad_loops": 1})

    # 1. one population; the first n_issues arrivals are the history, the rest held out.
    t = time.perf_counter()
    hist = root / "history"
    if hist.exists():
        shutil.rmtree(hist)
    from cyntra.sim.profile import bundled_profiles

    bundled = bundled_profiles()
    # A bundled name other than "default" is written as its file: the sim backend reads any other
    # ``sim.profile`` value as a path.
    ref = str(bundled[profile]) if profile in bundled and profile != "default" else profile
    init_workspace(hist, n_issues=n_issues + n_shadow + n_eval, seed=seed, profile_ref=ref)
    ws = Workspace.at(hist)
    rows = sorted(_read_jsonl(ws.issues_path), key=lambda r: (str(r.get("created") or ""), str(r["id"])))
    deps = _read_jsonl(ws.deps_path)
    hist_rows, shadow_rows, eval_rows = rows[:n_issues], rows[n_issues:n_issues + n_shadow], rows[n_issues + n_shadow:]
    hist_ids, eval_ids = {str(r["id"]) for r in hist_rows}, {str(r["id"]) for r in eval_rows}
    shadow_ids = {str(r["id"]) for r in shadow_rows}
    _write_jsonl(ws.issues_path, hist_rows)
    _write_jsonl(ws.deps_path, [d for d in deps if str(d["from"]) in hist_ids and str(d["to"]) in hist_ids])
    shadow_deps = [d for d in deps if str(d["from"]) in shadow_ids and str(d["to"]) in shadow_ids]
    eval_deps = [d for d in deps if str(d["from"]) in eval_ids and str(d["to"]) in eval_ids]
    template = ws.config_path.read_text(encoding="utf-8")
    atomic_write_text(ws.config_path, _set_config(template, {
        "exploration": f"exploration:\n  epsilon: {epsilon}\n  seed: {seed}\n"}))
    say(f"history: {len(hist_rows)} issues under the heuristic with epsilon={epsilon}")
    run_kernel(KernelSession.open(hist), once=False, until_idle=True)
    timings["history"] = time.perf_counter() - t

    # 2. best-of-K on a sample of history decisions.
    t = time.perf_counter()
    bok = collect_best_of_k(hist, k=k, n_issues=n_bok, seed=seed, per_issue=bok_per_issue)
    say(f"best-of-{k}: {bok.decisions_labelled} decisions, {bok.plans_run} plans, {bok.derived_rewards} derived rewards")
    timings["best_of_k"] = time.perf_counter() - t

    # 3. dataset (executed labels + best-of-K rewards).
    t = time.perf_counter()
    data = root / "data"
    ds = build_dataset(hist, data, labels="executed", attach_best_of_k=True, quiet=True)
    timings["dataset"] = time.perf_counter() - t

    # 4. training.
    t = time.perf_counter()
    ckpts = {"urm-imitation": root / "ckpt" / "imitation", "urm-outcome": root / "ckpt" / "outcome"}
    training: dict[str, Any] = {}
    objectives = {"urm-imitation": "imitation", "urm-outcome": outcome_objective}

    def recipe(objective: str) -> TrainConfig:
        return TrainConfig(epochs=n_epochs, batch_size=64, lr=3e-3, seed=seed if train_seed is None else train_seed,
                           quiet=True, device="cpu",
                           num_threads=1, extra={"objective": objective,
                                                 **({"value_model": outcome_value} if objective == "factored" else {})})

    for name, objective in objectives.items():
        t1 = time.perf_counter()
        res = train(data, ckpts[name], recipe(objective), overrides)
        training[name] = {"objective": objective, "train_seed": seed if train_seed is None else train_seed,
                          "value_model": recipe(objective).extra.get("value_model", "encoder"),
                          "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                          "best": res.best_metrics, "seconds": round(time.perf_counter() - t1, 2)}
    timings["training"] = time.perf_counter() - t
    say(f"trained {', '.join(training)} ({n_epochs} epochs) in {timings['training']:.1f}s")

    # 5. OPE from the history ledger, before any held-out issue runs (learned strategies cross-fitted).
    t = time.perf_counter()
    ope_refs: dict[str, Path | list[tuple[Path, Path]]] = dict(ckpts)
    if ope_folds >= 2:
        from planner_model.crossfit import write_folds

        folds = write_folds(data, root / "crossfit" / "data", ope_folds)
        for name, objective in objectives.items():
            pairs = []
            for f, fold_data in enumerate(folds):
                fold_ckpt = root / "crossfit" / "ckpt" / f"{name}-fold{f}"
                train(fold_data, fold_ckpt, recipe(objective), overrides)
                pairs.append((fold_ckpt, fold_data))
            ope_refs[name] = pairs
        say(f"cross-fitted {', '.join(objectives)} on {ope_folds} folds for OPE")
    hsession = KernelSession.open(hist)
    ope_results = _ope(hsession, data, ope_refs, seed)
    timings["ope"] = time.perf_counter() - t

    # 6. shadow: urm-outcome beside the heuristic on the next arrivals, exploration towards its plans.
    shadow_ope: dict[str, Any] = {}
    shadow_first_ope: dict[str, Any] = {}
    if shadow_rows:
        t = time.perf_counter()
        before = {j.decision.decision_id for j in _ledger_joined(hist)}
        taken = {str(r.get("id")) for r in _read_jsonl(ws.issues_path)}
        shadow_rows, shadow_deps = _fresh_ids(shadow_rows, shadow_deps, taken)
        _write_jsonl(ws.issues_path, _read_jsonl(ws.issues_path) + shadow_rows)
        _write_jsonl(ws.deps_path, _read_jsonl(ws.deps_path) + shadow_deps)
        atomic_write_text(ws.config_path, _set_config(template, {
            "strategy": "strategy: shadow\n",
            "planner": f"planner:\n  checkpoint: {json.dumps(str(ckpts['urm-outcome']))}\n  device: cpu\n"
                       "  latency_budget_ms: 2000\n",
            "exploration": f"exploration:\n  epsilon: {epsilon}\n  seed: {seed}\n"
                           f"  candidate_share: {candidate_share}\n"}))
        run_kernel(KernelSession.open(hist), once=False, until_idle=True)
        shadow_session = KernelSession.open(hist)
        shadow_ope = _shadow_ope(shadow_session, before, seed)
        shadow_first_ope = _shadow_ope(shadow_session, before, seed, first_of={str(r["id"]) for r in shadow_rows})
        timings["shadow"] = time.perf_counter() - t
        say(f"shadow: {len(shadow_rows)} issues, urm-outcome beside the heuristic, "
            f"epsilon={epsilon} with {candidate_share:.0%} towards its plans")

    # 7. held-out evaluation, one copy of the history per strategy.
    t = time.perf_counter()
    history_decisions = {j.decision.decision_id for j in _ledger_joined(hist)}
    taken = {str(r.get("id")) for r in _read_jsonl(Workspace.at(hist).issues_path)}
    eval_rows, eval_deps = _fresh_ids(eval_rows, eval_deps, taken)
    eval_ids = {str(r["id"]) for r in eval_rows}
    evals: dict[str, list[DecisionEval]] = {}
    first_ids: dict[str, set[str]] = {}  # each held-out issue's first decision, per strategy
    fallbacks: dict[str, int] = {}
    walls: dict[str, float] = {}
    first_time: dict[str, str] = {}
    for name in STRATEGIES:
        t1 = time.perf_counter()
        dst = root / "eval" / name
        _copy_workspace(hist, dst)
        wsd = Workspace.at(dst)
        _write_jsonl(wsd.issues_path, _read_jsonl(wsd.issues_path) + eval_rows)
        _write_jsonl(wsd.deps_path, _read_jsonl(wsd.deps_path) + eval_deps)
        blocks = {"exploration": "exploration:\n  epsilon: 0.0\n"}
        if name != "heuristic":
            blocks["strategy"] = "strategy: urm\n"
            blocks["planner"] = f"planner:\n  checkpoint: {json.dumps(str(ckpts[name]))}\n  device: cpu\n  latency_budget_ms: 2000\n"
        atomic_write_text(wsd.config_path, _set_config(template, blocks))
        session = KernelSession.open(dst)
        report = run_kernel(session, once=False, until_idle=True)
        fallbacks[name] = report.fallbacks
        session = KernelSession.open(dst)
        new_joined = [j for j in _ledger_joined(dst) if j.decision.decision_id not in history_decisions]
        _, drows = evaluate_decisions(session, decision_ids={j.decision.decision_id for j in new_joined})
        evals[name] = [r for r in drows if r.issue_id in eval_ids]
        firsts = _first_decisions(new_joined, eval_ids)
        first_ids[name] = {j.decision.decision_id for j in firsts.values()}
        if name == "heuristic":
            first_time = {iid: j.decision.timestamp for iid, j in firsts.items()}
        walls[name] = time.perf_counter() - t1
        say(f"held-out under {name}: {len(evals[name])} decisions, {report.fallbacks} fallbacks ({walls[name]:.1f}s)")
    oracle = _oracle_row(KernelSession.open(root / "eval" / "heuristic"), eval_ids, first_time)
    timings["evaluation"] = time.perf_counter() - t

    table = [_strategy_row(n, evals[n], fallbacks[n], walls[n]) for n in STRATEGIES] + [oracle]
    slices = [s for n in STRATEGIES for s in _slices(n, evals[n])]
    realised = {"decisions": {r.strategy: r.utility for r in table},
                "first": {n: _strategy_row(n, [r for r in evals[n] if r.decision_id in first_ids[n]], 0, 0).utility
                          for n in STRATEGIES}}
    ope_rows: list[OPERow] = []
    for log, population, results in (("history", "decisions", ope_results), ("shadow", "decisions", shadow_ope),
                                     ("shadow", "first", shadow_first_ope)):
        for name, res in results.items():
            for method in ("ips", "snips", "dr"):
                est = getattr(res, method)
                held = realised[population].get(name)
                covered, diff = None, None
                if est.estimate is not None and est.lower is not None and est.upper is not None and held is not None:
                    covered = bool(est.lower <= held.mean <= est.upper)
                    diff = difference_interval(est.estimate, est.lower, est.upper, held)
                ope_rows.append(OPERow(log=log, population=population, strategy=name, method=method, estimate=est.estimate, lower=est.lower,
                                       upper=est.upper, reason=est.reason, ess=res.diagnostics.ess,
                                       matches=res.diagnostics.matches, realised_held_out=held, covered=covered,
                                       difference=diff, agrees=None if diff is None else bool(diff.lo <= 0 <= diff.hi)))
    result = BenchmarkResult(
        profile=profile, seed=seed, history_issues=n_issues, shadow_issues=len(shadow_rows),
        candidate_share=candidate_share if shadow_rows else 0.0, eval_issues=n_eval, k=k, epsilon=epsilon, quick=quick,
        best_of_k=bok.model_dump(mode="json"),
        dataset={"dir": str(data), "splits": ds.meta.splits, "dataset_sha256": ds.meta.dataset_sha256,
                 "with_action_rewards": _count_rewards(data)},
        training=training, rows=table, slices=slices, ope=ope_rows, ope_folds=ope_folds if ope_folds >= 2 else 0,
        paired_regret_vs_heuristic={n: _paired(evals["heuristic"], evals[n]) for n in STRATEGIES[1:]},
    )
    result.target = target_check(result)
    timings["total"] = time.perf_counter() - t_all
    result.timings = {k_: round(v, 2) for k_, v in timings.items()}
    atomic_write_json(root / "benchmark.json", result.model_dump(mode="json"))
    atomic_write_text(root / "benchmark.md", render_markdown(result))
    return result


def _ledger_joined(ws_root: Path) -> list[Any]:
    from cyntra.strategy.ledger import Ledger

    return Ledger(Workspace.at(ws_root).decisions_dir).read().joined()


def _count_rewards(data: Path) -> int:
    n = 0
    for split in ("train", "val", "test"):
        p = data / f"{split}__action_rewards.npy"
        if p.is_file():
            n += int(np.isfinite(np.load(p)).any(axis=1).sum())
    return n


def target_check(result: BenchmarkResult) -> dict[str, Any]:
    """Issue 8's bar: urm-outcome regret ≤ 0.5 × heuristic's, intervals apart, no slice worse beyond its interval."""
    rows = {r.strategy: r for r in result.rows}
    h, o = rows["heuristic"].regret, rows["urm-outcome"].regret
    if h is None or o is None:
        return {"met": False, "reason": "no regret measured"}
    ratio = o.mean / h.mean if h.mean > 0 else float("inf")
    apart = o.hi < h.lo
    worse = []
    hs = {(s.dimension, s.value): s for s in result.slices if s.strategy == "heuristic"}
    for s in result.slices:
        if s.strategy != "urm-outcome" or s.regret is None:
            continue
        base = hs.get((s.dimension, s.value))
        if base is not None and base.regret is not None and s.regret.mean > base.regret.hi:
            worse.append(f"{s.dimension}={s.value}")
    return {"met": bool(ratio <= 0.5 and apart and not worse), "regret_ratio": round(ratio, 4),
            "intervals_apart": apart, "slices_worse": worse, **_ope_check(result)}


def difference_interval(estimate: float, lower: float, upper: float, realised: Interval) -> Interval:
    """``estimate − realised`` with a 95% interval from both intervals' widths (each taken as
    ±1.96 standard errors; the samples are independent: history decisions vs held-out issues).

    Asking the realised mean to fall inside the estimate's own interval ignores the held-out
    sample's error: with equal standard errors an exact estimator fails that ~17% of the time
    (P(|Z| > 1.96/√2)); this interval fails it 5% of the time."""
    se = math.hypot((upper - lower) / (2 * 1.96), (realised.hi - realised.lo) / (2 * 1.96))
    d = estimate - realised.mean
    return Interval(mean=d, lo=d - 1.96 * se, hi=d + 1.96 * se, n=realised.n)


def _ope_check(result: BenchmarkResult) -> dict[str, Any]:
    """The OPE bar: the estimates for the heuristic and urm-outcome, from the most recent log (the
    shadow phase when there was one), cover the realised held-out utility -- every method that
    gave a number, and at least one did.

    Checked per population: every decision (the report's utility row), and each issue's first
    decision (``ope_first_*``). Only the second compares like with like: OPE estimates a
    strategy's value on the logged decisions' contexts, and the retries among those are the
    logging policy's failures, while the held-out run's retries are the strategy's own."""
    log = "shadow" if any(o.log == "shadow" for o in result.ope) else "history"
    out: dict[str, Any] = {"ope_log": log}
    for population, prefix in (("decisions", "ope"), ("first", "ope_first")):
        covered: dict[str, dict[str, bool | None]] = {}
        agrees: dict[str, dict[str, bool | None]] = {}
        for o in result.ope:
            if o.log == log and o.population == population and o.strategy in ("heuristic", "urm-outcome"):
                covered.setdefault(o.strategy, {})[o.method] = o.covered
                agrees.setdefault(o.strategy, {})[o.method] = o.agrees
        if population == "first" and not covered:
            continue
        out.update({f"{prefix}_covered": covered, f"{prefix}_met": _every(covered),
                    f"{prefix}_agrees": agrees, f"{prefix}_agree_met": _every(agrees)})
    return out


def _every(table: dict[str, dict[str, bool | None]]) -> bool:
    return len(table) == 2 and all(
        any(v is not None for v in m.values()) and all(v is not False for v in m.values()) for m in table.values())


def _iv(x: Interval | None, fmt: str = "{:.2f}") -> str:
    if x is None:
        return "-"
    return f"{fmt.format(x.mean)} [{fmt.format(x.lo)}, {fmt.format(x.hi)}]"


def render_markdown(r: BenchmarkResult) -> str:
    lines = [
        f"# Sim benchmark — profile `{r.profile}`, seed {r.seed}",
        "",
        f"History {r.history_issues} issues (heuristic, ε={r.epsilon}); best-of-{r.k} on "
        f"{r.best_of_k.get('decisions_labelled')} decisions ({r.best_of_k.get('plans_run')} plans, "
        f"{r.best_of_k.get('derived_rewards')} derived rewards); "
        + (f"shadow {r.shadow_issues} issues (urm-outcome beside the heuristic, ε={r.epsilon}, "
           f"{r.candidate_share:.0%} of it towards the candidate's plan); " if r.shadow_issues else "")
        + f"held-out {r.eval_issues} later issues"
        + (" (quick)" if r.quick else "") + f"; urm-outcome objective `{r.training.get('urm-outcome', {}).get('objective')}`.",
        "",
        "Intervals: 95% percentile bootstrap over decisions (oracle: over held-out issues, expected values).",
        "",
        "| strategy | decisions | pass rate | cost per pass $ | mean utility | regret vs oracle | fallbacks |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for row in r.rows:
        lines.append(f"| {row.strategy} | {row.decisions} | {_iv(row.pass_rate, '{:.1%}')} | {_iv(row.cost_per_pass)} "
                     f"| {_iv(row.utility)} | {_iv(row.regret)} | {row.fallbacks} |")
    lines += ["", "Paired (first decision per issue) regret difference vs the heuristic:", ""]
    for name, iv in r.paired_regret_vs_heuristic.items():
        lines.append(f"- {name}: {_iv(iv)}")
    t = r.target
    lines += ["", f"Target (urm-outcome regret ≤ 0.5× heuristic, intervals apart, no slice worse): "
              f"**{'met' if t.get('met') else 'not met'}** — ratio {t.get('regret_ratio')}, "
              f"intervals apart: {t.get('intervals_apart')}, slices worse: {t.get('slices_worse') or 'none'}", "",
              f"OPE (heuristic and urm-outcome, {t.get('ope_log')} log, every method): realised held-out utility "
              f"inside the estimate's interval **{'met' if t.get('ope_met') else 'not met'}**; estimate − realised "
              f"interval contains 0 (both samples' error) **{'met' if t.get('ope_agree_met') else 'not met'}**", ""]
    if "ope_first_met" in t:
        lines += [f"OPE on each issue's first decision (shadow arrivals vs held-out arrivals: the same estimand): "
                  f"inside **{'met' if t.get('ope_first_met') else 'not met'}**; estimate − realised contains 0 "
                  f"**{'met' if t.get('ope_first_agree_met') else 'not met'}**", ""]
    lines += ["## Slices (regret vs oracle)", "", "| slice | " + " | ".join(STRATEGIES) + " |",
              "|---|" + "---|" * len(STRATEGIES)]
    keys = sorted({(s.dimension, s.value) for s in r.slices})
    by = {(s.dimension, s.value, s.strategy): s for s in r.slices}
    for dim, val in keys:
        cells = []
        for n in STRATEGIES:
            s = by.get((dim, val, n))
            cells.append(f"{_iv(s.regret)} (n={s.n})" if s is not None else "-")
        lines.append(f"| {dim}={val} | " + " | ".join(cells) + " |")
    lines += ["", "## Off-policy estimates (made before the held-out run)", "",
              "`history`: the heuristic's log with uniform exploration; "
              + (f"learned strategies are cross-fitted: each history decision is scored by a model of the same "
                 f"recipe trained on the other {r.ope_folds - 1} of {r.ope_folds} folds of issues." if r.ope_folds
                 else "learned strategies are scored in-sample (on the decisions they were trained on).")
              + (" `shadow`: the later shadow phase, where urm-outcome (the model that runs held-out) proposed beside "
                 "the heuristic and exploration favoured its plans." if r.shadow_issues else ""), "",
              "Population `decisions`: every logged decision, against every held-out decision; `first`: each "
              "issue's first decision on both sides.", "",
              "| log | population | strategy | method | estimate [95%] | ESS | matches | realised held-out | inside? "
              "| estimate − realised | agrees? |",
              "|---|---|---|---|---|---:|---:|---|---|---|---|"]
    for o in r.ope:
        est = (f"{o.estimate:.2f} [{o.lower:.2f}, {o.upper:.2f}]" if o.estimate is not None and o.lower is not None
               and o.upper is not None else f"refused: {o.reason}")
        lines.append(f"| {o.log} | {o.population} | {o.strategy} | {o.method} | {est} | {o.ess or 0:.1f} | {o.matches or 0} | "
                     f"{_iv(o.realised_held_out)} | {'-' if o.covered is None else ('yes' if o.covered else 'no')} | "
                     f"{_iv(o.difference)} | {'-' if o.agrees is None else ('yes' if o.agrees else 'no')} |")
    if not r.ope:
        lines.append("| - | - | - | - | OPE module not available | | | | | | |")
    lines += ["", "## Timings (s)", "", ", ".join(f"{k}: {v}" for k, v in r.timings.items()), ""]
    return "\n".join(lines)


@click.command("benchmark")
@click.option("--profile", "profile", default="default", show_default=True,
              help="A bundled profile name (default, alt) or a YAML file.")
@click.option("--issues", "n_issues", type=click.IntRange(min=10), default=None,
              help="History issues (default 600; --quick: 100).")
@click.option("--eval-issues", type=click.IntRange(min=5), default=None, help="Held-out later issues (default issues/2).")
@click.option("--shadow-issues", type=click.IntRange(min=0), default=None,
              help="Issues run in shadow (urm-outcome beside the heuristic) between the history and the held-out set; "
                   "OPE from them is checked against the held-out run (default: as many as --eval-issues; 0: none).")
@click.option("--candidate-share", type=click.FloatRange(min=0, max=1), default=0.75, show_default=True,
              help="In the shadow phase, the share of exploring draws that apply the candidate's plan.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--k", "k", type=click.IntRange(min=1, max=20), default=None,
              help="Best-of-K plans (default 20: every plan the clamp allows; quick 4).")
@click.option("--epsilon", type=click.FloatRange(min=0, max=1), default=0.2, show_default=True)
@click.option("--bok-issues", type=click.IntRange(min=1), default=None, help="Issues to label (default: all issues).")
@click.option("--bok-per-issue", type=click.IntRange(min=0), default=0, show_default=True,
              help="Best-of-K decisions labelled per issue; 0 labels every decision, retries included.")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--outcome-objective", type=click.Choice(["factored", "value"]), default="factored", show_default=True,
              help="How urm-outcome learns: pass probability and spend per plan (factored) or utility (value).")
@click.option("--ope-folds", type=click.IntRange(min=0), default=3, show_default=True,
              help="Cross-fitting folds for the learned strategies' OPE (0 or 1: in-sample).")
@click.option("--outcome-value", type=click.Choice(["linear", "encoder"]), default="linear", show_default=True,
              help="urm-outcome's value under the factored objective: refitted linearly on the input tokens, or the "
                   "encoder's value head (ignored with --outcome-objective value).")
@click.option("--train-seed", type=int, default=None,
              help="Seed of the models' training (default: --seed); same history and labels, another model.")
@click.option("--quick", is_flag=True, help="Small and fast (≤ 90 s on 2 cores): for demos and tests.")
def benchmark_cmd(profile: str, n_issues: int | None, eval_issues: int | None, shadow_issues: int | None,
                  candidate_share: float, seed: int, out: Path, k: int | None,
                  epsilon: float, bok_issues: int | None, bok_per_issue: int, epochs: int | None,
                  outcome_objective: str, ope_folds: int, outcome_value: str, train_seed: int | None,
                  quick: bool) -> None:
    """End to end: history with exploration → best-of-K → dataset → imitation and outcome models → shadow → held-out run vs the oracle."""
    n = n_issues if n_issues is not None else (100 if quick else 600)
    try:
        result = run_benchmark(out, profile=profile, n_issues=n, eval_issues=eval_issues if eval_issues is not None
                               else (50 if quick else None), shadow_issues=shadow_issues,
                               candidate_share=candidate_share, seed=seed, k=k if k is not None else (4 if quick else 20),
                               epsilon=epsilon, bok_issues=bok_issues if bok_issues is not None else (40 if quick else None),
                               bok_per_issue=bok_per_issue or None,
                               epochs=epochs, quick=quick, outcome_objective=outcome_objective,
                               ope_folds=ope_folds, train_seed=train_seed, outcome_value=outcome_value,
                               echo=click.echo)
    except CyntraError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(render_markdown(result))
    click.echo(f"wrote {Path(out) / 'benchmark.json'} and {Path(out) / 'benchmark.md'}")
