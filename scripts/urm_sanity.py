#!/usr/bin/env python
"""Sanity bar of the whole URM pipeline (issue #7): can the planner reproduce the heuristic?

Runs exactly what an operator runs, through the real CLI:

    cyntra sim init -w W --issues N --seed S     (default profile)
    cyntra run -w W --until-idle                 (heuristic strategy: labels = the heuristic's plans)
    cyntra planner build-dataset -w W -o D       (labels: executed; time-ordered 80/10/10 split)
    cyntra planner train --data D --out C
    cyntra planner eval --checkpoint C --data D --out E

and prints the model's exact match on the held-out time slice (test) with its 95% bootstrap
interval, the baselines beside it (from eval.json), the path of eval.md, and stage timings.

It also measures how much of the heuristic is *observable* from planner_input.v1. The heuristic's
plan depends on the issue (risk, tool hint, dk_speculate, routing rules — all in the input) but
also on two things the input does not carry: the critical path (the ``critical_path`` speculation
trigger) and the exploration controller (its parallelism delta). The script counts, from each
decision's heuristic trace, the decisions whose plan came from the critical-path trigger alone or
whose controller was active, and the model's exact match on those rows versus the rest — so a cap
below 0.97 is attributed precisely.

Usage: python scripts/urm_sanity.py [--workdir DIR] [--issues 3800] [--seed 0] [--json PATH]
       [--min-decisions 5000] [--target 0.97] [--reuse] [-- extra `cyntra planner train` options]
Exit status 0 when exact match ≥ target (and the history has ≥ min-decisions), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cyntra.planner.run_summary import epoch_us
from cyntra.strategy.ledger import Ledger
from planner_model.data import load_dataset_info, load_split
from planner_model.dataset_format import issue_key


def cyntra(*args: str) -> tuple[str, float]:
    """Run the real CLI in a child process; return (stdout, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cyntra.cli", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"cyntra {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout, elapsed


def _ci(m: dict[str, float]) -> str:
    return f"{m['value']:.4f} [{m['lo']:.4f}, {m['hi']:.4f}]"


def observability(ws: Path, data: Path, ckpt: Path) -> dict[str, Any]:
    """Which heuristic decisions depended on inputs the planner does not see, and how the model did on them."""
    import torch

    from planner_model.checkpoint import load_checkpoint
    from planner_model.data import action_table, labels_to_actions
    from planner_model.decode import fast_decode
    from planner_model.train import predict_logits

    decisions = Ledger(ws / ".cyntra" / "decisions").read().decisions
    issues = {}
    for line in (ws / ".beads" / "issues.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            issues[str(row["id"])] = row
    trig_counts: Counter[str] = Counter()
    controller_modes: Counter[str] = Counter()
    cp_could_matter = 0
    tag: dict[tuple[int, int], str] = {}
    for d in decisions:
        steps = {t.step: t for t in d.heuristic.trace}
        triggers = list(steps["speculation"].data.get("triggers", [])) if "speculation" in steps else []
        mode = str(steps["controller"].data.get("mode")) if "controller" in steps else "unknown"
        delta = int(steps["controller"].data.get("parallelism_delta") or 0) if "controller" in steps else 0
        trig_counts["+".join(triggers) or "none"] += 1
        controller_modes[mode] += 1
        risk = issues.get(d.issue_id, {}).get("dk_risk") or issues.get(d.issue_id, {}).get("risk")
        if risk in ("high", "critical") and "rule" not in triggers:
            cp_could_matter += 1  # high-risk work routed by a non-speculating rule (e.g. a tool hint)
        kind = "critical_path_only" if triggers == ["critical_path"] else "controller_delta" if (triggers and delta) else "observable"
        tag[(issue_key(d.issue_id), epoch_us(d.timestamp) // 1000)] = kind

    info = load_dataset_info(data)
    test = load_split(info, "test")
    table = action_table(info)
    targets = labels_to_actions(np.asarray(test["labels"]), table)
    loaded = load_checkpoint(ckpt, expected_actions=info.actions)
    with torch.no_grad():
        logits = predict_logits(loaded.model, test["inputs"], torch.device("cpu"))
    best, _ = fast_decode(logits, table, loaded.temperature)
    keys, times = np.load(data / "test__issue_key.npy"), np.load(data / "test__time.npy")
    kinds = np.array([tag.get((int(k), int(t)), "unmatched") for k, t in zip(keys, times, strict=True)])
    per_kind = {}
    for kind in sorted(set(kinds.tolist())):
        sel = (kinds == kind) & (targets >= 0)
        per_kind[kind] = {"n": int(sel.sum()), "exact_match": float((best[sel] == targets[sel]).mean()) if sel.any() else None}
    n = len(decisions)
    return {
        "decisions": n,
        "speculation_triggers": dict(trig_counts),
        "critical_path_only_fraction": trig_counts.get("critical_path", 0) / max(1, n),
        "decisions_where_critical_path_could_decide": cp_could_matter,
        "controller_modes": dict(controller_modes),
        "test_rows_by_observability": per_kind,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--issues", type=int, default=3800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-decisions", type=int, default=5000)
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--reuse", action="store_true", help="keep an existing sim history/dataset in --workdir")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("train_args", nargs="*", help="extra `cyntra planner train` options (after --)")
    args = ap.parse_args()

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="urm-sanity-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ws, data, ckpt, ev = work / "ws", work / "data", work / "ckpt", work / "eval"
    timings: dict[str, float] = {}
    load = {"before": os.getloadavg()}

    if not (args.reuse and (ws / ".cyntra" / "decisions").is_dir()):
        _, timings["sim_init_s"] = cyntra("sim", "init", "-w", str(ws), "--issues", str(args.issues),
                                          "--seed", str(args.seed), "--force")
        _, timings["sim_run_s"] = cyntra("run", "-w", str(ws), "--until-idle", "--json")
    n_decisions = len(Ledger(ws / ".cyntra" / "decisions").read().decisions)
    print(f"history: {args.issues} issues → {n_decisions} decisions ({work})", flush=True)
    if not (args.reuse and (data / "dataset.json").is_file()):
        _, timings["build_dataset_s"] = cyntra("planner", "build-dataset", "-w", str(ws), "-o", str(data),
                                               "--labels", "executed", "-q")
    info = load_dataset_info(data)
    print(f"dataset: {info.splits}", flush=True)
    train_out, timings["train_s"] = cyntra("planner", "train", "--data", str(data), "--out", str(ckpt),
                                           "--device", "cpu", "--quiet", *args.train_args)
    train_summary = json.loads(train_out.strip().splitlines()[-1])
    _, timings["eval_s"] = cyntra("planner", "eval", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(ev),
                                  "--bootstrap", str(args.bootstrap))
    load["after"] = os.getloadavg()
    report = json.loads((ev / "eval.json").read_text())
    obs = observability(ws, data, ckpt)

    model = report["model"]
    exact = model["exact_match"]
    ok = exact["value"] >= args.target and n_decisions >= args.min_decisions
    print(f"\nURM exact match on the held-out time slice (test, n={report['dataset']['n']}): {_ci(exact)}"
          f"   target ≥ {args.target}: {'PASS' if ok else 'FAIL'}")
    for name, m in report["baselines"].items():
        print(f"  baseline {name:<24} {_ci(m['exact_match'])}")
    print(f"  ECE after temperature scaling: {_ci(model['ece_calibrated'])} (T={report['temperature']:.3f})")
    print(f"eval.md: {ev / 'eval.md'}")
    print(f"observability: {json.dumps(obs, sort_keys=True)}")
    print(f"timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}; load average {load}")

    summary = {
        "issues": args.issues, "seed": args.seed, "decisions": n_decisions, "splits": info.splits,
        "exact_match": exact, "baselines": {k: v["exact_match"] for k, v in report["baselines"].items()},
        "ece_calibrated": model["ece_calibrated"], "temperature": report["temperature"],
        "train": train_summary, "eval_md": str(ev / "eval.md"), "observability": obs,
        "timings_s": timings, "loadavg": load, "target": args.target, "pass": ok,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
