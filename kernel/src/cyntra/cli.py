"""The ``cyntra`` command line. Every reporting command takes ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cyntra.errors import CyntraError
from cyntra.fsutil import atomic_write_text
from cyntra.kernel.default_config import DEFAULT_CONFIG_YAML, DEFAULT_POLICY
from cyntra.workspace import Workspace

console = Console()
err_console = Console(stderr=True)


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _fail(exc: Exception) -> None:
    err_console.print(f"[red]error:[/red] {exc}")
    sys.exit(2)


workspace_option = click.option(
    "--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
    show_default=True, help="Workspace root (holds .beads/ and .cyntra/).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cyntra-swarm-planner")
def main() -> None:
    """Cyntra: schedule work items, dispatch them to agent toolchains, and decide how."""


@main.command()
@workspace_option
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
def init(workspace: Path, force: bool) -> None:
    """Create .beads/, a commented default .cyntra/config.yaml and the policy file it names
    (policies/default.yaml, a copy of the bundled default; an existing one is kept)."""
    from cyntra.strategy.policy import bundled_default_policy_path

    ws = Workspace.at(workspace)
    if ws.config_path.exists() and not force:
        _fail(CyntraError(f"{ws.config_path} already exists (use --force to overwrite)"))
    ws.beads_dir.mkdir(parents=True, exist_ok=True)
    for p in (ws.issues_path, ws.deps_path):
        if not p.exists():
            p.touch()
    atomic_write_text(ws.config_path, DEFAULT_CONFIG_YAML)
    console.print(f"wrote {ws.config_path}")
    policy = ws.root / DEFAULT_POLICY
    if not policy.exists():
        policy.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(policy, bundled_default_policy_path().read_text(encoding="utf-8"))
        console.print(f"wrote {policy}")


def _open_session(workspace: Path, **kw: Any) -> Any:
    from cyntra.kernel.session import KernelSession

    try:
        session = KernelSession.open(workspace, **kw)
    except CyntraError as exc:
        _fail(exc)
    for w in session.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    return session


@main.command()
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(workspace: Path, as_json: bool) -> None:
    """Counts by status, ready issues, what blocks the others, and parse errors."""
    from cyntra import clock
    from cyntra.sim.backend import sim_clock
    from cyntra.state.graph import IssueGraph, not_arrived

    session = _open_session(workspace)
    issue_set = session.store.load()
    with sim_clock(session, issue_set.issues.values()):  # a sim workspace's issues arrive in virtual time
        now = clock.now()
    later = not_arrived(issue_set.issues.values(), now)  # created in the future
    graph = IssueGraph(issue_set.issues, [(d.from_, d.to, d.type) for d in issue_set.deps], pending=later)
    counts = Counter(i.status for i in issue_set.issues.values())
    ready = graph.ready_ids()
    blocked = graph.blocked()
    data = {
        "workspace": str(session.workspace.root),
        "counts": dict(sorted(counts.items())),
        "total": len(issue_set.issues),
        "ready": ready,
        "blocked_by": blocked,
        "not_arrived": later,
        "critical_path": graph.critical_path(),
        "parse_errors": [str(p) for p in issue_set.problems],
        "warnings": session.warnings + list(graph.warnings),
        "strategy": session.config.strategy,
        "universe": session.universe_id,
    }
    if as_json:
        _emit_json(data)
        return
    t = Table(title=f"Cyntra workspace {session.workspace.root}")
    t.add_column("status")
    t.add_column("issues", justify="right")
    for k, v in data["counts"].items():
        t.add_row(k, str(v))
    t.add_row("[bold]total[/bold]", str(data["total"]))
    console.print(t)
    console.print(f"strategy: [bold]{session.config.strategy}[/bold]   universe: {session.universe_id or '-'}")
    console.print(f"ready ({len(ready)}): {', '.join(ready[:30])}{' …' if len(ready) > 30 else ''}")
    if blocked:
        console.print("blocked by:")
        for iid, by in list(blocked.items())[:30]:
            console.print(f"  {iid} ← {', '.join(by)}")
    if later:
        console.print(f"not arrived yet ({len(later)}): {', '.join(later[:30])}{' …' if len(later) > 30 else ''}")
    if data["critical_path"]:
        console.print(f"critical path: {' → '.join(data['critical_path'])}")
    for p in data["parse_errors"]:
        err_console.print(f"[red]parse error:[/red] {p}")


def _plan_row(d: Any, schedule_item: Any) -> dict[str, Any]:
    plan = d.plan
    rec = d.record
    return {
        "issue_id": plan.issue_id,
        "decision_id": rec.decision_id,
        "swarm_id": plan.action.swarm_id,
        "parallelism": plan.action.parallelism,
        "max_run_minutes": plan.action.max_run_minutes,
        "max_candidates": plan.action.max_candidates,
        "toolchains": plan.candidate_toolchains(),
        "all_toolchains": plan.toolchains,
        "speculate": plan.speculate,
        "temperature": plan.temperature,
        "controller_mode": plan.controller_mode,
        "slots": schedule_item.slots,
        "tokens": schedule_item.tokens,
        "applied_source": rec.applied.source,
        "propensity": rec.propensity,
        "fallback_reason": rec.fallback_reason,
        "clamp": [v.model_dump(mode="json") for v in rec.clamp],
        "trace": [t.model_dump(mode="json") for t in plan.trace],
    }


@main.command()
@workspace_option
@click.option("--once", is_flag=True, help="Run one scheduling cycle, wait for it, exit.")
@click.option("--watch", is_flag=True,
              help="Keep running cycles, polling for new work; SIGINT/SIGTERM stop it after the running dispatches.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="With --watch: how often to look for new or changed issues when nothing is running.")
@click.option("--until-idle", is_flag=True, help="Run cycles until nothing is ready or running.")
@click.option("--issue", "issue_id", default=None, help="Only this issue.")
@click.option("--universe", "universe_id", default=None, help="Universe context (universes/<id>/).")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Cap on workcell lanes.")
@click.option("--speculate", is_flag=True, help="Force speculation for every scheduled issue.")
@click.option("--dry-run", is_flag=True, help="Print the plans; run nothing, write nothing.")
@click.option("--until", "until", default=None,
              help="Start no dispatch at or after this ISO time (kernel clock: virtual in a sim workspace).")
@click.option("--strategy", type=str, default=None, help="heuristic | shadow | urm | <plugin> (overrides config).")
@click.option("--planner-enabled", is_flag=True, help="Same as --strategy urm (the seed's flag).")
@click.option("--planner-checkpoint", type=click.Path(path_type=Path), default=None, help="URM checkpoint dir.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def run(workspace: Path, once: bool, watch: bool, poll_seconds: float, until_idle: bool, issue_id: str | None,
        universe_id: str | None, max_concurrent: int | None, speculate: bool, dry_run: bool,
        until: str | None, strategy: str | None, planner_enabled: bool, planner_checkpoint: Path | None,
        as_json: bool) -> None:
    """Schedule ready issues and dispatch them (or, with --dry-run, show the plans)."""
    if planner_enabled:
        strategy = strategy or "urm"
    session = _open_session(workspace, universe_id=universe_id, strategy=strategy,
                            checkpoint=str(planner_checkpoint) if planner_checkpoint else None)
    if dry_run:
        from cyntra.sim.backend import sim_clock

        issue_set = session.store.load()
        with sim_clock(session, issue_set.issues.values()):  # a sim workspace: the runner's next cycle
            _dry_run(session, issue_set, issue_id=issue_id, max_concurrent=max_concurrent, speculate=speculate,
                     as_json=as_json)
        return
    from cyntra.clock import parse_ts
    from cyntra.kernel.runner import run_kernel

    try:
        stop_at = parse_ts(until) if until else None
    except ValueError:
        _fail(CyntraError(f"--until: not an ISO date/time: {until!r}"))
    try:
        report = run_kernel(session, once=once or not (watch or until_idle), watch=watch, until_idle=until_idle,
                            issue_id=issue_id, max_concurrent=max_concurrent, speculate=speculate,
                            progress=not as_json, until=stop_at, poll_seconds=poll_seconds)
    except CyntraError as exc:
        _fail(exc)
    if as_json:
        _emit_json(report.model_dump(mode="json"))
    else:
        report.print(console)


def _dry_run(session: Any, issue_set: Any, *, issue_id: str | None, max_concurrent: int | None, speculate: bool,
             as_json: bool) -> None:
    if issue_id is not None and issue_id not in issue_set.issues:
        _fail(CyntraError(f"no usable issue with id {issue_id!r}"))
    cycle = session.plan_cycle(issue_set, speculate=speculate, max_concurrent=max_concurrent, only_issue=issue_id)
    sched = cycle.schedule
    rows = [_plan_row(cycle.decisions[s.issue_id], s) for s in sched.scheduled]
    data = {
        "schema_version": "cyntra.dry_run.v1",
        "strategy": session.config.strategy,
        "universe": session.universe_id,
        "scheduled": rows,
        "skipped": [{"issue_id": i, "reason": r} for i, r in sched.skipped],
        "ready": sched.ready,
        "blocked": sched.blocked,
        "critical_path": sched.critical_path,
        "parse_errors": [str(p) for p in issue_set.problems],
        "warnings": session.warnings + list(sched.warnings),
    }
    if as_json:
        _emit_json(data)
        return
    console.print(f"[bold]dry run[/bold] — strategy {session.config.strategy}, universe "
                  f"{session.universe_id or '-'}: {len(rows)} scheduled, {len(data['skipped'])} waiting")
    for r in rows:
        console.print(
            f"\n[bold]{r['issue_id']}[/bold]  {r['swarm_id']}  toolchains={','.join(r['toolchains'])}  "
            f"parallelism={r['parallelism']}  budget={r['max_run_minutes']}m  candidates={r['max_candidates']}  "
            f"lanes={r['slots']}"
        )
        for step in r["trace"]:
            console.print(f"    {step['step']:<11} {step['detail']}", highlight=False)
    for s in data["skipped"]:
        console.print(f"skipped {s['issue_id']}: {s['reason']}")
    for p in data["parse_errors"]:
        err_console.print(f"[red]parse error:[/red] {p}")
    for w in data["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {w}")


@main.command()
@workspace_option
@click.option("--limit", type=int, default=30, show_default=True, help="Archived workcells to list (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workcells(workspace: Path, limit: int, as_json: bool) -> None:
    """Active workcells and the most recent archives."""
    from cyntra.workcell import WorkcellManager

    ws = Workspace.at(workspace)
    manager = WorkcellManager(ws.root, "directory" if not (ws.root / ".git").exists() else "auto")
    active = [{"workcell_id": w.id, "issue_id": w.issue_id, "backend": w.backend, "path": str(w.path),
               "created": w.created.isoformat()} for w in manager.list_active()]
    archived: list[dict[str, Any]] = []
    for wid in sorted(manager.list_archived(), reverse=True)[:limit]:
        meta_path = ws.archives_dir / wid / "archive_meta.json"
        proof_path = ws.archives_dir / wid / "proof.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        proof = json.loads(proof_path.read_text()) if proof_path.is_file() else {}
        archived.append({
            "workcell_id": wid, "issue_id": meta.get("issue_id"), "loser": meta.get("loser"),
            "archived_at": meta.get("archived_at"), "status": proof.get("status"),
            "toolchain": (proof.get("metadata") or {}).get("toolchain"),
            "gates_passed": (proof.get("verification") or {}).get("all_passed"),
        })
    if as_json:
        _emit_json({"active": active, "archived": archived, "archived_total": len(manager.list_archived())})
        return
    console.print(f"[bold]active[/bold] ({len(active)})")
    for a in active:
        console.print(f"  {a['workcell_id']}  issue {a['issue_id']}  {a['backend']}")
    t = Table(title=f"archived (newest {len(archived)} of {len(manager.list_archived())})")
    for col in ("workcell", "issue", "toolchain", "status", "gates", "loser", "archived"):
        t.add_column(col)
    for a in archived:
        t.add_row(a["workcell_id"], str(a["issue_id"]), str(a["toolchain"]), str(a["status"]),
                  "pass" if a["gates_passed"] else "fail", "yes" if a["loser"] else "", str(a["archived_at"]))
    console.print(t)


@main.command()
@workspace_option
@click.option("--issue", "issue_id", default=None, help="Only this issue.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(workspace: Path, issue_id: str | None, limit: int, as_json: bool) -> None:
    """Decisions and their outcomes, from the decisions ledger."""
    from cyntra.strategy.ledger import Ledger

    ws = Workspace.at(workspace)
    contents = Ledger(ws.decisions_dir).read()
    rows: list[dict[str, Any]] = []
    for j in contents.joined():
        d, o = j.decision, j.outcome
        if issue_id is not None and d.issue_id != issue_id:
            continue
        rows.append({
            "decision_id": d.decision_id, "issue_id": d.issue_id, "timestamp": d.timestamp, "mode": d.mode,
            "applied": d.applied.action.label(), "source": d.applied.source, "toolchains": d.applied.toolchains,
            "propensity": d.propensity, "fallback_reason": d.fallback_reason,
            "candidate": d.candidate.action.label() if d.candidate and d.candidate.action else None,
            "status": o.status if o else "running", "gates_passed": o.gates_passed if o else None,
            "cost_usd": o.cost_usd if o else None, "duration_ms": o.duration_ms if o else None,
            "utility": o.utility if o else None,
        })
    rows = rows[-limit:]
    if as_json:
        _emit_json({"decisions": rows, "problems": contents.problems})
        return
    t = Table(title=f"history{' of issue ' + issue_id if issue_id else ''} ({len(rows)} decisions)")
    for col in ("time", "issue", "plan", "by", "toolchains", "status", "cost", "utility"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["timestamp"][:19], r["issue_id"], r["applied"], r["source"], ",".join(r["toolchains"]),
                  r["status"], "" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}",
                  "" if r["utility"] is None else f"{r['utility']:.2f}")
    console.print(t)
    for p in contents.problems:
        err_console.print(f"[yellow]ledger:[/yellow] {p}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--quick", is_flag=True, help="A smaller run (about a minute).")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(out: Path, quick: bool, seed: int) -> None:
    """The whole story on a fresh sim workspace: history, dataset, training, shadow, diff, promote."""
    try:
        import torch  # noqa: F401
    except ImportError:
        _fail(CyntraError("the demo trains a model: install the model extra (make setup, or pip install '.[model]')"))
    from cyntra.demo import run_demo

    try:
        run_demo(out, quick=quick, seed=seed, console=console)
    except CyntraError as exc:
        _fail(exc)


def _mount_subcommands() -> None:
    from cyntra.kernel.evolve_cli import evolve_cmd
    from cyntra.planner.cli import planner
    from cyntra.sim.cli import sim_group
    from cyntra.strategy.cli import strategy_group

    main.add_command(sim_group)
    main.add_command(planner)
    main.add_command(evolve_cmd)
    from cyntra.planner.best_of_k import best_of_k_cmd
    from cyntra.sim.benchmark import benchmark_cmd

    planner.add_command(best_of_k_cmd, "best-of-k")
    sim_group.add_command(benchmark_cmd, "benchmark")
    main.add_command(strategy_group)
    from cyntra.strategy.cli_reports import diff_cmd, promote_cmd, rollback_cmd

    strategy_group.add_command(diff_cmd, "diff")
    strategy_group.add_command(promote_cmd, "promote")
    strategy_group.add_command(rollback_cmd, "rollback")
    try:  # training needs torch (the `model` extra); the kernel does not
        from planner_model.cli_commands import eval_cmd, train_cmd
    except ImportError:
        return
    planner.add_command(train_cmd, "train")
    planner.add_command(eval_cmd, "eval")


_mount_subcommands()


if __name__ == "__main__":
    main()
