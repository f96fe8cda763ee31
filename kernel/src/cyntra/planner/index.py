"""The similar-runs index: which past runs a planner sees for an issue, without scanning every archive.

Persistence: ``<ws>/.cyntra/index/runs.jsonl``, append-only, one ``run_summary.v1`` per line
(the last line for a ``run_id`` wins; unparsable lines are reported in :attr:`problems` and
skipped, never rewritten). The runner calls :meth:`SimilarRunsIndex.add` right after archiving a
run (and ``cyntra evolve`` after each world run); :meth:`rebuild` rescans the archives and world runs; :meth:`refresh` picks up lines other processes appended.

Query (:meth:`SimilarRunsIndex.similar_scored`): runs of the same group
``(job_type, domain, world_id, objective_id)`` that are *eligible* at time ``before``: started
strictly before it and available (archived; ``available_at``) strictly before it, so a dataset
row never sees an outcome the live kernel could not have seen. Score = tag Jaccard (0 when both
tag sets are empty) + recency bonus by age ``before - started_at``:

    age < 1 day: +0.3    < 7 days: +0.2    < 30 days: +0.1    older: +0

Ranking: score desc, started desc, run_id asc; top ``n``.

Candidate generation (exact, see :func:`similar_bruteforce` for the reference): runs are grouped by
their exact tag set ("signature"); a tag→signatures inverted index finds the signatures that
share ≥ 1 tag with the query. Within one signature every run has the same Jaccard and the bonus
only falls with age, so each signature is a stream already in ranking order; the same holds for
the ``n`` most recent eligible runs of the group, of which those sharing no tag form one more
stream with Jaccard 0. Streams are offered to a bounded top-``n`` list, signatures in Jaccard
order; a stream stops at its first entry that cannot enter the list, and the scan of signatures
stops once ``jaccard + max bonus`` falls below the ``n``-th score. Why this is complete: a run
sharing no tag that is not among the ``n`` most recent eligible runs is outranked by each of
those ``n`` (Jaccard ≥ 0, bonus ≥ its own, started no later, run_id order on ties).
Cost: O(#sharing signatures) set operations plus a few entries per useful signature,
independent of the number of runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from cyntra.errors import InputError
from cyntra.fsutil import append_line, atomic_write_text, file_lock
from cyntra.planner.run_summary import RunSummary, epoch_us, scan_history, summary_to_json_line
from cyntra.workspace import Workspace

_DAY_US: Final = 86_400 * 1_000_000
# (age strictly below, bucket name, bonus); anything older is "old" with bonus 0.
RECENCY_BUCKETS: Final[tuple[tuple[int, str, float], ...]] = (
    (1 * _DAY_US, "lt1d", 0.3),
    (7 * _DAY_US, "lt7d", 0.2),
    (30 * _DAY_US, "lt30d", 0.1),
)
OLD_BUCKET: Final = ("old", 0.0)
MAX_BONUS: Final = max(b for _, _, b in RECENCY_BUCKETS)
INDEX_FILE: Final = "runs.jsonl"

GroupKey = tuple[str, str, str | None, str | None]


def recency(age_us: int) -> tuple[str, float]:
    """The recency bucket name and bonus of a run ``age_us`` microseconds old."""
    for limit, name, bonus in RECENCY_BUCKETS:
        if age_us < limit:
            return name, bonus
    return OLD_BUCKET


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass(frozen=True)
class SimilarRun:
    """One query hit: the run, its tag Jaccard with the query, total score and recency bucket."""

    summary: RunSummary
    jaccard: float
    score: float
    age_bucket: str


class _Entry:
    __slots__ = ("avail_us", "group", "run_id", "sig", "start_us", "summary")

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        self.run_id = summary.run_id
        self.start_us = epoch_us(summary.started_at)
        self.avail_us = epoch_us(summary.available_at)
        self.sig = frozenset(summary.tags)
        self.group: GroupKey = (summary.job_type, summary.domain, summary.world_id, summary.objective_id)

    def rank_key(self) -> tuple[int, str]:
        return (-self.start_us, self.run_id)


class _RunList:
    """Entries in ranking order (started desc, run_id asc) with a parallel key list for bisect."""

    __slots__ = ("entries", "keys", "negs")

    def __init__(self) -> None:
        self.keys: list[tuple[int, str]] = []
        self.negs: list[int] = []
        self.entries: list[_Entry] = []

    def insert(self, e: _Entry) -> None:
        k = e.rank_key()
        i = bisect.bisect_left(self.keys, k)
        self.keys.insert(i, k)
        self.negs.insert(i, k[0])
        self.entries.insert(i, e)

    def remove(self, e: _Entry) -> None:
        i = bisect.bisect_left(self.keys, e.rank_key())
        if i < len(self.keys) and self.entries[i] is e:
            del self.keys[i], self.negs[i], self.entries[i]

    def bulk(self, entries: list[_Entry]) -> None:
        entries = sorted(entries, key=_Entry.rank_key)
        self.entries = entries
        self.keys = [e.rank_key() for e in entries]
        self.negs = [k[0] for k in self.keys]

    def first_eligible(self, before_us: int, pos: int | None = None) -> int:
        """Index of the first entry (from ``pos``) started and available strictly before ``before_us``."""
        i = bisect.bisect_right(self.negs, -before_us) if pos is None else pos
        entries = self.entries
        while i < len(entries) and entries[i].avail_us >= before_us:
            i += 1
        return i


class _Group:
    __slots__ = ("all", "sigs", "tag_sigs")

    def __init__(self) -> None:
        self.all = _RunList()
        self.sigs: dict[frozenset[str], _RunList] = {}
        self.tag_sigs: dict[str, set[frozenset[str]]] = {}


class SimilarRunsIndex:
    """Incremental, persistent index of run summaries answering :meth:`similar` queries fast."""

    def __init__(self, ws: Workspace | str | Path | None) -> None:
        self.workspace: Workspace | None = (
            None if ws is None else ws if isinstance(ws, Workspace) else Workspace.at(ws)
        )
        self.path: Path | None = None if self.workspace is None else self.workspace.index_dir / INDEX_FILE
        self.problems: list[InputError] = []
        self._entries: dict[str, _Entry] = {}
        self._groups: dict[GroupKey, _Group] = {}
        self._offset = 0
        self._lines_seen = 0
        self._loaded = self.path is None

    @classmethod
    def from_summaries(cls, summaries: Iterable[RunSummary]) -> SimilarRunsIndex:
        """An in-memory index (no file): what the dataset builder uses over scanned archives."""
        idx = cls(None)
        idx._bulk_load(summaries)
        return idx

    # --- loading / persistence -----------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        assert self.path is not None and self.workspace is not None
        if not self.path.exists() and self.workspace.archives_dir.is_dir():
            self.rebuild()
            return
        self._bulk_load(self._read_new_lines())

    def _read_new_lines(self) -> list[RunSummary]:
        """Parse complete lines appended since the last read (a partial last line waits)."""
        assert self.path is not None
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        line_no = self._lines_seen
        out: list[RunSummary] = []
        for raw in data[:end].splitlines():
            line_no += 1
            if not raw.strip():
                continue
            try:
                out.append(RunSummary.model_validate_json(raw))
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err["loc"]) or None
                self.problems.append(InputError(self.path, err["msg"], line=line_no, field=loc))
        self._offset += end
        self._lines_seen = line_no
        return out

    def _bulk_load(self, summaries: Iterable[RunSummary]) -> None:
        for s in summaries:
            old = self._entries.get(s.run_id)
            if old is not None:
                self._unlink(old)
            self._entries[s.run_id] = _Entry(s)
        by_group: dict[GroupKey, list[_Entry]] = {}
        for e in self._entries.values():
            by_group.setdefault(e.group, []).append(e)
        self._groups = {}
        for key, entries in by_group.items():
            g = _Group()
            g.all.bulk(entries)
            by_sig: dict[frozenset[str], list[_Entry]] = {}
            for e in entries:
                by_sig.setdefault(e.sig, []).append(e)
            for sig, es in by_sig.items():
                rl = _RunList()
                rl.bulk(es)
                g.sigs[sig] = rl
                for t in sig:
                    g.tag_sigs.setdefault(t, set()).add(sig)
            self._groups[key] = g

    def _unlink(self, e: _Entry) -> None:
        g = self._groups.get(e.group)
        if g is None:
            return
        g.all.remove(e)
        rl = g.sigs.get(e.sig)
        if rl is not None:
            rl.remove(e)

    def _insert(self, s: RunSummary) -> bool:
        old = self._entries.get(s.run_id)
        if old is not None:
            if old.summary == s:
                return False
            self._unlink(old)
        e = _Entry(s)
        self._entries[s.run_id] = e
        g = self._groups.get(e.group)
        if g is None:
            g = self._groups[e.group] = _Group()
        g.all.insert(e)
        rl = g.sigs.get(e.sig)
        if rl is None:
            rl = g.sigs[e.sig] = _RunList()
            for t in e.sig:
                g.tag_sigs.setdefault(t, set()).add(e.sig)
        rl.insert(e)
        return True

    def add(self, summary: RunSummary) -> bool:
        """Record a newly archived run (append to disk, update memory); False if already known."""
        self._ensure_loaded()
        known = self._entries.get(summary.run_id)
        if known is not None and known.summary == summary:
            return False
        if self.path is not None:
            append_line(self.path, summary_to_json_line(summary))
        return self._insert(summary)

    def refresh(self) -> int:
        """Apply lines other processes appended since the last read; returns how many changed."""
        if self.path is None:
            return 0
        if not self._loaded:
            self._ensure_loaded()
            return len(self._entries)
        return sum(self._insert(s) for s in self._read_new_lines())

    def rebuild(self) -> list[InputError]:
        """Rescan every archive and world run, rewrite ``runs.jsonl`` atomically, reload; returns skipped archives."""
        if self.workspace is None or self.path is None:
            raise ValueError("an in-memory index has no workspace to rebuild from")
        summaries, problems = scan_history(self.workspace)
        summaries.sort(key=lambda s: (s.started_at, s.run_id))
        text = "".join(summary_to_json_line(s) + "\n" for s in summaries)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            atomic_write_text(self.path, text)
        self._entries, self._groups, self.problems = {}, {}, []
        self._offset = len(text.encode("utf-8"))
        self._lines_seen = len(summaries)
        self._loaded = True
        self._bulk_load(summaries)
        return problems

    # --- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def runs(self) -> Iterator[RunSummary]:
        """Every indexed summary (in no particular order)."""
        self._ensure_loaded()
        return (e.summary for e in self._entries.values())

    def get(self, run_id: str) -> RunSummary | None:
        self._ensure_loaded()
        e = self._entries.get(run_id)
        return None if e is None else e.summary

    def similar(
        self,
        job_type: str,
        domain: str,
        tags: Iterable[str],
        before: datetime | str,
        n: int = 8,
        world_id: str | None = None,
        objective_id: str | None = None,
    ) -> list[RunSummary]:
        return [
            s.summary
            for s in self.similar_scored(job_type, domain, list(tags), before, n, world_id, objective_id)
        ]

    def similar_scored(
        self,
        job_type: str,
        domain: str,
        tags: list[str],
        before: datetime | str,
        n: int = 8,
        world_id: str | None = None,
        objective_id: str | None = None,
    ) -> list[SimilarRun]:
        """Top ``n`` eligible runs of the group by score (see module docstring)."""
        self._ensure_loaded()
        g = self._groups.get((job_type, domain, world_id, objective_id))
        if g is None or n <= 0:
            return []
        q = frozenset(tags)
        before_us = epoch_us(before)
        shared: dict[frozenset[str], int] = {}  # signature -> |q ∩ sig|
        for t in q:
            for sig in g.tag_sigs.get(t, ()):
                shared[sig] = shared.get(sig, 0) + 1
        lq = len(q)
        # Kept top-n as a sorted list of (rank key, entry, jaccard); rank key = (-score, -start, run_id).
        top: list[tuple[tuple[float, int, str], _Entry, float]] = []

        def offer(entries: list[_Entry], pos: int, j: float) -> None:
            while pos < len(entries):
                e = entries[pos]
                k = (-(j + recency(before_us - e.start_us)[1]), -e.start_us, e.run_id)
                if len(top) == n and k >= top[-1][0]:
                    return  # the rest of this stream ranks lower still
                bisect.insort(top, (k, e, j))
                if len(top) > n:
                    top.pop()
                pos = _next_eligible(entries, pos + 1, before_us)

        # Signatures by Jaccard desc; stop once even the best bonus cannot reach the n-th score.
        # |q ∪ sig| = |q| + |sig| - |q ∩ sig|: the same integers, hence the same float, as jaccard().
        ranked = sorted(((c / (lq + len(sig) - c), sig) for sig, c in shared.items()), key=_first, reverse=True)
        for j, sig in ranked:
            if len(top) == n and -(j + MAX_BONUS) > top[-1][0][0]:
                break
            rl = g.sigs[sig]
            offer(rl.entries, rl.first_eligible(before_us), j)
        recent: list[_Entry] = []
        pos = g.all.first_eligible(before_us)
        while pos < len(g.all.entries) and len(recent) < n:
            e = g.all.entries[pos]
            if e.sig not in shared:
                recent.append(e)
            pos = _next_eligible(g.all.entries, pos + 1, before_us)
        offer(recent, 0, 0.0)
        return [SimilarRun(e.summary, j, -k[0], recency(before_us - e.start_us)[0]) for k, e, j in top]

    def similar_bruteforce(
        self,
        job_type: str,
        domain: str,
        tags: list[str],
        before: datetime | str,
        n: int = 8,
        world_id: str | None = None,
        objective_id: str | None = None,
    ) -> list[SimilarRun]:
        """The linear-scan reference over every indexed run (tests and the benchmark)."""
        return similar_bruteforce(self.runs(), job_type, domain, tags, before, n, world_id, objective_id)


def _first(x: tuple[float, frozenset[str]]) -> float:
    return x[0]


def _next_eligible(entries: list[_Entry], pos: int, before_us: int) -> int:
    while pos < len(entries) and entries[pos].avail_us >= before_us:
        pos += 1
    return pos


def similar_bruteforce(
    runs: Iterable[RunSummary],
    job_type: str,
    domain: str,
    tags: list[str],
    before: datetime | str,
    n: int = 8,
    world_id: str | None = None,
    objective_id: str | None = None,
) -> list[SimilarRun]:
    """Score every run, sort, take ``n``: the definition the index must reproduce exactly."""
    q = frozenset(tags)
    before_us = epoch_us(before)
    scored: list[tuple[float, int, str, SimilarRun]] = []
    for r in runs:
        if (r.job_type, r.domain, r.world_id, r.objective_id) != (job_type, domain, world_id, objective_id):
            continue
        start = epoch_us(r.started_at)
        if start >= before_us or epoch_us(r.available_at) >= before_us:
            continue
        j = jaccard(q, frozenset(r.tags))
        name, bonus = recency(before_us - start)
        score = j + bonus
        scored.append((-score, -start, r.run_id, SimilarRun(r, j, score, name)))
    scored.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in scored[:n]]
