"""`cyntra demo --quick` as a smoke test: it runs end to end and every artifact it promises exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cyntra.cli import main

pytest.importorskip("torch")


def test_demo_quick_produces_every_promised_artifact(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "cyntra demo — summary" in result.output
    summary = json.loads((out / "demo_summary.json").read_text())
    for name, path in summary["artifacts"].items():
        for p in str(path).split(", "):
            assert Path(p).exists(), f"{name}: {p} missing"
    s = summary["summary"]
    assert s["history_decisions"] > 100 and s["shadow_decisions"] > 50
    assert s["dataset_examples"] == s["history_decisions"]
    assert 0.0 <= s["agreement"] <= 1.0
    assert s["promote_verdict"] in ("would promote", "refused")
    ledger = out / "workspace" / ".cyntra" / "decisions"
    modes = {json.loads(line)["mode"] for f in ledger.glob("*.jsonl") for line in f.read_text().splitlines()
             if json.loads(line)["kind"] == "decision"}
    assert modes == {"heuristic", "shadow"}
