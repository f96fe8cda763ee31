"""A dispatch plan: the action tuple plus the concrete toolchains and why they were chosen."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cyntra.planner.action_space import PlanAction


class TraceStep(BaseModel):
    """One step of a rule trace: what was consulted and what it decided."""

    model_config = ConfigDict(extra="forbid")

    step: str  # e.g. "routing", "speculation", "controller", "budget", "clamp"
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class DispatchPlan(BaseModel):
    """What the runner carries out for one issue.

    ``toolchains`` is the ordered candidate list: for a parallel swarm the first ``parallelism``
    run at once; for ``serial_handoff`` they are tried in turn, at most ``max_candidates``.
    """

    model_config = ConfigDict(extra="forbid")

    issue_id: str
    action: PlanAction
    toolchains: list[str]
    speculate: bool
    temperature: float | None = None
    controller_mode: str = "disabled"
    trace: list[TraceStep] = Field(default_factory=list)

    @property
    def swarm_id(self) -> str:
        return self.action.swarm_id

    @property
    def parallelism(self) -> int:
        return self.action.parallelism

    @property
    def max_run_minutes(self) -> int:
        return self.action.max_run_minutes

    @property
    def max_candidates(self) -> int:
        return self.action.max_candidates

    def candidate_toolchains(self) -> list[str]:
        """The toolchains that may actually run under this plan, in order."""
        n = self.action.parallelism if self.speculate else self.action.max_candidates
        return self.toolchains[:n]
