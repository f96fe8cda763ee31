"""World evolution (``cyntra evolve``): world files, the sim candidate program, selection, and whole
runs under heuristic / shadow / urm / a plugin strategy, with failing, hanging and lying candidates.

Every run is real: the sim world is ``python -m cyntra.sim.worlds`` in a subprocess, in a
workcell, with shell gates run by the verifier. Fixture worlds live in ``tests/fixtures/worlds/``.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cyntra import schemas
from cyntra.clock import parse_ts
from cyntra.errors import ConfigError
from cyntra.kernel.artifacts import Manifest
from cyntra.kernel.evolve import (
    CandidateResult,
    EvolveWorldReport,
    ObjectiveSpec,
    beats,
    evolve_world,
    list_world_runs,
    metric_key,
    mutate,
    read_metrics,
    world_run_dirs,
    world_run_summaries,
)
from cyntra.kernel.evolve_cli import evolve_cmd
from cyntra.kernel.plan import TraceStep
from cyntra.kernel.session import KernelSession
from cyntra.planner.action_space import PlanAction
from cyntra.planner.index import SimilarRunsIndex
from cyntra.sim import worlds as sim_worlds
from cyntra.state.issue import Issue
from cyntra.strategy import base as strategy_base
from cyntra.strategy.base import BaseStrategy, StrategyContext, StrategyDecision, register_strategy
from cyntra.strategy.ledger import Ledger
from cyntra.universe import load_universe
from cyntra.universe.context import read_context
from cyntra.universe.world import WorldSpec, load_world, parse_world_file
from planner_model.dataset import build_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "worlds"
PLUGIN = "evolve-test-serial2"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with the fixture universe ``evo`` (no config: heuristic, bundled policy)."""
    shutil.copytree(FIXTURES, tmp_path / "universes" / "evo")
    return tmp_path


class SerialTwo(BaseStrategy):
    """A tiny learned-strategy stand-in: always serial_handoff with two candidates."""

    name = PLUGIN

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        assert ctx.job_type == "world"
        assert ctx.planner_input is not None and ctx.planner_input["world_id"] == ctx.extras["world_id"]
        action = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=15, max_candidates=2)
        return StrategyDecision(action=action, confidence=0.9,
                                trace=[TraceStep(step="test", detail="serial, two candidates")])


@pytest.fixture
def plugin() -> Iterator[str]:
    register_strategy(PLUGIN, lambda env: SerialTwo())
    yield PLUGIN
    strategy_base._REGISTRY.pop(PLUGIN, None)


def _write_config(ws: Path, text: str) -> None:
    (ws / ".cyntra").mkdir(exist_ok=True)
    (ws / ".cyntra" / "config.yaml").write_text(text, encoding="utf-8")


def _session(ws: Path, strategy: str | None = None) -> KernelSession:
    return KernelSession.open(ws, universe_id="evo", strategy=strategy)


def _primary(report: EvolveWorldReport) -> list[float]:
    """The incumbent's first objective metric after each generation."""
    metric = report.objective.order[0]
    out = []
    for g in report.per_generation:
        assert g.incumbent_metrics is not None
        out.append(g.incumbent_metrics[metric])
    return out


def _check_artifacts(run_dir: Path) -> tuple[EvolveWorldReport, dict[str, Any]]:
    """Every artifact of a run validates against its schema; returns the report and the record."""
    ctx_data = json.loads((run_dir / "context.json").read_text())
    assert schemas.schema_errors("run_context", ctx_data) == []
    ctx = read_context(run_dir)
    assert ctx.issue_id is None and ctx.universe_id == "evo"
    manifest_data = json.loads((run_dir / "manifest.json").read_text())
    assert schemas.schema_errors("manifest", manifest_data) == []
    manifest = Manifest.model_validate(manifest_data)
    assert manifest.job_type == "world" and manifest.toolchain == "world"
    record = manifest.planner
    assert record is not None
    assert schemas.schema_errors("decision", record) == []
    assert record["job_type"] == "world"
    assert record["world_id"] == ctx.world_id and record["objective_id"] == ctx.objective_id
    report_data = json.loads((run_dir / "evolve_world.json").read_text())
    assert schemas.schema_errors("evolve_world", report_data) == []
    report = EvolveWorldReport.model_validate(report_data)
    assert (report.world_id, report.objective_id, report.swarm_id) == (ctx.world_id, ctx.objective_id, ctx.swarm_id)
    assert report.decision_id == record["decision_id"]
    assert report.population_size == record["applied"]["action"]["max_candidates"]
    for c in report.candidates:
        cdir = run_dir / "candidates" / c.candidate_id
        result = CandidateResult.model_validate_json((cdir / "result.json").read_text())
        assert result.status == c.status and result.metrics == c.metrics
        assert json.loads((cdir / "params.json").read_text()) == c.params
        assert (cdir / "logs" / "stdout.log").is_file() or c.status == "error"
        if c.status == "success":
            assert json.loads((cdir / "metrics.json").read_text()) == pytest.approx(c.metrics)
    return report, record


# --------------------------------------------------------------------------- world files


def test_world_files_load_and_resolve(ws: Path) -> None:
    universe = load_universe(ws, "evo")
    bowl = load_world(universe, "bowl")
    assert bowl.spec.params["x"].type == "float"
    assert bowl.spec.default_params() == {"x": 0.05, "y": 0.95, "z": 0.9}
    assert bowl.spec.required_metrics(["overall", "duration_ms", "fitness"]) == [
        "overall", "duration_ms", "loss", "fitness"]
    assert bowl.tags == ["sim", "bowl"]
    library = load_world(universe, "library")  # a directory holding world.yaml
    assert library.path.name == "world.yaml" and library.world_dir.name == "library"
    assert library.spec.default_params() == {"shelf_density": 0.5, "lamps": 0}
    with pytest.raises(ConfigError, match="disabled") as exc:
        load_world(universe, "retired")
    assert exc.value.field == "worlds.4.enabled"
    with pytest.raises(ConfigError, match="unknown world"):
        load_world(universe, "nope")


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (lambda s: s.replace('"{seed}"', '"{sead}"'), "command.8", "unknown placeholder {sead}"),
        (lambda s: s.replace("low: 0.0, high: 1.0, default: 0.05", "low: 1.0, high: 1.0"), "params.x.high",
         "must be above low"),
        (lambda s: s.replace("default: 0.95", "default: 1.5"), "params.y.default", "outside"),
        (lambda s: s.replace("_noise: 0.002", "_noise: 0.002\n  x: 0.3"), "overrides.x", "both searched"),
        (lambda s: s + "metrics_file: ../escape.json\n", "metrics_file", None),
        (lambda s: s.replace("sane: {metric: overall, min: -10}", "sane: {metric: overall}"), "gates.sane", None),
        (lambda s: s + "colour: blue\n", "<root>", "colour"),
        (lambda s: s.replace("world_id: bowl", "world_id: other"), "world_id", "does not match"),
    ],
)
def test_bad_world_files_name_file_line_field(ws: Path, edit: Any, field: str, reason: str | None) -> None:
    path = ws / "universes" / "evo" / "bowl.world.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as exc:
        load_world(load_universe(ws, "evo"), "bowl")
    err = exc.value
    assert err.path == str(path)
    assert err.field == field
    if field != "<root>":
        assert err.line is not None and err.line > 1
    if reason is not None:
        assert reason in err.reason


def test_world_schema_and_model_agree() -> None:
    schema = schemas.load_schema("world")
    assert set(schema["properties"]) == set(WorldSpec.model_fields)
    report_schema = schemas.load_schema("evolve_world")
    assert set(report_schema["properties"]) == set(EvolveWorldReport.model_fields)
    assert set(report_schema["required"]) <= set(EvolveWorldReport.model_fields)
    spec = parse_world_file(FIXTURES / "bowl.world.yaml")
    assert schemas.schema_errors("world", spec.model_dump(mode="json", exclude_none=True)) == []


# --------------------------------------------------------------------------- units


def test_read_metrics_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    need = ["overall", "duration_ms"]
    assert read_metrics(p, need) == (None, "metrics file m.json was not written")
    cases = {
        "{not json": "invalid JSON",
        "[1, 2]": "expected a JSON object",
        '{"overall": 1}': "missing metric(s) duration_ms",
        '{"overall": NaN, "duration_ms": 1}': "invalid JSON",
        '{"overall": true, "duration_ms": 1}': "overall: True is not a finite number",
        '{"overall": "0.5", "duration_ms": 1}': "is not a finite number",
    }
    for text, why in cases.items():
        p.write_text(text)
        metrics, reason = read_metrics(p, need)
        assert metrics is None and reason is not None and why in reason, text
    p.write_text('{"overall": 0.5, "duration_ms": 3, "note": "kept out", "extra": 2}')
    assert read_metrics(p, need) == ({"overall": 0.5, "duration_ms": 3.0, "extra": 2.0}, None)


def test_mutation_stays_in_space_and_is_seeded() -> None:
    spec = WorldSpec.model_validate({
        "command": ["true"],
        "params": {"f": {"type": "float", "low": -1, "high": 1}, "i": {"type": "int", "low": 0, "high": 4},
                   "c": {"type": "choice", "values": ["a", "b", "c"]}},
        "mutation": {"scale": 1.0, "decay": 1.0, "choice_rate": 1.0},
    })
    parent = spec.default_params()
    assert parent == {"f": 0.0, "i": 2, "c": "a"}
    seen_c = set()
    for k in range(200):
        child = mutate(spec, parent, random.Random(k), generation=0)
        assert -1 <= child["f"] <= 1 and isinstance(child["i"], int) and 0 <= child["i"] <= 4
        assert child["c"] in ("b", "c")  # choice_rate 1: always another value
        seen_c.add(child["c"])
    assert seen_c == {"b", "c"}
    assert mutate(spec, parent, random.Random(5), 3) == mutate(spec, parent, random.Random(5), 3)


def _cand(cid: str, metrics: dict[str, float] | None, eligible: bool = True) -> CandidateResult:
    g, i = (int(x) for x in cid.split("-"))
    return CandidateResult(candidate_id=cid, generation=g, index=i, seed=0, params={}, argv=[],
                           status="success" if metrics else "failed", metrics=metrics, eligible=eligible,
                           started_at="2026-01-01T00:00:00Z", completed_at="2026-01-01T00:00:01Z",
                           duration_ms=1000, workcell_id="wc")


def test_selection_is_lexicographic_by_direction() -> None:
    obj = ObjectiveSpec(objective_id="o", metrics={"overall": "max", "duration_ms": "min"},
                        order=["overall", "duration_ms"], require_all_gates_pass=True)
    a = _cand("0-0", {"overall": 0.9, "duration_ms": 500})
    b = _cand("0-1", {"overall": 0.9, "duration_ms": 200})  # same score, faster: better
    c = _cand("0-2", {"overall": 0.95, "duration_ms": 900})  # higher score wins regardless of time
    assert sorted([a, b, c], key=lambda x: metric_key(x.metrics or {}, obj)) == [c, b, a]
    assert beats(b, a, obj) and not beats(a, b, obj) and not beats(a, a, obj)
    assert beats(a, None, obj)
    assert not beats(_cand("0-3", {"overall": 2.0, "duration_ms": 1}, eligible=False), a, obj)


def test_sim_world_program_is_deterministic_and_misbehaves_on_request(tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    metrics = tmp_path / "m.json"
    params.write_text(json.dumps({"x": 0.2, "y": 0.7, "_faults": {"1-2": "invalid:missing", "3": "exit:4"}}))
    assert sim_worlds.main(["--params", str(params), "--metrics", str(metrics), "--seed", "9"]) == 0
    first = metrics.read_text()
    assert sim_worlds.main(["--params", str(params), "--metrics", str(metrics), "--seed", "9"]) == 0
    assert metrics.read_text() == first
    got = json.loads(first)
    assert got == sim_worlds.evaluate({"x": 0.2, "y": 0.7}, 9)
    assert got["overall"] != sim_worlds.evaluate({"x": 0.2, "y": 0.7}, 10)["overall"]  # seed matters
    at_target = {k: sim_worlds.default_target(k) for k in ("x", "y")}
    assert sim_worlds.evaluate({**at_target, "_noise": 0}, 1)["overall"] == 1.0
    assert sim_worlds.evaluate({**at_target, "_noise": 0}, 1)["overall"] > got["overall"]
    # faults by candidate
    assert sim_worlds.main(["--params", str(params), "--metrics", str(metrics), "--seed", "9",
                            "--generation", "1", "--candidate", "2"]) == 0
    assert set(json.loads(metrics.read_text())) == {"loss"}
    assert sim_worlds.main(["--params", str(params), "--metrics", str(metrics), "--seed", "9",
                            "--generation", "5", "--candidate", "3"]) == 4
    files = sim_worlds.sim_world_files("sim_evolve", "bowl")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    loaded = load_world(load_universe(tmp_path, "sim_evolve"), "bowl")
    assert loaded.spec.command[0] == "{python}"


# --------------------------------------------------------------------------- whole runs


def test_evolve_heuristic_improves_and_records_everything(ws: Path) -> None:
    session = _session(ws)
    result = evolve_world(session, "bowl", generations=3)
    report, record = _check_artifacts(result.run_dir)
    assert report.strategy == "heuristic" and report.applied_source == "heuristic"
    assert (report.swarm_id, report.swarm_type, report.population_size) == ("speculate_vote", "parallel_compete", 3)
    assert report.generations_run == 3 and len(report.candidates) == 9
    assert all(c.status == "success" and c.eligible for c in report.candidates)
    primary = _primary(report)
    assert primary == sorted(primary), "the incumbent never gets worse"
    assert report.status == "success" and report.best is not None
    assert report.best.metrics is not None and report.baseline is not None
    assert report.best.metrics["overall"] > report.baseline  # the sim bowl is climbable
    assert report.utility == pytest.approx(report.best.metrics["overall"] - report.baseline)
    assert report.best.candidate_id == report.per_generation[-1].incumbent_id
    # generation 0 starts at the world's defaults; later generations descend from the incumbent
    first = next(c for c in report.candidates if c.candidate_id == "0-0")
    assert {k: first.params[k] for k in "xyz"} == {"x": 0.05, "y": 0.95, "z": 0.9}
    for g in report.per_generation[1:]:
        assert g.parent_id == report.per_generation[g.generation - 1].incumbent_id
    # the decision: universe defaults through the clamp, recorded with job_type world
    assert record["applied"]["action"]["swarm_id"] == "speculate_vote"
    assert record["issue_id"] == "world:bowl"
    ledger = Ledger(ws / ".cyntra" / "decisions").read()
    assert ledger.problems == []
    (joined,) = ledger.joined()
    assert joined.decision.job_type == "world" and joined.decision.world_id == "bowl"
    assert joined.decision.objective_id == "bowl_v1"
    assert joined.outcome is not None and joined.outcome.gates_passed and joined.outcome.candidates_run == 9
    assert joined.outcome.utility == pytest.approx(report.utility)
    # the index: one summary per candidate, found by world and objective only
    runs = [s for s in session.index.runs() if s.job_type == "world"]
    assert len(runs) == 9 and {s.world_id for s in runs} == {"bowl"}
    assert sum(not s.loser for s in runs) == 1
    later = "2999-01-01T00:00:00Z"
    tags = ["sim", "bowl"]
    hits = session.index.similar("world", "code", tags, later, n=20, world_id="bowl", objective_id="bowl_v1")
    assert len(hits) == 9
    assert session.index.similar("world", "code", tags, later, world_id="bowl", objective_id="fast_v1") == []
    assert session.index.similar("world", "code", tags, later, world_id="faulty", objective_id="bowl_v1") == []
    assert session.index.similar("code", "code", tags, later) == []
    # ... and persisted: a fresh session sees them
    fresh = _session(ws)
    assert len(fresh.index.similar("world", "code", tags, later, n=20, world_id="bowl", objective_id="bowl_v1")) == 9


def test_evolve_shadow_urm_and_plugin_strategies(ws: Path, plugin: str) -> None:
    _write_config(ws, f"strategy: shadow\nplanner:\n  candidate: {plugin}\n")
    shadow = evolve_world(_session(ws), "bowl", generations=2)
    report, record = _check_artifacts(shadow.run_dir)
    assert report.strategy == "shadow" and report.applied_source == "heuristic"
    assert record["candidate"]["status"] == "ok"
    assert record["candidate"]["action"]["swarm_id"] == "serial_handoff"  # recorded, not applied
    assert record["agreement"]["all"] is False
    assert report.swarm_id == "speculate_vote" and report.population_size == 3
    assert _primary(report) == sorted(_primary(report))

    # urm without a checkpoint: falls back to the heuristic and says why
    urm = evolve_world(_session(ws, "urm"), "bowl", generations=2)
    report_u, record_u = _check_artifacts(urm.run_dir)
    assert report_u.strategy == "urm" and report_u.applied_source == "heuristic"
    assert record_u["fallback_reason"] and report_u.fallback_reason == record_u["fallback_reason"]
    assert record_u["candidate"]["status"] == "unavailable"
    assert _primary(report_u) == sorted(_primary(report_u))
    # same seed and plan: the same candidates measure the same (determinism across runs)
    assert [c.metrics for c in report_u.candidates] == [c.metrics for c in report.candidates]

    # a strategy that is applied: it chooses serial_handoff with two candidates
    chosen = evolve_world(_session(ws, plugin), "bowl", generations=3)
    report_p, _ = _check_artifacts(chosen.run_dir)
    assert report_p.applied_source == "candidate"
    assert (report_p.swarm_type, report_p.population_size) == ("serial_handoff", 2)
    g0 = report_p.per_generation[0]
    assert g0.candidates_run == 1 and g0.stopped_early  # the first passing candidate ends generation 0
    for g in report_p.per_generation:
        ran = [c for c in report_p.candidates if c.generation == g.generation]
        assert len(ran) == g.candidates_run <= 2
        if g.stopped_early:
            assert g.incumbent_id == ran[-1].candidate_id  # it stopped because the last one beat the incumbent
    assert _primary(report_p) == sorted(_primary(report_p))

    listed = list_world_runs(ws, world_id="bowl", objective_id="bowl_v1")
    assert [r.run_dir for r in listed] == [chosen.run_dir, urm.run_dir, shadow.run_dir]
    assert {r.status for r in listed} == {"success"}
    assert list_world_runs(ws, world_id="bowl", objective_id="fast_v1") == []
    assert len(list_world_runs(ws, universe_id="evo")) == 3

    ledger = Ledger(ws / ".cyntra" / "decisions").read()
    modes = [(j.decision.mode, j.decision.job_type, j.outcome is not None) for j in ledger.joined()]
    assert modes == [("shadow", "world", True), ("urm", "world", True), (plugin, "world", True)]
    # later world runs see these candidates as similar runs (strictly earlier, same world/objective)
    issue = Issue(id="world:bowl", tags=["sim", "bowl"])
    pi = _session(ws).planner_input(issue, parse_ts("2999-01-01T00:00:00Z"), job_type="world",
                                    world_id="bowl", objective_id="bowl_v1")
    assert len(pi.last_N_similar_runs) == 8
    assert {r.issue_id for r in pi.last_N_similar_runs} == {"world:bowl"}
    assert _session(ws).planner_input(issue, parse_ts("2999-01-01T00:00:00Z"), job_type="world",
                                      world_id="bowl", objective_id="fast_v1").last_N_similar_runs == []


def test_failing_hanging_and_lying_candidates_are_recorded_and_excluded(ws: Path) -> None:
    result = evolve_world(_session(ws), "faulty")
    report, _ = _check_artifacts(result.run_dir)
    by_id = {c.candidate_id: c for c in report.candidates}
    assert len(by_id) == 6
    assert by_id["0-0"].status == "success" and by_id["0-0"].eligible
    assert by_id["0-1"].status == "failed" and "exit:3" in by_id["0-1"].fail_codes
    assert by_id["0-2"].status == "timeout" and "timeout" in by_id["0-2"].fail_codes
    assert by_id["1-0"].status == "invalid_metrics" and "invalid_metrics" in by_id["1-0"].fail_codes
    assert by_id["1-2"].status == "invalid_metrics"
    assert by_id["1-1"].status == "success" and not by_id["1-1"].all_gates_passed
    assert by_id["1-1"].fail_codes == ["gate:not_1_1"]
    assert [c.candidate_id for c in report.candidates if c.eligible] == ["0-0"]
    assert report.status == "success" and report.best is not None and report.best.candidate_id == "0-0"
    assert report.per_generation[1].incumbent_id == "0-0" and report.per_generation[1].best_id is None
    cdir = result.run_dir / "candidates"
    assert (cdir / "1-0" / "metrics.invalid").read_text() == "{not json"
    assert not (cdir / "1-0" / "metrics.json").exists()
    timeout = CandidateResult.model_validate_json((cdir / "0-2" / "result.json").read_text())
    assert timeout.duration_ms < 10_000 and "timed out" in (timeout.error or "")
    gate = CandidateResult.model_validate_json((cdir / "1-1" / "result.json").read_text())
    assert gate.verification is not None and gate.verification.blocking_failures == ["not_1_1"]
    log_path = gate.verification.gates["not_1_1"].log_path
    assert log_path is not None and Path(log_path).is_file() and str(cdir) in log_path
    assert list((ws / ".cyntra" / "workcells").iterdir()) == []  # every workcell was cleaned up
    summaries = {s.run_id.rsplit("-g", 1)[1]: s for s in _session(ws).index.runs()}
    assert summaries["0-c2"].status == "timeout" and summaries["1-c1"].failed_gates == ["not_1_1"]


def test_cli_world_with_no_passing_candidate_and_bad_input(ws: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(evolve_cmd, ["-w", str(ws), "--universe", "evo", "--world", "broken", "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    report = out["report"]
    assert schemas.schema_errors("evolve_world", report) == []
    assert report["status"] == "no_passing_candidate" and report["best"] is None and report["utility"] == 0.0
    assert {c["status"] for c in report["candidates"]} == {"error"}
    assert report["generations_run"] == 2
    (joined,) = Ledger(ws / ".cyntra" / "decisions").read().joined()
    assert joined.outcome is not None and joined.outcome.gates_passed is False
    assert joined.outcome.status == "failed"

    res = runner.invoke(evolve_cmd, ["-w", str(ws), "--world", "retired"])
    assert res.exit_code == 2 and "disabled" in res.output
    res = runner.invoke(evolve_cmd, ["-w", str(ws), "--world", "bowl", "--objective", "nope"])
    assert res.exit_code == 2 and "unknown objective 'nope'" in res.output
    res = runner.invoke(evolve_cmd, ["-w", str(ws), "--world", "bowl", "--population", "4"])
    assert res.exit_code == 2


def test_clamp_caps_population_of_a_small_low_risk_fab_world(ws: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(evolve_cmd, ["-w", str(ws), "--world", "library", "--generations", "1",
                                     "--objective", "fast_v1", "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert "best" in res.output
    (run_dir,) = (ws / ".cyntra" / "runs").iterdir()
    report, record = _check_artifacts(run_dir)
    assert record["heuristic"]["action"]["max_candidates"] == 3
    assert report.population_size == 2 and len(report.candidates) == 2
    assert any(v["rule_id"] == "small-low-risk-stays-cheap" for v in record["clamp"])
    assert report.objective.order == ["duration_ms", "overall"] and report.seed == 5
    (summary, *_) = list(_session(ws).index.runs())
    assert summary.domain == "fab_world" and "asset:world" in summary.tags


def test_world_runs_feed_the_index_rebuild_and_the_dataset(ws: Path, tmp_path: Path) -> None:
    """World decisions become dataset examples (job_type world) from the run directories alone.

    The offline summaries (:func:`world_run_summaries`) equal what evolve indexed live, a rebuilt
    index equals the live one, and the dataset rebuilds every world decision's planner input with
    the hash the live decision recorded.
    """
    session = _session(ws)
    for seed in (1, 2, 3):
        evolve_world(session, "bowl", generations=1, seed=seed)
    evolve_world(session, "library", generations=1, objective_id="fast_v1")
    live = sorted((s.model_dump() for s in session.index.runs()), key=lambda s: s["run_id"])
    assert len(live) == 3 * 3 + 2

    offline = [s.model_dump() for d in world_run_dirs(ws) for s in world_run_summaries(d)]
    assert sorted(offline, key=lambda s: s["run_id"]) == live
    fresh = SimilarRunsIndex(ws)
    assert fresh.rebuild() == []
    assert sorted((s.model_dump() for s in fresh.runs()), key=lambda s: s["run_id"]) == live

    built = build_dataset(ws, tmp_path / "ds", quiet=True, write_inputs=True)
    src, rep = built.meta.source, built.report
    assert (src["runs"], src["decisions"], src["examples"]) == (11, 4, 4)
    assert rep["dropped"] == {} and rep["problems"] == []
    assert rep["planner_input_hash"] == {"checked": 4, "mismatched": 0}
    inputs = [json.loads(line) for split in ("train", "val", "test")
              for line in (tmp_path / "ds" / f"{split}__planner_inputs.jsonl").read_text().splitlines()]
    assert sorted(pi["world_id"] for pi in inputs) == ["bowl", "bowl", "bowl", "library"]
    assert {pi["job_type"] for pi in inputs} == {"world"}
    # the later bowl runs saw the earlier bowl candidates as similar runs, never the library's
    n_similar = sorted(len(pi["last_N_similar_runs"]) for pi in inputs if pi["world_id"] == "bowl")
    assert n_similar == [0, 3, 6]
    assert build_dataset(ws, tmp_path / "ds2", quiet=True, from_index=True).meta.dataset_sha256 == \
        built.meta.dataset_sha256

    # an unfinished run (no evolve_world.json) is reported by file and skipped; nothing else is lost
    (first, *_) = world_run_dirs(ws)
    (first / "evolve_world.json").rename(first / "evolve_world.json.bak")
    partial = build_dataset(ws, tmp_path / "ds3", quiet=True)
    assert partial.meta.source["examples"] == 3
    assert partial.report["dropped"] == {"decision_without_archive": 1, "missing_evolve_world": 1}
    assert "evolve_world.json" in partial.report["problems"][0]
