"""The runner's issue graph, kept up to date across cycles instead of rebuilt for each one.

Each cycle the runner needs what :class:`~cyntra.state.graph.IssueGraph` says about its *view*:
the active issues (arrived, not finished) plus every issue a dependency of theirs names (one
that is not active has not arrived or has finished: it holds its dependents back as any
unfinished issue does, but is never ready, so nothing is dispatched before it arrives). Built
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

from cyntra.state.graph import MAX_SIZE_HOURS, IssueGraph, beats, id_key, ready_alone
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
    The ready and running issues are kept as unions, and the heaviest chain head with the
    component that holds it, so a cycle costs what changed, not the size of the view.
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
        self._ready: dict[str, Issue] = {}
        self._running: dict[str, Issue] = {}
        self._noted: dict[int, IssueGraph] = {}  # components with warnings or cycles (usually none)
        self._head: tuple[int, str, int] | None = None  # heaviest chain head: hours, id, component
        self._rescan = True  # the head's component changed: find the heaviest head again
        self._critical: list[str] | None = None  # None: to compute
        self._short = True  # the critical path is no longer than one XL issue
        for iid in active:
            self.changed(iid)

    def changed(self, issue_id: str) -> None:
        """``issue_id`` arrived, left, or changed a field the graph reads."""
        c = self._comp.get(issue_id)
        issue = self._active.get(issue_id)
        if c is not None:
            members = self._members.setdefault(c, {})
            if issue is not None:
                members[issue_id] = None
            else:
                members.pop(issue_id, None)
            self._dirty.add(c)
            return
        self._ready.pop(issue_id, None)
        self._running.pop(issue_id, None)
        if issue is not None:
            self._lone[issue_id] = issue
            if ready_alone(issue):
                self._ready[issue_id] = issue
            elif issue.status == "running":
                self._running[issue_id] = issue
        else:
            self._lone.pop(issue_id, None)
        if self._short:  # a lone issue can be the critical path only when no chain is longer
            self._critical = None

    def view(self) -> CycleGraph:
        for c in self._dirty:
            self._rebuild(c)
        self._dirty.clear()
        if self._critical is None:
            self._compute_critical()
        assert self._critical is not None
        return CycleGraph(self._graphs, self._noted, self._lone, list(self._ready.values()),
                          list(self._running.values()), self._critical)

    def _rebuild(self, c: int) -> None:
        old = self._graphs.pop(c, None)
        self._noted.pop(c, None)
        if old is not None:
            for i in old.ready_issues():
                self._ready.pop(i.id, None)
            for i in old.running():
                self._running.pop(i.id, None)
        members = self._members.get(c)
        graph: IssueGraph | None = None
        if members:
            nodes: dict[str, Issue] = {iid: self._active[iid] for iid in members}
            deps: list[Dep] = []
            pending: list[str] = []  # blockers that are not active: not arrived (or finished)
            for iid in members:
                for dep in self._into.get(iid, ()):
                    deps.append(dep)
                    blocker = self._issues.get(dep[0])
                    if blocker is not None and dep[0] not in nodes:
                        nodes[dep[0]] = blocker
                        pending.append(dep[0])
            graph = self._graphs[c] = IssueGraph(nodes, deps, pending=pending)
            if graph.warnings or graph.cycles:
                self._noted[c] = graph
            for i in graph.ready_issues():
                self._ready[i.id] = i
            for i in graph.running():
                self._running[i.id] = i
        else:
            self._members.pop(c, None)
        # The critical path: only the component holding the heaviest chain, a new heavier
        # chain, or (while every chain is short) any change at all can move it.
        if self._head is not None and self._head[2] == c:
            self._rescan = True
            self._critical = None
        elif graph is not None and not self._rescan:
            val, start = graph.chain_head()
            if start is not None and (self._head is None or beats((val, start), self._head[:2])):
                self._head = (val, start, c)
                self._critical = None
        if self._short:
            self._critical = None

    def _compute_critical(self) -> None:
        if self._rescan:
            self._head = None
            for c, g in self._graphs.items():
                val, start = g.chain_head()
                if start is not None and (self._head is None or beats((val, start), self._head[:2])):
                    self._head = (val, start, c)
            self._rescan = False
        head = self._head
        path = self._graphs[head[2]].path_from(head[1]) if head is not None else []
        self._short = head is None or head[0] <= MAX_SIZE_HOURS
        if self._short:
            best: tuple[int, str] | None = None
            for g in self._graphs.values():
                u = g.best_unchained()
                if u is not None and (best is None or beats(u, best)):
                    best = u
            for i in self._lone.values():  # active and unfinished: every one is a candidate
                u = (SIZE_HOURS[i.dk_size], i.id)
                if best is None or beats(u, best):
                    best = u
            if best is not None and (head is None or beats(best, head[:2])):
                path = [best[1]]
        self._critical = path


class CycleGraph:
    """One cycle's graph: the same questions as :class:`IssueGraph`, answered from the
    components' graphs and the issues on no dependency (a snapshot: use it for one cycle)."""

    def __init__(self, graphs: Mapping[int, IssueGraph], noted: Mapping[int, IssueGraph],
                 lone: Mapping[str, Issue], ready: list[Issue], running: list[Issue], critical: list[str]) -> None:
        self._graphs = graphs.values()  # read only while this cycle lasts (the live graph moves on)
        self._noted = list(noted.values())
        self._lone = lone
        self._ready = ready
        self._running = running
        self._critical = critical
        self.critical_set = frozenset(critical)
        self._issues: dict[str, Issue] | None = None

    @property
    def issues(self) -> dict[str, Issue]:
        if self._issues is None:
            out = dict(self._lone)
            for g in self._graphs:
                out.update(g.issues)
            self._issues = out
        return self._issues

    @property
    def warnings(self) -> list[str]:
        return [w for g in self._noted for w in g.warnings]

    @property
    def cycles(self) -> list[list[str]]:
        return sorted((c for g in self._noted for c in g.cycles), key=lambda c: id_key(c[0]))

    def ready_issues(self) -> list[Issue]:
        return list(self._ready)

    def running(self) -> list[Issue]:
        return list(self._running)

    def not_ready_reason(self, issue_id: str) -> str | None:
        for g in self._graphs:
            if issue_id in g.issues:
                return g.not_ready_reason(issue_id)
        return IssueGraph([self._lone[issue_id]]).not_ready_reason(issue_id)

    def blocked(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g in self._graphs:
            out.update(g.blocked())
        return {k: out[k] for k in sorted(out, key=id_key)}

    def critical_path(self) -> list[str]:
        return list(self._critical)


__all__ = ["CycleGraph", "LiveGraph"]
