"""IssueGraph: the ready rule, blockers, missing deps, cycles and the critical path."""

from __future__ import annotations

import itertools
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cyntra.state.graph import IssueGraph, id_key
from cyntra.state.issue import Issue


def mk(iid: str, **kw: Any) -> Issue:
    return Issue.model_validate({"id": iid, "title": f"issue {iid}", **kw})


# --- ready rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("status,ready", [
    ("open", True), ("ready", True), ("running", False), ("done", False),
    ("escalated", False), ("blocked", False), ("closed", False),
])
def test_ready_by_status(status: str, ready: bool) -> None:
    g = IssueGraph([mk("1", status=status)])
    assert (g.ready_ids() == ["1"]) is ready
    assert g.is_ready("1") is ready
    assert (g.not_ready_reason("1") is None) is ready


@pytest.mark.parametrize("tag", ["escalation", "needs-human"])
def test_hold_tags_block(tag: str) -> None:
    g = IssueGraph([mk("1", tags=["x", tag]), mk("2", tags=["escalationish"])])
    assert g.ready_ids() == ["2"]
    assert g.not_ready_reason("1") == f"tagged {tag}"


def test_attempts_exhausted() -> None:
    g = IssueGraph([mk("1", dk_attempts="3"), mk("2", dk_attempts=2),
                    mk("3", dk_attempts=4, dk_max_attempts=5)])
    assert g.ready_ids() == ["2", "3"]
    assert g.not_ready_reason("1") == "attempts exhausted (3/3)"


def test_predecessors_must_be_done() -> None:
    issues = [mk("a", status="done"), mk("b"), mk("c"), mk("d"), mk("e", status="closed")]
    deps = [("a", "c", "blocks"), ("b", "d", "blocks"), ("e", "b", "blocks")]
    g = IssueGraph(issues, deps)
    assert g.ready_ids() == ["b", "c"]
    assert g.blocked_by("d") == ["b"]
    assert g.blocked_by("c") == []
    assert g.blocked() == {"d": ["b"]}
    assert g.not_ready_reason("d") == "blocked by b"


def test_non_blocks_dep_types_are_ignored() -> None:
    deps = [("a", "b", "related"), ("a", "b", "parent-child"), ("a", "b", "discovered-from")]
    g = IssueGraph([mk("a"), mk("b")], deps)
    assert g.ready_ids() == ["a", "b"]
    assert g.blocked_by("b") == []


def test_dep_shapes_tuple_mapping_object() -> None:
    issues = [mk("a"), mk("b"), mk("c"), mk("d")]
    deps = [
        ("a", "b", "blocks"),
        {"from": "a", "to": "c", "type": "blocks"},
        SimpleNamespace(from_="a", to="d", type="blocks"),
    ]
    g = IssueGraph({i.id: i for i in issues}, deps)
    assert g.ready_ids() == ["a"]
    assert g.blocked() == {"b": ["a"], "c": ["a"], "d": ["a"]}


def test_missing_predecessor_blocks_and_is_reported() -> None:
    g = IssueGraph([mk("1"), mk("2")], [("ghost", "1", "blocks"), ("2", "nowhere", "blocks")])
    assert g.ready_ids() == ["2"]
    assert g.blocked_by("1") == ["ghost"]
    assert g.missing == {"1": ["ghost"]}
    assert g.not_ready_reason("1") == "missing dependency ghost"
    assert any("missing issue(s) ghost" in w for w in g.warnings)
    assert any("does not exist" in w for w in g.warnings)  # the edge to 'nowhere'
    with pytest.raises(KeyError):
        g.blocked_by("ghost")


# --- cycles ----------------------------------------------------------------------------------


def test_cycle_members_blocked_and_reported() -> None:
    issues = [mk(str(i)) for i in range(1, 7)]
    deps = [("1", "2", "blocks"), ("2", "3", "blocks"), ("3", "1", "blocks"),
            ("3", "4", "blocks"),  # downstream of the cycle
            ("5", "5", "blocks")]  # self-loop
    g = IssueGraph(issues, deps)
    assert g.cycles == [["1", "2", "3"], ["5"]]
    assert g.ready_ids() == ["6"]
    assert g.not_ready_reason("2") == "in a dependency cycle with 1, 2, 3"
    assert g.blocked_by("4") == ["3"]
    assert sum("dependency cycle" in w for w in g.warnings) == 2
    assert g.critical_path() in (["4"], ["6"])  # cycle members are not on the path
    assert not set(g.critical_path()) & {"1", "2", "3", "5"}


def test_chain_downstream_of_cycle_still_measured() -> None:
    issues = [mk("1"), mk("2"), mk("3", dk_size="XL"), mk("4", dk_size="XL"), mk("5", dk_size="L")]
    deps = [("1", "2", "blocks"), ("2", "1", "blocks"), ("2", "3", "blocks"), ("3", "4", "blocks")]
    g = IssueGraph(issues, deps)
    assert g.critical_path() == ["3", "4"] and g.critical_hours == 32
    assert g.ready_ids() == ["5"]


def test_cycle_with_done_member_still_blocks_the_rest() -> None:
    g = IssueGraph([mk("a", status="done"), mk("b")], [("a", "b", "blocks"), ("b", "a", "blocks")])
    assert g.cycles == [["a", "b"]]
    assert g.ready_ids() == []
    assert g.blocked_by("b") == ["a"]


def test_huge_cycle_does_not_recurse() -> None:
    n = 20000
    issues = [Issue.model_validate({"id": str(i)}) for i in range(n)]
    deps = [(str(i), str((i + 1) % n), "blocks") for i in range(n)]
    g = IssueGraph(issues, deps)
    assert len(g.cycles) == 1 and len(g.cycles[0]) == n
    assert g.ready_ids() == []
    assert g.critical_path() == []


# --- critical path ---------------------------------------------------------------------------


def test_critical_path_weights_by_size() -> None:
    issues = [mk("a", dk_size="XS"), mk("b", dk_size="XS"), mk("c", dk_size="XS"),
              mk("d", dk_size="L")]
    g = IssueGraph(issues, [("a", "b", "blocks"), ("b", "c", "blocks")])
    assert g.critical_path() == ["d"]  # 8 h beats 1+1+1
    assert g.critical_hours == 8
    g2 = IssueGraph([*issues, mk("e", dk_size="XL")], [("a", "b", "blocks"), ("b", "e", "blocks")])
    assert g2.critical_path() == ["a", "b", "e"]  # 1+1+16
    assert g2.on_critical_path("b") and not g2.on_critical_path("d")


def test_critical_path_picks_heaviest_branch_and_skips_done() -> None:
    issues = [mk("root", status="done", dk_size="XL"), mk("m1", dk_size="M"),
              mk("s1", dk_size="S"), mk("l1", dk_size="L"), mk("x", dk_size="XS")]
    deps = [("root", "m1", "blocks"), ("m1", "s1", "blocks"), ("m1", "l1", "blocks"),
            ("l1", "x", "blocks")]
    g = IssueGraph(issues, deps)
    assert g.critical_path() == ["m1", "l1", "x"]
    assert g.critical_hours == 4 + 8 + 1


def test_critical_path_tie_break_by_natural_id() -> None:
    # Two equal chains 10->11 and 2->3 (M+M): the smaller id, naturally ordered, wins.
    issues = [mk(i) for i in ("10", "11", "2", "3")]
    g = IssueGraph(issues, [("10", "11", "blocks"), ("2", "3", "blocks")])
    assert g.critical_path() == ["2", "3"]
    # Equal successors: 1 -> {b, a} picks a.
    g2 = IssueGraph([mk("1"), mk("b"), mk("a")], [("1", "b", "blocks"), ("1", "a", "blocks")])
    assert g2.critical_path() == ["1", "a"]
    assert sorted(["b", "10", "2", "a1"], key=id_key) == ["2", "10", "a1", "b"]


def test_critical_path_empty_when_all_done() -> None:
    g = IssueGraph([mk("1", status="done")])
    assert g.critical_path() == [] and g.critical_hours == 0


def test_non_blocks_edges_do_not_extend_critical_path() -> None:
    g = IssueGraph([mk("a", dk_size="S"), mk("b", dk_size="S"), mk("c", dk_size="M")],
                   [("a", "b", "related")])
    assert g.critical_path() == ["c"]


def test_scale_100k_issues_50k_deps_linear() -> None:
    rng = random.Random(7)
    n = 100_000
    sizes = ["XS", "S", "M", "L", "XL"]
    issues = [Issue.model_validate({"id": str(i), "status": rng.choice(["open", "open", "done"]),
                                    "dk_size": rng.choice(sizes)}) for i in range(n)]
    deps = []
    for _ in range(50_000):
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b:
            deps.append((str(min(a, b)), str(max(a, b)), "blocks"))
    # A long chain too, to check nothing is recursive.
    deps += [(str(i), str(i + 1), "blocks") for i in range(0, 30_000, 1)]
    t0 = time.perf_counter()
    g = IssueGraph(issues, deps)
    ready = g.ready_ids()
    path = g.critical_path()
    blocked = g.blocked()
    elapsed = time.perf_counter() - t0
    assert ready and path and blocked
    assert g.cycles == []
    # The path is a real chain of live blocks edges.
    for first, then in itertools.pairwise(path):
        assert first in g.preds[then]
    assert elapsed < 5.0, f"graph took {elapsed:.2f}s"


# --- against a brute-force reference -----------------------------------------------------------


def _reference(issues: list[Issue], deps: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The graph's answers computed the slow, obvious way (reachability by search)."""
    known = {i.id: i for i in issues}
    edges = [(a, b) for a, b, t in deps if t == "blocks" and a in known and b in known]
    missing = {b for a, b, t in deps if t == "blocks" and b in known and a not in known}
    succ: dict[str, set[str]] = {i: set() for i in known}
    for a, b in edges:
        succ[a].add(b)

    def reach(v: str) -> set[str]:
        seen: set[str] = set()
        todo = list(succ[v])
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(succ[x])
        return seen

    reaches = {v: reach(v) for v in known}
    on_cycle = {v for v in known if v in reaches[v]}
    cycles = sorted({tuple(sorted((u for u in on_cycle if u in reaches[v] and v in reaches[u]),
                                  key=id_key)) for v in on_cycle}, key=lambda c: id_key(c[0]))
    done = {i.id for i in issues if i.status in ("done", "closed")}
    ready = [i.id for i in issues
             if i.status in ("open", "ready") and not {"escalation", "needs-human"} & set(i.tags)
             and i.dk_attempts < i.dk_max_attempts and i.id not in missing and i.id not in on_cycle
             and all(a in done for a, b in edges if b == i.id)]
    live = {v for v in known if v not in done and v not in on_cycle}
    hours: dict[str, int] = {}

    def longest(v: str) -> int:  # the live part is acyclic
        if v not in hours:
            hours[v] = known[v].size_hours + max((longest(s) for s in succ[v] if s in live), default=0)
        return hours[v]

    top = max((longest(v) for v in live), default=0)
    path: list[str] = []
    if top:  # the canonical chain: smallest natural id at every tie
        cur = min((v for v in live if longest(v) == top), key=id_key)
        while True:
            path.append(cur)
            rest = longest(cur) - known[cur].size_hours
            nxt = [s for s in succ[cur] if s in live and longest(s) == rest]
            if not rest or not nxt:
                break
            cur = min(nxt, key=id_key)
    scc = {v: c for c in cycles for v in c}
    missing_from: dict[str, list[str]] = {}
    for a, b, t in deps:
        if t == "blocks" and b in known and a not in known:
            missing_from.setdefault(b, []).append(a)
    blocked: dict[str, list[str]] = {}
    for i in issues:
        if i.status not in ("open", "ready"):
            continue
        who = set(missing_from.get(i.id, ()))
        who |= {a for a, b in edges if b == i.id
                and (a not in done or (i.id in scc and scc.get(a) == scc[i.id]))}
        if who:
            blocked[i.id] = sorted(who, key=id_key)
    return {"ready": ready, "cycles": [list(c) for c in cycles], "critical_hours": top,
            "path": path, "missing": missing_from,
            "blocked": {k: blocked[k] for k in sorted(blocked, key=id_key)}}


_ids = st.sampled_from([str(i) for i in range(12)] + ["a", "b", "x1"])


@given(
    st.lists(st.tuples(_ids, st.sampled_from(["open", "ready", "done", "closed", "running"]),
                       st.sampled_from(["M", "M", "M", "S", "XL"]),  # equal chains: ties
                       st.sampled_from([[], ["escalation"], ["kernel"]]), st.integers(0, 3)),
             max_size=14, unique_by=lambda row: row[0]),
    st.lists(st.tuples(_ids | st.just("ghost"), _ids | st.just("ghost"),
                       st.sampled_from(["blocks", "blocks", "blocks", "related"])), max_size=30),
    st.booleans(),
)
@example(  # equal successors on the path: the tie-break decides
    [("1", "open", "M", [], 0), ("b", "open", "M", [], 0), ("a", "open", "M", [], 0)],
    [("1", "b", "blocks"), ("1", "a", "blocks")], True)
@settings(max_examples=300, deadline=None)
def test_graph_agrees_with_a_brute_force_reference(
    rows: list[tuple[str, str, str, list[str], int]], deps: list[tuple[str, str, str]], levels: bool,
) -> None:
    import cyntra.state.graph as graph_module

    issues = [mk(iid, status=status, dk_size=size, tags=tags, dk_attempts=attempts)
              for iid, status, size, tags, attempts in rows]
    want = _reference(issues, deps)
    saved = graph_module._LEVEL_MIN
    graph_module._LEVEL_MIN = 1 if levels else 10**9  # the numpy level pass, or node by node
    try:
        g = IssueGraph(issues, deps)
        path = g.critical_path()
    finally:
        graph_module._LEVEL_MIN = saved
    assert g.ready_ids() == want["ready"]
    assert g.cycles == want["cycles"]
    assert g.critical_hours == want["critical_hours"]
    assert path == want["path"]
    assert g.missing == want["missing"]
    blocked = g.blocked()
    assert blocked == want["blocked"] and list(blocked) == list(want["blocked"])
    for issue in issues:
        assert (g.not_ready_reason(issue.id) is None) == (issue.id in want["ready"])


def test_a_pending_issue_blocks_but_is_never_ready() -> None:
    """``pending``: in the graph only as a blocker that has not arrived (the runner's view)."""
    a = Issue.model_validate({"id": "a", "title": "a", "status": "open", "created": "2025-03-01T00:00:00Z"})
    b = Issue.model_validate({"id": "b", "title": "b", "status": "open"})
    g = IssueGraph({"a": a, "b": b}, [("a", "b", "blocks")], pending=["a"])
    assert g.ready_ids() == []
    assert g.not_ready_reason("a") == "not arrived yet (created 2025-03-01T00:00:00.000000Z)"
    assert g.not_ready_reason("b") == "blocked by a"
    assert not g.is_ready("a")
    assert IssueGraph({"a": a, "b": b}, [("a", "b", "blocks")]).ready_ids() == ["a"]
