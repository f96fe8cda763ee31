"""A third-party strategy plugs in through the ``cyntra.strategies`` entry-point group, no fork needed.

The plugin is a real distribution on ``sys.path`` (a ``*.dist-info`` with ``entry_points.txt``
plus its module), found by ``importlib.metadata`` exactly as an installed package would be.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cyntra.kernel.session import KernelSession
from cyntra.planner.action_space import ActionSpace
from cyntra.strategy import base
from cyntra.strategy.base import (
    StrategyEnv,
    StrategyUnavailable,
    available_strategies,
    build_strategy,
)
from cyntra.strategy.cli import strategy_group

FIX = Path(__file__).parent / "fixtures" / "strategy"

PLUGIN = '''
"""A third party's strategy: always one 15-minute serial candidate."""
from cyntra.planner.action_space import PlanAction
from cyntra.strategy.base import BaseStrategy, StrategyDecision


class Frugal(BaseStrategy):
    name = "frugal"

    def __init__(self, env):
        self.workspace = env.workspace

    def decide(self, ctx):
        return StrategyDecision(
            action=PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=15, max_candidates=1),
            confidence=0.8,
        )

    def describe(self):
        return {"checkpoint_id": "frugal-v1"}


def factory(env):
    return Frugal(env)


def broken(env):
    return object()
'''


def _dist(root: Path, module: str, entry_points: str) -> None:
    info = root / f"{module}_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN))


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    _dist(site, "my_mod", "[cyntra.strategies]\nmine = my_mod:factory\nbroken = my_mod:broken\n"
                          "heuristic = my_mod:factory\n")
    monkeypatch.syspath_prepend(str(site))
    base._ensure_builtins()  # registered into the real registry, not only into this test's copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_ENTRY_POINTS_LOADED", False)
    yield site
    sys.modules.pop("my_mod", None)


def _workspace(root: Path, **config: object) -> Path:
    (root / ".cyntra").mkdir(parents=True)
    (root / ".beads").mkdir()
    cfg = yaml.safe_load((FIX / "config.yaml").read_text())
    cfg.update(config)
    (root / ".cyntra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(FIX / "policy.yaml", root / "policy.yaml")
    shutil.copy(FIX / "policy-empty.yaml", root / "policy-empty.yaml")
    shutil.copy(FIX / "issues.jsonl", root / ".beads" / "issues.jsonl")
    shutil.copy(FIX / "deps.jsonl", root / ".beads" / "deps.jsonl")
    return root


def test_entry_point_strategy_is_discovered(plugin_path: Path, tmp_path: Path) -> None:
    names = available_strategies()
    assert {"mine", "broken", "heuristic", "majority", "urm"} <= set(names)
    env = StrategyEnv(workspace=tmp_path, config=KernelSession.open(_workspace(tmp_path / "ws")).config,
                      space=ActionSpace())
    strategy = build_strategy("mine", env)
    assert type(strategy).__module__ == "my_mod"
    # A plugin cannot shadow a built-in name.
    assert type(build_strategy("heuristic", env)).__module__ == "cyntra.strategy.heuristic"
    with pytest.raises(StrategyUnavailable, match="did not return a DispatchStrategy"):
        build_strategy("broken", env)


def test_entry_point_strategy_decides_and_is_applied(plugin_path: Path, tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", policy="policy.yaml", strategy="mine")
    session = KernelSession.open(ws)
    cycle = session.plan_cycle(session.store.load())
    assert cycle.schedule.scheduled
    issues = session.store.load().issues
    for item in cycle.schedule.scheduled:
        rec = cycle.decisions[item.issue_id].record
        assert rec.mode == "mine"
        assert rec.candidate is not None and rec.candidate.strategy == "mine" and rec.candidate.status == "ok"
        assert rec.checkpoint_id == "frugal-v1"
        issue = issues[item.issue_id]
        floor, _ = session.clamp.min_confidence(issue)
        if floor > 0.8:
            assert rec.applied.source == "heuristic" and rec.fallback_reason
        else:
            # The plugin's plan, through the clamp (critical work gets its 60-minute floor).
            assert rec.applied.source == "candidate"
            assert rec.applied.action == session.clamp.apply(rec.candidate.action, issue).applied  # type: ignore[arg-type]
            assert item.plan.action == rec.applied.action


def test_entry_point_strategy_runs_in_shadow_and_shows(plugin_path: Path, tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", strategy="shadow", planner={"candidate": "mine"})
    session = KernelSession.open(ws)
    decisions = session.engine.decide([])
    assert decisions == []
    result = CliRunner().invoke(strategy_group, ["show", "k1", "-w", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {r["strategy"]: r for r in data["strategies"]}
    assert rows["mine"]["status"] == "ok"
    assert rows["mine"]["label"] == "serial_handoff/p1/15m/c1"
    assert rows["heuristic"]["label"] == "speculate_vote/p3/120m/c3"
    assert "majority" not in rows  # no history to fit it on: not shown
