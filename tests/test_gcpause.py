"""gcpause: bulk builds are filed as old without leaking cyclic garbage."""

from __future__ import annotations

import gc

import pytest

from cyntra import gcpause


class _Node:
    other: _Node


def _make_cyclic_garbage(n: int) -> None:
    for _ in range(n):
        a, b = _Node(), _Node()
        a.other, b.other = b, a


def _garbage_peak(iterations: int, inside: bool) -> int:
    gc.collect()
    base = len(gc.get_objects())
    peak = 0
    for _ in range(iterations):
        if not inside:
            _make_cyclic_garbage(200)  # young garbage made before the pause
        with gcpause.paused_gc():
            built = [[i] for i in range(2000)]
            if inside:
                _make_cyclic_garbage(200)  # garbage the pause itself leaves: promoted
        del built
        peak = max(peak, len(gc.get_objects()) - base)
    return peak


@pytest.mark.parametrize("inside", [False, True])
def test_cyclic_garbage_is_not_kept(monkeypatch: pytest.MonkeyPatch, inside: bool) -> None:
    """150 rounds leave 60k tracked garbage objects if nothing collects them (measured with
    both rules off): garbage from before a pause goes at its entry, garbage promoted with a
    build goes at the next full collection (thresholds lowered here so one comes soon)."""
    monkeypatch.setattr(gcpause, "FULL_COLLECTION_MIN", 20_000)
    monkeypatch.setattr(gcpause, "FULL_COLLECTION_FACTOR", 1)
    monkeypatch.setattr(gcpause, "_live_objects", lambda: 0)  # not this test process's heap
    monkeypatch.setattr(gcpause, "_full_after", 20_000)
    monkeypatch.setattr(gcpause, "_promoted", 0)
    assert gc.isenabled()
    assert _garbage_peak(150, inside) < 20_000
    assert gc.isenabled()


def test_pauses_nest_and_survive_errors() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gcpause.paused_gc():
        with gcpause.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_frozen_heap_is_left_frozen_by_pauses() -> None:
    with gcpause.frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gcpause.paused_gc():
            _ = [[i] for i in range(100)]
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_other_code_stay_frozen() -> None:
    """An embedder froze its heap (as a pre-fork server does): a pause must not unfreeze it."""
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gcpause.paused_gc():
            _ = [[i] for i in range(100)]
        assert gc.get_freeze_count() == frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()
