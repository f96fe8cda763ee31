"""``cyntra strategy promote`` / ``rollback``: switch ``strategy:`` only on evidence, and record it.

The gates are the policy file's ``promotion:`` block (the workspace's configured policy, found as
``KernelSession.open`` finds it). Each is computed over the ledger's decisions that recorded a
proposal from the candidate being promoted:

* ``min_decisions`` — decisions where that candidate answered (status ok) ≥ the minimum;
* ``ope`` — the candidate's doubly robust lower 95 % bound ≥ the heuristic's doubly robust estimate,
  both over the same decisions (DR, not SNIPS: our propensities are logged exactly and the reward
  model only reduces variance; see ``cyntra.strategy.ope``). OPE refusing (no support) fails it;
* ``fallback_rate`` — decisions where the candidate failed, timed out, was invalid or unavailable,
  or fell below the confidence floor, over decisions with its proposal ≤ the maximum;
* ``p99_latency_ms`` — the candidate's p99 proposal latency ≤ the maximum;
* ``ece`` — expected calibration error (10 equal-width bins) ≤ the maximum. Source, in order: the
  ``ece_after`` that ``cyntra planner eval`` wrote to ``eval.json`` beside the configured
  checkpoint; else, from the ledger, the candidate's confidence against "its (clamped) plan is the
  plan that ran", on decisions where the plan that ran was the logging policy's own choice (not an
  exploration draw, which is a coin flip and no label). The report says which was used.

On success the one ``strategy:`` line of ``.cyntra/config.yaml`` is rewritten in place (comments
and layout kept byte for byte; the key is appended when absent) and a ``PromotionRecord`` with
every gate's number is appended to the ledger. ``rollback`` undoes the last promotion not yet
rolled back the same way.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from cyntra import clock
from cyntra.errors import ConfigError, CyntraError
from cyntra.fsutil import atomic_write_text, file_lock
from cyntra.kernel.config import load_config
from cyntra.kernel.session import KernelSession
from cyntra.strategy.diff import fallback_key, issue_snapshots
from cyntra.strategy.ledger import JoinedDecision, Ledger
from cyntra.strategy.ope import N_BOOT, LedgerOPE, clamped_action, ledger_ope
from cyntra.strategy.policy import PromotionGates
from cyntra.strategy.record import PromotionRecord
from cyntra.workspace import Workspace

ECE_BINS = 10
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_STRATEGY_LINE = re.compile(
    r"^strategy[ \t]*:(?P<sep>[ \t]*)(?P<value>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s#][^#\r\n]*?)?"
    r"(?P<trail>[ \t]*(?:#[^\r\n]*)?\r?)$",
    re.MULTILINE,
)


class NothingToRollBack(CyntraError):
    """No promotion in the ledger that a rollback could undo."""


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    comparison: str  # ">=", "<=" or "n/a"
    detail: str


class PromotionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace: str
    policy: str | None
    from_strategy: str
    to_strategy: str
    decisions: int
    gates: list[GateResult]
    passed: bool
    ece_source: str | None = None
    ope: LedgerOPE | None = None
    dry_run: bool = False
    promoted: bool = False
    message: str | None = None

    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def evidence(self) -> dict[str, Any]:
        """Every gate's number, for the promotion record."""
        out: dict[str, Any] = {
            g.name: {"value": g.value, "threshold": g.threshold, "comparison": g.comparison, "passed": g.passed,
                     "detail": g.detail}
            for g in self.gates
        }
        out["decisions"] = self.decisions
        out["policy"] = self.policy
        out["ece_source"] = self.ece_source
        if self.ope is not None:
            out["ope_estimator"] = "dr"
            out["ope"] = {name: {"estimate": r.dr.estimate, "lower": r.dr.lower, "upper": r.dr.upper,
                                 "ess": r.diagnostics.ess, "matches": r.diagnostics.matches, "reason": r.reason}
                          for name, r in self.ope.results.items()}
        return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n)·|accuracy_b − mean confidence_b| over equal-width confidence bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        raise ValueError("no confidences")
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(ok[mask].mean() - conf[mask].mean())
    return float(total)


def _checkpoint_ece(session: KernelSession) -> tuple[float, str] | None:
    ckpt = session.config.planner.checkpoint
    if not ckpt:
        return None
    path = Path(ckpt)
    if not path.is_absolute():
        path = session.workspace.root / path
    for candidate in (path / "eval.json", path.parent / "eval.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            value = data.get("ece_after") if isinstance(data, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), f"checkpoint eval ({candidate}: ece_after)"
    return None


def _ledger_ece(decisions: Sequence[JoinedDecision]) -> tuple[float, int] | None:
    conf: list[float] = []
    hit: list[bool] = []
    for j in decisions:
        d, c = j.decision, j.decision.candidate
        if c is None or c.status != "ok" or c.confidence is None or d.applied.source == "exploration":
            continue
        act = clamped_action(c)
        if act is None:
            continue
        conf.append(c.confidence)
        hit.append(act.key() == d.applied.action.key())
    if not conf:
        return None
    return expected_calibration_error(conf, hit), len(conf)


def _gate(name: str, value: float | None, threshold: float | None, comparison: str, detail: str) -> GateResult:
    if value is None:
        return GateResult(name=name, passed=False, value=None, threshold=threshold, comparison=comparison,
                          detail=f"not computable: {detail}")
    assert threshold is not None
    ok = value >= threshold if comparison == ">=" else value <= threshold
    return GateResult(name=name, passed=bool(ok), value=value, threshold=threshold, comparison=comparison,
                      detail=detail)


def check_gates(
    session: KernelSession, *, to: str | None = None, seed: int = 0, n_boot: int = N_BOOT
) -> PromotionCheck:
    """Compute every promotion gate of the session's policy from its ledger (writes nothing)."""
    gates_cfg: PromotionGates = session.policy.policy.promotion
    contents = Ledger(session.workspace.decisions_dir).read()
    joined = contents.joined()
    names = Counter(j.decision.candidate.strategy for j in joined if j.decision.candidate is not None)
    target = to or (names.most_common(1)[0][0] if names else (session.config.planner.candidate or "urm"))
    if not _NAME.fullmatch(target) or target == "shadow":
        raise ConfigError(None, f"cannot promote to {target!r}: not a strategy name", field="to")
    pop = [j for j in joined if j.decision.candidate is not None and j.decision.candidate.strategy == target]
    ok = [j for j in pop if j.decision.candidate is not None and j.decision.candidate.status == "ok"]
    gates: list[GateResult] = []

    gates.append(_gate("min_decisions", float(len(ok)), float(gates_cfg.min_decisions), ">=",
                       f"{len(ok)} decisions with a {target} proposal (of {len(pop)} recorded)"))

    ope: LedgerOPE | None = None
    if gates_cfg.require_ope_lower_bound_ge_heuristic:
        if ok:
            snaps, _ = issue_snapshots(session.workspace.archives_dir)
            ope = ledger_ope(pop, {k: v.cell for k, v in snaps.items()},
                             explore_fields=session.config.exploration.fields, seed=seed, n_boot=n_boot)
            h, c = ope.results["heuristic"], ope.results["candidate"]
            if c.dr.lower is None or h.dr.estimate is None:
                gates.append(_gate("ope_lower_bound", None, h.dr.estimate, ">=",
                                   f"OPE refused: {c.reason or h.reason}"))
            else:
                gates.append(GateResult(
                    name="ope_lower_bound", passed=c.dr.lower >= h.dr.estimate, value=c.dr.lower,
                    threshold=h.dr.estimate, comparison=">=",
                    detail=f"DR: {target} {c.dr.estimate:.3f} [{c.dr.lower:.3f}, {c.dr.upper or 0:.3f}] vs "
                           f"heuristic {h.dr.estimate:.3f} (n={ope.n}, ESS {c.diagnostics.ess:.1f})"))
        else:
            gates.append(_gate("ope_lower_bound", None, None, ">=", f"no {target} proposals recorded"))
    else:
        gates.append(GateResult(name="ope_lower_bound", passed=True, value=None, threshold=None, comparison="n/a",
                                detail="not required by the policy (require_ope_lower_bound_ge_heuristic: false)"))

    falls = [fallback_key(j) for j in pop]
    n_fall = sum(f is not None for f in falls)
    reasons = Counter(f[0] for f in falls if f is not None)
    gates.append(_gate("fallback_rate", n_fall / len(pop) if pop else None, gates_cfg.max_fallback_rate, "<=",
                       f"{n_fall} of {len(pop)}" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(reasons.items()))})"
                                                    if reasons else "") if pop else f"no {target} proposals recorded"))

    lats = [j.decision.candidate.latency_ms for j in pop
            if j.decision.candidate is not None and j.decision.candidate.latency_ms is not None]
    gates.append(_gate("p99_latency_ms", float(np.percentile(lats, 99)) if lats else None,
                       gates_cfg.max_p99_latency_ms, "<=",
                       f"over {len(lats)} proposals" if lats else "no candidate latency recorded"))

    ece_source: str | None = None
    found = _checkpoint_ece(session)
    if found is not None:
        ece_value: float | None = found[0]
        ece_source = found[1]
        detail = ece_source
    else:
        led = _ledger_ece(pop)
        ece_value = led[0] if led else None
        if led:
            ece_source = ("ledger: candidate confidence vs its clamped plan being the plan that ran, "
                          "on non-exploration decisions")
            detail = f"{ece_source} (n={led[1]}, {ECE_BINS} bins)"
        else:
            detail = "no checkpoint eval.json with ece_after and no candidate confidences in the ledger"
    gates.append(_gate("ece", ece_value, gates_cfg.max_ece, "<=", detail))

    return PromotionCheck(
        workspace=str(session.workspace.root), policy=session.policy.path, from_strategy=session.config.strategy,
        to_strategy=target, decisions=len(pop), gates=gates, passed=all(g.passed for g in gates),
        ece_source=ece_source, ope=ope,
    )


# -- the config line --------------------------------------------------------------------------------


def set_strategy(text: str, value: str, path: str | Path = "<config>") -> str:
    """``text`` with its top-level ``strategy:`` set to ``value``; every other byte unchanged."""
    if not _NAME.fullmatch(value):
        raise ConfigError(path, f"{value!r} is not a strategy name", field="strategy")
    matches = list(_STRATEGY_LINE.finditer(text))
    if len(matches) > 1:
        lines = [text.count("\n", 0, m.start()) + 1 for m in matches]
        raise ConfigError(path, f"strategy: appears {len(matches)} times (lines {lines}); fix it by hand",
                          field="strategy")
    if matches:
        m = matches[0]
        sep = m.group("sep") or " "
        new = text[: m.start()] + f"strategy:{sep}{value}{m.group('trail')}" + text[m.end():]
    else:
        new = text + ("" if not text or text.endswith("\n") else "\n") + f"strategy: {value}\n"
    try:
        data = yaml.safe_load(new)
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"rewriting strategy: would break the YAML ({exc}); edit it by hand",
                          field="strategy") from None
    if not isinstance(data, dict) or data.get("strategy") != value:
        raise ConfigError(path, "could not rewrite strategy: in place (not a top-level key?); edit it by hand",
                          field="strategy")
    return new


def write_strategy(config_path: Path, value: str) -> None:
    text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    atomic_write_text(config_path, set_strategy(text, value, config_path))


def strategy_lock(ws: Workspace) -> AbstractContextManager[None]:
    """Serialises promote and rollback in one workspace: each reads the config and the ledger,
    then rewrites ``strategy:`` and appends a record; two at once could record a switch that the
    other's write undid. A running kernel is not blocked (it reads the config at start-up)."""
    return file_lock(ws.cyntra_dir / "strategy.lock")


def _who() -> str:
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def promote(
    workspace: str | Path, *, dry_run: bool = False, to: str | None = None, seed: int = 0, n_boot: int = N_BOOT
) -> PromotionCheck:
    """Check the gates; when all pass (and not a dry run) switch ``strategy:`` and record the promotion."""
    session = KernelSession.open(workspace)
    check = check_gates(session, to=to, seed=seed, n_boot=n_boot)
    check.dry_run = dry_run
    if not check.passed:
        check.message = "not promoted: " + ", ".join(g.name for g in check.failed()) + " failed"
        return check
    if check.from_strategy == check.to_strategy:
        check.message = f"strategy is already {check.to_strategy}; nothing to change"
        return check
    if dry_run:
        check.message = f"dry run: every gate passed; would switch strategy {check.from_strategy} -> {check.to_strategy}"
        return check
    with strategy_lock(session.workspace):
        # The gates took a while: promote only from the strategy they were checked against.
        now_strategy = load_config(session.workspace.config_path)[0].strategy
        if now_strategy != check.from_strategy:
            check.message = (f"not promoted: strategy changed from {check.from_strategy} to {now_strategy} "
                             "while the gates were checked; run promote again")
            return check
        write_strategy(session.workspace.config_path, check.to_strategy)
        Ledger(session.workspace.decisions_dir).append(PromotionRecord(
            kind="promotion", timestamp=clock.now_iso(), who=_who(), from_strategy=check.from_strategy,
            to_strategy=check.to_strategy, evidence=check.evidence()))
    check.promoted = True
    check.message = f"promoted: strategy {check.from_strategy} -> {check.to_strategy}"
    return check


class RollbackResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_strategy: str
    to_strategy: str
    record: PromotionRecord
    warnings: list[str] = Field(default_factory=list)


def last_open_promotion(records: Sequence[PromotionRecord]) -> PromotionRecord | None:
    """The latest promotion not undone by a later rollback (promotions push, rollbacks pop)."""
    stack: list[PromotionRecord] = []
    for rec in sorted(records, key=lambda r: r.timestamp):
        if rec.kind == "promotion":
            stack.append(rec)
        elif stack:
            stack.pop()
    return stack[-1] if stack else None


def rollback(workspace: str | Path) -> RollbackResult:
    """Return ``strategy:`` to what it was before the last promotion, and record the rollback."""
    ws = Workspace.at(workspace)
    with strategy_lock(ws):
        return _rollback(ws)


def _rollback(ws: Workspace) -> RollbackResult:
    contents = Ledger(ws.decisions_dir).read()
    last = last_open_promotion(contents.promotions)
    if last is None:
        raise NothingToRollBack(f"nothing to roll back: no promotion recorded in {ws.decisions_dir}")
    config, _ = load_config(ws.config_path)
    warnings = []
    if config.strategy != last.to_strategy:
        warnings.append(f"{ws.config_path}: strategy is {config.strategy!r}, not {last.to_strategy!r} as the last "
                        f"promotion ({last.timestamp}) set it; rolling back to {last.from_strategy!r} anyway")
    write_strategy(ws.config_path, last.from_strategy)
    record = PromotionRecord(
        kind="rollback", timestamp=clock.now_iso(), who=_who(), from_strategy=config.strategy,
        to_strategy=last.from_strategy,
        evidence={"rolls_back": {"timestamp": last.timestamp, "who": last.who, "from_strategy": last.from_strategy,
                                 "to_strategy": last.to_strategy}})
    Ledger(ws.decisions_dir).append(record)
    return RollbackResult(from_strategy=config.strategy, to_strategy=last.from_strategy, record=record,
                          warnings=warnings)
