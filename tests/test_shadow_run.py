"""Issue 5's Done-when: ``strategy: shadow`` + ``cyntra run --once`` on a sim workspace.

A heuristic ``--until-idle`` run of one copy of a sim workspace gives the history the
``majority`` baseline is fitted on; a fresh copy of the same workspace (same seed) then runs
with ``strategy: shadow`` and ``planner.candidate: majority``. Both plans must land in every
manifest, rollout (still valid against the upstream rollout schema), the decisions ledger and
the structlog stream, and the applied plans must equal a heuristic-only run's, issue by issue.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from cyntra.cli import main
from cyntra.schemas import schema_errors
from cyntra.strategy.cli import strategy_group
from cyntra.strategy.ledger import Ledger
from cyntra.strategy.record import DecisionRecord

UPSTREAM_ROLLOUT = Path(__file__).resolve().parents[1].parent / "shared" / "upstream-cyntra" / "schemas" / \
    "rollout.schema.json"
N_ISSUES = 40
SEED = 11
HISTORY = "history.jsonl"  # the fitted-on ledger, kept apart from the run's own date files
MASKED = {"timestamp", "decision_id", "latency_ms", "policy_sha256", "planner_input_hash", "checkpoint_sha256",
          "started_at", "completed_at", "created_at"}


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _run(ws: Path, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_cli("run", "-w", str(ws), "--json", *args))
    return out


def _set_config(ws: Path, **updates: Any) -> None:
    path = ws / ".cyntra" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(updates)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _with_history(base: Path, dest: Path, history: Path) -> Path:
    shutil.copytree(base, dest)
    decisions = dest / ".cyntra" / "decisions"
    decisions.mkdir(parents=True)
    with open(decisions / HISTORY, "w") as out:
        for f in Ledger(history / ".cyntra" / "decisions").files():
            out.write(f.read_text())
    _set_config(dest, strategy="shadow", planner={"candidate": "majority"})
    return dest


def _add_later_issues(ws: Path, base: Path) -> None:
    """New work arriving after the history: the base issues again under new ids, all ready now,
    and more lanes, so that one cycle dispatches several of them."""
    cfg = yaml.safe_load((ws / ".cyntra" / "config.yaml").read_text())
    _set_config(ws, scheduling={**cfg["scheduling"], "max_concurrent_workcells": 8, "max_concurrent_tokens": 10**7})
    for universe in (ws / "universes").glob("*/universe.yaml"):
        doc = yaml.safe_load(universe.read_text())
        doc["policies"]["budgets"]["max_concurrent_workcells"] = 8
        universe.write_text(yaml.safe_dump(doc, sort_keys=False))
    rows = [json.loads(line) for line in (base / ".beads" / "issues.jsonl").read_text().splitlines() if line]
    with open(ws / ".beads" / "issues.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "id": str(1000 + int(row["id"])), "status": "open"}) + "\n")


@dataclass
class Runs:
    base: Path
    history: Path  # heuristic --until-idle (also the heuristic-only reference for until-idle)
    shadow_once: Path  # the history + later issues, one shadow cycle
    heuristic_once: Path  # the same, one heuristic cycle
    shadow_idle: Path  # a fresh copy of base with the history's ledger, shadow --until-idle


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("shadow")
    base = root / "base"
    _cli("sim", "init", "-w", str(base), "--issues", str(N_ISSUES), "--seed", str(SEED))
    history = root / "history"
    shutil.copytree(base, history)
    report = _run(history, "--until-idle")
    assert report["strategy"] == "heuristic" and report["dispatched"] >= N_ISSUES

    shadow_once = root / "shadow_once"
    shutil.copytree(history, shadow_once)
    _add_later_issues(shadow_once, base)
    _set_config(shadow_once, strategy="shadow", planner={"candidate": "majority"})
    assert _run(shadow_once, "--once")["strategy"] == "shadow"
    heuristic_once = root / "heuristic_once"
    shutil.copytree(history, heuristic_once)
    _add_later_issues(heuristic_once, base)
    assert _run(heuristic_once, "--once")["strategy"] == "heuristic"
    shadow_idle = _with_history(base, root / "shadow_idle", history)
    _run(shadow_idle, "--until-idle")
    yield Runs(base, history, shadow_once, heuristic_once, shadow_idle)


def _ids(ws: Path) -> set[str]:
    return {d.decision_id for d in Ledger(ws / ".cyntra" / "decisions").read().decisions}


def _own_ledger(ws: Path, before: set[str] | None = None) -> tuple[list[DecisionRecord], dict[str, Any]]:
    """The run's own decisions and outcomes (the copied history, ``before``, excluded)."""
    led = Ledger(ws / ".cyntra" / "decisions")
    skip = before or set()
    decisions: list[DecisionRecord] = []
    outcomes: dict[str, Any] = {}
    for path, lineno, obj in led.iter_raw():
        assert not isinstance(obj, Exception), f"{path}:{lineno}"
        if path.name == HISTORY or obj.get("decision_id") in skip:
            continue
        if obj["kind"] == "decision":
            assert schema_errors("decision", obj) == [], obj
            decisions.append(DecisionRecord.model_validate(obj))
        elif obj["kind"] == "outcome":
            assert schema_errors("decision_outcome", obj) == [], obj
            outcomes[obj["decision_id"]] = obj
    assert not led.read().problems
    return decisions, outcomes


def _archives(ws: Path) -> list[Path]:
    root = ws / ".cyntra" / "archives"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _kernel_events(ws: Path) -> list[dict[str, Any]]:
    path = ws / ".cyntra" / "logs" / "kernel.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _applied(decisions: list[DecisionRecord]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [(d.issue_id, d.decision_id, d.applied.action.label(), tuple(d.applied.toolchains)) for d in decisions]


def test_shadow_once_records_both_plans_everywhere(runs: Runs) -> None:
    ws = runs.shadow_once
    decisions, outcomes = _own_ledger(ws, _ids(runs.history))
    assert len(decisions) >= 2, "--once should fill several lanes with the later issues"
    by_id = {d.decision_id: d for d in decisions}
    for d in decisions:
        assert d.mode == "shadow"
        assert d.heuristic.status == "ok" and d.heuristic.action is not None
        assert d.candidate is not None and d.candidate.strategy == "majority" and d.candidate.status == "ok"
        assert d.candidate.action is not None and d.candidate.latency_ms is not None
        assert d.agreement is not None and set(d.agreement) == {"swarm_id", "parallelism", "max_run_minutes",
                                                                "max_candidates", "all"}
        assert d.applied.source == "heuristic" and d.fallback_reason is None and d.propensity == 1.0
        assert d.decision_id in outcomes, "every decision gets its outcome"

    upstream = json.loads(UPSTREAM_ROLLOUT.read_text()) if UPSTREAM_ROLLOUT.is_file() else None
    archives = [a for a in _archives(ws) if not (runs.history / ".cyntra" / "archives" / a.name).exists()]
    assert len(archives) >= len(decisions)
    seen: set[str] = set()
    for arch in archives:
        manifest = json.loads((arch / "manifest.json").read_text())
        rollout = json.loads((arch / "rollout.json").read_text())
        assert schema_errors("manifest", manifest) == []
        assert schema_errors("rollout", rollout) == []
        if upstream is not None:
            jsonschema.validate(rollout, upstream)
        for doc in (manifest["planner"], rollout["planner"]):
            assert schema_errors("decision", doc) == []
            rec = DecisionRecord.model_validate(doc)
            # The same record in manifest, rollout and ledger (archives may leave out wall-clock latencies).
            assert _no_latency(doc) == _no_latency(by_id[rec.decision_id].model_dump(mode="json"))
            assert rec.heuristic.action is not None and rec.candidate is not None and rec.candidate.action is not None
        seen.add(manifest["planner"]["decision_id"])
    assert seen == set(by_id)

    events = [e for e in _kernel_events(ws) if e.get("event") == "strategy.decision" and e["mode"] == "shadow"]
    assert sorted(e["decision_id"] for e in events) == sorted(by_id)
    for e in events:
        rec = by_id[e["decision_id"]]
        assert e["issue_id"] == rec.issue_id and e["mode"] == "shadow"
        assert e["heuristic"] == rec.heuristic.action.label()  # type: ignore[union-attr]
        assert e["candidate"] == rec.candidate.action.label()  # type: ignore[union-attr]
        assert e["candidate_status"] == "ok" and e["applied"] == rec.applied.action.label()


def test_shadow_once_applies_the_heuristic_only_plans(runs: Runs) -> None:
    history = _ids(runs.history)
    shadow, _ = _own_ledger(runs.shadow_once, history)
    heuristic, _ = _own_ledger(runs.heuristic_once, history)
    assert shadow and all(d.mode == "heuristic" and d.candidate is None for d in heuristic)
    assert _applied(shadow) == _applied(heuristic)

    def plans(ws: Path) -> dict[str, Any]:
        return {a.name: json.loads((a / "manifest.json").read_text())["plan"] for a in _archives(ws)
                if not (runs.history / ".cyntra" / "archives" / a.name).exists()}

    assert plans(runs.shadow_once) == plans(runs.heuristic_once)


def test_shadow_until_idle_equals_the_heuristic_history(runs: Runs) -> None:
    """A whole sim history in shadow mode: every decision and every outcome as with the heuristic."""
    shadow, s_out = _own_ledger(runs.shadow_idle)
    heuristic, h_out = _own_ledger(runs.history)
    assert len(shadow) >= N_ISSUES
    assert _applied(shadow) == _applied(heuristic)
    assert {k: (v["status"], v["cost_usd"]) for k, v in s_out.items()} == {
        k: (v["status"], v["cost_usd"]) for k, v in h_out.items()}
    statuses = {d.candidate.status for d in shadow if d.candidate is not None}
    assert statuses == {"ok"}
    # Majority is a constant plan: it agrees exactly where the heuristic chose that plan.
    majority = {d.candidate.action for d in shadow if d.candidate is not None}
    assert len(majority) == 1
    (m,) = majority
    assert all(d.agreement is not None and d.agreement["all"] == (d.heuristic.action == m) for d in shadow)
    assert any(not d.agreement["all"] for d in shadow if d.agreement)  # disagreements are recorded


def _no_latency(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _no_latency(v) for k, v in obj.items() if k != "latency_ms"}
    if isinstance(obj, list):
        return [_no_latency(v) for v in obj]
    return obj


def _mask(obj: Any, ws: Path) -> Any:
    if isinstance(obj, dict):
        return {k: ("<masked>" if k in MASKED and v is not None else _mask(v, ws)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask(v, ws) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(ws), "<workspace>")
    return obj


def test_shadow_decision_record_snapshot(runs: Runs, snapshot: SnapshotAssertion) -> None:
    decisions, _ = _own_ledger(runs.shadow_once, _ids(runs.history))
    records = {d.issue_id: _mask(d.model_dump(mode="json"), runs.shadow_once) for d in decisions}
    assert records == snapshot.use_extension(JSONSnapshotExtension)


def test_strategy_show_on_the_shadow_workspace(runs: Runs) -> None:
    ws = runs.shadow_once
    issue_id = _own_ledger(ws, _ids(runs.history))[0][0].issue_id
    result = CliRunner().invoke(strategy_group, ["show", issue_id, "-w", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["configured_strategy"] == "shadow" and data["issue_id"] == issue_id
    rows = {r["strategy"]: r for r in data["strategies"]}
    assert list(rows) == ["heuristic", "majority"]
    assert rows["majority"]["status"] == "ok" and 0 < rows["majority"]["confidence"] <= 1
    for row in rows.values():
        assert row["clamp"]["applied"] is not None and isinstance(row["clamp"]["violations"], list)
    assert [s["step"] for s in data["heuristic_trace"]] == ["routing", "speculation", "controller", "budget"]
    # Nothing was written: show is read-only.
    before = sorted(p.name for p in (ws / ".cyntra" / "decisions").iterdir())
    text = CliRunner().invoke(strategy_group, ["show", issue_id, "-w", str(ws)])
    assert text.exit_code == 0 and "majority" in text.output and "[ok]" in text.output
    assert sorted(p.name for p in (ws / ".cyntra" / "decisions").iterdir()) == before
    missing = CliRunner().invoke(strategy_group, ["show", "nope", "-w", str(ws)])
    assert missing.exit_code == 2 and "nope" in missing.output
