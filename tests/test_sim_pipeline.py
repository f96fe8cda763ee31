"""The simulator through the real kernel: determinism, history → dataset, and the import boundary."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cyntra.cli import main

REPO = Path(__file__).resolve().parents[1]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _tree_hash(root: Path, rel_to: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(rel_to).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _ledger_without_latency(ws: Path) -> list[object]:
    rows = []
    for path in sorted((ws / ".cyntra" / "decisions").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for side in ("heuristic", "candidate"):
                if isinstance(row.get(side), dict):
                    row[side].pop("latency_ms", None)
            rows.append(row)
    return rows


def _sim_run(ws: Path, issues: int = 40, seed: int = 5) -> dict[str, object]:
    _invoke("sim", "init", "-w", str(ws), "--issues", str(issues), "--seed", str(seed))
    report: dict[str, object] = json.loads(_invoke("run", "-w", str(ws), "--until-idle", "--json"))
    return report


def test_same_profile_and_seed_give_byte_identical_archives_and_issues(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ra, rb = _sim_run(a), _sim_run(b)
    assert ra["dispatched"] == rb["dispatched"] and int(str(ra["dispatched"])) >= 40
    for sub in (".beads", ".cyntra/archives", ".cyntra/index"):
        ha = _tree_hash(a / sub, a)
        hb = _tree_hash(b / sub, b)
        assert ha == hb, f"{sub} differs between two runs with the same seed"
    # The ledger also records wall-clock strategy latencies (real measurements): equal without them.
    assert _ledger_without_latency(a) == _ledger_without_latency(b)
    other = tmp_path / "c"
    _invoke("sim", "init", "-w", str(other), "--issues", "40", "--seed", "6")
    _invoke("run", "-w", str(other), "--until-idle", "--json")
    assert _tree_hash(other / ".beads", other) != _tree_hash(a / ".beads", a)


def test_history_builds_into_a_dataset_whose_inputs_match_the_live_decisions(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    report = _sim_run(ws, issues=60)
    out = tmp_path / "ds"
    _invoke("planner", "build-dataset", "--workspace", str(ws), "--out", str(out), "-q")
    meta = json.loads((out / "dataset.json").read_text())
    split = json.loads((out / "split_report.json").read_text())
    assert sum(meta["splits"].values()) == report["dispatched"]
    checks = split["planner_input_hash"]
    assert checks["checked"] == report["dispatched"] and checks["mismatched"] == 0


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_downstream_reads_simulator_internals() -> None:
    """Datasets, training and planner inputs see archives and the issues store only."""
    planner = REPO / "kernel" / "src" / "cyntra" / "planner"
    downstream = [*sorted((REPO / "train" / "planner_model").glob("*.py")),
                  *(planner / f"{m}.py" for m in ("run_summary", "index", "planner_input", "tokenizer", "cli"))]
    assert downstream
    for path in downstream:
        bad = {m for m in _imports(path) if m == "cyntra.sim" or m.startswith("cyntra.sim.")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def _run_exploring(ws: Path, *, trap: bool = False, shadow: bool = False) -> None:
    """60 simulated issues arriving within two days (a backlog: wide plans wait for lanes) with
    exploration at 0.3 (and, with ``trap``, a dynamics report that puts the code domain in
    ``trap``; with ``shadow``, strategy shadow with the ``majority``
    candidate and half the exploring draws on its plans), run until idle."""
    import yaml

    _invoke("sim", "init", "-w", str(ws), "--issues", "60", "--seed", "8", "--span-days", "2")
    cfg_path = ws / ".cyntra" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["exploration"] = {"epsilon": 0.3}
    if shadow:
        cfg["strategy"] = "shadow"
        cfg.setdefault("planner", {})["candidate"] = "majority"
        cfg["exploration"]["candidate_share"] = 0.5
    cfg_path.write_text(yaml.safe_dump(cfg))
    if trap:
        report = ws / ".cyntra" / "dynamics" / "dynamics_report.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"domains": {"code": {"action_rate": 0.01}}}))
    _invoke("run", "-w", str(ws), "--until-idle", "--json")


@pytest.mark.parametrize("mode", ["heuristic", "shadow"])
def test_the_fit_preview_changes_nothing_but_the_work_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           mode: str) -> None:
    """The scheduler skips issues whose previewed plan cannot fit without deciding them; the
    history (issues, archives, index, ledger) equals a run that decides every issue it looks at.
    Exploration is on so the preview's exploration draw is exercised too; in shadow mode half of
    the exploring draws go to the candidate's plan, which no preview can know."""
    from cyntra.strategy.engine import DecisionEngine

    def run(ws: Path) -> None:
        _run_exploring(ws, shadow=mode == "shadow")
    calls = {"preview": 0, "decided": 0}
    original_preview, original_decide = DecisionEngine.preview_action, DecisionEngine.decide

    def counting_preview(self: DecisionEngine, *args: object, **kwargs: object) -> object:
        calls["preview"] += 1
        return original_preview(self, *args, **kwargs)  # type: ignore[arg-type]

    def counting_decide(self: DecisionEngine, ctxs: list[object], **kwargs: object) -> object:
        calls["decided"] += len(ctxs)
        return original_decide(self, ctxs, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DecisionEngine, "decide", counting_decide)
    monkeypatch.setattr(DecisionEngine, "preview_action", counting_preview)
    run(tmp_path / "with")
    with_preview = dict(calls)
    calls.update(preview=0, decided=0)
    monkeypatch.setattr(DecisionEngine, "preview_action", lambda self, *a, **k: None)
    run(tmp_path / "without")
    # the preview skipped issues the run without it had to decide (and then could not fit)
    assert with_preview["preview"] > 0 and with_preview["decided"] < calls["decided"]
    a, b = tmp_path / "with", tmp_path / "without"
    for sub in (".beads", ".cyntra/archives", ".cyntra/index"):
        assert _tree_hash(a / sub, a) == _tree_hash(b / sub, b), sub
    assert _ledger_without_latency(a) == _ledger_without_latency(b)
    decided = [r for r in _ledger_without_latency(a) if isinstance(r, dict) and "applied" in r]
    assert any(r["applied"]["source"] == "exploration" for r in decided)
    if mode == "shadow":
        assert all(r["mode"] == "shadow" and r["candidate"] for r in decided)


def test_sim_oracle_prices_an_issue_whose_plan_cannot_fit_the_lanes(tmp_path: Path) -> None:
    """`sim oracle` reports the heuristic's plan even when that plan could never start (3 slots
    x 120,000 tokens over a 300,000-token cap): reports decide every issue they consider."""
    ws = tmp_path / "ws"
    _invoke("sim", "init", "-w", str(ws), "--issues", "60", "--seed", "8")
    rows = [json.loads(line) for line in (ws / ".beads" / "issues.jsonl").read_text().splitlines()]
    big = next(r for r in rows if r.get("dk_risk") == "critical" and int(r.get("dk_estimated_tokens", 0)) >= 120_000)
    data = json.loads(_invoke("sim", "oracle", "-w", str(ws), "--issue", str(big["id"]), "--json"))
    assert data["heuristic"]["action"] is not None and data["heuristic"]["regret"] is not None


def test_the_plan_memo_changes_nothing_but_the_work_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner keeps the plans of issues waiting for lanes across cycles (PlanMemo); the
    history equals a run that plans every waiting issue again each cycle. Exploration is on
    and a dynamics report puts the code domain in ``trap``, so the memo's keys (attempt,
    critical path, controller decisions) all matter."""
    from cyntra.kernel.session import PlanMemo
    from cyntra.strategy.engine import DecisionEngine

    def run(ws: Path) -> None:
        _run_exploring(ws, trap=True)

    previews = [0]
    original_preview = DecisionEngine.preview_action

    def counting_preview(self: DecisionEngine, *args: object, **kwargs: object) -> object:
        previews[0] += 1
        return original_preview(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DecisionEngine, "preview_action", counting_preview)
    run(tmp_path / "memo")
    with_memo = previews[0]
    previews[0] = 0
    monkeypatch.setattr(PlanMemo, "get", lambda self, issue, critical: None)
    run(tmp_path / "plain")
    assert 0 < with_memo < previews[0]
    a, b = tmp_path / "memo", tmp_path / "plain"
    modes = {json.loads(m.read_text())["control"]["mode"] for m in (a / ".cyntra" / "archives").glob("*/manifest.json")}
    assert "trap" in modes
    for sub in (".beads", ".cyntra/archives", ".cyntra/index"):
        assert _tree_hash(a / sub, a) == _tree_hash(b / sub, b), sub
    assert _ledger_without_latency(a) == _ledger_without_latency(b)


def test_the_live_index_equals_a_rebuild_from_the_archives(tmp_path: Path) -> None:
    """The runner feeds the similar-runs index from the models it archived (no read-back); a
    rebuild that parses every archive gives the same summaries, losers of a vote included."""
    from cyntra.planner.index import SimilarRunsIndex
    from cyntra.workspace import Workspace

    ws = tmp_path / "ws"
    _sim_run(ws, issues=40)
    path = ws / ".cyntra" / "index" / "runs.jsonl"
    live = sorted(path.read_text().splitlines())
    assert any('"loser":true' in line for line in live)
    assert SimilarRunsIndex(Workspace.at(ws)).rebuild() == []
    assert sorted(path.read_text().splitlines()) == live


def test_the_live_graph_changes_nothing_but_the_work_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner keeps its issue graph across cycles (LiveGraph); the history equals a run
    that builds an IssueGraph of the whole view (active issues and their blockers) each cycle."""
    from cyntra.state.graph import IssueGraph
    from cyntra.state.live_graph import LiveGraph

    run_a = _sim_run(tmp_path / "live", issues=80, seed=3)

    def fresh_view(self: LiveGraph) -> IssueGraph:
        view = dict(self._active)
        edges = []
        for iid in self._active:
            for dep in self._into.get(iid, ()):
                edges.append(dep)
                if dep[0] in self._issues and dep[0] not in view:
                    view[dep[0]] = self._issues[dep[0]]
        return IssueGraph(view, edges, pending=[iid for iid in view if iid not in self._active])

    monkeypatch.setattr(LiveGraph, "view", fresh_view)
    run_b = _sim_run(tmp_path / "fresh", issues=80, seed=3)
    assert run_a["dispatched"] == run_b["dispatched"] and run_a["escalated"]
    a, b = tmp_path / "live", tmp_path / "fresh"
    for sub in (".beads", ".cyntra/archives", ".cyntra/index"):
        assert _tree_hash(a / sub, a) == _tree_hash(b / sub, b), sub
    assert _ledger_without_latency(a) == _ledger_without_latency(b)


def test_sim_adapter_reads_the_manifest_when_the_request_has_no_issue(tmp_path: Path) -> None:
    """The request's issue snapshot and a manifest read back give the same run; the adapter
    makes logs/ itself when the workcell has none."""
    import asyncio

    from cyntra.adapters import RunRequest
    from cyntra.clock import VirtualClock, parse_ts, use_clock
    from cyntra.sim.backend import OUTCOME_FILE, SimAdapter, sim_gate
    from cyntra.sim.profile import load_profile
    from cyntra.state.issue import Issue

    issue = Issue.model_validate({"id": "7", "title": "Fix the parser", "tags": ["kernel"],
                                  "dk_risk": "high", "dk_size": "M", "dk_attempts": 1})
    adapter = SimAdapter("codex", load_profile("default"))
    results = []
    for with_issue in (True, False):
        wc = tmp_path / f"wc-{with_issue}"
        wc.mkdir()
        (wc / "manifest.json").write_text(json.dumps({
            "issue": issue.model_dump(mode="json", exclude_none=True), "plan": {"candidate_index": 1}}))
        request = RunRequest(workcell_path=wc, logs_dir=wc / "logs", prompt="p", timeout_seconds=3600,
                             issue=issue if with_issue else None, candidate_index=1 if with_issue else 0)
        with use_clock(VirtualClock(parse_ts("2025-03-01T00:00:00Z"))):
            result = asyncio.run(adapter.run(request))
        outcome = json.loads((wc / "logs" / OUTCOME_FILE).read_text())
        gate = sim_gate("test", "", wc)
        results.append((result.model_dump(), outcome, gate))
    assert results[0] == results[1]


def test_a_blocker_that_has_not_arrived_is_not_dispatched_before_it_arrives(tmp_path: Path) -> None:
    """An early issue blocked by one created months later: the blocker enters the cycle's view as
    the early issue's blocker, holds it back, and starts only once it has arrived."""
    ws = tmp_path / "ws"
    _invoke("sim", "init", "-w", str(ws), "--issues", "12", "--seed", "2")
    rows = [json.loads(line) for line in (ws / ".beads" / "issues.jsonl").read_text().splitlines()]
    created = {r["id"]: r["created"] for r in rows}
    late, early = max(created, key=created.__getitem__), min(created, key=created.__getitem__)
    with open(ws / ".beads" / "deps.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"from": late, "to": early, "type": "blocks"}) + "\n")
    _invoke("run", "-w", str(ws), "--until-idle")
    ledger = [json.loads(line) for path in sorted((ws / ".cyntra" / "decisions").glob("*.jsonl"))
              for line in path.read_text().splitlines()]
    decided = [r for r in ledger if r["kind"] == "decision"]
    late_at = [r["timestamp"] for r in decided if r["issue_id"] == late]
    assert late_at and min(late_at) >= created[late]  # ISO-8601 UTC strings compare as times
    passed = [r["completed_at"] for r in ledger
              if r["kind"] == "outcome" and r["issue_id"] == late and r["gates_passed"]]
    early_at = [r["timestamp"] for r in decided if r["issue_id"] == early]
    assert not early_at or (passed and min(early_at) >= passed[0])


def test_no_issue_waits_forever_for_a_plan_wider_than_the_kernel(tmp_path: Path) -> None:
    """A critical 120k-token issue gets a 3-way speculation from the routing rules, which would
    need 360k of the 300k concurrent tokens: the clamp narrows it, so the run reaches it."""
    ws = tmp_path / "ws"
    _invoke("sim", "init", "-w", str(ws), "--issues", "60", "--seed", "8")
    rows = [json.loads(line) for line in (ws / ".beads" / "issues.jsonl").read_text().splitlines()]
    big = {str(r["id"]) for r in rows if int(r.get("dk_estimated_tokens", 0)) * 3 > 300_000}
    assert big
    _invoke("run", "-w", str(ws), "--until-idle")
    dry = json.loads(_invoke("run", "-w", str(ws), "--dry-run", "--json"))
    assert not [s for s in dry["skipped"] if "more than max_concurrent_tokens" in s["reason"]]
    assert not (big & set(dry["ready"]))  # none of them is left waiting
    decided = {str(r["issue_id"]) for r in _ledger_without_latency(ws) if isinstance(r, dict) and "applied" in r}
    narrowed = [r for r in _ledger_without_latency(ws) if isinstance(r, dict) and "clamp" in r
                and any(v["rule_id"] == "scheduling.max_concurrent_tokens" for v in r["clamp"])]
    assert narrowed and {str(r["issue_id"]) for r in narrowed} <= big & decided


def test_status_and_dry_run_read_a_sim_workspace_at_its_virtual_time(tmp_path: Path) -> None:
    """A fresh sim workspace: the runner would start with the first arrival only, and that is
    what status and the dry run show (the rest are listed as not arrived); they write nothing."""
    ws = tmp_path / "ws"
    _invoke("sim", "init", "-w", str(ws), "--issues", "30", "--seed", "4")
    rows = [json.loads(line) for line in (ws / ".beads" / "issues.jsonl").read_text().splitlines()]
    first = min(rows, key=lambda r: r["created"])["id"]
    before = _tree_hash(ws, ws)
    status = json.loads(_invoke("status", "-w", str(ws), "--json"))
    assert status["ready"] == [first] and len(status["not_arrived"]) == len(rows) - 1
    dry = json.loads(_invoke("run", "-w", str(ws), "--dry-run", "--json"))
    assert [s["issue_id"] for s in dry["scheduled"]] == [first]
    assert _tree_hash(ws, ws) == before  # no sim_clock.json, no ledger: reports only read
    _invoke("run", "-w", str(ws), "--until-idle")
    assert json.loads(_invoke("status", "-w", str(ws), "--json"))["not_arrived"] == []
