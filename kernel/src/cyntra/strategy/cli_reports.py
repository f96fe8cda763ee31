"""``cyntra strategy diff | promote | rollback`` (click commands; the strategy group mounts them).

Exit codes: 0 done (an empty ledger is not an error), 1 a promotion gate failed or there is
nothing to roll back, 2 bad input (config, policy, ``--since``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cyntra.errors import CyntraError
from cyntra.strategy.diff import FORMATS, build_diff, render_text, report_json, write_report
from cyntra.strategy.promote import NothingToRollBack, PromotionCheck, promote, rollback

_WS = click.option("--workspace", "-w", type=click.Path(file_okay=False, exists=True), default=".", show_default=True,
                   help="Workspace root (holds .cyntra/).")


def _fail(exc: Exception, code: int = 2) -> None:
    Console(stderr=True).print(Text.assemble(("error: ", "red"), str(exc)))
    sys.exit(code)


@click.command("diff")
@_WS
@click.option("--since", default=None, help="Only decisions at or after this date (YYYY-MM-DD) or timestamp.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write diff.<ext> (and PNG plots for md/html) here. md/html default to "
                   ".cyntra/reports/strategy-diff/.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def diff_cmd(workspace: str, since: str | None, fmt: str, out_dir: Path | None, seed: int) -> None:
    """Heuristic vs candidate from the decisions ledger: agreement, slices, costs, OPE, latency."""
    try:
        report = build_diff(workspace, since=since, seed=seed)
        if out_dir is None and fmt in ("md", "html"):
            out_dir = Path(report.workspace) / ".cyntra" / "reports" / "strategy-diff"
        if out_dir is None:
            if fmt == "json":
                click.echo(json.dumps(report_json(report), indent=2, sort_keys=True, ensure_ascii=False))
            else:
                click.echo(render_text(report, width=160), nl=False)
            return
        written = write_report(report, fmt, out_dir)
    except CyntraError as exc:
        _fail(exc)
        return
    if report.message:
        click.echo(report.message)
    for path in written:
        click.echo(f"wrote {path}")


def _print_check(check: PromotionCheck) -> None:
    console = Console(width=160)
    console.print(Text(f"promote {check.from_strategy} -> {check.to_strategy}: {check.decisions} decisions with "
                       f"its proposal; policy {check.policy or '(bundled default)'}"))
    table = Table()
    for h in ("gate", "value", "threshold", "result", "detail"):
        table.add_column(h, overflow="fold")
    for g in check.gates:
        value = "—" if g.value is None else f"{g.value:.4g}"
        threshold = "—" if g.threshold is None else f"{g.comparison} {g.threshold:.4g}"
        result = Text("PASS", "green") if g.passed else Text("FAIL", "red")
        table.add_row(Text(g.name), Text(value), Text(threshold), result, Text(g.detail))
    console.print(table)
    for g in check.failed():
        if g.value is None:
            console.print(Text(f"failed gate {g.name}: {g.detail}"))
            continue
        threshold = "" if g.threshold is None else f" (needs {g.comparison} {g.threshold:.4g})"
        console.print(Text(f"failed gate {g.name}: {g.value:.4g}{threshold} — {g.detail}"))
    if check.message:
        console.print(Text(check.message))


@click.command("promote")
@_WS
@click.option("--dry-run", is_flag=True, help="Check the gates only; change nothing.")
@click.option("--to", "to", default=None,
              help="Strategy to promote (default: the candidate most often recorded in the ledger).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def promote_cmd(workspace: str, dry_run: bool, to: str | None, as_json: bool, seed: int) -> None:
    """Switch strategy: to the candidate if every promotion gate in the policy passes (exit 1 if not)."""
    try:
        check = promote(workspace, dry_run=dry_run, to=to, seed=seed)
    except CyntraError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(check.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        _print_check(check)
    if not check.passed:
        sys.exit(1)
    if not dry_run and not check.promoted and check.from_strategy != check.to_strategy:
        sys.exit(3)  # every gate passed, but the config changed under the check: nothing was switched


@click.command("rollback")
@_WS
def rollback_cmd(workspace: str) -> None:
    """Return strategy: to what it was before the last promotion, and record the rollback."""
    try:
        result = rollback(workspace)
    except CyntraError as exc:
        _fail(exc, code=1 if isinstance(exc, NothingToRollBack) else 2)
        return
    for w in result.warnings:
        Console(stderr=True).print(Text(f"warning: {w}", "yellow"))
    click.echo(f"rolled back: strategy {result.from_strategy} -> {result.to_strategy}")
