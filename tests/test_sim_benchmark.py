"""``cyntra sim benchmark``: the whole pipeline on a fresh sim workspace produces both reports.

The fast variant runs a tiny pipeline through the Python API (every stage, small N, two epochs);
the ``--quick`` CLI as the demo calls it is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from cyntra.schemas import schema_errors
from cyntra.sim.benchmark import (
    ROWS,
    STRATEGIES,
    BenchmarkResult,
    _fresh_ids,
    _set_config,
    benchmark_cmd,
    difference_interval,
    run_benchmark,
)
from cyntra.state.store import BeadsStore
from cyntra.strategy.ledger import Ledger
from cyntra.workspace import Workspace


def _check(out: Path, result: BenchmarkResult, n_history: int) -> None:
    data = json.loads((out / "benchmark.json").read_text())
    assert schema_errors("sim_benchmark", data) == []
    assert [r["strategy"] for r in data["rows"]] == list(ROWS)
    for row in data["rows"]:
        for key in ("pass_rate", "cost_per_pass", "utility", "regret"):
            iv = row[key]
            assert iv is not None and iv["lo"] <= iv["mean"] <= iv["hi"], (row["strategy"], key)
    oracle = next(r for r in result.rows if r.strategy == "oracle")
    assert oracle.regret is not None and oracle.regret.mean == 0.0
    for r in result.rows[:3]:
        assert r.regret is not None and r.regret.mean >= -1e-9 and r.decisions > 0
    assert {s.strategy for s in result.slices} == set(STRATEGIES)
    assert {s.dimension for s in result.slices} == {"risk", "size"}
    md = (out / "benchmark.md").read_text()
    for name in ROWS:
        assert f"| {name} |" in md
    assert "Off-policy estimates" in md and "Slices" in md
    # OPE of the heuristic and of urm-outcome, from the history, beside the realised utility.
    methods = {(o.strategy, o.method) for o in result.ope}
    assert {("heuristic", "dr"), ("urm-outcome", "dr"), ("urm-outcome", "ips")} <= methods
    for o in result.ope:
        assert (o.estimate is None) == (o.reason is not None)
        assert o.realised_held_out is not None
        assert (o.difference is None) == (o.estimate is None)
        if o.difference is not None:
            assert o.difference.mean == pytest.approx(o.estimate - o.realised_held_out.mean)
            assert o.agrees == (o.difference.lo <= 0 <= o.difference.hi)
    # The paired design: the held-out issues ran once per strategy on copies of the same history.
    hist = Ledger(Workspace.at(out / "history").decisions_dir).read().decisions
    # Every eval copy holds the whole history store (escalations included) plus the held-out issues,
    # with no duplicate id (sim init numbers the held-out issues where escalations go next).
    hist_store = BeadsStore(out / "history").load()
    assert not hist_store.problems
    for name in STRATEGIES:
        copy = BeadsStore(out / "eval" / name).load()
        assert not copy.problems and set(hist_store.issues) < set(copy.issues)
    phase_a = [d for d in hist if d.mode == "heuristic"]
    assert 0.7 * n_history <= len({d.issue_id for d in phase_a}) <= n_history  # a few stay blocked
    # The shadow phase: urm-outcome proposed beside the heuristic on later issues, exploration
    # favoured its plans, and OPE of both came from those decisions alone.
    shadow = hist[len(phase_a):]
    assert result.shadow_issues > 0 and shadow and all(d.mode == "shadow" for d in shadow)
    assert {d.issue_id for d in shadow}.isdisjoint({d.issue_id for d in phase_a})
    assert all(d.candidate is not None and d.candidate.status == "ok" for d in shadow)
    assert all((d.exploration or {}).get("candidate_share") == result.candidate_share
               for d in shadow if (d.exploration or {}).get("alternatives"))
    for population in ("decisions", "first"):
        assert {(o.strategy, o.method) for o in result.ope if o.log == "shadow" and o.population == population} == {
            (n, m) for n in ("heuristic", "urm-outcome") for m in ("ips", "snips", "dr")}
    assert result.target["ope_log"] == "shadow" and isinstance(result.target["ope_met"], bool)
    assert isinstance(result.target["ope_first_met"], bool)
    # First decisions: one per shadow issue logged, one per held-out issue realised.
    shadow_issues = {d.issue_id for d in shadow}
    first = [o for o in result.ope if o.population == "first"]
    every = [o for o in result.ope if o.population == "decisions" and o.log == "shadow"]
    for o in first:
        assert o.realised_held_out is not None and o.realised_held_out.n <= result.eval_issues
        twin = next(e for e in every if (e.strategy, e.method) == (o.strategy, o.method))
        assert o.matches is not None and twin.matches is not None and o.matches <= min(twin.matches, len(shadow_issues))
    assert "| shadow | first |" in md
    for name in STRATEGIES:
        decisions = Ledger(Workspace.at(out / "eval" / name).decisions_dir).read().decisions
        new = [d for d in decisions[len(hist):]]
        assert new and all(d.mode == ("heuristic" if name == "heuristic" else "urm") for d in new)
        assert {d.decision_id for d in decisions[: len(hist)]} == {d.decision_id for d in hist}
        if name != "heuristic":
            assert all(d.applied.source == "candidate" for d in new)
    assert result.best_of_k["decisions_labelled"] > 0 and result.dataset["with_action_rewards"] > 0
    assert result.training["urm-outcome"]["objective"] == "factored"
    assert result.ope_folds == 3  # the learned strategies' OPE is cross-fitted
    for name in ("urm-imitation", "urm-outcome"):
        assert all((out / "crossfit" / "ckpt" / f"{name}-fold{f}" / "checkpoint.json").is_file() for f in range(3))
    assert set(result.target) >= {"met", "regret_ratio", "intervals_apart", "slices_worse", "ope_covered"}


def test_tiny_pipeline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_benchmark(out, n_issues=40, eval_issues=20, seed=1, k=3, bok_issues=12, epochs=2, quick=True,
                           model={"hidden": 16, "n_heads": 2, "layers": 1, "loops": 2, "grad_loops": 1})
    _check(out, result, 40)
    assert result.eval_issues == 20 and result.k == 3


def test_held_out_ids_taken_by_the_history_are_renumbered() -> None:
    rows = [{"id": "4", "title": "a"}, {"id": "5", "title": "b"}, {"id": "9", "title": "c"}]
    deps = [{"from": "4", "to": "5"}, {"from": "5", "to": "9", "type": "related"}]
    new_rows, new_deps = _fresh_ids(rows, deps, {"1", "2", "3", "4", "5", "6"})
    # 4 and 5 are taken: renumbered above every id either side holds; 9 keeps its id.
    assert [r["id"] for r in new_rows] == ["10", "11", "9"] and [r["title"] for r in new_rows] == ["a", "b", "c"]
    assert new_deps == [{"from": "10", "to": "11"}, {"from": "11", "to": "9", "type": "related"}]
    assert rows[0]["id"] == "4"  # the caller's rows are not changed
    assert _fresh_ids(rows, deps, {"1", "2"}) == (rows, deps)


def test_config_sections_are_replaced_not_duplicated() -> None:
    text = "# head\nstrategy: heuristic\n\nobjective:\n  fail_penalty: 0\n# tail comment\nworkcells:\n  backend: directory\n"
    out = _set_config(text, {"strategy": "strategy: urm\n", "exploration": "exploration:\n  epsilon: 0.0\n"})
    assert out.count("strategy:") == 1 and "strategy: urm" in out
    assert "objective:\n  fail_penalty: 0" in out and "# tail comment" in out and "backend: directory" in out
    assert out.rstrip().endswith("epsilon: 0.0")


@pytest.mark.slow
def test_quick_cli_as_the_demo_calls_it(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    res = CliRunner().invoke(benchmark_cmd, ["--profile", "default", "--seed", "0", "--out", str(out), "--quick"])
    assert res.exit_code == 0, res.output
    result = BenchmarkResult.model_validate_json((out / "benchmark.json").read_text())
    _check(out, result, 100)


def test_difference_interval_carries_both_samples_error() -> None:
    """An exact estimator (estimate and realised both unbiased, equal standard errors): the
    realised mean falls inside the estimate's own 95% interval only ~83% of the time, while the
    interval on their difference contains 0 ~95% of the time."""
    import numpy as np

    from cyntra.sim.report import Interval

    rng = np.random.default_rng(0)
    n = 4000
    inside = agree = 0
    for est, real in rng.normal(0.0, 1.0, (n, 2)):
        held = Interval(mean=float(real), lo=float(real) - 1.96, hi=float(real) + 1.96, n=100)
        inside += est - 1.96 <= real <= est + 1.96
        d = difference_interval(float(est), float(est) - 1.96, float(est) + 1.96, held)
        agree += d.lo <= 0 <= d.hi
    assert 0.80 < inside / n < 0.87
    assert 0.93 < agree / n < 0.97
