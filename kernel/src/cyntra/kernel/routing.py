"""Routing rules: which toolchains an issue goes to (first matching rule wins).

Effective rules are the universe's ``routing_overrides`` followed by ``routing.rules`` of the
config. A rule's ``match`` ANDs its keys (an empty match always matches):

- ``dk_tool_hint``, ``dk_risk``, ``dk_size``, ``dk_priority``: a scalar or a list of accepted
  values (``null`` in the list accepts an issue with no value);
- ``tags_any`` (at least one of the tags), ``tags_all`` (every one of them);
- ``title_pattern``, ``description_pattern``: Python regexes, ``re.search``; compiled once per
  rule. An invalid regex makes :func:`check_rules` raise; at match time such a rule never
  matches rather than crashing dispatch.

Candidate order: the rule's ``use`` list, then each used toolchain's ``routing.fallbacks`` in
turn, deduplicated, keeping only enabled toolchains known to the config (with no
``toolchains:`` section at all, every name counts as enabled). With no match, the first enabled
toolchain of ``toolchain_priority`` (followed by its fallbacks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cyntra.errors import ConfigError
from cyntra.kernel.config import KernelConfig, RoutingRule
from cyntra.state.issue import Issue

SCALAR_KEYS: dict[str, Callable[[str], str]] = {
    "dk_tool_hint": str.strip,
    "dk_risk": lambda v: v.strip().lower(),
    "dk_size": lambda v: v.strip().upper(),
    "dk_priority": lambda v: v.strip().upper(),
}
TAG_KEYS: tuple[str, ...] = ("tags_any", "tags_all")
PATTERN_KEYS: dict[str, str] = {"title_pattern": "title", "description_pattern": "description"}
MATCH_KEYS: frozenset[str] = frozenset(SCALAR_KEYS) | frozenset(TAG_KEYS) | frozenset(PATTERN_KEYS)

Matcher = Callable[[Issue], bool]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _scalar_matcher(key: str, value: Any) -> Matcher:
    norm = SCALAR_KEYS[key]
    accepted = {None if v is None else norm(str(v)) for v in _as_list(value)}

    def match(issue: Issue) -> bool:
        return getattr(issue, key) in accepted

    return match


def _tags_matcher(key: str, value: Any) -> Matcher:
    wanted = frozenset(str(v) for v in _as_list(value))
    if key == "tags_any":
        return lambda issue: not wanted.isdisjoint(issue.tags)
    return lambda issue: wanted.issubset(issue.tags)


def _pattern_matcher(key: str, value: Any) -> Matcher:
    compiled = _compile(str(value))
    if compiled is None:
        return lambda issue: False
    attr = PATTERN_KEYS[key]
    search = compiled.search
    return lambda issue: search(getattr(issue, attr) or "") is not None


def compile_match(match: Mapping[str, Any]) -> list[Matcher]:
    """One predicate per known key; unknown keys are ignored here (check_rules warns)."""
    out: list[Matcher] = []
    for key, value in match.items():
        if key in SCALAR_KEYS:
            out.append(_scalar_matcher(key, value))
        elif key in TAG_KEYS:
            out.append(_tags_matcher(key, value))
        elif key in PATTERN_KEYS:
            out.append(_pattern_matcher(key, value))
    return out


def rule_matches(match: Mapping[str, Any], issue: Issue) -> bool:
    """Whether ``issue`` satisfies every key of ``match`` (also used by the policy clamp)."""
    return all(m(issue) for m in compile_match(match))


@dataclass(frozen=True)
class EffectiveRule:
    """A rule with where it came from and its match compiled once."""

    index: int  # position in the effective list
    source: str  # "universe.routing_overrides[0]" or "routing.rules[3]"
    rule: RoutingRule
    matchers: tuple[Matcher, ...] = field(default=(), repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.rule.id or self.source

    def matches(self, issue: Issue) -> bool:
        return all(m(issue) for m in self.matchers)


def _as_rule(rule: RoutingRule | Mapping[str, Any], where: str) -> RoutingRule:
    if isinstance(rule, RoutingRule):
        return rule
    try:
        return RoutingRule.model_validate(dict(rule))
    except Exception as exc:  # pydantic ValidationError or a non-mapping
        raise ConfigError(None, f"invalid routing rule: {exc}", field=where) from None


def effective_rules(
    config: KernelConfig,
    overrides: Sequence[RoutingRule | Mapping[str, Any]] | None = None,
) -> list[EffectiveRule]:
    """Universe overrides first, then the config's rules, each compiled."""
    out: list[EffectiveRule] = []
    for i, r in enumerate(overrides or ()):
        where = f"universe.routing_overrides[{i}]"
        rule = _as_rule(r, where)
        out.append(EffectiveRule(len(out), where, rule, tuple(compile_match(rule.match))))
    for i, rule in enumerate(config.routing.rules):
        where = f"routing.rules[{i}]"
        out.append(EffectiveRule(len(out), where, rule, tuple(compile_match(rule.match))))
    return out


def check_rules(
    rules: Iterable[EffectiveRule | RoutingRule],
    config: KernelConfig | None = None,
    path: str | Path | None = None,
) -> list[str]:
    """Validate rules: raises ConfigError for an invalid regex (naming rule and key); returns
    warnings for unknown match keys, empty ``use`` lists and toolchains the config lacks."""
    warnings: list[str] = []
    for n, item in enumerate(rules):
        where, rule = (item.source, item.rule) if isinstance(item, EffectiveRule) else (
            f"routing.rules[{n}]", item)
        for key, value in rule.match.items():
            if key not in MATCH_KEYS:
                warnings.append(f"{where}: unknown match key '{key}' (the rule ignores it; "
                                f"known: {', '.join(sorted(MATCH_KEYS))})")
            elif key in PATTERN_KEYS:
                try:
                    re.compile(str(value))
                except re.error as exc:
                    raise ConfigError(path, f"invalid regex {value!r}: {exc}",
                                      field=f"{where}.match.{key}") from None
        if not rule.use:
            warnings.append(f"{where}: empty 'use' list (a match falls back to "
                            "toolchain_priority)")
        if config is not None and config.toolchains:
            for name in rule.use:
                if name not in config.toolchains:
                    warnings.append(f"{where}: toolchain '{name}' is not configured (skipped)")
    return warnings


def is_enabled(config: KernelConfig, name: str) -> bool:
    """Enabled and known; with no ``toolchains:`` section every name counts as enabled."""
    if not config.toolchains:
        return True
    tc = config.toolchains.get(name)
    return tc is not None and tc.enabled


def expand(config: KernelConfig, names: Iterable[str], *extra: Iterable[str]) -> list[str]:
    """``names`` then each one's fallbacks (then ``extra`` lists), deduped, enabled only."""
    names = list(names)
    seq: list[str] = list(names)
    for n in names:
        seq.extend(config.routing.fallbacks.get(n, ()))
    for more in extra:
        seq.extend(more)
    out: list[str] = []
    seen: set[str] = set()
    for n in seq:
        if n not in seen:
            seen.add(n)
            if is_enabled(config, n):
                out.append(n)
    return out


@dataclass(frozen=True)
class Route:
    """The routing decision for one issue."""

    rule: EffectiveRule | None
    candidates: list[str]
    detail: str


def first_match(issue: Issue, rules: Sequence[EffectiveRule]) -> EffectiveRule | None:
    for rule in rules:
        if rule.matches(issue):
            return rule
    return None


def route(issue: Issue, rules: Sequence[EffectiveRule], config: KernelConfig) -> Route:
    """First matching rule's toolchains plus fallbacks; toolchain_priority when none fits."""
    rule = first_match(issue, rules)
    if rule is not None:
        cands = expand(config, rule.rule.use)
        if cands:
            return Route(rule, cands, f"{rule.label} matched {rule.rule.match or '{}'}: "
                                      f"use {rule.rule.use}")
        detail = f"{rule.label} matched but none of {rule.rule.use} (or fallbacks) is enabled; "
    else:
        detail = "no rule matched; "
    first = next((n for n in config.toolchain_priority if is_enabled(config, n)), None)
    if first is None:
        return Route(rule, [], detail + "no enabled toolchain in toolchain_priority")
    return Route(rule, expand(config, [first]), detail + f"first enabled of toolchain_priority: {first}")
