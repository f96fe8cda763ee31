"""``context.json``: the join key that ties one run to its universe, world, objective, swarm, issue.

Written next to a run's artifacts so that archives, rollouts and datasets can be grouped by
universe without re-deriving it. The fields are exactly upstream's ``run_context`` v1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cyntra import schemas
from cyntra.errors import InputError
from cyntra.fsutil import atomic_write_json
from cyntra.universe.loader import LoadedUniverse

CONTEXT_FILE = "context.json"


class RunContext(BaseModel):
    """Universe-scoped run context (``run_context.schema.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    universe_id: str
    world_id: str | None = None
    objective_id: str | None = None
    swarm_id: str | None = None
    issue_id: str | None = None


def context_for(
    universe: LoadedUniverse,
    *,
    issue_id: str | None = None,
    world_id: str | None = None,
    swarm_id: str | None = None,
    objective_id: str | None = None,
) -> RunContext:
    """A context for a run in ``universe``; swarm/objective fall back to the universe defaults."""
    if world_id is not None:
        universe.world(world_id)  # raises a clear error for an unknown world
    return RunContext(
        universe_id=universe.universe_id,
        world_id=world_id,
        objective_id=objective_id if objective_id is not None else universe.defaults.objective_id,
        swarm_id=swarm_id if swarm_id is not None else universe.defaults.swarm_id,
        issue_id=issue_id,
    )


def _target(path: Path) -> Path:
    return path / CONTEXT_FILE if path.is_dir() else path


def write_context(path: Path, ctx: RunContext) -> Path:
    """Validate and atomically write ``ctx``; ``path`` is the file, or a directory to hold
    ``context.json``. Returns the file written."""
    target = _target(Path(path))
    data = ctx.model_dump(mode="json")
    schemas.validate("run_context", data, path=target)
    atomic_write_json(target, data)
    return target


def read_context(path: Path) -> RunContext:
    """Read a ``context.json`` (or a directory holding one), refusing invalid content."""
    target = _target(Path(path))
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(target, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    schemas.validate("run_context", data, path=target)
    try:
        return RunContext.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(target, err["msg"], field=field) from None
