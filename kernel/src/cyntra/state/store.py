"""The beads store: ``.beads/issues.jsonl`` and ``.beads/deps.jsonl``, read leniently, rewritten surgically.

Why it is shaped like this:

* Real files are messy and shared with humans and other tools. A line we cannot use is reported
  as a :class:`ParseProblem` (``path:line: field: reason``), left out of scheduling, and written
  back byte-for-byte in the same place. Unknown fields and untouched values (``"dk_attempts": "3"``)
  survive a rewrite; only the fields the kernel changed are re-serialised, in canonical form.
* Two kernel processes may share a workspace. Every write is a read-modify-write under an
  exclusive lock (``.beads/issues.jsonl.lock``) with the file re-read inside the lock, and lands by
  atomic rename, so no process loses another's update and a crash never leaves half a file.
* Loading 100k issues has to be quick, so rows already in canonical form skip pydantic validation
  (:func:`_fast_issue`) and produce exactly the model :meth:`Issue.model_validate` would.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import os
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cyntra import clock
from cyntra.errors import CyntraError, InputError
from cyntra.fsutil import atomic_write_bytes, file_lock
from cyntra.gcpause import paused_gc
from cyntra.state.issue import (
    ALIASES,
    NO_EXTRA,
    PRIORITIES,
    RISKS,
    SIZES,
    STATUSES,
    Issue,
    IssueStatus,
    SharedFieldsSet,
)

T = TypeVar("T")

ESCALATION_TAGS: tuple[str, ...] = ("escalation", "needs-human")
ESCALATION_PREFIX = "[ESCALATION] "
# Upstream writes the new escalation row with status "escalated" (see the upstream issues.jsonl);
# that status plus the escalation/needs-human tags keep it out of the ready set.
ESCALATION_STATUS: IssueStatus = "escalated"

_BOM = "\ufeff"


# --------------------------------------------------------------------------------------------
# Problems and deps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseProblem:
    """A line that could not be used. ``field`` is ``<json>`` for unreadable lines, ``<row>`` for a
    non-object, else the pydantic location of the bad field."""

    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.reason}"

    def to_error(self) -> InputError:
        """The same problem as an exception, for callers that must refuse bad input."""
        return InputError(self.path, self.reason, line=self.line, field=self.field)


class IssueNotFoundError(CyntraError, KeyError):
    """An operation named an issue id the store does not hold (or could not parse)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "issue not found"


class Dep(BaseModel):
    """``{"from": A, "to": B, "type": ...}``: A blocks B. Only ``blocks`` gates readiness; other
    types are kept. A missing type means ``blocks`` (the only type upstream writes)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    from_: str = Field(alias="from")
    to: str
    type: str = "blocks"

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("issue id must not be empty")
        return v

    @property
    def blocks(self) -> bool:
        """True when this edge gates readiness of ``to``."""
        return self.type == "blocks"

    def to_row(self) -> dict[str, Any]:
        """The JSON row (``from``/``to``/``type`` then unknown fields)."""
        return self.model_dump(by_alias=True)


# --------------------------------------------------------------------------------------------
# The loaded state
# --------------------------------------------------------------------------------------------


@dataclass
class IssueSet:
    """Issues (file order; a later duplicate row wins), deps and every problem found.

    Inside :meth:`BeadsStore.update` the caller may assign fields of these issues, set or delete
    unknown fields, and add issues (:meth:`add`); the store writes back exactly what changed.
    """

    issues: dict[str, Issue]
    deps: list[Dep]
    problems: list[ParseProblem]
    # the file's lines (surrogateescape-decoded, so any byte round-trips) and, per usable id,
    # the index of the line it came from (the map may hold unusable rows' ids too): everything
    # a surgical rewrite needs
    _lines: list[str] = field(default_factory=list, repr=False)
    _line_of: dict[str, int] = field(default_factory=dict, repr=False)
    _reserved_ids: AbstractSet[str] = field(default_factory=set, repr=False)
    _key_order: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _id_style: tuple[bool, int, str] | None = field(default=None, repr=False)
    _id_count: int = field(default=0, repr=False)

    def get(self, issue_id: str) -> Issue:
        try:
            return self.issues[issue_id]
        except KeyError:
            raise IssueNotFoundError(f"no usable issue with id {issue_id!r}") from None

    def all_ids(self) -> set[str]:
        """Every id in use, including ids of rows that failed validation (never reassign them)."""
        return set(self.issues).union(self._reserved_ids)

    def in_use(self, issue_id: str) -> bool:
        return issue_id in self.issues or issue_id in self._reserved_ids

    def next_id(self) -> str:
        """Max numeric id + 1 when every id is numeric, else a short id unique in this file."""
        # computed once per set (add() in a loop stays O(1)); again if issues were inserted directly
        if self._id_style is None or self._id_count != len(self.issues):
            ids = self.all_ids()
            numeric = [int(i) for i in ids if i.isascii() and i.isdigit()]
            all_numeric = len(numeric) == len(ids)
            self._id_style = (all_numeric, max(numeric, default=0), _common_prefix(ids))
            self._id_count = len(self.issues)
        all_numeric, top, prefix = self._id_style
        if all_numeric:
            while self.in_use(str(top + 1)):
                top += 1
            return str(top + 1)
        seed = f"{len(self.issues)}|{clock.now_iso()}"
        n = 0
        while True:
            candidate = prefix + hashlib.sha256(f"{seed}|{n}".encode()).hexdigest()[:6]
            if not self.in_use(candidate):
                return candidate
            n += 1

    def add(self, fields: Mapping[str, Any]) -> Issue:
        """Create an issue (id from :meth:`next_id` unless given); created/updated = clock now.

        The new row is written with id, title, status, created, updated first, then ``fields``
        in the order given.
        """
        data = {ALIASES.get(k, k): v for k, v in fields.items()}
        issue_id = str(data.pop("id", None) or self.next_id())
        if self.in_use(issue_id):
            raise ValueError(f"issue id {issue_id!r} already exists")
        now = clock.now()
        head: dict[str, Any] = {
            "id": issue_id,
            "title": data.pop("title", ""),
            "status": data.pop("status", "open"),
            "created": data.pop("created", None) or now,
            "updated": data.pop("updated", None) or now,
        }
        issue = Issue.model_validate({**head, **data})
        self.issues[issue_id] = issue
        self._key_order[issue_id] = [*head, *data]
        if self._id_style is not None:
            all_numeric, top, prefix = self._id_style
            numeric = issue_id.isascii() and issue_id.isdigit()
            top = max(top, int(issue_id)) if numeric else top
            self._id_style = (all_numeric and numeric, top, prefix)
            self._id_count = len(self.issues)
        return issue


def escalation_fields(original: Issue, failure_summary: str) -> dict[str, Any]:
    """The fields of the ``[ESCALATION]`` issue for ``original``, in upstream's key order
    (pass to :meth:`IssueSet.add`, which adds id, created and updated)."""
    description = (
        f"Automated processing failed after {original.dk_attempts} attempts.\n\n"
        f"## Original Issue #{original.id}\n"
        f"{original.description or '(no description)'}\n\n"
        f"## Failure Details\n{failure_summary}\n\n"
        "## Action Required\nManual review and intervention needed."
    )
    return {
        "title": ESCALATION_PREFIX + original.title,
        "status": ESCALATION_STATUS,
        "dk_priority": original.dk_priority,
        "description": description,
        "tags": sorted({*original.tags, *ESCALATION_TAGS}),
        "dk_parent": original.id,
    }


def _common_prefix(ids: Iterable[str]) -> str:
    """``bd-`` for ids like ``bd-a1b2``: new ids look like their neighbours."""
    counts: dict[str, int] = {}
    for i in ids:
        head, sep, _ = i.rpartition("-")
        if sep:
            counts[head + sep] = counts.get(head + sep, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k]) if counts else ""


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


# Kinds of known fields, for the fast path below.
_K_ID, _K_TITLE, _K_ENUM, _K_OPT_STR, _K_INT, _K_TIME, _K_LIST, _K_BOOL = range(8)
_ENUMS: dict[str, frozenset[str]] = {
    "status": frozenset(STATUSES),
    "dk_priority": frozenset(PRIORITIES),
    "dk_risk": frozenset(RISKS),
    "dk_size": frozenset(SIZES),
}
_INT_MIN: dict[str, int] = {"dk_attempts": 0, "dk_max_attempts": 1, "dk_estimated_tokens": 0}
_KIND: dict[str, int] = {
    "id": _K_ID,
    "title": _K_TITLE,
    **dict.fromkeys(_ENUMS, _K_ENUM),
    **dict.fromkeys(("description", "dk_tool_hint", "dk_parent"), _K_OPT_STR),
    **dict.fromkeys(_INT_MIN, _K_INT),
    **dict.fromkeys(("created", "updated"), _K_TIME),
    **dict.fromkeys(("tags", "dk_forbidden_paths"), _K_LIST),
    **dict.fromkeys(("dk_speculate", "dk_apply_patch"), _K_BOOL),
    # dk_quality_gates / dk_sampling have no fast kind: rows that set them are validated.
}
_FIELD_NAMES: tuple[str, ...] = tuple(Issue.model_fields)
_LIST_FIELDS: tuple[str, ...] = tuple(
    name for name, info in Issue.model_fields.items() if info.default_factory is not None
)
# Field order and defaults of a freshly validated Issue (list fields filled in per row).
_TEMPLATE: dict[str, Any] = {
    name: None if info.is_required() or info.default_factory is not None else info.default
    for name, info in Issue.model_fields.items()
}
# fields that may hold lists/dicts (copied for the change-detection snapshot)
_CONTAINER_FIELDS: tuple[str, ...] = (
    "tags",
    "dk_forbidden_paths",
    "dk_quality_gates",
    "dk_sampling",
)
_fromisoformat = datetime.fromisoformat
_FAST_KEYS: frozenset[str] = frozenset(_KIND)
# keys that must go through validation: aliases and fields without a fast check
_SLOW_KEYS: frozenset[str] = frozenset(ALIASES) | (frozenset(_TEMPLATE) - _FAST_KEYS)
_STATUS_SET, _PRIORITY_SET, _RISK_SET, _SIZE_SET = (
    {v: v for v in _ENUMS[k]} for k in ("status", "dk_priority", "dk_risk", "dk_size")
)
_CANON_KEYS: dict[str, str] = {k: k for k in _TEMPLATE}
# key tuple of a row -> its fields-set (rows of one file share a handful of key layouts)
_FIELDS_SETS: dict[tuple[str, ...], SharedFieldsSet] = {}


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The setter of a BaseModel instance slot (``__dict__``, ``__pydantic_extra__``, ...), taken
    from its descriptor: a third cheaper than ``object.__setattr__`` per call, and the fast paths
    make four calls per row."""
    for cls in BaseModel.__mro__:
        if name in cls.__dict__:
            setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
            return setter
    raise AttributeError(name)


_set_dict, _set_extra, _set_fields_set, _set_private = map(_slot_setter, (
    "__dict__", "__pydantic_extra__", "__pydantic_fields_set__", "__pydantic_private__"))


def _digits(v: Any, minimum: int) -> int:
    """An integer field's value given as a digit string (``"3"``), at least ``minimum``; anything
    else raises ValueError (the fast path then gives up and validation reports it)."""
    if type(v) is not str or not v.isascii() or not v.isdigit():
        raise ValueError(v)
    n = int(v)
    if n < minimum:
        raise ValueError(v)
    return n


def _fast_issue(row: dict[str, Any], unknown_ok: bool = True) -> Issue | None:
    """Build the Issue without pydantic when every known field is already canonical.

    Returns ``None`` (validate instead) for anything unusual -- nulls, aliases, numbers that
    need coercion, odd timestamps. When it returns an Issue it equals
    ``Issue.model_validate(row)``, fields-set included (a property test checks this). Worth it:
    validation is ~6x slower than this, and a big workspace holds 100k rows. Straight-line
    checks per field (absent fields hold their template default, which passes them) rather
    than a loop over the row: this runs once per row of the file. ``row`` must be a freshly
    parsed object nobody else holds: its lists become the issue's. ``unknown_ok=False`` also
    returns ``None`` for a row with unknown fields (the store's orjson pass, see :func:`_quick_row`).
    """
    try:
        if row.keys() <= _FAST_KEYS:
            values = _TEMPLATE | row
            extra: dict[str, Any] = {}
        else:
            unknown = row.keys() - _FAST_KEYS
            if not unknown_ok or not unknown.isdisjoint(_SLOW_KEYS):
                return None
            values = _TEMPLATE.copy()
            extra = {}
            for key, v in row.items():
                if key in unknown:
                    extra[key] = v
                else:
                    values[key] = v
        iid = values["id"]
        if type(iid) is not str or not iid or iid.isspace() or type(values["title"]) is not str:
            return None
        # Enum values become the module's own string objects (100k rows share four strings, not
        # 400k copies); a value that is not a member raises KeyError, an unhashable one
        # TypeError (both caught below).
        values["status"] = _STATUS_SET[values["status"]]
        values["dk_priority"] = _PRIORITY_SET[values["dk_priority"]]
        values["dk_risk"] = _RISK_SET[values["dk_risk"]]
        values["dk_size"] = _SIZE_SET[values["dk_size"]]
        # Straight-line checks, one per field (a loop over field names costs more than them).
        # 3.11's fromisoformat reads "...Z" itself; the result equals clock.parse_ts(v).
        v = values["created"]
        if v is not None:
            if type(v) is not str or v[-1:] != "Z":
                return None
            values["created"] = _fromisoformat(v)
        v = values["updated"]
        if v is not None:
            if type(v) is not str or v[-1:] != "Z":
                return None
            values["updated"] = _fromisoformat(v)
        # Integers may come as digit strings; attempts and tokens are >= 0, max_attempts >= 1.
        v = values["dk_attempts"]
        if type(v) is not int or v < 0:
            v = values["dk_attempts"] = _digits(v, 0)
        v = values["dk_max_attempts"]
        if type(v) is not int or v < 1:
            v = values["dk_max_attempts"] = _digits(v, 1)
        v = values["dk_estimated_tokens"]
        if type(v) is not int or v < 0:
            v = values["dk_estimated_tokens"] = _digits(v, 0)
        # validation turns a whitespace-only string into None: leave that to it
        v = values["description"]
        if v is not None and (type(v) is not str or v.isspace()):
            return None
        v = values["dk_tool_hint"]
        if v is not None and (type(v) is not str or v.isspace()):
            return None
        v = values["dk_parent"]
        if v is not None and (type(v) is not str or v.isspace()):
            return None
        if type(values["dk_speculate"]) is not bool or type(values["dk_apply_patch"]) is not bool:
            return None
        for key in ("tags", "dk_forbidden_paths"):
            v = values[key]
            if v is None:
                values[key] = []
            elif type(v) is not list:
                return None
            else:
                for x in v:
                    if type(x) is not str:
                        return None
                # the row is this parser's own object: its list is not copied
        keys = tuple(row)
        fields_set = _FIELDS_SETS.get(keys)
        if fields_set is None:
            if len(_FIELDS_SETS) >= 256:
                _FIELDS_SETS.clear()
            fields_set = _FIELDS_SETS[keys] = SharedFieldsSet([*(_CANON_KEYS.get(k, k) for k in keys), "title"])
    except (KeyError, TypeError, ValueError):  # not an enum member / unhashable; bad timestamp
        return None
    issue = Issue.__new__(Issue)
    _set_dict(issue, values)
    # Shared between rows, copied on write by Issue.__setattr__: a set and a dict per row were
    # a third of a 100k-row load's memory.
    _set_extra(issue, extra or NO_EXTRA)
    _set_fields_set(issue, fields_set)
    _set_private(issue, None)
    return issue


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_problems(path: str, lineno: int, err: ValidationError) -> list[ParseProblem]:
    out = []
    for e in err.errors():
        loc = ".".join(str(part) for part in e["loc"]) or "<row>"
        reason = e["msg"]
        if e["type"] != "missing":
            reason = f"{reason} (got {_short(e['input'])})"
        out.append(ParseProblem(path, lineno, loc, reason))
    return out


def _json_object(
    text: str, path: str, lineno: int, problems: list[ParseProblem]
) -> dict[str, Any] | None:
    """The line's JSON object, or ``None`` with a problem recorded (``text`` is not blank)."""
    try:
        obj = _loads_line(text)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (column {exc.colno})"
        problems.append(ParseProblem(path, lineno, "<json>", reason))
        return None
    except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit conversion limit
        problems.append(ParseProblem(path, lineno, "<json>", f"unreadable JSON: {exc}"))
        return None
    except RecursionError:
        problems.append(ParseProblem(path, lineno, "<json>", "invalid JSON: nested too deeply"))
        return None
    if type(obj) is not dict:
        reason = f"expected a JSON object, got {type(obj).__name__}"
        problems.append(ParseProblem(path, lineno, "<row>", reason))
        return None
    return obj


def _split_lines(
    data: bytes, path: str, problems: list[ParseProblem]
) -> tuple[list[str], set[int]]:
    """Lines decoded so that ``"\\n".join(lines).encode("utf-8", "surrogateescape")`` gives the
    bytes back, plus the indexes of lines that are not valid UTF-8 (reported here)."""
    bad: set[int] = set()
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        for index, line in enumerate(lines):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad.add(index)
                reason = f"not valid UTF-8 (character {exc.start + 1} of the line)"
                problems.append(ParseProblem(path, index + 1, "<json>", reason))
    if lines[-1] == "":
        lines.pop()
    return lines, bad


_scan_once = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: decoder-shaped


def _loads_line(text: str) -> Any:
    """``json.loads(text)`` for one line, calling the decoder's scanner directly.

    Same decoder, same result; it skips the ``loads``/``decode``/``raw_decode`` wrappers, which
    cost as much as the parse itself on short rows. A line with leading whitespace or any error
    goes through ``json.loads``, which raises the usual ``JSONDecodeError``.
    """
    try:
        obj, end = _scan_once(text, 0)
        if end == len(text) or not text[end:].strip(" \t\n\r"):  # JSON whitespace, e.g. CRLF
            return obj
    except (StopIteration, ValueError):
        pass
    return json.loads(text)


def _quick_row(text: str) -> Any:
    """orjson's reading of a line (about twice as fast as json's), or ``None`` if it rejects it.

    Used only for rows that then pass a fast path (:func:`_fast_issue` with known fields only,
    :func:`_fast_dep`; the parse loops inline the call); every other line is read again by
    :func:`_loads_line`, whose reading is
    the reference. That is exact: orjson rejects more than json does (NaN, lone surrogates,
    1e400, deep nesting) and reads the same values otherwise, except integers beyond 64 bits,
    which it turns into floats -- and the fast paths' type checks admit no float. A property
    test checks this.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc


def _parse_issues(path: Path, data: bytes, problems: list[ParseProblem]) -> IssueSet:
    spath = str(path)
    lines, bad = _split_lines(data, spath, problems)
    issues: dict[str, Issue] = {}
    # any id -> the last line that carried it. Ids of unusable rows count too (never reused);
    # for a usable id it is the issue's own line (a later unusable row drops the issue).
    seen: dict[str, int] = {}
    quick, not_json, loads, fast = orjson.loads, orjson.JSONDecodeError, _loads_line, _fast_issue
    for index, text in enumerate(lines):
        if index in bad:
            continue
        if index == 0 and text.startswith(_BOM):
            text = text[1:]
        try:  # orjson first (see _quick_row)
            obj = quick(text)
        except not_json:
            obj = None
        issue = fast(obj, False) if type(obj) is dict else None
        if issue is None:  # anything unusual: read again by json, the reference
            try:
                obj = loads(text)
            except (ValueError, RecursionError):
                obj = None
            if type(obj) is not dict:
                if text and not text.isspace():
                    _json_object(text, spath, index + 1, problems)  # records why
                continue
            issue = fast(obj)
            if issue is None:
                try:
                    issue = Issue.model_validate(obj)
                except ValidationError as exc:
                    problems.extend(_validation_problems(spath, index + 1, exc))
        if issue is not None:
            key: str | None = issue.id
        else:
            raw_id = obj.get("id")
            ok = type(raw_id) is str or type(raw_id) is int
            key = str(raw_id) if ok else None
        if key is None:
            continue
        if key in seen:
            issues.pop(key, None)
            verdict = "this row wins" if issue is not None else "the id is left out until fixed"
            reason = f"duplicate id {key!r} (also on line {seen[key] + 1}); {verdict}"
            problems.append(ParseProblem(spath, index + 1, "id", reason))
        seen[key] = index
        if issue is not None:
            issues[key] = issue
    return IssueSet(
        issues=issues,
        deps=[],
        problems=problems,
        _lines=lines,
        _line_of=seen,
        _reserved_ids=seen.keys(),
    )


def _fast_dep(row: dict[str, Any]) -> Dep | None:
    """``{"from": "A", "to": "B"[, "type": "T"]}`` with plain string ids, built without pydantic
    (equal to ``Dep.model_validate(row)``); anything else returns ``None``."""
    src = row.get("from")
    dst = row.get("to")
    kind = row.get("type", "blocks")
    if len(row) != (3 if "type" in row else 2):
        return None
    if type(src) is not str or type(dst) is not str or type(kind) is not str:
        return None
    if src.isspace() or dst.isspace() or not src or not dst:
        return None
    dep = Dep.__new__(Dep)
    _set_dict(dep, {"from_": src, "to": dst, "type": _DEP_TYPES.get(kind, kind)})
    # Dep is frozen: nothing assigns to these, and model_copy copies them first, so every row
    # shares them.
    _set_extra(dep, _DEP_NO_EXTRA)
    _set_fields_set(dep, _DEP_FIELDS_TYPED if "type" in row else _DEP_FIELDS)
    _set_private(dep, None)
    return dep


_DEP_NO_EXTRA: dict[str, Any] = {}
_DEP_FIELDS: set[str] = {"from_", "to"}
_DEP_FIELDS_TYPED: set[str] = {"from_", "to", "type"}
_DEP_TYPES: dict[str, str] = {t: t for t in ("blocks", "related", "parent-child", "discovered-from")}


def _parse_deps(path: Path, data: bytes, problems: list[ParseProblem]) -> list[Dep]:
    spath = str(path)
    lines, bad = _split_lines(data, spath, problems)
    deps: list[Dep] = []
    quick, not_json = orjson.loads, orjson.JSONDecodeError
    for index, text in enumerate(lines):
        if index in bad or not text or text.isspace():
            continue
        if index == 0 and text.startswith(_BOM):
            text = text[1:]
        try:  # orjson first (see _quick_row)
            obj = quick(text)
        except not_json:
            obj = None
        dep = _fast_dep(obj) if type(obj) is dict else None
        if dep is not None:
            deps.append(dep)
            continue
        obj = _json_object(text, spath, index + 1, problems)  # anything unusual: json reads it
        if obj is None:
            continue
        dep = _fast_dep(obj)
        if dep is not None:
            deps.append(dep)
            continue
        try:
            deps.append(Dep.model_validate(obj))
        except ValidationError as exc:
            problems.extend(_validation_problems(spath, index + 1, exc))
    return deps


# --------------------------------------------------------------------------------------------
# Change detection and rendering
# --------------------------------------------------------------------------------------------


def _clone(v: Any) -> Any:
    if type(v) is list:
        return [_clone(x) for x in v]
    if type(v) is dict:
        return {k: _clone(x) for k, x in v.items()}
    return v


def _state(issue: Issue) -> dict[str, Any]:
    """Every field and unknown field of ``issue``, by name."""
    extra = issue.__pydantic_extra__
    return {**issue.__dict__, **extra} if extra else issue.__dict__.copy()


def _snapshot(issue: Issue) -> dict[str, Any]:
    """:func:`_state` with containers copied, so in-place edits (``tags.append``) show as changes."""
    fields = issue.__dict__
    values = fields.copy()
    for name in _CONTAINER_FIELDS:
        value = fields[name]
        if value is not None:
            values[name] = _clone(value)
    extra = issue.__pydantic_extra__
    if extra:
        for k, v in extra.items():
            values[k] = _clone(v) if type(v) is list or type(v) is dict else v
    return values


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells ``1`` from ``True`` and ``1.0`` (a changed type is a change)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    # Fast exit for the common untouched issue: C-level equality plus top-level types (so
    # 1 -> True is a change). A numeric-type swap nested inside an unknown field is not seen.
    if before == after and list(map(type, before.values())) == list(map(type, after.values())):
        return []
    keys = [k for k in after if k not in before or not _same(before[k], after[k])]
    keys.extend(k for k in before if k not in after)
    return keys


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return clock.isoformat_z(value)
    if isinstance(value, list):
        return [_canonical(x) for x in value]
    if isinstance(value, dict):
        return {k: _canonical(x) for k, x in value.items()}
    return value


def _dumps_row(row: Mapping[str, Any]) -> str:
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\\ud800" escapes: keep them escaped
        text = json.dumps(row)
    return text


_REVERSE_ALIAS = {name: alias for alias, name in ALIASES.items()}


def _render_changed(original: str, issue: Issue, keys: list[str]) -> str:
    """The original row with only ``keys`` rewritten: key order kept, new keys appended, and a
    plain alias (``priority``) renamed in place to the canonical key it stood for."""
    bom = _BOM if original.startswith(_BOM) else ""
    eol = "\r" if original.endswith("\r") else ""  # keep a CRLF file CRLF
    source: dict[str, Any] = json.loads(original[len(bom) :])
    state = _state(issue)
    renamed: dict[str, str] = {}
    for key in keys:
        alias = _REVERSE_ALIAS.get(key)
        if key not in source and alias is not None and alias in source:
            renamed[alias] = key
    row = {renamed.get(k, k): v for k, v in source.items()}
    for key in keys:
        if key in state:
            row[key] = _canonical(state[key])
        else:
            row.pop(key, None)
    return bom + _dumps_row(row) + eol


def _render_new(issue: Issue, order: list[str] | None) -> str:
    state = _state(issue)
    head = ["id", "title", "status", "created", "updated"]
    if order is None:
        set_fields = issue.model_fields_set
        order = [
            *head,
            *(k for k in _FIELD_NAMES if k in set_fields and k not in head),
            *(issue.__pydantic_extra__ or {}),
        ]
    row = {k: _canonical(state[k]) for k in order if k in state}
    return _dumps_row(row)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class BeadsStore:
    """The workspace's beads files. Every mutation goes through :meth:`update`."""

    def __init__(self, workspace: str | Path) -> None:
        self.workspace = Path(workspace)
        self.beads_dir = self.workspace / ".beads"
        self.issues_path = self.beads_dir / "issues.jsonl"
        self.deps_path = self.beads_dir / "deps.jsonl"
        self.lock_path = self.beads_dir / "issues.jsonl.lock"
        self.deps_lock_path = self.beads_dir / "deps.jsonl.lock"

    # --- reading ---------------------------------------------------------------------------

    def load(self) -> IssueSet:
        """Read both files. Unusable lines become problems; nothing raises for bad content.

        Changes made to the returned set are not written; use :meth:`update` for that.
        """
        problems: list[ParseProblem] = []
        issues_data = _read_bytes(self.issues_path)
        deps_data = _read_bytes(self.deps_path)
        with paused_gc():
            issue_set = _parse_issues(self.issues_path, issues_data, problems)
            issue_set.deps = _parse_deps(self.deps_path, deps_data, problems)
        return issue_set

    def next_id(self) -> str:
        """The id :meth:`add_issue` would assign now (informational: another process may race)."""
        return self.load().next_id()

    # --- writing ---------------------------------------------------------------------------

    def update(self, fn: Callable[[IssueSet], T]) -> T:
        """Lock, re-read, let ``fn`` mutate the issues, write back only what changed.

        Changed rows get ``updated`` = clock now unless ``fn`` set ``updated`` itself (the
        simulator batches writes and stamps each change with its own virtual time); new issues
        are appended. Deleting an issue
        from the set is refused (the store never drops rows). If ``fn`` raises, nothing is
        written.
        """
        with file_lock(self.lock_path):
            issue_set = self.load()
            with paused_gc():
                snapshot = {i: _snapshot(issue) for i, issue in issue_set.issues.items()}
            result = fn(issue_set)
            out = self._render(issue_set, snapshot)
            if out is not None:
                atomic_write_bytes(self.issues_path, out)
            return result

    def _render(self, issue_set: IssueSet, snapshot: dict[str, dict[str, Any]]) -> bytes | None:
        issues = issue_set.issues
        missing = [i for i in snapshot if i not in issues]
        if missing:
            raise ValueError(f"the beads store never deletes issues (removed: {missing[:5]})")
        for key, issue in issues.items():
            if issue.id != key:
                raise ValueError(f"issue stored under {key!r} has id {issue.id!r}")
        now = clock.now()
        changed: dict[str, list[str]] = {}
        new: list[str] = []
        for key, issue in issues.items():
            before = snapshot.get(key)
            if before is None:
                if key in issue_set._reserved_ids:
                    raise ValueError(f"issue id {key!r} is already used by another row")
                if issue.created is None:
                    issue.created = now
                if issue.updated is None:
                    issue.updated = now
                new.append(key)
                continue
            keys = _changed_keys(before, _state(issue))
            if keys:
                if "updated" not in keys:  # a caller may stamp its own (clock) time
                    issue.updated = now
                    keys.append("updated")
                changed[key] = keys
        if not changed and not new:
            return None
        rewrite = {issue_set._line_of[key]: key for key in changed}
        parts: list[str] = []
        for index, text in enumerate(issue_set._lines):
            target = rewrite.get(index)
            if target is not None:
                parts.append(_render_changed(text, issues[target], changed[target]))
            elif text and not text.isspace():
                parts.append(text)  # verbatim: unchanged, unusable or superseded rows
        for key in new:
            parts.append(_render_new(issues[key], issue_set._key_order.get(key)))
        parts.append("")
        return "\n".join(parts).encode("utf-8", "surrogateescape")

    # --- conveniences ----------------------------------------------------------------------

    def update_issue(self, issue_id: str, **fields: Any) -> Issue:
        """Assign fields of one issue (validated) and write it back."""

        def apply(s: IssueSet) -> Issue:
            issue = s.get(issue_id)
            for name, value in fields.items():
                setattr(issue, name, value)
            return issue

        return self.update(apply)

    def set_status(self, issue_id: str, status: str) -> Issue:
        return self.update_issue(issue_id, status=status)

    def add_issue(self, fields: Mapping[str, Any]) -> Issue:
        """Append a new issue; its id is assigned under the lock (see :meth:`IssueSet.add`)."""
        return self.update(lambda s: s.add(fields))

    def escalate(self, issue_id: str, failure_summary: str) -> Issue:
        """Mark the issue escalated and create its ``[ESCALATION]`` issue, shaped like upstream's.

        Idempotent: if the issue is already escalated and has an escalation issue, that one is
        returned and nothing is written.
        """

        def apply(s: IssueSet) -> Issue:
            original = s.get(issue_id)
            if original.status == ESCALATION_STATUS:
                for other in s.issues.values():
                    if other.dk_parent == original.id and other.has_tag("escalation"):
                        return other
            original.status = ESCALATION_STATUS
            return s.add(escalation_fields(original, failure_summary))

        return self.update(apply)

    def add_dep(self, from_id: str, to_id: str, type: str = "blocks") -> Dep:
        """Append ``from_id`` blocks ``to_id`` (or another type) under the deps lock; an identical
        edge already present is not appended twice."""
        dep = Dep.model_validate({"from": from_id, "to": to_id, "type": type})
        with file_lock(self.deps_lock_path):
            data = _read_bytes(self.deps_path)
            existing = _parse_deps(self.deps_path, data, [])
            if any((d.from_, d.to, d.type) == (dep.from_, dep.to, dep.type) for d in existing):
                return dep
            line = json.dumps(dep.to_row(), ensure_ascii=False).encode("utf-8") + b"\n"
            if data and not data.endswith(b"\n"):
                line = b"\n" + line  # never glue onto a last line that lacks its newline
            self.beads_dir.mkdir(parents=True, exist_ok=True)
            with open(self.deps_path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        return dep
