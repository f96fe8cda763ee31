#!/usr/bin/env python
"""Offline check of value checkpoints: regret vs the simulator's oracle on a dataset's val + test rows.

The oracle is used for scoring only. Rows are the history decisions the models did not train on
(time-ordered val/test splits); each is scored at its decision time with the issue as the store
holds it now. Prints the heuristic's regret on the same rows, each checkpoint's, and their
ensemble (mean Q), with risk/size slices as ``model/heuristic``.

Usage (after ``cyntra sim benchmark --out B``):
    python scripts/value_offline.py B/history B/data B/ckpt/outcome [more checkpoints...]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path, help="the sim workspace the dataset was built from")
    ap.add_argument("data", type=Path, help="dataset directory (built with best-of-K attached)")
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--kappa", type=float, action="append", default=[],
                    help="also score the ensemble's mean Q minus this many standard deviations (repeatable)")
    args = ap.parse_args()

    import torch

    from cyntra.kernel.session import KernelSession
    from cyntra.sim.backend import profile_for
    from cyntra.sim.oracle import oracle_table
    from planner_model.checkpoint import load_checkpoint
    from planner_model.data import load_dataset_info, load_split
    from planner_model.dataset_format import issue_key
    from planner_model.decode import factored_q

    torch.set_num_threads(1)
    session = KernelSession.open(args.workspace)
    profile = profile_for(session.config, session.workspace.root)
    issues = session.store.load().issues
    by_key = {issue_key(i): i for i in issues}
    info = load_dataset_info(args.data)
    labels = list(info.actions)
    splits = ("val", "test")
    rows: list[tuple[str, int, np.ndarray, np.ndarray, int, str, str]] = []
    for split in splits:
        sp = load_split(info, split)
        keys = np.load(args.data / f"{split}__issue_key.npy")
        times = np.load(args.data / f"{split}__time.npy")
        for i in range(len(sp)):
            iid = by_key.get(int(keys[i]))
            if iid is None or not 0 <= int(sp["heuristic_action"][i]) < len(labels):
                continue  # issue gone from the store, or a heuristic plan outside the action space
            issue = issues[iid]
            serial, spec = session.routed_lists(issue)
            at = datetime.fromtimestamp(int(times[i]) / 1000, tz=UTC)
            eu = {r.action.label(): r.eu for r in oracle_table(profile, issue, spec, serial, at=at)}
            allowed = {a.label() for a in session.clamp.allowed(issue)}
            rows.append((split, i, np.array([eu.get(lab, -np.inf) for lab in labels]),
                         np.array([lab in allowed for lab in labels]), int(sp["heuristic_action"][i]),
                         issue.dk_size, issue.dk_risk))
    best = np.array([r[2].max() for r in rows])
    heur = np.array([best[j] - r[2][r[4]] for j, r in enumerate(rows)])
    groups: dict[str, list[int]] = {}
    for j, r in enumerate(rows):
        groups.setdefault(r[6], []).append(j)
        groups.setdefault(r[5], []).append(j)
    print(f"{len(rows)} rows; heuristic regret {heur.mean():.3f}")

    def report(name: str, q_by_split: dict[str, np.ndarray]) -> None:
        reg = np.array([best[j] - r[2][int(np.where(r[3], q_by_split[r[0]][r[1]], -np.inf).argmax())]
                        for j, r in enumerate(rows)])
        slices = " ".join(f"{k}:{reg[v].mean():.2f}/{heur[v].mean():.2f}" for k, v in sorted(groups.items()))
        print(f"{name}: regret {reg.mean():.3f} (ratio {reg.mean() / heur.mean():.3f}) | {slices}")

    all_q: list[dict[str, np.ndarray]] = []
    for ck in args.checkpoints:
        loaded = load_checkpoint(ck, expected_actions=labels, device="cpu")
        tc = loaded.meta.get("train_config") or {}
        decision, extra = tc.get("decision"), tc.get("extra") or {}
        if decision not in ("value", "factored"):
            raise SystemExit(f"{ck}: decision {decision!r} has no value head to score")
        q_by_split = {}
        for split in splits:
            sp = load_split(info, split)
            with torch.inference_mode():
                _, v = loaded.model(torch.from_numpy(np.asarray(sp["inputs"], dtype=np.int64)))
            raw = v.float().numpy()
            if decision == "factored":
                q_by_split[split] = factored_q(raw, np.asarray(sp["pass_value"]), np.asarray(sp["fail_penalty"]),
                                               extra["spend_norm"])
            else:
                shift, scale = extra.get("value_norm") or [0.0, 1.0]
                q_by_split[split] = raw * scale + shift
        all_q.append(q_by_split)
        report(f"{ck} [{decision}]", q_by_split)
    if len(all_q) > 1:
        report("ensemble (mean Q)", {s: np.mean(np.stack([q[s] for q in all_q]), axis=0) for s in splits})
        for kappa in args.kappa:  # pessimism: mean - kappa * spread across the checkpoints
            report(f"ensemble (mean - {kappa} std)", {
                s: np.mean(np.stack([q[s] for q in all_q]), axis=0) - kappa * np.std(np.stack([q[s] for q in all_q]), axis=0)
                for s in splits})


if __name__ == "__main__":
    main()
