"""The issue graph: which issues are ready, what blocks the rest, and the critical path.

Only ``blocks`` dependencies gate readiness (``from`` blocks ``to``); other dep types
(``related``, ``parent-child``, …) are kept out of the graph. Everything is O(V+E), and the per-edge
work runs in numpy, so a 100,000-issue workspace is planned every cycle without noticeable cost.

Data errors never hang or crash the scheduler: a predecessor id that names no issue blocks
its successor (reported as a *missing dependency*), and every dependency cycle is detected,
reported by its ids, and its members are treated as blocked.

Ids are ordered "naturally" wherever a tie is broken: all-digit ids numerically (``2`` before
``10``), before any other id, which sorts as a string (see :func:`id_key`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cyntra.clock import isoformat_z
from cyntra.gcpause import gc_paused
from cyntra.state.issue import SIZE_HOURS, Issue
from cyntra.state.store import Dep

READY_STATUSES: frozenset[str] = frozenset({"open", "ready"})
# Beads' own "closed" is treated as done: both mean the work needs nothing more.
DONE_STATUSES: frozenset[str] = frozenset({"done", "closed"})
HOLD_TAGS: frozenset[str] = frozenset({"escalation", "needs-human"})
BLOCKS = "blocks"

DepLike = Any  # (from, to, type) tuple, {"from","to","type"} mapping, or object with .from_/.to/.type


MAX_SIZE_HOURS = max(SIZE_HOURS.values())


def beats(a: tuple[int, str], b: tuple[int, str | None]) -> bool:
    """Whether critical-path start ``a`` (hours, id) wins over ``b``: more hours, or as many
    and a smaller id (a start-less ``b`` never wins a tie)."""
    return a[0] > b[0] or (a[0] == b[0] and b[1] is not None and id_key(a[1]) < id_key(b[1]))


def ready_alone(issue: Issue) -> bool:
    """The ready rule for an issue on no dependency: open or ready, not held, attempts left.
    (:class:`IssueGraph` inlines the same checks in its one pass over the issues.)"""
    return (issue.status in READY_STATUSES and (not issue.tags or HOLD_TAGS.isdisjoint(issue.tags))
            and issue.dk_attempts < issue.dk_max_attempts)


def not_arrived(issues: Iterable[Issue], now: datetime) -> list[str]:
    """Ids of the issues created after ``now``: known, but not ready before they arrive (the
    ``pending`` of an :class:`IssueGraph` of the whole store, as the runner admits them)."""
    out: list[str] = []
    for issue in issues:
        created = issue.created
        if created is not None:
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            if created > now:
                out.append(issue.id)
    return out


def id_key(issue_id: str) -> tuple[int, int, str]:
    """Natural order for ids: numeric ids by value first (by length, then digits: no int()
    conversion), then everything else as strings. The scheduler inlines the same key."""
    if issue_id.isdigit() and issue_id.isascii():
        return (0, len(issue_id), issue_id)
    return (1, 0, issue_id)


def _dep_triple(dep: DepLike) -> tuple[str, str, str]:
    # Attribute access first: ``isinstance(x, Mapping)`` on a pydantic model is an ABC check
    # that costs microseconds, which adds up over 50,000 deps.
    if type(dep) is tuple:
        a, b, t = dep
        return str(a), str(b), str(t)
    frm = getattr(dep, "from_", None)
    if frm is not None:
        return str(frm), str(dep.to), str(getattr(dep, "type", BLOCKS))
    if isinstance(dep, Mapping):
        return str(dep["from"]), str(dep["to"]), str(dep.get("type", BLOCKS))
    if isinstance(dep, tuple | list):
        a, b, t = dep
        return str(a), str(b), str(t)
    frm = getattr(dep, "from")  # `from` is a keyword: getattr is the only way
    return str(frm), str(dep.to), str(getattr(dep, "type", BLOCKS))


_DEP_FIELDS = operator.attrgetter("from_", "to", "type")
# Below this many nodes per level the topological pass continues in plain Python: a level costs
# a few numpy calls whatever its size, so a long thin chain would be slower level by level.
_LEVEL_MIN = 64


def _blocks_edges(deps: Iterable[DepLike]) -> tuple[list[str], list[str]]:
    """(from ids, to ids) of the ``blocks`` deps, in input order."""
    items = deps if type(deps) is list else list(deps)
    kinds = set(map(type, items))
    triples: list[tuple[str, str, str]]
    if kinds <= {tuple}:  # (from, to, type) as the kernel passes them, taken as they are
        triples = items
    elif kinds <= {Dep}:  # the store's deps: plain string fields, read in C
        triples = list(map(_DEP_FIELDS, items))
    else:  # tuples as they are here too, as before the bulk paths
        triples = [d if type(d) is tuple else _dep_triple(d) for d in items]
    frms = [f for f, _, k in triples if k == BLOCKS]
    tos = [t for _, t, k in triples if k == BLOCKS]
    return frms, tos


def _csr(keys: npt.NDArray[np.intp], values: npt.NDArray[np.intp],
         n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Adjacency in compressed rows: ``values[ptr[k]:ptr[k + 1]]`` are key k's, in input order."""
    ptr = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
    return ptr, values[np.argsort(keys, kind="stable")]


def _gather(ptr: npt.NDArray[np.intp], adj: npt.NDArray[np.intp],
            nodes: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Every neighbour of ``nodes`` (concatenated), and how many each node has."""
    starts = ptr[nodes]
    counts = ptr[nodes + 1] - starts
    total = int(counts.sum())
    if not total:
        return adj[:0], counts
    ends = np.cumsum(counts)
    offsets = np.repeat(starts - (ends - counts), counts) + np.arange(total)
    return adj[offsets], counts


class GraphView(Protocol):
    """What the scheduler asks of a graph: :class:`IssueGraph` (built for one cycle) or the
    runner's :class:`~cyntra.state.live_graph.CycleGraph` (kept across cycles)."""

    @property
    def issues(self) -> Mapping[str, Issue]: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def cycles(self) -> list[list[str]]: ...
    @property
    def critical_set(self) -> frozenset[str]: ...
    def ready_issues(self) -> list[Issue]: ...
    def running(self) -> list[Issue]: ...
    def not_ready_reason(self, issue_id: str) -> str | None: ...
    def blocked(self) -> dict[str, list[str]]: ...
    def critical_path(self) -> list[str]: ...


class IssueGraph:
    """Issues plus their ``blocks`` edges; answers readiness, blockers and the critical path.

    A snapshot: statuses are read once, at construction. Build a new graph each cycle (the
    runner keeps one per dependency component instead: :class:`~cyntra.state.live_graph.LiveGraph`).

    Inside, issues are numbered in input order and edges are integer arrays (numpy), so the
    work that grows with the backlog -- matching deps to issues, the blocked test, the
    topological pass and the critical path -- runs level by level in numpy rather than edge by
    edge in Python; only one pass over the issues themselves reads their fields.
    """

    @gc_paused
    def __init__(
        self,
        issues: Iterable[Issue] | Mapping[str, Issue],
        deps: Iterable[DepLike] = (),
        *,
        pending: Collection[str] = (),
    ) -> None:
        """``pending``: ids of issues that have not arrived yet (created after the clock; in
        the runner's view, the blockers it pulls in that are not active). They hold back what
        depends on them, as any unfinished issue does, but are never ready themselves."""
        self.pending = frozenset(pending)
        if isinstance(issues, Mapping):
            self.issues: dict[str, Issue] = dict(issues)
        else:
            self.issues = {i.id: i for i in issues}
        ids = self._ids = list(self.issues)
        values = self._values = list(self.issues.values())
        n = self._n = len(ids)
        index = self._index = dict(zip(ids, range(n), strict=True))
        self.missing: dict[str, list[str]] = {}
        self.warnings: list[str] = []

        frms, tos = _blocks_edges(deps)
        m = len(frms)
        src = np.fromiter(map(index.get, frms, itertools.repeat(-1)), dtype=np.intp, count=m)
        dst = np.fromiter(map(index.get, tos, itertools.repeat(-1)), dtype=np.intp, count=m)
        known_to = dst >= 0
        dangling = m - int(known_to.sum())  # blocks an issue that does not exist: gates nothing
        lacking = known_to & (src < 0)
        for k in np.flatnonzero(lacking).tolist():
            self.missing.setdefault(tos[k], []).append(frms[k])
        live = known_to & (src >= 0)
        self._src, self._dst = src[live], dst[live]
        self._succ_ptr, self._succ = _csr(self._src, self._dst, n)
        self._pred_ptr, self._pred = _csr(self._dst, self._src, n)
        if dangling:
            self.warnings.append(f"{dangling} blocks dependenc{'y' if dangling == 1 else 'ies'} "
                                 "point to an issue that does not exist (ignored)")
        for to, lost in self.missing.items():
            self.warnings.append(f"issue {to} is blocked by missing issue(s) {', '.join(lost)}")

        # Topological order of the acyclic part (Kahn), level by level, then the cycles.
        self._levels: list[npt.NDArray[np.intp]] = []
        self._tail: list[int] = []  # the part of the order found node by node, after the levels
        self.cycles: list[list[str]] = self._find_cycles()
        self.cycle_index: dict[str, int] = {
            v: c for c, members in enumerate(self.cycles) for v in members
        }
        for members in self.cycles:
            self.warnings.append(f"dependency cycle among issues {', '.join(members)} "
                                 "(its members are treated as blocked)")

        # The one pass over the issues: status, hold tags, attempts.
        done_at: list[int] = []
        wanting: list[int] = []  # open/ready and not held: ready unless blocked
        self._running: list[Issue] = []
        pend = self.pending
        for k, issue in enumerate(values):
            st = issue.status
            if st in READY_STATUSES:
                tags = issue.tags
                if tags and not HOLD_TAGS.isdisjoint(tags):
                    continue
                if issue.dk_attempts >= issue.dk_max_attempts:
                    continue
                if pend and issue.id in pend:
                    continue
                wanting.append(k)
            elif st in DONE_STATUSES:
                done_at.append(k)
            elif st == "running":
                self._running.append(issue)
        done = self._done_mask = np.zeros(n, dtype=bool)
        done[done_at] = True
        self._done_at = done_at
        self._done_ids: frozenset[str] | None = None
        # Blocked: an unfinished predecessor, a missing one, or a place in a cycle.
        held = self._held = np.zeros(n, dtype=bool)
        held[self._dst[~done[self._src]]] = True
        held[[index[t] for t in self.missing]] = True
        held[[index[v] for v in self.cycle_index]] = True
        want = np.asarray(wanting, dtype=np.intp)
        self._ready_at: list[int] = want[~held[want]].tolist()
        self._ready: list[str] = list(map(ids.__getitem__, self._ready_at))
        self._blocked: dict[str, list[str]] | None = None
        self._critical: list[str] | None = None
        self._critical_set: frozenset[str] = frozenset()
        self._critical_hours = 0
        self._best = self._weight = np.zeros(0, dtype=np.int64)  # filled by _compute_critical
        self._chain: tuple[int, str | None] = (-1, None)
        self._unchained: tuple[int, str] | None = None
        self._preds_by_id: dict[str, list[str]] | None = None
        self._succs_by_id: dict[str, list[str]] | None = None

    # --- adjacency -----------------------------------------------------------------------------

    def _pred_of(self, k: int) -> list[int]:
        return self._pred[self._pred_ptr[k]:self._pred_ptr[k + 1]].tolist()  # type: ignore[no-any-return]

    def _by_id(self, ptr: npt.NDArray[np.intp], adj: npt.NDArray[np.intp]) -> dict[str, list[str]]:
        ids, p, a = self._ids, ptr.tolist(), adj.tolist()
        return {ids[k]: [ids[x] for x in a[p[k]:p[k + 1]]]
                for k in range(self._n) if p[k] != p[k + 1]}

    @property
    def preds(self) -> dict[str, list[str]]:
        """Issue id -> the ids that block it (known issues only), in input order."""
        if self._preds_by_id is None:
            self._preds_by_id = self._by_id(self._pred_ptr, self._pred)
        return self._preds_by_id

    @property
    def succs(self) -> dict[str, list[str]]:
        """Issue id -> the ids it blocks, in input order."""
        if self._succs_by_id is None:
            self._succs_by_id = self._by_id(self._succ_ptr, self._succ)
        return self._succs_by_id

    # --- cycles ------------------------------------------------------------------------------

    def _find_cycles(self) -> list[list[str]]:
        """Kahn's algorithm peels the acyclic part; Tarjan on the rest names each cycle."""
        n, src, dst = self._n, self._src, self._dst
        if not src.size:
            return []
        indeg = np.bincount(dst, minlength=n)
        has_out = np.zeros(n, dtype=bool)
        has_out[src] = True
        frontier = np.flatnonzero(has_out & (indeg == 0))
        while frontier.size >= _LEVEL_MIN:
            self._levels.append(frontier)
            targets, _ = _gather(self._succ_ptr, self._succ, frontier)
            np.subtract.at(indeg, targets, 1)
            frontier = np.unique(targets[indeg[targets] == 0])
        if frontier.size:  # thin from here on: one node at a time
            order = self._tail
            left = indeg.tolist()
            ptr, succ = self._succ_ptr.tolist(), self._succ.tolist()
            stack = frontier.tolist()
            while stack:
                v = stack.pop()
                order.append(v)
                for s in succ[ptr[v]:ptr[v + 1]]:
                    d = left[s] - 1
                    left[s] = d
                    if d == 0:
                        stack.append(s)
            indeg = np.asarray(left)
        rest = np.flatnonzero(indeg > 0)
        if not rest.size:
            return []
        return self._strongly_connected(set(rest.tolist()))

    def _strongly_connected(self, nodes: set[int]) -> list[list[str]]:
        """Iterative Tarjan restricted to ``nodes``; keeps SCCs that are real cycles."""
        ids = self._ids
        ptr, succ_all = self._succ_ptr.tolist(), self._succ.tolist()
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        found: list[list[str]] = []
        counter = 0
        for root in sorted(nodes, key=lambda k: id_key(ids[k])):
            if root in index:
                continue
            work: list[tuple[int, int]] = [(root, 0)]
            while work:
                v, i = work.pop()
                if i == 0:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack.add(v)
                succ = [s for s in succ_all[ptr[v]:ptr[v + 1]] if s in nodes]
                recursed = False
                while i < len(succ):
                    s = succ[i]
                    i += 1
                    if s not in index:
                        work.append((v, i))
                        work.append((s, 0))
                        recursed = True
                        break
                    if s in on_stack:
                        low[v] = min(low[v], index[s])
                if recursed:
                    continue
                if low[v] == index[v]:
                    comp: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(ids[w])
                        if w == v:
                            break
                    if len(comp) > 1 or v in succ_all[ptr[v]:ptr[v + 1]]:
                        found.append(sorted(comp, key=id_key))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
        found.sort(key=lambda c: id_key(c[0]))
        return found

    # --- readiness ---------------------------------------------------------------------------

    @property
    def done(self) -> frozenset[str]:
        """Ids of done (or closed) issues."""
        if self._done_ids is None:
            self._done_ids = frozenset(map(self._ids.__getitem__, self._done_at))
        return self._done_ids

    def blocked_by(self, issue_id: str) -> list[str]:
        """Ids that keep ``issue_id`` from running: unfinished or missing predecessors, and
        (for a cycle member) its predecessors inside the cycle even if they are done."""
        k = self._index.get(issue_id)
        if k is None:
            raise KeyError(f"unknown issue {issue_id!r}")
        return self._blockers(k)

    def _blockers(self, k: int) -> list[str]:
        ids, done = self._ids, self._done_mask
        iid = ids[k]
        out = list(self.missing.get(iid, ()))
        cyc = self.cycle_index.get(iid)
        for p in self._pred_of(k):
            if not done[p] or (cyc is not None and self.cycle_index.get(ids[p]) == cyc):
                out.append(ids[p])
        if len(out) < 2:
            return out
        return sorted(set(out), key=id_key)

    def not_ready_reason(self, issue_id: str) -> str | None:
        """Why the ready rule rejects an issue (None when it is ready)."""
        issue = self.issues[issue_id]
        if issue.status not in READY_STATUSES:
            return f"status is {issue.status}"
        if issue_id in self.pending:
            return "not arrived yet" + (f" (created {isoformat_z(issue.created)})" if issue.created else "")
        held = [t for t in issue.tags if t in HOLD_TAGS]
        if held:
            return f"tagged {held[0]}"
        if issue.dk_attempts >= issue.dk_max_attempts:
            return f"attempts exhausted ({issue.dk_attempts}/{issue.dk_max_attempts})"
        if issue_id in self.cycle_index:
            return "in a dependency cycle with " + ", ".join(
                self.cycles[self.cycle_index[issue_id]])
        if issue_id in self.missing:
            return "missing dependency " + ", ".join(self.missing[issue_id])
        blockers = self.blocked_by(issue_id)
        if blockers:
            return "blocked by " + ", ".join(blockers)
        return None

    def ready_ids(self) -> list[str]:
        """Ids of ready issues, in input order."""
        return list(self._ready)

    def ready_issues(self) -> list[Issue]:
        return list(map(self._values.__getitem__, self._ready_at))

    def is_ready(self, issue_id: str) -> bool:
        return issue_id in self.issues and self.not_ready_reason(issue_id) is None

    @gc_paused
    def blocked(self) -> dict[str, list[str]]:
        """Open/ready issues held back by dependencies (or a cycle), with their blockers. An
        issue that has not arrived is not listed: that, not its blockers, is why it waits."""
        if self._blocked is None:
            ids, values, pend = self._ids, self._values, self.pending
            out: dict[str, list[str]] = {}
            for k in np.flatnonzero(self._held).tolist():
                if values[k].status in READY_STATUSES and not (pend and ids[k] in pend):
                    blockers = self._blockers(k)
                    if blockers:
                        out[ids[k]] = blockers
            self._blocked = {key: out[key] for key in sorted(out, key=id_key)}
        return dict(self._blocked)

    def running(self) -> list[Issue]:
        return list(self._running)

    # --- critical path -----------------------------------------------------------------------

    def _order_without_cycles(self) -> list[int]:
        """Topological order of every node outside a cycle (only needed when cycles exist)."""
        in_cycle = {self._index[v] for v in self.cycle_index}
        src, dst = self._src.tolist(), self._dst.tolist()
        indeg: dict[int, int] = {}
        nodes: dict[int, None] = {}
        for a, b in zip(src, dst, strict=True):
            nodes[a] = nodes[b] = None
            if b not in in_cycle:
                indeg[b] = indeg.get(b, 0) + (a not in in_cycle)
        order = [v for v in nodes if v not in in_cycle and not indeg.get(v)]
        ptr, succ = self._succ_ptr.tolist(), self._succ.tolist()
        pos = 0
        while pos < len(order):
            v = order[pos]
            pos += 1
            for s in succ[ptr[v]:ptr[v + 1]]:
                if s not in in_cycle:
                    indeg[s] -= 1
                    if indeg[s] == 0:
                        order.append(s)
        return order

    @gc_paused
    def _compute_critical(self) -> None:
        """Longest size-weighted chain of blocks edges among not-done, acyclic issues.

        ``best[v]`` is the heaviest chain starting at v (``-1``: done, in a cycle, or not on any
        edge), filled successors first: level by level in numpy where the topological pass ran
        in levels, node by node elsewhere."""
        n, ids, values, done = self._n, self._ids, self._values, self._done_mask
        best = np.full(n, -1, dtype=np.int64)
        weight = np.zeros(n, dtype=np.int64)
        on_edge = np.zeros(n, dtype=bool)
        on_edge[self._src] = True
        on_edge[self._dst] = True
        need = np.flatnonzero(on_edge & ~done).tolist()
        weight[need] = [SIZE_HOURS[values[k].dk_size] for k in need]
        if self.cycles:
            self._best_by_node(self._order_without_cycles(), best, weight)
        else:
            self._best_by_node(self._tail, best, weight)
            for level in reversed(self._levels):
                level = level[~done[level]]
                if not level.size:
                    continue
                targets, counts = _gather(self._succ_ptr, self._succ, level)
                top = np.zeros(level.size, dtype=np.int64)
                np.maximum.at(top, np.repeat(np.arange(level.size), counts), best[targets])
                best[level] = weight[level] + top
        chain_val = int(best.max()) if n else -1
        chain_start = None
        if chain_val >= 0:
            chain_start = min((ids[k] for k in np.flatnonzero(best == chain_val).tolist()), key=id_key)
        self._best, self._weight = best, weight
        self._chain = (chain_val, chain_start)
        self._unchained = None
        if chain_val <= MAX_SIZE_HOURS:
            # An issue without live edges could still be the longest (or tie-winning) chain.
            in_cycle = self.cycle_index
            for k in np.flatnonzero((best < 0) & ~done).tolist():
                iid = ids[k]
                if iid not in in_cycle:
                    cand = (SIZE_HOURS[values[k].dk_size], iid)
                    if self._unchained is None or beats(cand, self._unchained):
                        self._unchained = cand
        start_val, start = chain_val, chain_start
        if self._unchained is not None and beats(self._unchained, (start_val, start)):
            start_val, start = self._unchained
        self._critical = self._walk(start)
        self._critical_set = frozenset(self._critical)
        self._critical_hours = max(start_val, 0)

    def path_from(self, start: str | None) -> list[str]:
        """The heaviest chain from ``start`` (ties to the smallest id at each step)."""
        if self._critical is None:
            self._compute_critical()
        return self._walk(start)

    def _walk(self, start: str | None) -> list[str]:
        ids, best, weight = self._ids, self._best, self._weight
        path: list[str] = []
        cur = self._index[start] if start is not None else None
        while cur is not None:
            path.append(ids[cur])
            after = int(best[cur] - weight[cur])  # hours of the chain after cur
            live = [s for s in self._succ[self._succ_ptr[cur]:self._succ_ptr[cur + 1]].tolist()
                    if best[s] == after] if after > 0 else []
            cur = min(live, key=lambda s: id_key(ids[s])) if live else None
        return path

    def chain_head(self) -> tuple[int, str | None]:
        """(hours, first id) of the heaviest chain over live edges; (-1, None) when none."""
        if self._critical is None:
            self._compute_critical()
        return self._chain

    def best_unchained(self) -> tuple[int, str] | None:
        """(size hours, id) of the heaviest not-done issue outside every live chain and cycle
        (ties to the smallest id), or None. Computed only when the heaviest chain is at most
        one XL issue long (only then can such an issue be the critical path)."""
        if self._critical is None:
            self._compute_critical()
        return self._unchained

    def _best_by_node(self, order: list[int], best: npt.NDArray[np.int64],
                      weight: npt.NDArray[np.int64]) -> None:
        """Fill ``best`` for ``order`` (a topological order), last node first."""
        done = self._done_mask.tolist()
        ptr, succ = self._succ_ptr.tolist(), self._succ.tolist()
        got = best.tolist()
        w = weight.tolist()
        for v in reversed(order):
            if done[v]:
                continue
            top = 0
            for s in succ[ptr[v]:ptr[v + 1]]:
                b = got[s]
                if b > top:
                    top = b
            got[v] = w[v] + top
        best[:] = np.asarray(got, dtype=np.int64)

    def critical_path(self) -> list[str]:
        """Ids of the longest chain (first to last); ties go to the smallest id at each step."""
        if self._critical is None:
            self._compute_critical()
        assert self._critical is not None
        return list(self._critical)

    @property
    def critical_hours(self) -> int:
        if self._critical is None:
            self._compute_critical()
        return self._critical_hours

    @property
    def critical_set(self) -> frozenset[str]:
        if self._critical is None:
            self._compute_critical()
        return self._critical_set

    def on_critical_path(self, issue_id: str) -> bool:
        return issue_id in self.critical_set
