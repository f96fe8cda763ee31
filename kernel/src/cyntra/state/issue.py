"""The Issue model: one row of ``.beads/issues.jsonl``, parsed the way upstream means it.

Lenient where real data is messy (numbers as strings, ``"false"`` strings, nulls, missing
risk/size on escalation rows, plain ``priority``/``risk``/``size``/``tool_hint`` aliases), strict
where a value is unusable: the error names the field. Unknown fields are kept in ``extra`` so the
store can write them back unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cyntra.clock import parse_ts

IssueStatus = Literal["open", "ready", "running", "done", "escalated", "blocked", "closed"]
Priority = Literal["P0", "P1", "P2", "P3"]
Risk = Literal["low", "medium", "high", "critical"]
Size = Literal["XS", "S", "M", "L", "XL"]

STATUSES: tuple[str, ...] = ("open", "ready", "running", "done", "escalated", "blocked", "closed")
PRIORITIES: tuple[str, ...] = ("P0", "P1", "P2", "P3")
RISKS: tuple[str, ...] = ("low", "medium", "high", "critical")
SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL")
SIZE_HOURS: dict[str, int] = {"XS": 1, "S": 2, "M": 4, "L": 8, "XL": 16}
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

# Plain names upstream also accepts for the dk_* fields.
ALIASES: dict[str, str] = {
    "priority": "dk_priority",
    "risk": "dk_risk",
    "size": "dk_size",
    "tool_hint": "dk_tool_hint",
}

# Defaults applied when a field is missing or null (upstream drops a row on a null
# dk_estimated_tokens; we default it instead, see docs/compatibility.md).
DEFAULTS: dict[str, Any] = {
    "dk_priority": "P2",
    "dk_risk": "medium",
    "dk_size": "M",
    "dk_speculate": False,
    "dk_attempts": 0,
    "dk_max_attempts": 3,
    "dk_estimated_tokens": 50000,
    "dk_apply_patch": True,
    "tags": [],
    "dk_forbidden_paths": [],
}

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


def parse_bool(value: Any) -> bool:
    """Parse a boolean properly: upstream's ``bool("false") is True`` bug is not repeated."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected a boolean, got {value!r}")


def parse_int(value: Any) -> int:
    """Integers, also when stored as strings (``"3"``) or integral floats (``3.0``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
    raise ValueError(f"expected an integer, got {value!r}")


class SharedFieldsSet(set[str]):
    """A fields-set shared by the loaded rows that have the same keys (the store's fast path):
    100k rows share a handful of these instead of holding 100k sets. Never mutated in place:
    :meth:`Issue.__setattr__` gives an issue its own copy before pydantic adds to it, and
    pydantic's ``model_copy`` copies it first."""


#: The ``__pydantic_extra__`` of every loaded row without unknown fields (copied on write too).
NO_EXTRA: dict[str, Any] = {}


class Issue(BaseModel):
    """A work item. Field names follow upstream (``dk_*``); see ARCHITECTURE §3."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)

    def __setattr__(self, name: str, value: Any) -> None:
        # Copy-on-write for the containers the store's fast path shares between rows.
        if type(self.__pydantic_fields_set__) is SharedFieldsSet:
            object.__setattr__(self, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        if self.__pydantic_extra__ is NO_EXTRA:
            object.__setattr__(self, "__pydantic_extra__", {})
        super().__setattr__(name, value)

    id: str
    title: str = ""
    status: IssueStatus = "open"
    created: datetime | None = None
    updated: datetime | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    dk_priority: Priority = "P2"
    dk_risk: Risk = "medium"
    dk_size: Size = "M"
    dk_tool_hint: str | None = None
    dk_speculate: bool = False
    dk_attempts: int = Field(default=0, ge=0)
    dk_max_attempts: int = Field(default=3, ge=1)
    dk_estimated_tokens: int = Field(default=50000, ge=0)
    dk_parent: str | None = None
    dk_apply_patch: bool = True
    dk_quality_gates: dict[str, str | None] | None = None
    dk_sampling: dict[str, Any] | None = None
    dk_forbidden_paths: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("an issue row must be a JSON object")
        out = dict(data)
        for alias, name in ALIASES.items():
            if alias in out:
                value = out.pop(alias)
                if out.get(name) is None:
                    out[name] = value
        for name, default in DEFAULTS.items():
            if name in out and out[name] is None:
                out[name] = list(default) if isinstance(default, list) else default
        if "id" in out and isinstance(out["id"], int) and not isinstance(out["id"], bool):
            out["id"] = str(out["id"])
        if out.get("title") is None:
            out["title"] = ""
        return out

    @field_validator("id")
    @classmethod
    def _id_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("issue id must not be empty")
        return v

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("dk_priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"P{v}"
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("dk_risk", mode="before")
    @classmethod
    def _risk(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("dk_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("dk_speculate", "dk_apply_patch", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> bool:
        return parse_bool(v)

    @field_validator("dk_attempts", "dk_max_attempts", "dk_estimated_tokens", mode="before")
    @classmethod
    def _int(cls, v: Any) -> int:
        return parse_int(v)

    @field_validator("created", "updated", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_ts(v)
        return v

    @field_validator("tags", "dk_forbidden_paths", mode="before")
    @classmethod
    def _str_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, list) and not all(isinstance(x, str) for x in v):
            raise ValueError("expected a list of strings")
        return v

    @field_validator("dk_tool_hint", "dk_parent", "description", mode="before")
    @classmethod
    def _opt_str(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, str) and not v.strip() and v != "":
            return None
        return v

    # --- derived views -------------------------------------------------------------------

    @property
    def size_hours(self) -> int:
        return SIZE_HOURS[self.dk_size]

    @property
    def risk_rank(self) -> int:
        return RISK_ORDER[self.dk_risk]

    @property
    def priority_rank(self) -> int:
        """0 is most urgent (P0)."""
        return int(self.dk_priority[1])

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags

    @property
    def extra_fields(self) -> dict[str, Any]:
        """Fields this model does not know; the store writes them back unchanged."""
        return dict(self.model_extra or {})
