"""Leakage-safe planner dataset builder: ledger decisions + archives + world runs → ``cyntra.planner_dataset.v1``.

One example per DECISION (not per candidate). For each decision the planner input is rebuilt with
the kernel's own :func:`~cyntra.planner.planner_input.build_planner_input` from the issue snapshot
in the decision's manifest (as summarised in its run summaries) at the record's timestamp, with
similar runs restricted by the index to runs started and archived strictly before that time.

Split: decisions are ordered by (decision time, decision_id); positions [0, 80%) are "train",
[80%, 90%) "val", the rest "test". Each issue goes, with ALL its decisions, to the split of its
FIRST decision, so no issue straddles splits (a train issue's later retries may therefore be
later than ``train_end``; they never carry val/test issues' information). The vocabulary is built
from train tokens only; anything else encodes as UNK.

Labels (``--labels``): ``executed`` = the applied plan, weight 1; ``outcome`` = the applied plan
with a reward weight ``min(20, exp((u - median_train_u) / std_train_u) / max(propensity, 0.05))``
(weight 0 when the utility is unknown); ``best-of-k`` = the winner in
``.cyntra/best_of_k/labels.jsonl`` (decisions without a label row are dropped and counted).
``attach_best_of_k`` keeps every decision of another label mode and adds the best-of-k arrays
(``target_action`` -1 and ``action_rewards`` NaN where a decision has no label row) — the value
objective trains on both. ``action_rewards`` holds the executed plans' utilities plus, unless
``derived_rewards=False``, the rewards the label row derived for plans not executed (see
:mod:`cyntra.planner.best_of_k`). With best-of-K attached the builder also writes what the
``factored`` value objective needs: ``action_passed`` and ``action_spend`` (gates result and
spend = cost + wall_cost[priority]·minutes of each plan whose reward is known, NaN elsewhere),
``passed`` and ``spend`` (the logged plan's), and per row ``pass_value`` (value of a pass + fail
penalty) and ``fail_penalty``; all priced with the workspace's ``objective:`` as it is when the
dataset is built (outcomes keep their recorded cost and minutes, so a re-priced objective is
applied consistently), so that U = pass_value·passed − fail_penalty − spend.
``write_inputs`` also writes ``{split}__planner_inputs.jsonl`` (canonical planner_input.v1 per row,
in row order) for audits and leakage tests. Malformed archives and ledger lines are reported per file and skipped; the build still completes.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress

from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import CyntraError, InputError
from cyntra.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from cyntra.kernel.config import ObjectiveConfig, load_config
from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.planner.index import SimilarRunsIndex
from cyntra.planner.planner_input import (
    build_planner_input,
    canonical_json,
    planner_input_hash,
    universe_inputs,
)
from cyntra.planner.run_summary import (
    RunSummary,
    epoch_us,
    problem_kind,
    scan_history,
)
from cyntra.planner.tokenizer import SPECIAL_IDS, Vocabulary, encode_tokens, tokenize
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import DecisionRecord, OutcomeRecord
from cyntra.workspace import Workspace
from planner_model.dataset_format import (
    ARRAYS,
    BEST_OF_K_ARRAYS,
    DATASET_SCHEMA,
    DEFAULT_SEQ_LEN,
    LABEL_MODES,
    SPLITS,
    DatasetMeta,
    array_path,
    head_labels,
    heads_for,
    issue_key,
    npy_bytes,
)

MAX_PROBLEMS_LISTED = 200
_T = TypeVar("_T")


@dataclass
class _Example:
    decision: DecisionRecord
    outcome: OutcomeRecord | None
    time_us: int
    tokens: list[str]
    dropped: int
    action: int
    heuristic_action: int
    target_action: int = -1
    action_rewards: dict[int, float] = field(default_factory=dict)
    action_outcomes: dict[int, tuple[float, float]] = field(default_factory=dict)  # action → (passed, spend)
    logged_outcome: tuple[float, float] | None = None  # the executed plan's (passed, spend)
    pass_value: float = 0.0
    fail_penalty: float = 0.0
    split: str = ""
    input_json: str | None = None


@dataclass
class BuildResult:
    out: Path
    meta: DatasetMeta
    report: dict[str, Any]


def _progress(items: list[_T], label: str, quiet: bool) -> Iterator[_T]:
    if quiet or len(items) < 1000:
        yield from items
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for i, item in enumerate(items):
            yield item
            if i % 500 == 0:
                bar.update(task, completed=i)


def _load_best_of_k(path: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    by_time: dict[tuple[str, str], dict[str, Any]] = {}
    by_attempt: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, f"invalid JSON: {exc.msg}", line=lineno) from None
            if not isinstance(row, dict) or not isinstance(row.get("issue_id"), str):
                raise InputError(path, "expected an object with a string issue_id", line=lineno, field="issue_id")
            if not isinstance(row.get("target_action"), str):
                raise InputError(path, "expected an action label", line=lineno, field="target_action")
            if row.get("decision_time"):
                by_time[(row["issue_id"], isoformat_z(parse_ts(str(row["decision_time"]))))] = row
            if isinstance(row.get("attempt"), int):
                by_attempt[(row["issue_id"], row["attempt"])] = row
    return by_time, by_attempt


def _objective(ws: Workspace, warnings: list[str]) -> ObjectiveConfig:
    """The workspace's ``objective:`` (the default when the config cannot be read, with a warning)."""
    try:
        cfg, _ = load_config(ws.config_path)
    except CyntraError as exc:
        warnings.append(f"objective: {exc} (default objective used for pass_value/fail_penalty)")
        return ObjectiveConfig()
    return cfg.objective


def _outcome_weights(examples: list[_Example]) -> list[float]:
    train_u = [
        e.outcome.utility for e in examples if e.split == "train" and e.outcome is not None and e.outcome.utility is not None
    ]
    base = statistics.median(train_u) if train_u else 0.0
    tau = statistics.pstdev(train_u) if len(train_u) > 1 else 1.0
    tau = tau if tau > 1e-9 else 1.0
    out = []
    for e in examples:
        u = e.outcome.utility if e.outcome is not None else None
        if u is None:
            out.append(0.0)
            continue
        w = math.exp(min(50.0, (u - base) / tau)) / max(e.decision.propensity, 0.05)
        out.append(min(20.0, w))
    return out


def _action_index(space: ActionSpace, action: PlanAction | None) -> int:
    if action is None:
        return -1
    try:
        return space.index(action)
    except KeyError:
        return -1


def _read_runs(
    ws: Workspace, from_index: bool, quiet: bool
) -> tuple[list[RunSummary], list[InputError], SimilarRunsIndex | None]:
    if from_index:
        idx = SimilarRunsIndex(ws)
        runs = list(idx.runs())
        return runs, list(idx.problems), idx
    summaries, problems = scan_history(ws, lambda dirs: _progress(dirs, "archives", quiet))
    return summaries, problems, None


def build_dataset(
    workspace: str | Path,
    out: str | Path,
    *,
    n_similar: int = 8,
    labels: str = "executed",
    seq_len: int = DEFAULT_SEQ_LEN,
    vocab_cap: int = 8192,
    from_index: bool = False,
    write_inputs: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] | None = None,
    attach_best_of_k: bool = False,
    derived_rewards: bool = True,
) -> BuildResult:
    """Build the dataset under ``out``; deterministic for the same archives and ledger."""
    if labels not in LABEL_MODES:
        raise CyntraError(f"unknown label mode {labels!r} (expected one of {list(LABEL_MODES)})")
    ws = Workspace.at(workspace)
    outdir = Path(out)
    runs, run_problems, loaded = _read_runs(ws, from_index, quiet)
    ledger = Ledger(ws.decisions_dir).read()
    skipped: Counter[str] = Counter(problem_kind(p) for p in run_problems)
    problems = [str(p) for p in run_problems] + list(ledger.problems)
    skipped.update("invalid_ledger_line" for _ in ledger.problems)

    by_decision: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        if run.decision_id is not None:
            by_decision[run.decision_id].append(run)
    index = loaded if loaded is not None else SimilarRunsIndex.from_summaries(runs)

    universes: dict[str | None, tuple[dict[str, Any], dict[str, Any]]] = {}
    warnings: list[str] = []

    def universe_for(uid: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        if uid not in universes:
            universes[uid] = ({}, {})
            if uid is not None:
                from cyntra.universe import load_universe

                try:
                    lu = load_universe(ws.root, uid)
                except CyntraError as exc:
                    warnings.append(f"universe {uid!r}: {exc} (defaults/budgets left empty)")
                else:
                    universes[uid] = universe_inputs(lu)
        return universes[uid]

    space = ActionSpace()
    best_rows: tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, int], dict[str, Any]]] | None = None
    bok_path = ws.cyntra_dir / "best_of_k" / "labels.jsonl"
    with_bok = labels == "best-of-k" or attach_best_of_k
    if with_bok:
        if not bok_path.is_file():
            raise InputError(bok_path, "no best-of-k labels exist (run best-of-k collection first)")
        best_rows = _load_best_of_k(bok_path)
    label_index = {a.label(): i for i, a in enumerate(space.actions)}
    objective = _objective(ws, warnings)
    derived_without_outcomes = 0

    decisions = sorted(ledger.decisions, key=lambda d: (epoch_us(d.timestamp), d.decision_id))
    examples: list[_Example] = []
    hash_checked = hash_mismatch = 0
    for d in _progress(decisions, "decisions", quiet):
        cands = sorted(by_decision.get(d.decision_id, []), key=lambda r: (r.candidate_index, r.run_id))
        if not cands:
            skipped["decision_without_archive"] += 1
            continue
        try:
            action = space.index(d.applied.action)
        except KeyError:
            skipped["action_not_in_space"] += 1
            continue
        heur = _action_index(space, d.heuristic.action)
        defaults, policies = universe_for(d.universe_id)
        pi = build_planner_input(
            cands[0].issue,
            d.timestamp,
            index=index,
            universe_id=d.universe_id,
            job_type=d.job_type,
            world_id=d.world_id,
            objective_id=d.objective_id,
            universe_defaults=defaults,
            universe_policies=policies,
            n_similar=n_similar,
        )
        if d.planner_input_hash is not None:
            hash_checked += 1
            if planner_input_hash(pi) != d.planner_input_hash:
                hash_mismatch += 1
        toks, dropped = tokenize(pi)
        ex = _Example(d, ledger.outcomes.get(d.decision_id), epoch_us(d.timestamp), toks, dropped, action, heur)
        if write_inputs:
            ex.input_json = canonical_json(pi)
        if best_rows is not None:
            row = best_rows[0].get((d.issue_id, isoformat_z(parse_ts(d.timestamp)))) or best_rows[1].get(
                (d.issue_id, cands[0].issue.attempts)
            )
            target = label_index.get(str(row["target_action"]), -1) if row else -1
            if target < 0 and labels == "best-of-k":
                skipped["no_best_of_k_label" if row is None else "best_of_k_label_not_in_space"] += 1
                continue
            ex.target_action = target
            rewards: dict[str, Any] = {}
            if row:
                if derived_rewards:
                    rewards.update(row.get("derived_rewards") or {})
                rewards.update(row.get("action_rewards") or {})  # executed plans take precedence
            ex.action_rewards = {
                label_index[k]: float(v) for k, v in rewards.items() if k in label_index and v is not None
            }
            feats = cands[0].issue
            wall_price = objective.wall_cost_per_minute.get(feats.priority, 0.0)
            found: dict[str, tuple[Any, Any, Any]] = {}
            if row:
                if derived_rewards:
                    outcomes = row.get("derived_outcomes")
                    if row.get("derived_rewards") and not outcomes:
                        derived_without_outcomes += 1
                    for k, o in (outcomes if isinstance(outcomes, dict) else {}).items():
                        if isinstance(o, dict):
                            found[str(k)] = (o.get("passed"), o.get("cost_usd"), o.get("wall_minutes"))
                for plan in row.get("plans") or []:
                    if isinstance(plan, dict) and isinstance(plan.get("duration_ms"), int | float):
                        found[str(plan.get("action"))] = (plan.get("passed"), plan.get("cost_usd"),
                                                          plan["duration_ms"] / 60000.0)
            for k, (ok, cost, minutes) in found.items():
                a = label_index.get(k)
                if (a is not None and a in ex.action_rewards and isinstance(ok, bool)
                        and isinstance(cost, int | float) and isinstance(minutes, int | float)):
                    ex.action_outcomes[a] = (1.0 if ok else 0.0, float(cost) + wall_price * float(minutes))
            rec = ex.outcome
            if rec is not None and rec.cost_usd is not None and rec.duration_ms is not None:
                ex.logged_outcome = (1.0 if rec.gates_passed else 0.0,
                                     rec.cost_usd + wall_price * rec.duration_ms / 60000.0)
            ex.fail_penalty = objective.fail_penalty
            ex.pass_value = objective.utility(priority=feats.priority, size=feats.size, passed=True, cost_usd=0.0,
                                              wall_minutes=0.0) + objective.fail_penalty
        examples.append(ex)

    if derived_without_outcomes:
        warnings.append(f"{derived_without_outcomes} best-of-K label rows have derived rewards but no derived_outcomes "
                        "(written by an older version): the factored objective learns from their executed plans only; "
                        "move .cyntra/best_of_k/labels.jsonl aside and rerun `cyntra planner best-of-k` to relabel "
                        "(it skips decisions already labelled, and spends its budget again)")

    # --- split (issue goes to the split of its first decision) ---
    n = len(examples)
    cut_train, cut_val = math.floor(0.8 * n), math.floor(0.9 * n)
    issue_split: dict[str, str] = {}
    for i, ex in enumerate(examples):
        pos_split = "train" if i < cut_train else "val" if i < cut_val else "test"
        ex.split = issue_split.setdefault(ex.decision.issue_id, pos_split)
    boundaries = {
        "train_end": isoformat_z(parse_ts(examples[cut_train].decision.timestamp)) if cut_train < n else None,
        "val_end": isoformat_z(parse_ts(examples[cut_val].decision.timestamp)) if cut_val < n else None,
    }
    vocab = Vocabulary.build((e.tokens for e in examples if e.split == "train"), cap=vocab_cap)
    weights_all = _outcome_weights(examples) if labels == "outcome" else [1.0] * n
    heads = heads_for(space)

    outdir.mkdir(parents=True, exist_ok=True)
    vocab_sha = vocab.save(outdir / "vocab.json")
    arrays_written = list(ARRAYS) + (list(BEST_OF_K_ARRAYS) if with_bok else [])
    digest = hashlib.sha256()
    digest.update(f"{DATASET_SCHEMA}|{labels}|{seq_len}|{n_similar}|{vocab_sha}".encode())
    truncated_examples = tokens_dropped = 0
    split_stats: dict[str, Any] = {}
    for split in SPLITS:
        rows = [(i, e) for i, e in enumerate(examples) if e.split == split]
        m = len(rows)
        arr: dict[str, npt.NDArray[Any]] = {
            "inputs": np.zeros((m, seq_len), dtype=np.int32),
            "labels": np.full((m, 4), -1, dtype=np.int64),
            "weights": np.ones(m, dtype=np.float32),
            "action": np.zeros(m, dtype=np.int64),
            "reward": np.full(m, np.nan, dtype=np.float32),
            "propensity": np.ones(m, dtype=np.float32),
            "heuristic_action": np.full(m, -1, dtype=np.int64),
            "issue_key": np.zeros(m, dtype=np.int64),
            "time": np.zeros(m, dtype=np.int64),
        }
        if with_bok:
            arr["target_action"] = np.full(m, -1, dtype=np.int64)
            arr["action_rewards"] = np.full((m, len(space)), np.nan, dtype=np.float32)
            arr["action_passed"] = np.full((m, len(space)), np.nan, dtype=np.float32)
            arr["action_spend"] = np.full((m, len(space)), np.nan, dtype=np.float32)
            arr["passed"] = np.full(m, np.nan, dtype=np.float32)
            arr["spend"] = np.full(m, np.nan, dtype=np.float32)
            arr["pass_value"] = np.zeros(m, dtype=np.float32)
            arr["fail_penalty"] = np.zeros(m, dtype=np.float32)
        dist: dict[str, Counter[str]] = {h: Counter() for h in heads}
        for r, (i, e) in enumerate(rows):
            ids, overflow = encode_tokens(e.tokens, vocab, seq_len)
            arr["inputs"][r] = ids
            lost = overflow + e.dropped
            if lost:
                truncated_examples += 1
                tokens_dropped += lost
            label_action = space.actions[e.target_action if labels == "best-of-k" else e.action]
            hl = head_labels(label_action, heads)
            arr["labels"][r] = hl
            for h, k in zip(heads, hl, strict=True):
                dist[h][str(heads[h][k])] += 1
            arr["weights"][r] = weights_all[i]
            arr["action"][r] = e.action
            if e.outcome is not None and e.outcome.utility is not None:
                arr["reward"][r] = e.outcome.utility
            arr["propensity"][r] = e.decision.propensity
            arr["heuristic_action"][r] = e.heuristic_action
            arr["issue_key"][r] = issue_key(e.decision.issue_id)
            arr["time"][r] = e.time_us // 1000
            if with_bok:
                arr["target_action"][r] = e.target_action
                for act, u in e.action_rewards.items():
                    arr["action_rewards"][r, act] = u
                for act, (ok, spend) in e.action_outcomes.items():
                    arr["action_passed"][r, act] = ok
                    arr["action_spend"][r, act] = spend
                if e.logged_outcome is not None:
                    arr["passed"][r], arr["spend"][r] = e.logged_outcome
                arr["pass_value"][r] = e.pass_value
                arr["fail_penalty"][r] = e.fail_penalty
        for name in arrays_written:
            data = arr[name]
            digest.update(f"|{split}/{name}/{data.dtype.str}/{data.shape}|".encode())
            digest.update(np.ascontiguousarray(data).tobytes())
            atomic_write_bytes(array_path(outdir, split, name), npy_bytes(data))
        if write_inputs:
            atomic_write_bytes(
                outdir / f"{split}__planner_inputs.jsonl",
                "".join(f"{e.input_json}\n" for _, e in rows).encode("utf-8"),
            )
        split_stats[split] = {
            "examples": m,
            "issues": len({e.decision.issue_id for _, e in rows}),
            "first_decision": isoformat_z(parse_ts(rows[0][1].decision.timestamp)) if rows else None,
            "last_decision": isoformat_z(parse_ts(rows[-1][1].decision.timestamp)) if rows else None,
            "label_distribution": {h: dict(sorted(c.items())) for h, c in dist.items()},
            "with_reward": int(np.isfinite(arr["reward"]).sum()),
        }

    meta = DatasetMeta(
        seq_len=seq_len,
        vocab_size=len(vocab),
        vocab_sha256=vocab_sha,
        special_tokens=dict(SPECIAL_IDS),
        heads=heads,
        actions=[a.label() for a in space.actions],
        swarm_types=dict(space.swarm_types),
        label_mode=labels,  # type: ignore[arg-type]
        splits={s: split_stats[s]["examples"] for s in SPLITS},
        split_boundaries=boundaries,
        n_similar=n_similar,
        truncations={"examples_truncated": truncated_examples, "tokens_dropped": tokens_dropped},
        dataset_sha256=digest.hexdigest(),
        source={
            "workspace": str(ws.root),
            "runs": len(runs),
            "decisions": len(ledger.decisions),
            "examples": n,
            "skipped": dict(sorted(skipped.items())),
            "from_index": from_index,
            "best_of_k_attached": with_bok,
            "derived_rewards": with_bok and derived_rewards,
        },
        arrays=arrays_written,
    )
    report: dict[str, Any] = {
        "dataset_sha256": meta.dataset_sha256,
        "label_mode": labels,
        "splits": split_stats,
        "split_boundaries": boundaries,
        "truncations": meta.truncations,
        "dropped": dict(sorted(skipped.items())),
        "planner_input_hash": {"checked": hash_checked, "mismatched": hash_mismatch},
        "problems": problems[:MAX_PROBLEMS_LISTED],
        "problems_not_listed": max(0, len(problems) - MAX_PROBLEMS_LISTED),
        "warnings": warnings,
        "vocab_size": len(vocab),
        "best_of_k_labels": str(bok_path) if bok_path.is_file() else None,
    }
    atomic_write_json(outdir / "split_report.json", report)
    # Not key-sorted: the order of ``heads`` is the column order of ``labels.npy`` (ACTION_FIELDS).
    atomic_write_text(outdir / "dataset.json", json.dumps(meta.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
    if echo is not None:
        for line in summary_lines(meta, report):
            echo(line)
    return BuildResult(outdir, meta, report)


def summary_lines(meta: DatasetMeta, report: dict[str, Any]) -> Iterable[str]:
    """The human summary printed after a build."""
    yield f"dataset {meta.dataset_sha256[:16]}  labels={meta.label_mode}  seq_len={meta.seq_len}  vocab={meta.vocab_size}"
    src = meta.source
    yield f"source: {src['runs']} runs, {src['decisions']} decisions -> {src['examples']} examples"
    for s in SPLITS:
        st = report["splits"][s]
        yield f"  {s:5s} {st['examples']:7d} examples  {st['issues']:6d} issues  {st['first_decision']} .. {st['last_decision']}"
        for h, dist in st["label_distribution"].items():
            yield f"        {h}: " + ", ".join(f"{k}={v}" for k, v in dist.items())
    t = meta.truncations
    yield f"truncations: {t['examples_truncated']} examples, {t['tokens_dropped']} tokens dropped"
    dropped = report["dropped"]
    yield "dropped/skipped: " + (", ".join(f"{k}={v}" for k, v in dropped.items()) if dropped else "none")
    ph = report["planner_input_hash"]
    if ph["checked"]:
        yield f"planner_input_hash: {ph['checked']} checked, {ph['mismatched']} mismatched"
    for w in report["warnings"]:
        yield f"warning: {w}"
