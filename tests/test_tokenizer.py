"""Tokenizer and vocabulary: deterministic, closed, fast, and truncations are always counted."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from cyntra.errors import InputError
from cyntra.planner.index import SimilarRunsIndex
from cyntra.planner.planner_input import build_planner_input
from cyntra.planner.tokenizer import (
    RUN_GROUP,
    SEP,
    Vocabulary,
    cost_bucket,
    duration_bucket,
    encode,
    sim_bucket,
    tokenize,
    tokens_bucket,
)
from test_run_summary import T0
from test_similar_index import synth_run


def _pi(n_tags: int = 2, n_similar: int = 8):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    idx = SimilarRunsIndex.from_summaries([synth_run(i, rng, span_days=3) for i in range(200)])
    row = {"id": "I-1", "title": "Speed up slow database migrations", "tags": ["bug", "db"] + [f"t{i}" for i in range(n_tags)],
           "dk_risk": "low", "dk_size": "S", "dk_priority": "P1", "dk_attempts": 7, "dk_estimated_tokens": 90000}
    return build_planner_input(row, T0 + timedelta(days=4), index=idx, universe_id="alpha", n_similar=n_similar)


def test_token_layout() -> None:
    pi = _pi()
    toks, dropped = tokenize(pi)
    assert toks[0] == "<CLS>" and dropped == 0
    for t in ("risk=low", "size=S", "prio=P1", "hint=none", "attempts=5+", "tokens=<=128k", "job=code",
              "domain=code", "tag=bug", "tag=db", "kw=database", "kw=migrations", "univ=alpha", "nsim=8"):
        assert t in toks
    assert toks.count(SEP) == len(pi.last_N_similar_runs) == 8
    first = toks.index(SEP)
    assert len(toks) - first == 8 * RUN_GROUP
    assert toks[first + 1].startswith("r.plan=") and toks[first + RUN_GROUP - 1] in ("r.loser=0", "r.loser=1")


def test_buckets() -> None:
    assert cost_bucket(None) == "na" and cost_bucket(0.07) == "<=0.1" and cost_bucket(9) == ">5"
    assert duration_bucket(10 * 60000) == "<=15m" and duration_bucket(10**9) == ">120m"
    assert sim_bucket(0.0) == "0" and sim_bucket(1.0) == "1" and sim_bucket(0.5) == "<=0.5" and sim_bucket(0.9) == "<1"
    assert tokens_bucket(500) == "<=1k" and tokens_bucket(50000) == "<=64k" and tokens_bucket(10**7) == ">512k"


def test_vocabulary_order_specials_cap_and_roundtrip(tmp_path: Path) -> None:
    v = Vocabulary.build([["b", "a", "c"], ["a", "c", "<SEP>"], ["c", "z"]], cap=6)
    assert v.tokens == ("<PAD>", "<UNK>", "<CLS>", "<SEP>", "c", "a")  # count desc, token asc
    sha = v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json", expected_sha256=sha).tokens == v.tokens
    with pytest.raises(InputError, match="sha256 mismatch"):
        Vocabulary.load(tmp_path / "vocab.json", expected_sha256="0" * 64)
    assert Vocabulary.build([["x"], ["y"], ["y"]], min_count=2).tokens[4:] == ("y",)


def test_encode_counts_truncation_and_maps_unknown_to_unk() -> None:
    pi = _pi(n_tags=10)  # 12 tags: 4 beyond the cap of 8
    toks, dropped = tokenize(pi)
    assert dropped == 4
    vocab = Vocabulary.build([toks])
    ids, truncated = encode(pi, vocab, seq_len=len(toks) + 5)
    assert ids.dtype == np.int32 and ids.shape == (len(toks) + 5,)
    assert truncated == 4 and ids[0] == 2 and (ids[len(toks):] == 0).all()
    ids, truncated = encode(pi, vocab, seq_len=20)
    assert truncated == 4 + len(toks) - 20 and (ids != 0).all()
    small = Vocabulary.build([toks[:5]])
    ids, _ = encode(pi, small, seq_len=len(toks))
    assert (ids[5:] == 1).sum() > 0  # unseen tokens are UNK, never dropped
