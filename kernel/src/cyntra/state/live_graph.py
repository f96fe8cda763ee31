"""The runner's issue graph, kept up to date across cycles instead of rebuilt for each one.

Each cycle the runner needs what :class:`~cyntra.state.graph.IssueGraph` says about its *view*:
the active issues (arrived, not finished) plus every issue a dependency of theirs names. Built
afresh, that costs O(view) per cycle, and the view keeps growing in a long run with issues that
wait forever behind an escalated blocker -- most of the 10,000-issue simulation's cycle time.

Dependencies split the issues into connected components (all dep types, as the view pulls in
the source of any dep). No dependency crosses a component, so the view's graph is the union of
one small :class:`IssueGraph` per component, and a change to an issue invalidates only its own
component's. Issues on no dependency at all are judged alone, without a graph. Everything the
scheduler reads -- ready and running issues, cycles, blockers, warnings -- is a union; the
critical path is the heaviest chain over all components, then (as in ``IssueGraph``) the
heaviest unchained issue when no chain is longer than one XL issue. A test runs random changes
through both and compares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cyntra.state.graph import HOLD_TAGS, MAX_SIZE_HOURS, READY_STATUSES, IssueGraph, beats, id_key
from cyntra.state.issue import SIZE_HOURS, Issue

Dep = tuple[str, str, str]  # (from, to, type)


def _components(deps: Iterable[Dep]) -> dict[str, int]:
    """Component number of every id named by a dependency (union-find over all types)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b, _ in deps:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    numbers: dict[str, int] = {}
    return {x: numbers.setdefault(find(x), len(numbers)) for x in parent}


class LiveGraph:
    """Readiness, blockers and the critical path of the runner's active issues.

    ``issues`` is every issue of the store (blockers are looked up there); ``active`` the
    runner's dict of active issues, read live. Call :meth:`changed` after an issue's status,
    attempts or activity changes (including arrival), then :meth:`view` for the cycle's graph.
    """

    def __init__(self, issues: Mapping[str, Issue], deps: Iterable[Dep], active: Mapping[str, Issue]) -> None:
        self._issues = issues
        self._active = active
        dep_list = list(deps)
        self._comp = _components(dep_list)
        self._into: dict[str, list[Dep]] = {}
        for d in dep_list:
            self._into.setdefault(d[1], []).append(d)
        self._members: dict[int, dict[str, None]] = {}  # component -> its active members
        self._graphs: dict[int, IssueGraph] = {}  # component -> graph of its view
        self._dirty: set[int] = set()
        self._lone: dict[str, Issue] = {}  # active issues on no dependency
        for iid in active:
            self.changed(iid)

    def changed(self, issue_id: str) -> None:
        """``issue_id`` arrived, left, or changed a field the graph reads."""
        c = self._comp.get(issue_id)
        is_active = issue_id in self._active
        if c is None:
            if is_active:
                self._lone[issue_id] = self._active[issue_id]
            else:
                self._lone.pop(issue_id, None)
            return
        members = self._members.setdefault(c, {})
        if is_active:
            members[issue_id] = None
        else:
            members.pop(issue_id, None)
        self._dirty.add(c)

    def view(self) -> CycleGraph:
        for c in self._dirty:
            members = self._members.get(c)
            if not members:
                self._members.pop(c, None)
                self._graphs.pop(c, None)
                continue
            nodes: dict[str, Issue] = {iid: self._active[iid] for iid in members}
            deps: list[Dep] = []
            for iid in members:
                for dep in self._into.get(iid, ()):
                    deps.append(dep)
                    blocker = self._issues.get(dep[0])
                    if blocker is not None and dep[0] not in nodes:
                        nodes[dep[0]] = blocker
            self._graphs[c] = IssueGraph(nodes, deps)
        self._dirty.clear()
        return CycleGraph(list(self._graphs.values()), list(self._lone.values()))


class CycleGraph:
    """One cycle's graph: the same questions as :class:`IssueGraph`, answered from the
    components' graphs and the issues on no dependency."""

    def __init__(self, graphs: list[IssueGraph], lone: list[Issue]) -> None:
        self._graphs = graphs
        self._lone = lone
        self._critical: list[str] | None = None
        self._critical_set: frozenset[str] = frozenset()
        self._issues: dict[str, Issue] | None = None

    @property
    def issues(self) -> dict[str, Issue]:
        if self._issues is None:
            out = {i.id: i for i in self._lone}
            for g in self._graphs:
                out.update(g.issues)
            self._issues = out
        return self._issues

    @property
    def warnings(self) -> list[str]:
        return [w for g in self._graphs for w in g.warnings]

    @property
    def cycles(self) -> list[list[str]]:
        return sorted((c for g in self._graphs for c in g.cycles), key=lambda c: id_key(c[0]))

    def ready_issues(self) -> list[Issue]:
        out = [i for g in self._graphs for i in g.ready_issues()]
        for i in self._lone:  # IssueGraph's ready rule for an issue without dependencies
            if (i.status in READY_STATUSES and (not i.tags or HOLD_TAGS.isdisjoint(i.tags))
                    and i.dk_attempts < i.dk_max_attempts):
                out.append(i)
        return out

    def running(self) -> list[Issue]:
        return [i for g in self._graphs for i in g.running()] + [i for i in self._lone if i.status == "running"]

    def not_ready_reason(self, issue_id: str) -> str | None:
        for g in self._graphs:
            if issue_id in g.issues:
                return g.not_ready_reason(issue_id)
        lone = {i.id: i for i in self._lone}
        return IssueGraph([lone[issue_id]]).not_ready_reason(issue_id)

    def blocked(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g in self._graphs:
            out.update(g.blocked())
        return {k: out[k] for k in sorted(out, key=id_key)}

    def _compute_critical(self) -> None:
        head: tuple[int, str | None] = (-1, None)
        owner: IssueGraph | None = None
        for g in self._graphs:
            h = g.chain_head()
            if h[1] is not None and (head[1] is None or beats((h[0], h[1]), head)):
                head, owner = h, g
        start, path = head, owner.path_from(head[1]) if owner is not None else []
        if head[0] <= MAX_SIZE_HOURS:
            best: tuple[int, str] | None = None
            for g in self._graphs:
                u = g.best_unchained()
                if u is not None and (best is None or beats(u, best)):
                    best = u
            for i in self._lone:  # active and unfinished: every one is a candidate
                u = (SIZE_HOURS[i.dk_size], i.id)
                if best is None or beats(u, best):
                    best = u
            if best is not None and beats(best, start):
                path = [best[1]]
        self._critical = path
        self._critical_set = frozenset(path)

    def critical_path(self) -> list[str]:
        if self._critical is None:
            self._compute_critical()
        assert self._critical is not None
        return list(self._critical)

    @property
    def critical_set(self) -> frozenset[str]:
        if self._critical is None:
            self._compute_critical()
        return self._critical_set


__all__ = ["CycleGraph", "LiveGraph"]
