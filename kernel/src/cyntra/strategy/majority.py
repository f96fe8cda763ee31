"""A majority-class baseline: the plan executed most often in this workspace's history.

A real (if weak) learned strategy: it is fitted from the decisions ledger, so ``shadow`` has a
candidate before any URM checkpoint exists, and evaluation has a floor to compare against.
"""

from __future__ import annotations

from collections import Counter

from cyntra.kernel.plan import TraceStep
from cyntra.planner.action_space import ACTION_FIELDS, PlanAction
from cyntra.strategy.base import (
    BaseStrategy,
    StrategyContext,
    StrategyDecision,
    StrategyEnv,
    StrategyUnavailable,
)
from cyntra.strategy.ledger import Ledger
from cyntra.workspace import Workspace


class MajorityStrategy(BaseStrategy):
    name = "majority"

    def __init__(self, action: PlanAction, counts: dict[str, int]) -> None:
        self.action = action
        self.counts = counts
        total = sum(counts.values())
        self.confidence = counts.get(action.label(), 0) / total if total else 0.0

    @classmethod
    def fit(cls, actions: list[PlanAction]) -> MajorityStrategy:
        if not actions:
            raise StrategyUnavailable("majority: no executed plans in the history to fit on")
        counts = Counter(a.label() for a in actions)
        by_label = {a.label(): a for a in actions}
        # Most common; ties broken by label so the choice is deterministic.
        label = min(counts, key=lambda k: (-counts[k], k))
        return cls(by_label[label], dict(counts))

    @classmethod
    def from_workspace(cls, env: StrategyEnv) -> MajorityStrategy:
        ledger = Ledger(Workspace.at(env.workspace).decisions_dir).read()
        return cls.fit([d.applied.action for d in ledger.decisions])

    def decide(self, ctx: StrategyContext) -> StrategyDecision:
        probs: dict[str, dict[str, float]] = {}
        return StrategyDecision(
            action=self.action,
            confidence=self.confidence,
            probabilities=probs or None,
            trace=[TraceStep(step="majority", detail=f"most executed plan {self.action.label()}",
                             data={"fields": list(ACTION_FIELDS), "n": sum(self.counts.values())})],
        )
