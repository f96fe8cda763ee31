"""LiveGraph (the runner's graph, kept across cycles) answers exactly as an IssueGraph built
afresh over the cycle's view (active issues plus every issue their deps name, those not active
as pending), through random arrivals, status changes, attempts, hold tags, missing blockers,
cycles and non-blocks deps; and an issue that has not arrived is never ready."""

from __future__ import annotations

import random

import pytest

from cyntra.state.graph import IssueGraph
from cyntra.state.issue import Issue
from cyntra.state.live_graph import LiveGraph

TERMINAL = {"done", "escalated", "closed"}
STATUSES = ["open", "ready", "running", "done", "escalated", "closed", "blocked"]
SIZES = ["XS", "S", "M", "L", "XL"]


def _issue(rng: random.Random, iid: str) -> Issue:
    return Issue.model_validate({
        "id": iid, "title": f"t{iid}", "status": rng.choice(STATUSES[:3]), "dk_size": rng.choice(SIZES),
        "dk_attempts": rng.choice([0, 0, 0, 1, 3]), "dk_max_attempts": 3,
        "tags": rng.choice([[], [], ["bug"], ["escalation"]]),
    })


def _world(seed: int) -> tuple[dict[str, Issue], list[tuple[str, str, str]]]:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    ids = [str(k) for k in range(1, n + 1)] + [f"x-{k}" for k in range(rng.randint(0, 5))]
    issues = {iid: _issue(rng, iid) for iid in ids}
    deps: list[tuple[str, str, str]] = []
    for _ in range(rng.randint(0, 2 * len(ids))):
        a, b = rng.choice(ids), rng.choice(ids)
        if a != b or rng.random() < 0.1:
            deps.append((a, b, rng.choice(["blocks", "blocks", "blocks", "related"])))
    if rng.random() < 0.3:  # a blocker that is not in the store
        deps.append(("gone-1", rng.choice(ids), "blocks"))
    return issues, deps


def _reference(issues: dict[str, Issue], deps: list[tuple[str, str, str]], active: dict[str, Issue]) -> IssueGraph:
    """The runner's cycle view built afresh: the active issues, every issue a dep into one of
    them names, and those deps."""
    into: dict[str, list[tuple[str, str, str]]] = {}
    for d in deps:
        into.setdefault(d[1], []).append(d)
    view = dict(active)
    edges = []
    for iid in active:
        for d in into.get(iid, ()):
            edges.append(d)
            if d[0] in issues and d[0] not in view:
                view[d[0]] = issues[d[0]]
    return IssueGraph(view, edges, pending=[iid for iid in view if iid not in active])


def _same(live: LiveGraph, issues: dict[str, Issue], deps: list[tuple[str, str, str]],
          active: dict[str, Issue]) -> None:
    ref = _reference(issues, deps, active)
    got = live.view()
    assert sorted(i.id for i in got.ready_issues()) == sorted(i.id for i in ref.ready_issues())
    assert sorted(i.id for i in got.running()) == sorted(i.id for i in ref.running())
    assert got.critical_path() == ref.critical_path()
    assert got.critical_set == ref.critical_set
    assert got.cycles == ref.cycles
    assert got.blocked() == ref.blocked()
    assert sorted(got.warnings) == sorted(ref.warnings)
    assert set(got.issues) == set(ref.issues)
    for iid in ref.issues:
        assert got.not_ready_reason(iid) == ref.not_ready_reason(iid), iid


@pytest.mark.parametrize("seed", range(60))
def test_live_graph_equals_a_fresh_graph_of_the_view(seed: int) -> None:
    rng = random.Random(1000 + seed)
    issues, deps = _world(seed)
    ids = list(issues)
    arrivals = [iid for iid in ids if rng.random() < 0.8]
    rng.shuffle(arrivals)
    active: dict[str, Issue] = {}
    live = LiveGraph(issues, deps, active)
    _same(live, issues, deps, active)
    for _ in range(40):
        roll = rng.random()
        if roll < 0.3 and arrivals:  # an arrival
            iid = arrivals.pop()
            if issues[iid].status not in TERMINAL:
                active[iid] = issues[iid]
            live.changed(iid)
        else:  # the runner changes an issue (status, attempts, tags)
            iid = rng.choice(ids)
            issue = issues[iid]
            if roll < 0.8:
                issue.status = rng.choice(STATUSES)
            elif roll < 0.9:
                issue.dk_attempts = rng.choice([0, 1, 2, 3])
            else:
                issue.dk_size = rng.choice(SIZES)
            if issue.status in TERMINAL:
                active.pop(iid, None)
            live.changed(iid)
        _same(live, issues, deps, active)


def test_an_unchained_issue_wins_the_critical_path_only_over_short_chains() -> None:
    """No chain longer than one XL issue: the heaviest issue outside every chain (smallest id on
    ties) is the critical path, across components and lone issues alike."""
    rng = random.Random(0)
    issues = {iid: _issue(rng, iid) for iid in ("1", "2", "3", "4")}
    for iid, size in (("1", "XS"), ("2", "XS"), ("3", "L"), ("4", "L")):
        issues[iid].dk_size = size
        issues[iid].status = "open"
    deps = [("1", "2", "blocks")]  # a 2-hour chain; 3 and 4 are alone (8 hours each)
    active = dict(issues)
    live = LiveGraph(issues, deps, active)
    assert live.view().critical_path() == ["3"] == _reference(issues, deps, active).critical_path()
    issues["2"].dk_size = "XL"  # the chain is now 17 hours: longer than any single issue
    live.changed("2")
    assert live.view().critical_path() == ["1", "2"] == _reference(issues, deps, active).critical_path()


def test_a_blocker_that_has_not_arrived_holds_its_dependent_and_is_not_ready() -> None:
    rng = random.Random(0)
    issues = {iid: _issue(rng, iid) for iid in ("1", "2")}
    for issue in issues.values():
        issue.status, issue.dk_attempts, issue.tags = "open", 0, []
    deps = [("2", "1", "blocks")]  # 2 (not arrived yet) blocks 1 (active)
    active = {"1": issues["1"]}
    live = LiveGraph(issues, deps, active)
    view = live.view()
    assert [i.id for i in view.ready_issues()] == []
    assert view.blocked() == {"1": ["2"]}
    assert view.not_ready_reason("2") == "not arrived yet"
    active["2"] = issues["2"]  # it arrives
    live.changed("2")
    assert [i.id for i in live.view().ready_issues()] == ["2"]
    issues["2"].status = "done"
    del active["2"]
    live.changed("2")
    assert [i.id for i in live.view().ready_issues()] == ["1"]
