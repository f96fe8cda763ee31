"""Registers the built-in strategies: heuristic, majority (a real baseline) and urm (lazy)."""

from __future__ import annotations

from cyntra.strategy.base import DispatchStrategy, StrategyEnv, register_strategy
from cyntra.strategy.heuristic import HeuristicStrategy
from cyntra.strategy.majority import MajorityStrategy


def _heuristic(env: StrategyEnv) -> DispatchStrategy:
    return HeuristicStrategy()


def _majority(env: StrategyEnv) -> DispatchStrategy:
    return MajorityStrategy.from_workspace(env)


def _urm(env: StrategyEnv) -> DispatchStrategy:
    from cyntra.strategy.urm import build_urm_strategy  # imports torch only when asked for

    return build_urm_strategy(env)


register_strategy("heuristic", _heuristic)
register_strategy("majority", _majority)
register_strategy("urm", _urm)
