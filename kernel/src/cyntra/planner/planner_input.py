"""``planner_input.v1``: what a planner sees for one issue at one decision time (ARCHITECTURE §5).

There is exactly one builder, :func:`build_planner_input`, used by the live strategies and by the
dataset builder, so a dataset row for a past decision is byte-identical to what the kernel saw
(proved by :func:`planner_input_hash` equality). Everything in it is derived from inputs that were
observable at decision time: the issue snapshot and runs archived strictly before that time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cyntra.clock import isoformat_z, parse_ts
from cyntra.errors import InputError
from cyntra.state.issue import Issue

if TYPE_CHECKING:
    from cyntra.planner.index import SimilarRun

PLANNER_INPUT_SCHEMA: Final = "cyntra.planner_input.v1"
MAX_TITLE_KEYWORDS: Final = 12

# Short, boring words that say nothing about the work (English function words + tracker noise).
STOPWORDS: Final[frozenset[str]] = frozenset(
    ["a", "about", "above", "after", "again", "all", "also", "and", "any", "are", "because", "been", "before", "being", "below", "between", "both", "but", "can", "could", "did", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "her", "here", "hers", "him", "his", "how", "into", "its", "itself", "just", "more", "most", "not", "now", "off", "once", "only", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "too", "under", "until", "very", "was", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "issue", "issues", "ticket", "todo", "task", "tasks", "make", "makes", "use", "using", "add", "adds", "new", "via", "per", "etc"]
)
_WORD = re.compile(r"[a-z0-9]+")


def title_keywords(title: str, cap: int = MAX_TITLE_KEYWORDS) -> list[str]:
    """Lowercase words of ≥ 3 characters, minus stopwords and pure numbers, sorted, unique, capped."""
    words = {
        w for w in _WORD.findall(title.lower()) if len(w) >= 3 and w not in STOPWORDS and not w.isdigit()
    }
    return sorted(words)[:cap]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IssueFeatures(_Frozen):
    """The issue's fields as they were at decision time (what the planner may condition on)."""

    id: str
    priority: str
    risk: str
    size: str
    tool_hint: str | None = None
    attempts: int = Field(ge=0)
    estimated_tokens: int = Field(ge=0)
    tags: list[str] = Field(default_factory=list)
    title_keywords: list[str] = Field(default_factory=list)
    speculate: bool = False


def issue_features(issue: dict[str, Any] | Issue | IssueFeatures, *, path: str | None = None) -> IssueFeatures:
    """Normalise an issue snapshot (manifest dict, :class:`Issue`, or features) into features."""
    if isinstance(issue, IssueFeatures):
        return issue
    if not isinstance(issue, Issue):
        try:
            issue = Issue.model_validate(issue)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InputError(path, err["msg"], field=f"issue.{loc}" if loc else "issue") from None
    return IssueFeatures(
        id=issue.id,
        priority=issue.dk_priority,
        risk=issue.dk_risk,
        size=issue.dk_size,
        tool_hint=issue.dk_tool_hint or None,
        attempts=issue.dk_attempts,
        estimated_tokens=issue.dk_estimated_tokens,
        tags=sorted(set(issue.tags)),
        title_keywords=title_keywords(issue.title),
        speculate=issue.dk_speculate,
    )


def domain_of_tags(tags: list[str]) -> str:
    """Same rule as :func:`cyntra.control.controller.issue_domain`, on a plain tag list."""
    return _domain(tuple(tags))


@functools.lru_cache(maxsize=4096)
def _domain(tags: tuple[str, ...]) -> str:
    from cyntra.control.controller import issue_domain

    return issue_domain(Issue(id="_", tags=list(tags)))


class SimilarRunView(_Frozen):
    """A compact ``run_summary.v1`` view: just what the planner (and tokenizer) uses."""

    run_id: str
    issue_id: str
    started_at: str
    toolchain: str
    plan: str  # PlanAction.label(): "<swarm>/p<n>/<m>m/c<k>"
    candidate_index: int = Field(ge=0)
    loser: bool
    status: str
    all_passed: bool
    fail_codes: list[str] = Field(default_factory=list)
    duration_ms: int = Field(ge=0)
    cost_usd: float | None = None
    tokens_used: int | None = None
    jaccard: float = Field(ge=0, le=1)
    age_bucket: str


class PlannerInput(_Frozen):
    schema_version: Literal["cyntra.planner_input.v1"] = PLANNER_INPUT_SCHEMA
    universe_id: str | None = None
    job_type: str = "code"
    domain: str = "code"
    world_id: str | None = None
    objective_id: str | None = None
    universe_defaults: dict[str, Any] = Field(default_factory=dict)
    universe_policies: dict[str, Any] = Field(default_factory=dict)
    issue: IssueFeatures
    decision_time: str
    n_similar: int = Field(ge=0)
    last_N_similar_runs: list[SimilarRunView] = Field(default_factory=list)


class SimilarRunSource(Protocol):
    """What the builder needs from an index (``cyntra.planner.index.SimilarRunsIndex``)."""

    def similar_scored(
        self,
        job_type: str,
        domain: str,
        tags: list[str],
        before: datetime | str,
        n: int = 8,
        world_id: str | None = None,
        objective_id: str | None = None,
    ) -> list[SimilarRun]: ...


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping or pydantic model, got {type(value).__name__}")
    return {k: v for k, v in value.items() if v is not None}


def universe_inputs(universe: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(universe_defaults, universe_policies)`` from a ``Universe``/``LoadedUniverse`` (or None).

    Only the budgets of the policies matter to a plan (routing overrides shape the heuristic, not
    the planner's input), so ``universe_policies`` is ``{"budgets": {...}}`` with unset values dropped.
    Both the live kernel and the dataset builder call this, so both hash the same thing.
    """
    if universe is None:
        return {}, {}
    u = getattr(universe, "universe", universe)
    return _plain(getattr(u, "defaults", None)), _policies(getattr(u, "policies", None))


def _policies(policies: Any) -> dict[str, Any]:
    """``{"budgets": {...}}`` from a ``UniversePolicies`` model; dicts are taken as given."""
    if policies is None or isinstance(policies, dict):
        return _plain(policies)
    budgets = _plain(getattr(policies, "budgets", None))
    return {"budgets": budgets} if budgets else {}


def _view(s: SimilarRun) -> dict[str, Any]:
    """A :class:`SimilarRunView` as a dict (validated in one pass with the whole input)."""
    r = s.summary
    return {
        "run_id": r.run_id,
        "issue_id": r.issue_id,
        "started_at": r.started_at,
        "toolchain": r.toolchain,
        "plan": r.plan_label,
        "candidate_index": r.candidate_index,
        "loser": r.loser,
        "status": r.status,
        "all_passed": r.all_passed,
        "fail_codes": list(r.fail_codes),
        "duration_ms": r.duration_ms,
        "cost_usd": r.cost_usd,
        "tokens_used": r.tokens_used,
        "jaccard": round(s.jaccard, 6),
        "age_bucket": s.age_bucket,
    }


def build_planner_input(
    issue_snapshot: dict[str, Any] | Issue | IssueFeatures,
    decision_time: datetime | str,
    *,
    index: SimilarRunSource,
    universe_id: str | None,
    job_type: str = "code",
    world_id: str | None = None,
    objective_id: str | None = None,
    universe_defaults: dict[str, Any] | BaseModel | None = None,
    universe_policies: dict[str, Any] | BaseModel | None = None,
    n_similar: int = 8,
) -> PlannerInput:
    """The planner input for one decision; similar runs are those available strictly before it."""
    feats = issue_features(issue_snapshot)
    when = parse_ts(decision_time) if isinstance(decision_time, str) else decision_time
    domain = domain_of_tags(feats.tags)
    policies = _policies(universe_policies)
    similar = (
        index.similar_scored(
            job_type, domain, feats.tags, when, n=n_similar, world_id=world_id, objective_id=objective_id
        )
        if n_similar > 0
        else []
    )
    return PlannerInput.model_validate(
        {
            "universe_id": universe_id,
            "job_type": job_type,
            "domain": domain,
            "world_id": world_id,
            "objective_id": objective_id,
            "universe_defaults": _plain(universe_defaults),
            "universe_policies": policies,
            "issue": feats,
            "decision_time": isoformat_z(when),
            "n_similar": n_similar,
            "last_N_similar_runs": [_view(s) for s in similar],
        }
    )


def canonical_json(pi: PlannerInput) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the bytes that are hashed."""
    return json.dumps(pi.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def planner_input_hash(pi: PlannerInput) -> str:
    """sha256 (hex) of the canonical JSON; stored in the decision record."""
    return hashlib.sha256(canonical_json(pi).encode("utf-8")).hexdigest()
