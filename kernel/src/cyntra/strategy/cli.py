"""``cyntra strategy show``: what every strategy would decide for one issue right now, and why.

It goes through the same session, heuristic context, decision engine and clamp as ``cyntra run``
(so what it prints is what dispatch would do), but writes nothing: no ledger line, no log event.
Exploration is switched off here — the point is each strategy's own choice, not a coin flip.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from cyntra import clock
from cyntra.errors import CyntraError
from cyntra.strategy.base import StrategyContext, StrategyEnv
from cyntra.strategy.engine import DecisionEngine
from cyntra.strategy.record import Proposal

console = Console()
err_console = Console(stderr=True)

SHOW_SCHEMA = "cyntra.strategy_show.v1"


def _fail(exc: Exception) -> None:
    err_console.print(f"[red]error:[/red] {exc}")
    sys.exit(2)


@click.group("strategy")
def strategy_group() -> None:
    """Dispatch strategies: inspect what each would decide."""


def candidate_names(config_strategy: str, configured_candidate: str | None) -> list[str]:
    """Strategies worth showing beside the heuristic: the configured one(s), then majority."""
    names: list[str] = []
    if config_strategy == "shadow":
        names.append(configured_candidate or "urm")
    elif config_strategy != "heuristic":
        names.append(config_strategy)
    elif configured_candidate:
        names.append(configured_candidate)
    if "majority" not in names:
        names.append("majority")
    return [n for n in names if n not in ("heuristic", "shadow")]


def _proposal_row(p: Proposal, clamp: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "strategy": p.strategy,
        "status": p.status,
        "action": p.action.model_dump(mode="json") if p.action is not None else None,
        "label": p.action.label() if p.action is not None else None,
        "toolchains": list(p.toolchains),
        "confidence": p.confidence,
        "probabilities": p.probabilities,
        "expected_utility": p.expected_utility,
        "latency_ms": p.latency_ms,
        "error": p.error,
        "trace": [t.model_dump(mode="json") for t in p.trace],
        "clamp": clamp,
    }
    return row


def show_issue(session: Any, issue_id: str, *, speculate: bool = False) -> dict[str, Any]:
    """The report ``cyntra strategy show`` prints (also used by tests)."""
    from cyntra.control.controller import ExplorationController
    from cyntra.kernel.heuristic import HeuristicContext
    from cyntra.state.graph import IssueGraph, not_arrived

    issue_set = session.store.load()
    if issue_id not in issue_set.issues:
        raise CyntraError(f"no usable issue with id {issue_id!r} in {session.workspace.issues_path}")
    issue = issue_set.issues[issue_id]
    now = clock.now()
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps],
                       pending=not_arrived(issue_set.issues.values(), now))
    controller = ExplorationController(session.config.control, session.workspace.root)
    hctx = HeuristicContext.create(session.config, universe=session.limits, graph=graph, controller=controller,
                                   action_space=session.space, speculate=speculate)
    ctx: StrategyContext = session.strategy_contexts([issue], hctx, now)[0]
    config = session.config.model_copy(
        update={"exploration": session.config.exploration.model_copy(update={"epsilon": 0.0})})

    def engine(mode: str) -> DecisionEngine:
        env = StrategyEnv(workspace=session.workspace.root, config=config, space=session.space,
                          options={"universe": session.universe})
        return DecisionEngine(env=env, clamp=session.clamp, policy=session.policy, mode=mode)

    heur = engine("heuristic").decide([ctx])[0]
    h_clamp = session.clamp.apply(heur.record.heuristic.action, issue)
    rows = [_proposal_row(heur.record.heuristic, h_clamp.model_dump(mode="json"))]
    rows[0]["would_apply"] = heur.record.applied.action.label()
    rows[0]["fallback_reason"] = None

    configured = session.config.strategy
    for name in candidate_names(configured, session.config.planner.candidate):
        dec = engine(name).decide([ctx])[0]
        cand = dec.record.candidate
        assert cand is not None
        if name == "majority" and cand.status == "unavailable" and name not in (configured,
                                                                                 session.config.planner.candidate):
            continue  # majority is shown only when this workspace's history can fit it
        clamp = session.clamp.apply(cand.action, issue).model_dump(mode="json") if cand.action is not None else None
        row = _proposal_row(cand, clamp)
        if cand.clamp:  # the engine's extra findings (e.g. a confidence floor) beside the clamp's
            row["engine_violations"] = [v.model_dump(mode="json") for v in cand.clamp]
        row["would_apply"] = dec.record.applied.action.label()
        row["fallback_reason"] = dec.record.fallback_reason
        rows.append(row)

    return {
        "schema_version": SHOW_SCHEMA,
        "issue_id": issue.id,
        "timestamp": clock.isoformat_z(now),
        "configured_strategy": configured,
        "policy": {"path": session.policy.path, "sha256": session.policy.sha256},
        "universe": session.universe_id,
        "controller_mode": ctx.heuristic.controller_mode,
        "on_critical_path": issue.id in graph.critical_set,
        "heuristic_trace": [t.model_dump(mode="json") for t in ctx.heuristic.trace],
        "strategies": rows,
    }


def _print(data: dict[str, Any]) -> None:
    console.print(f"[bold]issue {data['issue_id']}[/bold] — configured strategy [bold]{data['configured_strategy']}"
                  f"[/bold], controller {data['controller_mode']}, policy {data['policy']['path'] or '(empty)'}")
    console.print("heuristic trace:")
    for step in data["heuristic_trace"]:
        console.print(f"  {step['step']:<11} {step['detail']}", highlight=False)
    for row in data["strategies"]:
        head = f"\n[bold]{escape(row['strategy'])}[/bold] {escape('[' + row['status'] + ']')}"
        if row["label"]:
            conf = f" confidence={row['confidence']:.3f}" if row["confidence"] is not None else ""
            head += f" {row['label']}{conf} toolchains={','.join(row['toolchains'])}"
        console.print(head, highlight=False)
        if row["error"]:
            console.print(f"  error: {row['error']}", highlight=False)
        clamp = row["clamp"]
        if clamp is not None:
            state = "changed" if clamp["changed"] else "unchanged"
            applied = clamp["applied"]
            console.print(f"  clamp: {state} → {applied['swarm_id']}/p{applied['parallelism']}/"
                          f"{applied['max_run_minutes']}m/c{applied['max_candidates']}", highlight=False)
            for v in clamp["violations"]:
                console.print(f"    {v['mode']:<7} {v['rule_id']}: {v['field']} {v['requested']!r} → "
                              f"{v['applied']!r} (limit {v['limit']})", highlight=False)
        for v in row.get("engine_violations", []):
            if v["field"] == "confidence":
                console.print(f"    {v['mode']:<7} {v['rule_id']}: confidence {v['requested']!r} "
                              f"below {v['limit']}", highlight=False)
        if row["strategy"] != "heuristic":
            fb = f" (fallback: {row['fallback_reason']})" if row["fallback_reason"] else ""
            console.print(f"  as the applied strategy: {row['would_apply']}{fb}", highlight=False)


@strategy_group.command("show")
@click.argument("issue_id")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Workspace root (holds .beads/ and .cyntra/).")
@click.option("--speculate", is_flag=True, help="As if `cyntra run --speculate` were given.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(issue_id: str, workspace: str, speculate: bool, as_json: bool) -> None:
    """What each strategy would decide for ISSUE_ID now: plan, clamp result and the heuristic's trace."""
    from cyntra.kernel.session import KernelSession
    from cyntra.sim.backend import sim_clock

    try:
        session = KernelSession.open(workspace)
        with sim_clock(session):  # a sim workspace: decided at its virtual time, as the runner would
            data = show_issue(session, issue_id, speculate=speculate)
    except CyntraError as exc:
        _fail(exc)
        return
    for w in session.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        _print(data)
