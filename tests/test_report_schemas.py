"""The report artifacts' committed JSON Schemas equal what their pydantic models generate, and
what the code writes validates (run report and sim report from a real sim run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cyntra import schemas
from cyntra.cli import main
from cyntra.schemas_reports import REPORT_SCHEMAS, generated_schema


@pytest.mark.parametrize("name", sorted(REPORT_SCHEMAS))
def test_committed_schema_is_the_models(name: str) -> None:
    assert schemas.load_schema(name) == generated_schema(name), (
        f"{name}.schema.json is stale: run `python scripts/gen_report_schemas.py`")


def test_run_and_sim_reports_validate(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    runner = CliRunner()
    assert runner.invoke(main, ["sim", "init", "-w", str(ws), "--issues", "20", "--seed", "3"]).exit_code == 0
    res = runner.invoke(main, ["run", "-w", str(ws), "--until-idle", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["dispatched"] > 0 and schemas.schema_errors("run_report", report) == []
    res = runner.invoke(main, ["sim", "report", "-w", str(ws), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert schemas.schema_errors("sim_report", json.loads(res.output)) == []
