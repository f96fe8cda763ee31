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
