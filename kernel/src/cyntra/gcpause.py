"""The kernel's two uses of the garbage collector's knobs, in one place.

:func:`paused_gc` -- building 100k small objects. A load or graph build at 100k issues
allocates about half a million container objects, none of them in a reference cycle. With the
collector on, they trigger repeated full collections while they are built; with it merely
paused, the first allocation after the pause still makes the collector walk every one of them
as "young" objects, then again as they age (0.3-0.5 s on the 2-core benchmark machine). So it
pauses collection and, on the way out, files everything built as old (``gc.freeze()`` then
``gc.unfreeze()``: two list splices, no walk). Nothing is leaked: old objects are still freed by
reference counting, and any cyclic garbage moved with them goes at the next full collection.

:func:`frozen_heap` -- a simulated history, which allocates millions of short-lived objects
around a large, long-lived heap (issues, index): that heap is frozen out of collections while
it runs. Inside it :func:`paused_gc` does not age anything (that would unfreeze the heap).
Code that freezes objects itself should do it through :func:`frozen_heap` for the same reason
(``gc.get_freeze_count()`` would tell, but it walks the whole frozen set on every call).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_frozen_depth = 0


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collection off inside; on exit (outermost use only) the new objects are filed as old."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not _frozen_depth:
                gc.freeze()
                gc.unfreeze()
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
