"""``cyntra strategy promote`` / ``rollback`` on the fixed synthetic ledgers (tests/fixtures/ledger/).

``worse``: the candidate is worse (OPE), fails often, is slow and overconfident — promote must
refuse, exit 1 and print each failed gate with its number. ``better``: every gate passes — the
config's ``strategy:`` line changes and nothing else, a promotion record with every gate's number
lands in the ledger, and rollback restores the file byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from cyntra.clock import VirtualClock, use_clock
from cyntra.errors import ConfigError
from cyntra.kernel.config import load_config
from cyntra.kernel.session import KernelSession
from cyntra.strategy.cli_reports import promote_cmd, rollback_cmd
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.promote import check_gates, expected_calibration_error, set_strategy

FIX = Path(__file__).parent / "fixtures" / "ledger"
NOW = datetime(2025, 3, 20, 9, 0, tzinfo=UTC)
GATES = ["min_decisions", "ope_lower_bound", "fallback_rate", "p99_latency_ms", "ece"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_fixture_generate_p", FIX / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()


@pytest.fixture(autouse=True)
def _virtual_clock() -> Iterator[None]:
    with use_clock(VirtualClock(NOW)):
        yield


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ledgers")
    return {s: GEN.build(root / s, s) for s in ("better", "worse", "nocandidate")}


@pytest.fixture
def ws(tmp_path: Path, pristine: dict[str, Path], request: pytest.FixtureRequest) -> Path:
    """A private copy of the scenario named by the test's ``scenario`` parameter (default ``better``)."""
    scenario = getattr(request, "param", "better")
    dest = tmp_path / scenario
    shutil.copytree(pristine[scenario], dest)
    return dest


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def normalise(obj: Any, root: Path) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, str):
        return obj.replace(str(root.resolve()), "<ws>")
    if isinstance(obj, dict):
        return {k: normalise(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v, root) for v in obj]
    return obj


def _config(ws: Path) -> str:
    return (ws / ".cyntra" / "config.yaml").read_text(encoding="utf-8")


def _promotions(ws: Path) -> list[Any]:
    return Ledger(ws / ".cyntra" / "decisions").read().promotions


@pytest.mark.parametrize("ws", ["worse"], indirect=True)
def test_promote_refuses_a_worse_candidate(ws: Path) -> None:
    before = _config(ws)
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws)])
    assert res.exit_code == 1
    check = check_gates(KernelSession.open(ws))
    failed = {g.name: g for g in check.failed()}
    assert set(failed) == {"ope_lower_bound", "fallback_rate", "p99_latency_ms", "ece"}
    for g in failed.values():
        assert g.value is not None and g.threshold is not None
        assert f"failed gate {g.name}: {g.value:.4g} (needs {g.comparison} {g.threshold:.4g})" in res.output
    assert failed["fallback_rate"].value == pytest.approx(37 / 300)
    assert "not promoted" in res.output
    assert _config(ws) == before and _promotions(ws) == []


@pytest.mark.parametrize("scenario", ["better", "worse", "nocandidate"])
def test_promote_dry_run_snapshot(pristine: dict[str, Path], scenario: str, snapshot_json: SnapshotAssertion) -> None:
    ws = pristine[scenario]
    before = _config(ws)
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws), "--dry-run", "--json"])
    data = json.loads(res.output)
    assert res.exit_code == (0 if scenario == "better" else 1)
    assert [g["name"] for g in data["gates"]] == GATES
    assert data["passed"] is (scenario == "better") and data["promoted"] is False
    assert _config(ws) == before and _promotions(ws) == []
    assert normalise(data, ws) == snapshot_json


def test_promote_succeeds_keeping_the_config_layout_and_rollback_restores_it(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _config(ws)
    monkeypatch.setenv("USER", "ops-alice")
    runner = CliRunner()
    res = runner.invoke(promote_cmd, ["-w", str(ws)])
    assert res.exit_code == 0, res.output
    for gate in GATES:
        assert gate in res.output
    assert "FAIL" not in res.output and "promoted: strategy shadow -> urm" in res.output

    after = _config(ws)
    old_lines, new_lines = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    changed = [(o, n) for o, n in zip(old_lines, new_lines, strict=True) if o != n]
    assert changed == [("strategy: shadow   # heuristic | shadow | urm (promote rewrites only this value)\n",
                        "strategy: urm   # heuristic | shadow | urm (promote rewrites only this value)\n")]
    assert load_config(ws / ".cyntra" / "config.yaml")[0].strategy == "urm"

    (rec,) = _promotions(ws)
    assert rec.kind == "promotion" and rec.who == "ops-alice"
    assert (rec.from_strategy, rec.to_strategy) == ("shadow", "urm")
    assert rec.timestamp == "2025-03-20T09:00:00.000000Z"
    for gate in GATES:
        assert rec.evidence[gate]["passed"] is True
        assert isinstance(rec.evidence[gate]["value"], float)
    assert rec.evidence["ope"]["candidate"]["lower"] >= rec.evidence["ope"]["heuristic"]["estimate"]
    assert rec.evidence["ece_source"].startswith("ledger:")

    # Promoting again changes nothing: the strategy is already urm.
    again = runner.invoke(promote_cmd, ["-w", str(ws)])
    assert again.exit_code == 0 and "already urm" in again.output and len(_promotions(ws)) == 1

    res = runner.invoke(rollback_cmd, ["-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "rolled back: strategy urm -> shadow" in res.output
    assert _config(ws) == before  # byte for byte
    kinds = [(p.kind, p.from_strategy, p.to_strategy) for p in _promotions(ws)]
    assert kinds == [("promotion", "shadow", "urm"), ("rollback", "urm", "shadow")]
    assert _promotions(ws)[-1].evidence["rolls_back"]["to_strategy"] == "urm"

    res = runner.invoke(rollback_cmd, ["-w", str(ws)])
    assert res.exit_code == 1 and "nothing to roll back" in res.output


def test_promote_does_not_switch_from_a_strategy_changed_while_it_checked(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gates are checked outside the lock (they take a while); the switch re-reads the config
    under it and refuses when someone changed ``strategy:`` meanwhile."""
    import cyntra.strategy.promote as promote_mod

    real = promote_mod.check_gates

    def check_then_edit(*args: Any, **kwargs: Any) -> Any:
        check = real(*args, **kwargs)
        promote_mod.write_strategy(ws / ".cyntra" / "config.yaml", "heuristic")  # an operator's edit
        return check

    monkeypatch.setattr(promote_mod, "check_gates", check_then_edit)
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws)])
    assert res.exit_code == 3, res.output
    assert "strategy changed from shadow to heuristic" in res.output
    assert load_config(ws / ".cyntra" / "config.yaml")[0].strategy == "heuristic" and _promotions(ws) == []


def test_rollback_without_a_promotion(ws: Path) -> None:
    res = CliRunner().invoke(rollback_cmd, ["-w", str(ws)])
    assert res.exit_code == 1 and "nothing to roll back" in res.output


def test_dry_run_changes_nothing_even_when_every_gate_passes(ws: Path) -> None:
    before = _config(ws)
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws), "--dry-run"])
    assert res.exit_code == 0 and "dry run: every gate passed" in res.output
    assert _config(ws) == before and _promotions(ws) == []


def test_gates_come_from_the_configured_policy(ws: Path) -> None:
    policy = ws / "policies" / "fixture.yaml"
    policy.write_text(policy.read_text(encoding="utf-8").replace("min_decisions: 150", "min_decisions: 1000"),
                      encoding="utf-8")
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws)])
    assert res.exit_code == 1
    assert "failed gate min_decisions: 293 (needs >= 1000)" in res.output


@pytest.mark.parametrize("ws", ["nocandidate"], indirect=True)
def test_no_candidate_history_fails_every_gate_without_numbers(ws: Path) -> None:
    res = CliRunner().invoke(promote_cmd, ["-w", str(ws)])
    assert res.exit_code == 1
    assert "failed gate min_decisions: 0 (needs >= 150)" in res.output
    assert "failed gate ope_lower_bound: not computable: no urm proposals recorded" in res.output


def test_ece_from_the_checkpoint_eval(ws: Path) -> None:
    ckpt = ws / "ckpt"
    ckpt.mkdir()
    (ckpt / "eval.json").write_text(json.dumps({"ece_before": 0.2, "ece_after": 0.031}), encoding="utf-8")
    cfg = ws / ".cyntra" / "config.yaml"
    cfg.write_text(_config(ws).replace("planner:\n", "planner:\n  checkpoint: ckpt\n"), encoding="utf-8")
    check = check_gates(KernelSession.open(ws))
    ece = next(g for g in check.gates if g.name == "ece")
    assert ece.value == pytest.approx(0.031) and ece.passed
    assert check.ece_source is not None and "eval.json" in check.ece_source


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    assert expected_calibration_error([0.25] * 4, [True, False, False, False]) == pytest.approx(0.0)
    assert expected_calibration_error([0.05, 0.95], [False, True]) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nstrategy: heuristic\nb: 2\n", "a: 1\nstrategy: urm\nb: 2\n"),
        ("strategy: 'shadow'  # keep\n", "strategy: urm  # keep\n"),
        ('x: 1\r\nstrategy: "heuristic"\r\ny: 2\r\n', "x: 1\r\nstrategy: urm\r\ny: 2\r\n"),
        ("strategy:\nz: 1\n", "strategy: urm\nz: 1\n"),
        ("# only comments\na: 1", "# only comments\na: 1\nstrategy: urm\n"),
        ("", "strategy: urm\n"),
        ("planner:\n  strategy: nested\n", "planner:\n  strategy: nested\nstrategy: urm\n"),
    ],
)
def test_set_strategy_edits_one_line(text: str, expected: str) -> None:
    assert set_strategy(text, "urm") == expected


def test_set_strategy_refuses_what_it_cannot_edit_safely() -> None:
    with pytest.raises(ConfigError, match="appears 2 times"):
        set_strategy("strategy: a\nstrategy: b\n", "urm", "cfg.yaml")
    with pytest.raises(ConfigError, match="not a strategy name"):
        set_strategy("strategy: a\n", "urm: x")
    with pytest.raises(ConfigError, match="edit it by hand"):
        set_strategy("{version: '1.0'}\n", "urm")
