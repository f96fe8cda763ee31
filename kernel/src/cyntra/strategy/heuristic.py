"""Today's rules as a strategy: the kernel's heuristic plan (routing, triggers, controller)."""

from __future__ import annotations

from cyntra.strategy.base import BaseStrategy, StrategyContext, StrategyDecision


class HeuristicStrategy(BaseStrategy):
    """Returns the plan the heuristic computed for the issue, with its rule trace.

    The plan itself is computed by :func:`cyntra.kernel.heuristic.heuristic_plan` during the
    scheduling cycle (lane packing needs it); this strategy exposes it behind the common
    interface so that every mode records it the same way.
    """

    name = "heuristic"

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        return StrategyDecision(action=ctx.heuristic.action, trace=list(ctx.heuristic.trace), confidence=1.0)
