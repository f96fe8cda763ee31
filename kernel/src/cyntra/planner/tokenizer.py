"""Planner inputs as discrete tokens, and the vocabulary that maps them to ids.

Layout (every token is ``field=value``; the live planner tokenizes in tens of microseconds):

    <CLS> univ= job= domain= [world= obj=] risk= size= prio= hint= attempts= tokens= spec=
          budget= nsim= tag=… (≤ MAX_TAGS) kw=… (≤ MAX_KEYWORDS)
    then per similar run, in ranking order, a fixed group of RUN_GROUP tokens:
    <SEP> r.plan= r.st= r.cost= r.dur= r.tc= r.sim= r.loser=

Runs come last, so a too-long sequence loses its least similar runs first. Nothing is dropped
silently: tags/keywords beyond their caps and tokens beyond ``seq_len`` are counted and returned.
Numbers are bucketed (documented thresholds) so the vocabulary stays small and closed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from cyntra.errors import InputError
from cyntra.fsutil import atomic_write_text, dumps_json
from cyntra.planner.planner_input import PlannerInput

PAD: Final = "<PAD>"
UNK: Final = "<UNK>"
CLS: Final = "<CLS>"
SEP: Final = "<SEP>"
SPECIALS: Final[tuple[str, ...]] = (PAD, UNK, CLS, SEP)
SPECIAL_IDS: Final[dict[str, int]] = {"PAD": 0, "UNK": 1, "CLS": 2, "SEP": 3}
MAX_TAGS: Final = 8
MAX_KEYWORDS: Final = 12
MAX_ATTEMPTS_BUCKET: Final = 5
RUN_GROUP: Final = 8  # tokens per similar run, SEP included

COST_EDGES: Final[tuple[float, ...]] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # USD, "<=x"
DUR_EDGES_MIN: Final[tuple[int, ...]] = (1, 5, 15, 30, 60, 120)  # minutes, "<=xm"
SIM_EDGES: Final[tuple[float, ...]] = (0.25, 0.5, 0.75)  # jaccard: 0, <=.25, <=.5, <=.75, <1, 1


def _edge_bucket(value: float, edges: Sequence[float], fmt: str, over: str) -> str:
    for e in edges:
        if value <= e:
            return fmt.format(e)
    return over


def cost_bucket(cost_usd: float | None) -> str:
    return "na" if cost_usd is None else _edge_bucket(cost_usd, COST_EDGES, "<={:g}", ">5")


def duration_bucket(duration_ms: int) -> str:
    return _edge_bucket(duration_ms / 60000.0, DUR_EDGES_MIN, "<={:g}m", ">120m")


def sim_bucket(j: float) -> str:
    if j <= 0.0:
        return "0"
    if j >= 1.0:
        return "1"
    return _edge_bucket(j, SIM_EDGES, "<={:g}", "<1")


def tokens_bucket(tokens: int) -> str:
    """Powers of two in thousands: ``<=1k``, ``<=2k``, … ``<=512k``, then ``>512k``."""
    if tokens <= 1000:
        return "<=1k"
    k = math.ceil(math.log2(tokens / 1000.0))
    return f"<={2**k}k" if k <= 9 else ">512k"


def tokenize(pi: PlannerInput) -> tuple[list[str], int]:
    """The token strings for ``pi`` (CLS first) and how many tags/keywords the caps dropped."""
    iss = pi.issue
    attempts = f"{MAX_ATTEMPTS_BUCKET}+" if iss.attempts >= MAX_ATTEMPTS_BUCKET else str(iss.attempts)
    toks = [
        CLS,
        f"univ={pi.universe_id or 'none'}",
        f"job={pi.job_type}",
        f"domain={pi.domain}",
    ]
    if pi.world_id is not None:
        toks.append(f"world={pi.world_id}")
    if pi.objective_id is not None:
        toks.append(f"obj={pi.objective_id}")
    budget = pi.universe_policies.get("budgets", {}).get("max_run_minutes")
    toks += [
        f"risk={iss.risk}",
        f"size={iss.size}",
        f"prio={iss.priority}",
        f"hint={iss.tool_hint or 'none'}",
        f"attempts={attempts}",
        f"tokens={tokens_bucket(iss.estimated_tokens)}",
        f"spec={int(iss.speculate)}",
        f"budget={budget if budget is not None else 'none'}",
        f"nsim={len(pi.last_N_similar_runs)}",
    ]
    dropped = max(0, len(iss.tags) - MAX_TAGS) + max(0, len(iss.title_keywords) - MAX_KEYWORDS)
    toks += [f"tag={t}" for t in iss.tags[:MAX_TAGS]]
    toks += [f"kw={k}" for k in iss.title_keywords[:MAX_KEYWORDS]]
    for r in pi.last_N_similar_runs:
        toks += [
            SEP,
            f"r.plan={r.plan}",
            f"r.st={r.status}",
            f"r.cost={cost_bucket(r.cost_usd)}",
            f"r.dur={duration_bucket(r.duration_ms)}",
            f"r.tc={r.toolchain}",
            f"r.sim={sim_bucket(r.jaccard)}",
            f"r.loser={int(r.loser)}",
        ]
    return toks, dropped


class Vocabulary:
    """Token ↔ id. Specials first (PAD=0, UNK=1, CLS=2, SEP=3), then by frequency desc, token asc."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], cap: int = 8192, min_count: int = 1) -> Vocabulary:
        counts: Counter[str] = Counter()
        for toks in token_lists:
            counts.update(toks)
        for s in SPECIALS:
            counts.pop(s, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + ranked[: max(0, cap - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def to_json(self) -> str:
        return dumps_json({"tokens": list(self.tokens)})

    @property
    def sha256(self) -> str:
        """Hash of the exact ``vocab.json`` bytes."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> str:
        atomic_write_text(path, self.to_json())
        return self.sha256

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> Vocabulary:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InputError(p, f"cannot read: {exc}") from None
        if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
            raise InputError(p, f"sha256 mismatch (expected {expected_sha256})")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(p, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise InputError(p, "expected a list of strings", field="tokens")
        try:
            return cls(tokens)
        except ValueError as exc:
            raise InputError(p, str(exc), field="tokens") from None


def encode_tokens(tokens: Sequence[str], vocab: Vocabulary, seq_len: int) -> tuple[npt.NDArray[np.int32], int]:
    """Ids padded with PAD to ``seq_len``; returns how many tokens did not fit."""
    get = vocab.index.get
    ids = [get(t, 1) for t in tokens[:seq_len]]
    out = np.zeros(seq_len, dtype=np.int32)
    out[: len(ids)] = ids
    return out, max(0, len(tokens) - seq_len)


def encode(pi: PlannerInput, vocab: Vocabulary, seq_len: int) -> tuple[npt.NDArray[np.int32], int]:
    """``(ids int32[seq_len], truncated_tokens)``; truncations count cap drops and overflow."""
    toks, dropped = tokenize(pi)
    ids, overflow = encode_tokens(toks, vocab, seq_len)
    return ids, dropped + overflow
