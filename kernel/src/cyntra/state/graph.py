"""The issue graph: which issues are ready, what blocks the rest, and the critical path.

Only ``blocks`` dependencies gate readiness (``from`` blocks ``to``); other dep types
(``related``, ``parent-child``, …) are kept out of the graph. Everything is O(V+E) so a
100,000-issue workspace is planned every cycle without noticeable cost.

Data errors never hang or crash the scheduler: a predecessor id that names no issue blocks
its successor (reported as a *missing dependency*), and every dependency cycle is detected,
reported by its ids, and its members are treated as blocked.

Ids are ordered "naturally" wherever a tie is broken: all-digit ids numerically (``2`` before
``10``), before any other id, which sorts as a string (see :func:`id_key`).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from cyntra.state.issue import SIZE_HOURS, Issue

READY_STATUSES: frozenset[str] = frozenset({"open", "ready"})
# Beads' own "closed" is treated as done: both mean the work needs nothing more.
DONE_STATUSES: frozenset[str] = frozenset({"done", "closed"})
HOLD_TAGS: frozenset[str] = frozenset({"escalation", "needs-human"})
BLOCKS = "blocks"

DepLike = Any  # (from, to, type) tuple, {"from","to","type"} mapping, or object with .from_/.to/.type


def id_key(issue_id: str) -> tuple[int, int, str]:
    """Natural order for ids: numeric ids by value first (by length, then digits: no int()
    conversion), then everything else as strings. The scheduler inlines the same key."""
    if issue_id.isdigit() and issue_id.isascii():
        return (0, len(issue_id), issue_id)
    return (1, 0, issue_id)


P = ParamSpec("P")
R = TypeVar("R")


def gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run without the cyclic GC: building 100k small acyclic containers next to 100k live
    issues otherwise triggers repeated full collections (more than half the graph's time)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


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


class IssueGraph:
    """Issues plus their ``blocks`` edges; answers readiness, blockers and the critical path.

    A snapshot: statuses are read once, at construction. Build a new graph each cycle."""

    @gc_paused
    def __init__(
        self,
        issues: Iterable[Issue] | Mapping[str, Issue],
        deps: Iterable[DepLike] = (),
    ) -> None:
        if isinstance(issues, Mapping):
            self.issues: dict[str, Issue] = dict(issues)
        else:
            self.issues = {i.id: i for i in issues}
        known = self.issues
        self.preds: dict[str, list[str]] = {}
        self.succs: dict[str, list[str]] = {}
        self.missing: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        dangling = 0
        for dep in deps:
            frm, to, typ = dep if type(dep) is tuple else _dep_triple(dep)
            if typ != BLOCKS:
                continue
            if to not in known:
                dangling += 1  # blocks an issue that does not exist: gates nothing
                continue
            if frm not in known:
                self.missing.setdefault(to, []).append(frm)
                continue
            self.preds.setdefault(to, []).append(frm)
            self.succs.setdefault(frm, []).append(to)
        if dangling:
            self.warnings.append(f"{dangling} blocks dependenc{'y' if dangling == 1 else 'ies'} "
                                 "point to an issue that does not exist (ignored)")
        for to, frms in self.missing.items():
            self.warnings.append(f"issue {to} is blocked by missing issue(s) {', '.join(frms)}")
        self._topo: list[str] = []  # a topological order of the acyclic part, from Kahn
        self.cycles: list[list[str]] = self._find_cycles()
        self.cycle_index: dict[str, int] = {
            v: n for n, members in enumerate(self.cycles) for v in members
        }
        for members in self.cycles:
            self.warnings.append(f"dependency cycle among issues {', '.join(members)} "
                                 "(its members are treated as blocked)")
        # One pass over every issue (the dominant cost at 100k issues is touching each one).
        # Open issues that pass every check but their blockers' status wait in ``gated`` until
        # ``done`` is complete; the rest of the ready rule is applied here, in the same pass.
        done: set[str] = set()
        self._running: list[Issue] = []
        ready: list[str] = []
        gated: list[tuple[str, list[str]]] = []
        missing, cycles, preds = self.missing, self.cycle_index, self.preds
        for iid, issue in self.issues.items():
            st = issue.status
            if st in READY_STATUSES:
                if issue.tags and not HOLD_TAGS.isdisjoint(issue.tags):
                    continue
                if issue.dk_attempts >= issue.dk_max_attempts or iid in missing or iid in cycles:
                    continue
                ps = preds.get(iid)
                if ps:
                    gated.append((iid, ps))
                ready.append(iid)
            elif st in DONE_STATUSES:
                done.add(iid)
            elif st == "running":
                self._running.append(issue)
        self.done: frozenset[str] = frozenset(done)
        if gated:  # drop the ones still blocked, keeping input order
            waiting = {iid for iid, ps in gated if not self.done.issuperset(ps)}
            if waiting:
                ready = [iid for iid in ready if iid not in waiting]
        self._ready: list[str] = ready
        self._blocked: dict[str, list[str]] | None = None
        self._critical: list[str] | None = None
        self._critical_set: frozenset[str] = frozenset()
        self._critical_hours = 0

    # --- cycles ------------------------------------------------------------------------------

    def _find_cycles(self) -> list[list[str]]:
        """Kahn's algorithm peels the acyclic part; Tarjan on the rest names each cycle."""
        indeg = {v: len(p) for v, p in self.preds.items()}
        stack = [v for v in self.succs if v not in indeg]
        order = self._topo
        while stack:
            v = stack.pop()
            order.append(v)
            for s in self.succs.get(v, ()):
                d = indeg[s] - 1
                indeg[s] = d
                if d == 0:
                    stack.append(s)
        rest = {v for v, d in indeg.items() if d > 0}
        if not rest:
            return []
        return self._strongly_connected(rest)

    def _strongly_connected(self, nodes: set[str]) -> list[list[str]]:
        """Iterative Tarjan restricted to ``nodes``; keeps SCCs that are real cycles."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        found: list[list[str]] = []
        counter = 0
        for root in sorted(nodes, key=id_key):
            if root in index:
                continue
            work: list[tuple[str, int]] = [(root, 0)]
            while work:
                v, i = work.pop()
                if i == 0:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack.add(v)
                succ = [s for s in self.succs.get(v, ()) if s in nodes]
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
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in self.succs.get(v, ()):
                        found.append(sorted(comp, key=id_key))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
        found.sort(key=lambda c: id_key(c[0]))
        return found

    # --- readiness ---------------------------------------------------------------------------

    def _is_done(self, issue_id: str) -> bool:
        return issue_id in self.done

    def blocked_by(self, issue_id: str) -> list[str]:
        """Ids that keep ``issue_id`` from running: unfinished or missing predecessors, and
        (for a cycle member) its predecessors inside the cycle even if they are done."""
        if issue_id not in self.issues:
            raise KeyError(f"unknown issue {issue_id!r}")
        out = list(self.missing.get(issue_id, ()))
        cyc = self.cycle_index.get(issue_id)
        done = self.done
        for p in self.preds.get(issue_id, ()):
            if p not in done or (cyc is not None and self.cycle_index.get(p) == cyc):
                out.append(p)
        if len(out) < 2:
            return out
        return sorted(set(out), key=id_key)

    def not_ready_reason(self, issue_id: str) -> str | None:
        """Why the ready rule rejects an issue (None when it is ready)."""
        issue = self.issues[issue_id]
        if issue.status not in READY_STATUSES:
            return f"status is {issue.status}"
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
        blockers = self.blocked_by(issue_id) if issue_id in self.preds else []
        if blockers:
            return "blocked by " + ", ".join(blockers)
        return None

    def ready_ids(self) -> list[str]:
        """Ids of ready issues, in input order."""
        return list(self._ready)

    def ready_issues(self) -> list[Issue]:
        issues = self.issues
        return [issues[i] for i in self._ready]

    def is_ready(self, issue_id: str) -> bool:
        return issue_id in self.issues and self.not_ready_reason(issue_id) is None

    @gc_paused
    def blocked(self) -> dict[str, list[str]]:
        """Open/ready issues held back by dependencies (or a cycle), with their blockers."""
        if self._blocked is not None:
            return dict(self._blocked)
        out: dict[str, list[str]] = {}
        issues, done, missing, cycles = self.issues, self.done, self.missing, self.cycle_index
        for iid, ps in self.preds.items():
            if issues[iid].status not in READY_STATUSES:
                continue
            if iid in missing or iid in cycles:
                blockers = self.blocked_by(iid)
            else:
                blockers = [p for p in ps if p not in done]
                if len(blockers) > 1:
                    blockers = sorted(set(blockers), key=id_key)
            if blockers:
                out[iid] = blockers
        for iid in missing:
            if iid not in out and issues[iid].status in READY_STATUSES:
                out[iid] = self.blocked_by(iid)
        self._blocked = {k: out[k] for k in sorted(out, key=id_key)}
        return dict(self._blocked)

    def running(self) -> list[Issue]:
        return list(self._running)

    # --- critical path -----------------------------------------------------------------------

    def _order_without_cycles(self) -> list[str]:
        """Topological order of every node outside a cycle (only needed when cycles exist)."""
        cycles = self.cycle_index
        indeg = {v: sum(1 for p in ps if p not in cycles)
                 for v, ps in self.preds.items() if v not in cycles}
        nodes = list(self.succs) + [v for v in self.preds if v not in self.succs]
        order = [v for v in nodes if v not in cycles and not indeg.get(v)]
        pos = 0
        while pos < len(order):
            v = order[pos]
            pos += 1
            for s in self.succs.get(v, ()):
                if s in indeg:
                    indeg[s] -= 1
                    if indeg[s] == 0:
                        order.append(s)
        return order

    @gc_paused
    def _compute_critical(self) -> None:
        """Longest size-weighted chain of blocks edges among not-done, acyclic issues."""
        issues = self.issues
        done = self.done
        cycles = self.cycle_index
        succs = self.succs
        order = self._order_without_cycles() if cycles else self._topo
        best: dict[str, int] = {}
        nxt: dict[str, str] = {}
        start: str | None = None
        start_val = -1
        for v in reversed(order):  # successors first
            if v in done:
                continue
            top = 0
            pick: str | None = None
            for s in succs.get(v, ()):
                b = best.get(s)  # absent: done (or in a cycle)
                if b is None:
                    continue
                if b > top or (b == top and pick is not None and id_key(s) < id_key(pick)):
                    top, pick = b, s
            val = SIZE_HOURS[issues[v].dk_size] + top
            best[v] = val
            if pick is not None:
                nxt[v] = pick
            if val > start_val or (val == start_val and start is not None
                                   and id_key(v) < id_key(start)):
                start, start_val = v, val
        if start_val <= max(SIZE_HOURS.values()):
            # An issue without live edges could still be the longest (or tie-winning) chain.
            for iid, issue in issues.items():
                if iid in done or iid in cycles or iid in best:
                    continue
                val = SIZE_HOURS[issue.dk_size]
                if val > start_val or (val == start_val and start is not None
                                       and id_key(iid) < id_key(start)):
                    start, start_val = iid, val
        path: list[str] = []
        cur = start
        while cur is not None:
            path.append(cur)
            cur = nxt.get(cur)
        self._critical = path
        self._critical_set = frozenset(path)
        self._critical_hours = max(start_val, 0)

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
