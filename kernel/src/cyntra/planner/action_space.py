"""The action tuple ``cyntra.planner_action.v1`` and its finite, valid space (ARCHITECTURE §4).

Validity: ``serial_handoff`` ⇒ parallelism 1; ``speculate_vote`` (any parallel swarm) ⇒
parallelism ≥ 2 and max_candidates = parallelism. Decoders only ever emit valid tuples, so every
consumer can enumerate :func:`valid_actions` instead of re-deriving the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal["cyntra.planner_action.v1"] = "cyntra.planner_action.v1"
PARALLELISM: tuple[int, ...] = (1, 2, 3)
MAX_RUN_MINUTES: tuple[int, ...] = (15, 30, 60, 120)
MAX_CANDIDATES: tuple[int, ...] = (1, 2, 3)
DEFAULT_SWARMS: tuple[str, ...] = ("speculate_vote", "serial_handoff")
ACTION_FIELDS: tuple[str, ...] = ("swarm_id", "parallelism", "max_run_minutes", "max_candidates")

SwarmType = Literal["parallel_compete", "serial_handoff"]
DEFAULT_SWARM_TYPES: dict[str, SwarmType] = {
    "speculate_vote": "parallel_compete",
    "serial_handoff": "serial_handoff",
}


class PlanAction(BaseModel):
    """One decision: which swarm, how parallel, how long, how many candidates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["cyntra.planner_action.v1"] = SCHEMA_VERSION
    swarm_id: str
    parallelism: int = Field(ge=1, le=3)
    max_run_minutes: int
    max_candidates: int = Field(ge=1, le=3)

    def key(self) -> tuple[str, int, int, int]:
        return (self.swarm_id, self.parallelism, self.max_run_minutes, self.max_candidates)

    def label(self) -> str:
        return f"{self.swarm_id}/p{self.parallelism}/{self.max_run_minutes}m/c{self.max_candidates}"


class ActionSpace:
    """The finite set of valid actions for a universe's swarm catalog."""

    def __init__(self, swarm_types: dict[str, SwarmType] | None = None) -> None:
        self.swarm_types: dict[str, SwarmType] = dict(swarm_types or DEFAULT_SWARM_TYPES)
        self.swarms: tuple[str, ...] = tuple(sorted(self.swarm_types))
        self.actions: tuple[PlanAction, ...] = tuple(self._enumerate())
        self._index = {a.key(): i for i, a in enumerate(self.actions)}

    def _enumerate(self) -> list[PlanAction]:
        out = []
        for swarm in self.swarms:
            for p in PARALLELISM:
                for m in MAX_RUN_MINUTES:
                    for c in MAX_CANDIDATES:
                        a = PlanAction(swarm_id=swarm, parallelism=p, max_run_minutes=m, max_candidates=c)
                        if self.is_valid(a):
                            out.append(a)
        return out

    def is_valid(self, action: PlanAction) -> bool:
        return not self.violations(action)

    def violations(self, action: PlanAction) -> list[str]:
        problems: list[str] = []
        kind = self.swarm_types.get(action.swarm_id)
        if kind is None:
            problems.append(f"swarm_id {action.swarm_id!r} is not in the catalog {list(self.swarms)}")
        if action.parallelism not in PARALLELISM:
            problems.append(f"parallelism {action.parallelism} not in {PARALLELISM}")
        if action.max_run_minutes not in MAX_RUN_MINUTES:
            problems.append(f"max_run_minutes {action.max_run_minutes} not in {MAX_RUN_MINUTES}")
        if action.max_candidates not in MAX_CANDIDATES:
            problems.append(f"max_candidates {action.max_candidates} not in {MAX_CANDIDATES}")
        if kind == "serial_handoff" and action.parallelism != 1:
            problems.append("serial_handoff requires parallelism 1")
        if kind == "parallel_compete":
            if action.parallelism < 2:
                problems.append(f"{action.swarm_id} requires parallelism >= 2")
            if action.max_candidates != action.parallelism:
                problems.append(f"{action.swarm_id} requires max_candidates == parallelism")
        return problems

    def index(self, action: PlanAction) -> int:
        return self._index[action.key()]

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.actions)

    def kind(self, swarm_id: str) -> SwarmType:
        return self.swarm_types[swarm_id]

    def parallel_swarm(self) -> str:
        for s in self.swarms:
            if self.swarm_types[s] == "parallel_compete":
                return s
        raise KeyError("no parallel_compete swarm in the catalog")

    def serial_swarm(self) -> str:
        for s in self.swarms:
            if self.swarm_types[s] == "serial_handoff":
                return s
        raise KeyError("no serial_handoff swarm in the catalog")


def snap_minutes(minutes: float, choices: Sequence[int] = MAX_RUN_MINUTES) -> int:
    """The smallest allowed budget that covers ``minutes`` (the largest if none does)."""
    for m in sorted(choices):
        if minutes <= m:
            return m
    return max(choices)


def floor_minutes(limit: float, choices: Sequence[int] = MAX_RUN_MINUTES) -> int | None:
    """The largest allowed budget not above ``limit`` (None if even the smallest is above)."""
    allowed = [m for m in sorted(choices) if m <= limit]
    return allowed[-1] if allowed else None
