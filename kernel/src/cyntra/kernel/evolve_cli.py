"""``cyntra evolve``: evolve a universe's world (the lead mounts :data:`evolve_cmd` on the main group).

Exit codes: 0 the run completed with a best candidate, 1 it completed but no candidate was
eligible (every one failed, hung, wrote invalid metrics or failed a gate), 2 bad input (config,
universe, world file, flags).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cyntra.errors import CyntraError
from cyntra.planner.action_space import MAX_CANDIDATES


def _fail(exc: Exception, code: int = 2) -> None:
    Console(stderr=True).print(Text.assemble(("error: ", "red"), str(exc)))
    sys.exit(code)


def _fmt_metrics(metrics: dict[str, float] | None, order: list[str]) -> str:
    if not metrics:
        return "-"
    return "  ".join(f"{m}={metrics[m]:.6g}" for m in order if m in metrics)


@click.command("evolve")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Workspace root (holds universes/ and .cyntra/).")
@click.option("--universe", "universe_id", default=None, help="Universe id (universes/<id>/); optional with one universe.")
@click.option("--world", "world_id", required=True, help="World id of the universe's worlds[].")
@click.option("--generations", type=click.IntRange(min=1), default=None, help="Generations (default: world.yaml).")
@click.option("--population", type=click.IntRange(min(MAX_CANDIDATES), max(MAX_CANDIDATES)), default=None,
              help="Requested population (the heuristic's plan; the strategy and clamp decide).")
@click.option("--swarm", "swarm_id", default=None, help="Requested swarm (default: the universe's defaults.swarm_id).")
@click.option("--objective", "objective_id", default=None, help="Objective (default: defaults.objective_id).")
@click.option("--strategy", default=None, help="heuristic | shadow | urm | <plugin> (overrides config).")
@click.option("--planner-enabled", is_flag=True, help="Same as --strategy urm (the seed's flag).")
@click.option("--planner-checkpoint", type=click.Path(path_type=Path), default=None, help="URM checkpoint dir.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Run seed (default: world.yaml seed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evolve_cmd(workspace: Path, universe_id: str | None, world_id: str, generations: int | None,
               population: int | None, swarm_id: str | None, objective_id: str | None, strategy: str | None,
               planner_enabled: bool, planner_checkpoint: Path | None, seed: int | None, as_json: bool) -> None:
    """Evolve a world: generations of candidates through the planner-chosen swarm and population."""
    from cyntra.kernel.evolve import evolve_world
    from cyntra.kernel.session import KernelSession
    from cyntra.log import configure as configure_logging

    if planner_enabled:
        strategy = strategy or "urm"
    try:
        session = KernelSession.open(workspace, universe_id=universe_id, strategy=strategy,
                                     checkpoint=str(planner_checkpoint) if planner_checkpoint else None)
    except CyntraError as exc:
        _fail(exc)
    err = Console(stderr=True)
    for w in session.warnings:
        err.print(Text.assemble(("warning: ", "yellow"), w))
    configure_logging(session.workspace.logs_dir / "kernel.jsonl")
    try:
        result = evolve_world(session, world_id, generations=generations, population=population,
                              swarm_id=swarm_id, objective_id=objective_id, seed=seed)
    except CyntraError as exc:
        _fail(exc)
    finally:
        session.engine.close()
    report = result.report
    if as_json:
        out: dict[str, Any] = {"run_dir": str(result.run_dir), "report": report.model_dump(mode="json")}
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print(result.run_dir, report)
    if report.status != "success":
        sys.exit(1)


def _print(run_dir: Path, report: Any) -> None:
    console = Console()
    order: list[str] = report.objective.order
    console.print(
        f"[bold]evolve[/bold] {report.universe_id}/{report.world_id}  objective {report.objective_id}  "
        f"swarm {report.swarm_id} ({report.swarm_type})  population {report.population_size}  "
        f"strategy {report.strategy} → {report.applied_source}"
        + (f"  [yellow]fallback:[/yellow] {report.fallback_reason}" if report.fallback_reason else "")
    )
    t = Table(title=f"{report.generations_run} generation(s)")
    for col in ("gen", "ran", "eligible", "generation best", "incumbent"):
        t.add_column(col)
    for g in report.per_generation:
        t.add_row(str(g.generation), str(g.candidates_run) + (" (stopped)" if g.stopped_early else ""),
                  str(g.eligible), f"{g.best_id or '-'} {_fmt_metrics(g.best_metrics, order)}",
                  f"{g.incumbent_id or '-'} {_fmt_metrics(g.incumbent_metrics, order)}")
    console.print(t)
    failed = [c for c in report.candidates if not c.eligible]
    if failed:
        console.print(f"{len(failed)} candidate(s) excluded: "
                      + ", ".join(f"{c.candidate_id} ({c.status}{': ' + ','.join(c.fail_codes) if c.fail_codes else ''})"
                                  for c in failed[:12]))
    if report.best is not None:
        console.print(f"[green]best[/green] {report.best.candidate_id}  {_fmt_metrics(report.best.metrics, order)}  "
                      f"params {json.dumps(report.best.params, sort_keys=True)}  utility {report.utility:+.6g}")
    else:
        console.print("[red]no eligible candidate[/red]")
    console.print(f"artifacts: {run_dir}")
