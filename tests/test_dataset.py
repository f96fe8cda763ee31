"""Dataset builder: rows equal what the kernel saw live, nothing leaks, broken input is reported.

The fixture plays a kernel timeline: at each decision time it builds the planner input with the
live persistent index (before later runs exist), stores its hash in the decision record, then
archives the runs and appends decision + outcome to the ledger. The dataset, built afterwards
when many more runs exist, must reproduce every recorded hash.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from cyntra.errors import InputError
from cyntra.planner.action_space import ActionSpace, PlanAction
from cyntra.planner.cli import planner
from cyntra.planner.index import SimilarRunsIndex
from cyntra.planner.planner_input import (
    PlannerInput,
    build_planner_input,
    planner_input_hash,
    universe_inputs,
)
from cyntra.planner.run_summary import summarize_archive
from cyntra.planner.tokenizer import Vocabulary, tokenize
from cyntra.universe import load_universe
from cyntra.workspace import Workspace
from planner_model.dataset import build_dataset
from planner_model.dataset_format import ARRAYS, SPLITS, issue_key, load_split, read_meta
from test_run_summary import (
    SERIAL,
    SPEC2,
    T0,
    issue_row,
    make_decision,
    outcome_for,
    record,
    write_archive,
)

UNIVERSE_YAML = """\
schema_version: "1.0"
universe_id: alpha
worlds:
  - world_id: repo
    world_kind: codebase
    path: worlds/repo
policies:
  budgets:
    max_concurrent_workcells: 3
    max_run_minutes: 60
defaults:
  swarm_id: serial_handoff
"""
SPEC3 = PlanAction(swarm_id="speculate_vote", parallelism=3, max_run_minutes=30, max_candidates=3)
QUICK = PlanAction(swarm_id="serial_handoff", parallelism=1, max_run_minutes=15, max_candidates=1)
N_DECISIONS = 70


def make_history(root: Path, seed: int = 0) -> Workspace:
    ws = Workspace.at(root)
    (root / "universes" / "alpha").mkdir(parents=True)
    (root / "universes" / "alpha" / "universe.yaml").write_text(UNIVERSE_YAML)
    defaults, policies = universe_inputs(load_universe(root, "alpha"))
    live = SimilarRunsIndex(ws)
    assert len(live) == 0
    rng = random.Random(seed)
    rows: dict[str, dict[str, Any]] = {}
    for k in range(28):
        tags = sorted(set(rng.sample(["bug", "feature", "perf", "ci", "api"], rng.randint(0, 2))))
        if k >= 24:
            tags.append("late-only")  # issues first seen at the end: their tags must not enter the vocab
        rows[f"I-{k:02d}"] = issue_row(f"I-{k:02d}", tags, dk_attempts=0, title=f"Improve {rng.choice(['cache', 'parser', 'router'])} {k}")
    order = sorted(rows)
    t = T0
    for step in range(N_DECISIONS):
        t += timedelta(hours=rng.randint(1, 12))
        # early steps use early issues, late steps may use any (so late issues first appear late)
        iid = order[min(len(order) - 1, rng.randint(0, 23) if step < 60 else rng.randint(20, 27))]
        row = rows[iid]
        action = rng.choice([SERIAL, SPEC2, SPEC3, QUICK])
        pi = build_planner_input(row, t, index=live, universe_id="alpha", universe_defaults=defaults,
                                 universe_policies=policies)
        dec = make_decision(iid, t, action, decision_id=f"d{step:03d}", pi_hash=planner_input_hash(pi),
                            propensity=0.9 if step % 3 else 1.0, heuristic=SERIAL)
        record(ws, dec)
        minutes = rng.choice([5.0, 40.0, 900.0])  # some runs are still in flight at later decisions
        status = rng.choice(["success", "failed", "timeout"])
        for c in range(action.parallelism):
            d = write_archive(ws, f"wc-{step:03d}-{c}", row, dec, t + timedelta(minutes=1), minutes=minutes,
                              status=status, candidate_index=c,
                              loser=(c > 0) if action.parallelism > 1 else None, cost=0.05 * (c + 1))
            live.add(summarize_archive(d))
        utility = None if step % 7 == 0 else (1.0 if status == "success" else -0.5) - 0.1 * c
        record(ws, outcome_for(dec, t + timedelta(minutes=minutes + 2), status, utility))
        row["dk_attempts"] = str(int(row["dk_attempts"]) + 1)
    return ws


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_history(tmp_path_factory.mktemp("ws"))


def test_rows_reproduce_the_live_planner_inputs_and_do_not_leak(history: Workspace, tmp_path: Path) -> None:
    res = build_dataset(history.root, tmp_path / "ds", write_inputs=True, quiet=True)
    assert res.report["planner_input_hash"] == {"checked": N_DECISIONS, "mismatched": 0}
    meta = read_meta(tmp_path / "ds")
    assert sum(meta.splits.values()) == N_DECISIONS and meta.source["skipped"] == {}
    assert meta.arrays == list(ARRAYS) and meta.special_tokens == {"PAD": 0, "UNK": 1, "CLS": 2, "SEP": 3}
    assert meta.heads["swarm_id"] == ["serial_handoff", "speculate_vote"]
    vocab = Vocabulary.load(tmp_path / "ds" / "vocab.json", expected_sha256=meta.vocab_sha256)
    space = ActionSpace()
    keys: dict[str, set[int]] = {}
    train_tokens: set[str] = set()
    later_tokens: set[str] = set()
    for split in SPLITS:
        arr = load_split(tmp_path / "ds", split, meta)
        n = meta.splits[split]
        assert arr["inputs"].shape == (n, meta.seq_len) and arr["inputs"].dtype == np.int32
        assert arr["labels"].shape == (n, 4) and arr["labels"].dtype == np.int64
        assert (arr["inputs"][:, 0] == 2).all() and (np.diff(arr["time"]) >= 0).all()
        for row, a in zip(arr["labels"], arr["action"], strict=True):
            act = space.actions[int(a)]
            assert [meta.heads[h][int(i)] for h, i in zip(meta.heads, row, strict=True)] == [
                act.swarm_id, act.parallelism, act.max_run_minutes, act.max_candidates]
        keys[split] = set(arr["issue_key"].tolist())
        lines = (tmp_path / "ds" / f"{split}__planner_inputs.jsonl").read_text().splitlines()
        assert len(lines) == n
        for line, t_ms in zip(lines, arr["time"], strict=True):
            pi = PlannerInput.model_validate_json(line)
            assert pi.universe_defaults == {"swarm_id": "serial_handoff"}
            for r in pi.last_N_similar_runs:  # leakage: only runs started before the decision
                assert r.started_at < pi.decision_time
            toks = tokenize(pi)[0]
            (train_tokens if split == "train" else later_tokens).update(toks)
            assert int(t_ms) > 0
    assert keys["train"].isdisjoint(keys["val"]) and keys["train"].isdisjoint(keys["test"])
    assert keys["val"].isdisjoint(keys["test"])
    assert set(vocab.tokens[4:]) <= train_tokens  # nothing seen only in val/test
    assert "tag=late-only" in later_tokens - train_tokens and "tag=late-only" not in vocab
    rep = json.loads((tmp_path / "ds" / "split_report.json").read_text())
    assert set(rep["splits"]["train"]["label_distribution"]) == set(meta.heads)


def test_build_is_deterministic_and_cli_entry_points_agree(history: Workspace, tmp_path: Path) -> None:
    a = build_dataset(history.root, tmp_path / "a", quiet=True)
    b = build_dataset(history.root, tmp_path / "b", quiet=True)
    assert a.meta.dataset_sha256 == b.meta.dataset_sha256
    for f in [*sorted((tmp_path / "a").glob("*.npy")), tmp_path / "a" / "vocab.json"]:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    cli = CliRunner().invoke(planner, ["build-dataset", "--workspace", str(history.root), "--out", str(tmp_path / "c")])
    assert cli.exit_code == 0, cli.output
    assert "planner_input_hash: 70 checked, 0 mismatched" in cli.output and "train" in cli.output
    proc = subprocess.run(
        [sys.executable, "-m", "planner_model.build_dataset", "-w", str(history.root), "-o", str(tmp_path / "d"), "-q"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for d in ("c", "d"):
        assert read_meta(tmp_path / d).dataset_sha256 == a.meta.dataset_sha256
    other = build_dataset(history.root, tmp_path / "e", n_similar=4, quiet=True)
    assert other.meta.dataset_sha256 != a.meta.dataset_sha256


def test_malformed_archives_and_ledger_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    ws = make_history(tmp_path / "ws", seed=1)
    arch = ws.archives_dir
    (arch / "wc-003-0" / "proof.json").unlink()
    text = (arch / "wc-004-0" / "manifest.json").read_text()
    (arch / "wc-004-0" / "manifest.json").write_text(text[:100])
    proof = json.loads((arch / "wc-005-0" / "proof.json").read_text())
    proof["schema_version"] = "cyntra.proof.v2"
    (arch / "wc-005-0" / "proof.json").write_text(json.dumps(proof))
    ledger_file = sorted(ws.decisions_dir.glob("*.jsonl"))[0]
    with open(ledger_file, "a") as fh:
        fh.write('{"kind": "decision", "decision_id": \n')
    res = build_dataset(ws.root, tmp_path / "ds", quiet=True)
    skipped = res.meta.source["skipped"]
    assert skipped["missing_proof"] == 1 and skipped["invalid_json"] == 1
    assert skipped["unknown_schema_version"] == 1 and skipped["invalid_ledger_line"] == 1
    lost = {f"d{i:03d}" for i in (3, 4, 5)}
    surviving = {d for d in lost if any((arch / f"wc-{d[1:]}-{c}" / "proof.json").exists() and c > 0 for c in range(3))}
    assert skipped.get("decision_without_archive", 0) == len(lost) - len(surviving)
    problems = "\n".join(res.report["problems"])
    for name in ("wc-003-0/proof.json", "wc-004-0/manifest.json", "wc-005-0/proof.json", ledger_file.name):
        assert name in problems
    assert sum(res.meta.splits.values()) == N_DECISIONS - skipped.get("decision_without_archive", 0)


def test_label_modes(history: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no best-of-k labels exist"):
        build_dataset(history.root, tmp_path / "x", labels="best-of-k", quiet=True)
    cli = CliRunner().invoke(planner, ["build-dataset", "-w", str(history.root), "-o", str(tmp_path / "y"),
                                       "--labels", "best-of-k", "-q"])
    assert cli.exit_code == 2

    out = build_dataset(history.root, tmp_path / "o", labels="outcome", quiet=True)
    w = np.concatenate([load_split(tmp_path / "o", s)["weights"] for s in SPLITS])
    r = np.concatenate([load_split(tmp_path / "o", s)["reward"] for s in SPLITS])
    assert (w[np.isnan(r)] == 0).all() and (w[~np.isnan(r)] > 0).all() and out.meta.label_mode == "outcome"

    labels_dir = history.cyntra_dir / "best_of_k"
    labels_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, line in enumerate(p.read_text() for p in sorted(history.decisions_dir.glob("*.jsonl"))):
        for raw in line.splitlines():
            rec = json.loads(raw)
            if rec["kind"] == "decision" and i % 2 == 0:
                rows.append({"issue_id": rec["issue_id"], "attempt": -1, "decision_time": rec["timestamp"],
                             "target_action": SPEC2.label(), "action_rewards": {SPEC2.label(): 1.0, QUICK.label(): 0.2}})
    (labels_dir / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        bk = build_dataset(history.root, tmp_path / "k", labels="best-of-k", quiet=True)
    finally:
        (labels_dir / "labels.jsonl").unlink()
    assert sum(bk.meta.splits.values()) == len(rows)
    assert bk.meta.source["skipped"].get("no_best_of_k_label", 0) == N_DECISIONS - len(rows)
    space = ActionSpace()
    tr = load_split(tmp_path / "k", "train", bk.meta)
    assert (tr["target_action"] == space.index(SPEC2)).all()
    assert (tr["action_rewards"][:, space.index(QUICK)] == np.float32(0.2)).all()
    assert np.isnan(tr["action_rewards"][:, space.index(SERIAL)]).all()
    assert issue_key("I-00") == issue_key("I-00") > 0
