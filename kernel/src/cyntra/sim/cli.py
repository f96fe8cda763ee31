"""``cyntra sim``: create simulated workspaces, ask the oracle, and report against it."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cyntra.errors import CyntraError
from cyntra.fsutil import atomic_write_text
from cyntra.workspace import Workspace

console = Console()


def _fail(exc: Exception) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {exc}")
    sys.exit(2)


@click.group("sim")
def sim_group() -> None:
    """The simulated agent world (the embedded default backend)."""


@sim_group.command("init")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--issues", "n_issues", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--profile", "profile_ref", default="default", show_default=True,
              help="A bundled profile name (default, alt) or a YAML file.")
@click.option("--start", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="First arrival date (default: the profile's).")
@click.option("--span-days", type=click.FloatRange(min=0.01), default=None, help="Arrivals spread over this many days.")
@click.option("--force", is_flag=True, help="Overwrite an existing workspace's files.")
def sim_init(workspace: Path, n_issues: int, seed: int, profile_ref: str, start: datetime | None,
             span_days: float | None, force: bool) -> None:
    """Create a complete sim workspace: config, universe, issues and deps."""
    try:
        data = init_workspace(workspace, n_issues=n_issues, seed=seed, profile_ref=profile_ref, start=start,
                              span_days=span_days, force=force)
    except CyntraError as exc:
        _fail(exc)
    console.print(f"sim workspace at {data['workspace']}: {data['issues']} issues, {data['deps']} deps, "
                  f"profile {data['profile']} (seed {seed})")
    console.print(f"next: cyntra run -w {workspace} --until-idle")


def init_workspace(workspace: Path, *, n_issues: int, seed: int, profile_ref: str = "default",
                   start: datetime | None = None, span_days: float | None = None,
                   force: bool = False) -> dict[str, Any]:
    from cyntra.sim.population import generate_issues
    from cyntra.sim.profile import bundled_profiles, load_profile
    from cyntra.sim.workspace_template import sim_config_yaml, sim_universe_files

    ws = Workspace.at(workspace)
    if ws.config_path.exists() and not force:
        raise CyntraError(f"{ws.config_path} already exists (use --force to overwrite)")
    ref: str | Path = profile_ref
    if profile_ref not in bundled_profiles():
        p = Path(profile_ref).resolve()
        if not p.is_file():
            raise CyntraError(f"profile {profile_ref!r}: not a bundled profile ({', '.join(bundled_profiles())}) "
                              "and no such file")
        ref = p
    profile = load_profile(ref if isinstance(ref, Path) else profile_ref).with_seed(seed)
    arrival = profile.population.arrival
    updates: dict[str, Any] = {}
    if start is not None:
        updates["start"] = start.replace(tzinfo=arrival.start.tzinfo or None) if start.tzinfo is None else start
        if updates["start"].tzinfo is None:
            from datetime import UTC

            updates["start"] = updates["start"].replace(tzinfo=UTC)
    if span_days is not None:
        updates["span_days"] = span_days
    if updates:
        population = profile.population.model_copy(update={"arrival": arrival.model_copy(update=updates)})
        profile = profile.model_copy(update={"population": population})
    rows, deps = generate_issues(profile, n_issues, seed)
    ws.beads_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.issues_path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    atomic_write_text(ws.deps_path, "".join(json.dumps(d) + "\n" for d in deps))
    atomic_write_text(ws.config_path, sim_config_yaml(profile, profile_ref=str(ref), seed=seed))
    for rel, text in sim_universe_files(profile, str(ref)).items():
        atomic_write_text(ws.root / rel, text)
    if updates:  # the issues' arrival window differs from the profile's: record it beside the config
        atomic_write_text(ws.cyntra_dir / "sim_arrival.json",
                          json.dumps({k: str(v) for k, v in updates.items()}) + "\n")
    return {"workspace": str(ws.root), "issues": len(rows), "deps": len(deps), "profile": str(ref)}


def _session(workspace: Path) -> Any:
    from cyntra.kernel.session import KernelSession

    try:
        session = KernelSession.open(workspace)
    except CyntraError as exc:
        _fail(exc)
    if session.config.sim is None:
        _fail(CyntraError(f"{session.workspace.config_path} has no sim: section (not a sim workspace)"))
    return session


@sim_group.command("oracle")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--issue", "issue_id", required=True, help="Issue to price every valid plan for.")
@click.option("--json", "as_json", is_flag=True)
def sim_oracle(workspace: Path, issue_id: str, as_json: bool) -> None:
    """Expected utility of every valid plan for one issue, the best plan and the heuristic's regret."""
    from rich.table import Table

    from cyntra.sim.backend import profile_for
    from cyntra.sim.oracle import oracle_table

    session = _session(workspace)
    issue_set = session.store.load()
    if issue_id not in issue_set.issues:
        _fail(CyntraError(f"no usable issue with id {issue_id!r}"))
    issue = issue_set.issues[issue_id]
    serial, spec = session.routed_lists(issue)
    rows = oracle_table(profile_for(session.config, session.workspace.root), issue, spec, serial)
    cycle = session.plan_cycle(issues={issue_id: issue.model_copy(update={"status": "open"})}, deps=[],
                               only_issue=issue_id)
    heur = cycle.decisions[issue_id].record.heuristic.action if issue_id in cycle.decisions else None
    best = max(rows, key=lambda r: r[1])
    heur_eu = next((r[1] for r in rows if heur is not None and r[0] == heur), None)
    data: dict[str, Any] = {
        "issue_id": issue_id,
        "plans": [{"action": r[0].label(), "expected_utility": r[1], "p_pass": r[2], "expected_cost": r[3],
                   "expected_wall_minutes": r[4]} for r in sorted(rows, key=lambda r: -r[1])],
        "best": {"action": best[0].label(), "expected_utility": best[1]},
        "heuristic": {"action": heur.label() if heur else None, "expected_utility": heur_eu,
                      "regret": (best[1] - heur_eu) if heur_eu is not None else None},
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    t = Table(title=f"oracle for issue {issue_id}: {issue.title}")
    for col in ("plan", "E[U]", "P(pass)", "E[cost] $", "E[wall] min"):
        t.add_column(col, justify="right" if col != "plan" else "left")
    for p in data["plans"]:
        mark = " ★" if p["action"] == best[0].label() else (" (heuristic)" if heur and p["action"] == heur.label() else "")
        t.add_row(p["action"] + mark, f"{p['expected_utility']:.2f}", f"{p['p_pass']:.2f}",
                  f"{p['expected_cost']:.2f}", f"{p['expected_wall_minutes']:.0f}")
    console.print(t)
    if heur_eu is not None:
        console.print(f"heuristic regret: {best[1] - heur_eu:.2f}")


@sim_group.command("report")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--since", default=None, help="Only decisions at or after this ISO date.")
@click.option("--json", "as_json", is_flag=True)
def sim_report(workspace: Path, since: str | None, as_json: bool) -> None:
    """Realised and expected utility of the workspace's decisions against the oracle."""
    from rich.table import Table

    from cyntra.sim.report import evaluate_decisions

    session = _session(workspace)
    report, _ = evaluate_decisions(session, since=since)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    if not report.decisions:
        console.print("no decisions recorded yet: run `cyntra run --until-idle` first")
        return

    def iv(x: Any) -> str:
        return "-" if x is None else f"{x.mean:.2f} [{x.lo:.2f}, {x.hi:.2f}]"

    console.print(f"[bold]{report.decisions}[/bold] decisions ({report.with_outcome} with outcomes); "
                  f"pass rate {report.pass_rate or 0:.1%}, cost per pass ${report.cost_per_pass or 0:.2f}")
    console.print(f"realised utility  {iv(report.realised_utility)}")
    console.print(f"expected utility  {iv(report.expected_utility)}")
    console.print(f"oracle utility    {iv(report.oracle_utility)}")
    console.print(f"regret vs oracle  {iv(report.regret)}")
    for title, part in (("risk", report.by_risk), ("size", report.by_size), ("applied by", report.by_source)):
        t = Table(title=f"by {title}")
        for col in (title, "n", "pass", "realised", "expected", "oracle", "regret"):
            t.add_column(col)
        for k, v in part.items():
            t.add_row(k, str(v.n), f"{v.pass_rate:.0%}", f"{v.realised:.2f}", f"{v.expected:.2f}",
                      f"{v.oracle:.2f}", f"{v.regret:.2f}")
        console.print(t)
