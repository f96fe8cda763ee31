"""The decisions ledger: ``.cyntra/decisions/<date>.jsonl``, append-only, one JSON record per line.

Decisions, their outcomes (joined by ``decision_id``) and promotions live side by side; readers
skip and report lines they cannot parse instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cyntra.fsutil import append_jsonl
from cyntra.strategy.record import DecisionRecord, OutcomeRecord, PromotionRecord


@dataclass
class JoinedDecision:
    decision: DecisionRecord
    outcome: OutcomeRecord | None


@dataclass
class LedgerContents:
    decisions: list[DecisionRecord] = field(default_factory=list)
    outcomes: dict[str, OutcomeRecord] = field(default_factory=dict)
    promotions: list[PromotionRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def joined(self) -> list[JoinedDecision]:
        return [JoinedDecision(d, self.outcomes.get(d.decision_id)) for d in self.decisions]


class Ledger:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, timestamp: str) -> Path:
        return self.directory / f"{timestamp[:10]}.jsonl"

    def append(self, record: BaseModel) -> None:
        ts = str(getattr(record, "timestamp", "") or "undated")
        append_jsonl(self.path_for(ts), record.model_dump(mode="json"))

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("*.jsonl") if p.is_file())

    def iter_raw(self, since: str | None = None) -> Iterator[tuple[Path, int, Any]]:
        for path in self.files():
            if since is not None and path.stem < since[:10]:
                continue
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            yield path, lineno, json.loads(line)
                        except json.JSONDecodeError as exc:
                            yield path, lineno, exc

    def read(self, since: str | None = None) -> LedgerContents:
        """Every record, in file order. A decision equal to one already read (a copied or
        concatenated ledger file) is reported and skipped, so it is never counted twice;
        different decisions that share an id (a replay of the same issues at the same virtual
        times) are both kept. An outcome repeated by id keeps the last one read."""
        out = LedgerContents()
        first: dict[str, tuple[DecisionRecord, str]] = {}

        for path, lineno, obj in self.iter_raw(since):
            if isinstance(obj, Exception):
                out.problems.append(f"{path}:{lineno}: <json>: {obj}")
                continue
            kind = obj.get("kind") if isinstance(obj, dict) else None
            try:
                if kind == "decision":
                    rec = DecisionRecord.model_validate(obj)
                    if since is not None and rec.timestamp < since:
                        continue
                    prev = first.setdefault(rec.decision_id, (rec, f"{path}:{lineno}"))
                    if prev[0] is not rec and prev[0] == rec:
                        out.problems.append(f"{path}:{lineno}: decision_id: a copy of the decision at {prev[1]} "
                                            f"({rec.decision_id}); skipped")
                        continue
                    out.decisions.append(rec)
                elif kind == "outcome":
                    o = OutcomeRecord.model_validate(obj)
                    out.outcomes[o.decision_id] = o
                elif kind in ("promotion", "rollback"):
                    out.promotions.append(PromotionRecord.model_validate(obj))
                else:
                    out.problems.append(f"{path}:{lineno}: kind: unknown record kind {kind!r}")
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                out.problems.append(f"{path}:{lineno}: {loc}: {err['msg']}")
        return out
