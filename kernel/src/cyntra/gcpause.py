"""The kernel's two uses of the garbage collector's knobs, in one place.

:func:`paused_gc` -- building 100k small objects. A load or graph build at 100k issues
allocates about half a million container objects, none of them in a reference cycle. With the
collector on, they trigger repeated full collections while they are built; with it merely
paused, the first allocation after the pause still makes the collector walk every one of them
as "young" objects, then again as they age (0.25-0.35 s per scheduler cycle on the 2-core
benchmark machine). So it pauses collection and, on the way out, files what was built as old
(``gc.freeze()`` then ``gc.unfreeze()``: two list splices, no walk).

That bypasses CPython's own schedule, so the pause keeps two rules of its own. On entry it
collects the young generations (cheap: they hold what was allocated since the last pause), so
garbage other code left behind is not promoted with the build. And since ``freeze`` resets the
generation counters, which is what schedules full collections, it counts the objects it
promotes and runs a full collection once they reach four times what the last full collection
left alive (at least 4M objects): cyclic garbage made inside a pause is bounded, and full
collections cost a small fraction of what walking the promoted objects as young would. (CPython
collects fully when the old generation has grown by a quarter; what is promoted here is
known-acyclic bulk builds, which is why waiting longer is safe.)

:func:`frozen_heap` -- a simulated history, which allocates millions of short-lived objects
around a large, long-lived heap (issues, index): that heap is frozen out of collections while
it runs. Inside it :func:`paused_gc` does not age anything (that would unfreeze the heap).
Objects frozen by other code (``gc.freeze()`` before a fork, say) stay frozen: a pause that
finds a frozen set files nothing as old (``gc.get_freeze_count()`` tells; it walks the frozen
set, so code of ours that freezes goes through :func:`frozen_heap`, which the pause knows of).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

FULL_COLLECTION_MIN = 4_000_000
FULL_COLLECTION_FACTOR = 4

_frozen_depth = 0
_promoted = 0  # objects filed as old since the last full collection
_full_after = FULL_COLLECTION_MIN


def _live_objects() -> int:
    """Objects the collector tracks (called right after a full collection: what it left)."""
    return len(gc.get_objects())


def _file_as_old() -> None:
    global _promoted, _full_after
    if gc.get_freeze_count():
        # Someone else froze objects (a pre-fork server, say): unfreezing would hand them back
        # to the collector, so the build stays young and is collected as usual. The count
        # walks the frozen set, but only when there is one; with none it costs nothing.
        return
    _promoted += max(gc.get_count()[0], 0)  # tracked objects allocated since the last collection
    gc.freeze()
    gc.unfreeze()
    if _promoted >= _full_after:
        _promoted = 0
        gc.collect()
        _full_after = max(FULL_COLLECTION_MIN, FULL_COLLECTION_FACTOR * _live_objects())


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collection off inside; on exit (outermost use only) the new objects are filed as old."""
    enabled = gc.isenabled()
    if enabled and not _frozen_depth:
        gc.collect(1)  # other code's young garbage goes now, not into the old generation
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not _frozen_depth:
                _file_as_old()
            gc.enable()


def gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`paused_gc`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused_gc():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def frozen_heap(enabled: bool = True) -> Iterator[None]:
    """Freeze what is alive now out of collections, collect young objects less often, and
    restore both on exit."""
    global _frozen_depth
    if not enabled:
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        gc.set_threshold(*thresholds)
        gc.unfreeze()
