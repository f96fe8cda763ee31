"""Exploration controller: modes, temperatures, parallelism deltas and their effect on plans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cyntra.control import REPORT_PATH, ExplorationController, issue_domain
from cyntra.kernel.config import ControlConfig, parse_config
from cyntra.kernel.heuristic import HeuristicContext, heuristic_plan
from cyntra.state.issue import Issue


def mk(iid: str = "1", **kw: Any) -> Issue:
    return Issue.model_validate({"id": iid, "title": "t", **kw})


def write_report(ws: Path, data: Any) -> Path:
    path = ws / REPORT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


CTRL = ControlConfig(action_low=0.1, action_high=0.5, temperature_base=0.2,
                     temperature_min=0.1, temperature_max=0.6, temperature_step=0.1,
                     parallelism_step=1)


@pytest.mark.parametrize("tags,domain", [
    ([], "code"), (["kernel"], "code"), (["asset:world"], "fab_world"),
    (["asset:texture"], "fab_asset"), (["asset:interior", "asset:world"], "fab_world"),
    (["x", "asset:image"], "fab_asset"), (["assets:world"], "code"),
])
def test_domain_of_issue(tags: list[str], domain: str) -> None:
    assert issue_domain(mk(tags=tags)) == domain


def test_disabled_when_control_off(tmp_path: Path) -> None:
    write_report(tmp_path, {"action_rate": 0.01})
    c = ExplorationController(CTRL.model_copy(update={"enabled": False}), tmp_path)
    d = c.decide(mk())
    assert (d.mode, d.temperature, d.parallelism_delta) == ("disabled", None, 0)
    assert "enabled is false" in d.reason and c.warnings == []


def test_disabled_without_report(tmp_path: Path) -> None:
    c = ExplorationController(CTRL, tmp_path)
    d = c.decide(mk())
    assert d.mode == "disabled" and "no dynamics report" in d.reason
    assert c.warnings == []
    assert ExplorationController(CTRL, None).decide(mk()).mode == "disabled"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_unreadable_report_disabled_with_warning(tmp_path: Path, content: str) -> None:
    path = tmp_path / REPORT_PATH
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    c = ExplorationController(CTRL, tmp_path)
    assert c.decide(mk()).mode == "disabled"
    assert len(c.warnings) == 1 and str(path) in c.warnings[0]


@pytest.mark.parametrize("rate,mode,temp,delta", [
    (0.05, "trap", 0.3, 1),
    (0.0, "trap", 0.3, 1),
    (0.1, "balanced", 0.2, 0),  # boundaries are balanced
    (0.3, "balanced", 0.2, 0),
    (0.5, "balanced", 0.2, 0),
    (0.9, "chaos", 0.1, -1),
])
def test_modes_by_rate(tmp_path: Path, rate: float, mode: str, temp: float, delta: int) -> None:
    write_report(tmp_path, {"domains": {"code": {"action_rate": rate}}})
    d = ExplorationController(CTRL, tmp_path).decide(mk())
    assert (d.mode, d.domain, d.action_rate, d.temperature, d.parallelism_delta) == (
        mode, "code", rate, temp, delta)


def test_temperature_clamped(tmp_path: Path) -> None:
    write_report(tmp_path, {"domains": {"code": 0.0, "fab_world": 0.99}})
    hot = CTRL.model_copy(update={"temperature_base": 0.55, "temperature_step": 0.2})
    assert ExplorationController(hot, tmp_path).decide_domain("code").temperature == 0.6
    cold = CTRL.model_copy(update={"temperature_base": 0.15, "temperature_step": 0.2})
    assert ExplorationController(cold, tmp_path).decide_domain("fab_world").temperature == 0.1


def test_missing_domain_is_disabled_and_top_level_rate_applies(tmp_path: Path) -> None:
    write_report(tmp_path, {"domains": {"code": {"action_rate": 0.9}}})
    c = ExplorationController(CTRL, tmp_path)
    d = c.decide(mk(tags=["asset:world"]))
    assert d.mode == "disabled" and "no action rate for fab_world" in d.reason
    assert c.modes() == {"code": "chaos", "fab_asset": "disabled", "fab_world": "disabled"}
    write_report(tmp_path, {"action_rate": 0.01, "domains": {"code": {"action_rate": 0.9}},
                            "generated_at": "whenever"})
    c2 = ExplorationController(CTRL, tmp_path)
    assert c2.modes() == {"code": "chaos", "fab_asset": "trap", "fab_world": "trap"}


def test_bad_rates_are_warned_and_ignored(tmp_path: Path) -> None:
    write_report(tmp_path, {"action_rate": "high", "domains": {"code": {"action_rate": True},
                                                              "fab_asset": {"action_rate": 0.2}}})
    c = ExplorationController(CTRL, tmp_path)
    assert c.modes() == {"code": "disabled", "fab_asset": "balanced", "fab_world": "disabled"}
    assert len(c.warnings) == 2


def test_report_read_once(tmp_path: Path) -> None:
    path = write_report(tmp_path, {"action_rate": 0.01})
    c = ExplorationController(CTRL, tmp_path)
    assert c.decide(mk()).mode == "trap"
    path.write_text(json.dumps({"action_rate": 0.99}))
    assert c.decide(mk()).mode == "trap"  # same cycle, same answer
    assert ExplorationController(CTRL, tmp_path).decide(mk()).mode == "chaos"


# --- effect on plans ------------------------------------------------------------------------

PLAN_CFG: dict[str, Any] = {
    "toolchain_priority": ["a", "b", "c", "d"],
    "toolchains": {"a": {}, "b": {}, "c": {}, "d": {}},
    "routing": {"rules": [{"match": {}, "use": ["a", "b", "c", "d"]}]},
    "speculation": {"default_parallelism": 2, "max_parallelism": 3},
}


@pytest.mark.parametrize("rate,speculate,parallelism,temperature,mode", [
    (None, True, 2, None, "disabled"),
    (0.01, True, 3, 0.3, "trap"),
    (0.3, True, 2, 0.2, "balanced"),
    (0.9, True, 2, 0.1, "chaos"),  # 2 - 1 clamps up to 2
    (0.01, False, 1, 0.3, "trap"),  # the delta never starts speculation
])
def test_controller_shapes_plan(tmp_path: Path, rate: float | None, speculate: bool,
                                parallelism: int, temperature: float | None, mode: str) -> None:
    if rate is not None:
        write_report(tmp_path, {"domains": {"code": {"action_rate": rate}}})
    config = parse_config(PLAN_CFG)
    ctx = HeuristicContext.create(config, controller=ExplorationController(config.control, tmp_path))
    p = heuristic_plan(mk(dk_speculate=speculate), ctx)
    assert (p.speculate, p.parallelism, p.temperature, p.controller_mode) == (
        speculate, parallelism, temperature, mode)
    trace = next(s for s in p.trace if s.step == "controller")
    assert trace.data["mode"] == mode and trace.data["domain"] == "code"
    assert trace.data["action_rate"] == rate


def test_trap_delta_clamped_by_max_parallelism(tmp_path: Path) -> None:
    write_report(tmp_path, {"action_rate": 0.0})
    conf = dict(PLAN_CFG, speculation={"default_parallelism": 3, "max_parallelism": 3},
                control={"parallelism_step": 2})
    config = parse_config(conf)
    ctx = HeuristicContext.create(config, controller=ExplorationController(config.control, tmp_path))
    p = heuristic_plan(mk(dk_speculate=True), ctx)
    assert p.parallelism == 3
    spec = next(s for s in p.trace if s.step == "speculation")
    assert spec.data["controller_delta"] == 2


def test_settled_report_is_parsed_once_and_a_rewrite_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import types

    from cyntra.control import controller as mod

    now = 100 * 10**9  # the controller's clock, in ns: the test sets every mtime against it
    monkeypatch.setattr(mod, "time", types.SimpleNamespace(time_ns=lambda: now))
    path = write_report(tmp_path, {"action_rate": 0.01})
    os.utime(path, ns=(now - 10 * 10**9, now - 10 * 10**9))  # settled: 10 s old
    reads: list[Path] = []
    real = mod._parse_report
    monkeypatch.setattr(mod, "_parse_report", lambda p: reads.append(p) or real(p))
    assert [ExplorationController(CTRL, tmp_path).decide(mk()).mode for _ in range(3)] == ["trap"] * 3
    assert len(reads) == 1  # one parse, then a stat per cycle
    path.write_text(json.dumps({"action_rate": 0.99}))  # same size
    os.utime(path, ns=(now - 10**9, now - 10**9))  # 1 s old: may still change within its tick
    assert ExplorationController(CTRL, tmp_path).decide(mk()).mode == "chaos"
    assert ExplorationController(CTRL, tmp_path).decide(mk()).mode == "chaos"
    assert len(reads) == 3  # a fresh file is re-read until it settles
    now += 5 * 10**9
    assert [ExplorationController(CTRL, tmp_path).decide(mk()).mode for _ in range(2)] == ["chaos"] * 2
    assert len(reads) == 4  # settled now: cached again
    path.unlink()
    assert ExplorationController(CTRL, tmp_path).decide(mk()).mode == "disabled"


def test_report_that_cannot_be_read_is_unreadable_not_missing(tmp_path: Path) -> None:
    path = write_report(tmp_path, {"action_rate": 0.01})
    path.unlink()
    path.mkdir()  # there, but not a file
    c = ExplorationController(CTRL, tmp_path)
    assert c.decide(mk()).mode == "disabled" and "unreadable" in c.status and len(c.warnings) == 1
