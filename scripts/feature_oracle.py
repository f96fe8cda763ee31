#!/usr/bin/env python
"""How much regret is left to win from the issue's observable fields alone: the *feature oracle*.

The simulator's oracle knows each issue's hidden difficulty d = (base + size + risk + tag and
title-keyword effects) + noise_sd·z, where z is a per-issue standard normal no observable field
carries. The feature oracle knows everything except z: it picks the plan with the highest
expected utility averaged over z ~ N(0, 1) (Gauss–Hermite quadrature), and is scored, like every
strategy, by the true oracle's expected utility of that plan. Its regret is the floor for any
policy that decides from the issue's fields (a policy that also reads the issue's own failed
attempts can go below it on retries). Simulator internals are used for scoring only.

    python scripts/feature_oracle.py WORKSPACE [--nodes 9]

WORKSPACE is a sim workspace with a decisions ledger (e.g. ``cyntra sim benchmark --out B``'s
``B/eval/heuristic``, with ``--skip-ledger-of B/history``): every code decision in it is re-scored; the heuristic's own regret on
the same decisions is printed beside the feature oracle's, with risk and size slices.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--nodes", type=int, default=9, help="Gauss-Hermite nodes over the hidden noise")
    ap.add_argument("--skip-ledger-of", type=Path, default=None, metavar="WS",
                    help="leave out decisions also in WS's ledger (e.g. B/history: score the held-out run only)")
    args = ap.parse_args()

    from cyntra.clock import parse_ts
    from cyntra.kernel.session import KernelSession
    from cyntra.sim.backend import profile_for
    from cyntra.sim.oracle import oracle_table
    from cyntra.sim.world import IssueFeatures, _normal_pair, _uniforms, world_for
    from cyntra.strategy.ledger import Ledger

    session = KernelSession.open(args.workspace)
    profile = profile_for(session.config, session.workspace.root)
    world = world_for(profile)
    sd = profile.difficulty.noise_sd
    z_nodes, z_weights = np.polynomial.hermite_e.hermegauss(args.nodes)
    z_weights = z_weights / z_weights.sum()
    issues = session.store.load().issues
    skip: set[str] = set()
    if args.skip_ledger_of is not None:
        other = KernelSession.open(args.skip_ledger_of).workspace.decisions_dir
        skip = {j.decision.decision_id for j in Ledger(other).read().joined()}
    heur: list[float] = []
    feat: list[float] = []
    slices: dict[str, list[int]] = defaultdict(list)
    for joined in Ledger(session.workspace.decisions_dir).read().joined():
        rec = joined.decision
        issue = issues.get(rec.issue_id)
        if issue is None or rec.job_type != "code" or rec.decision_id in skip:
            continue
        serial, spec = session.routed_lists(issue)
        at = parse_ts(rec.timestamp)
        truth = oracle_table(profile, issue, spec, serial, at=at)
        eu = {row[0].label(): float(row[1]) for row in truth}
        applied = rec.applied.action.label()
        if applied not in eu:
            continue
        best = max(eu.values())
        # The observable part of d: the true d minus this issue's noise draw (world.py's formula).
        key = (issue.id, issue.title, tuple(issue.tags), issue.dk_size, issue.dk_risk)
        true_feats = world.features(issue)
        z_true = 0.0
        if sd > 0:
            u = _uniforms(f"{profile.seed}|difficulty|{issue.id}|{issue.title}")
            z_true = _normal_pair(u[0], u[1])[0]
        d_obs = true_feats.difficulty - sd * z_true
        avg: dict[str, float] = defaultdict(float)
        try:
            for z, w in zip(z_nodes.tolist(), z_weights.tolist(), strict=True):
                world._features[key] = IssueFeatures(d_obs + sd * z, true_feats.tags, true_feats.size,
                                                     true_feats.risk)
                for row in oracle_table(profile, issue, spec, serial, at=at):
                    avg[row[0].label()] += w * float(row[1])
        finally:
            world._features[key] = true_feats
        choice = max(avg, key=lambda k: avg[k])  # first of ties: action-space order
        k = len(heur)
        heur.append(best - eu[applied])
        feat.append(best - eu[choice])
        slices[f"risk={issue.dk_risk}"].append(k)
        slices[f"size={issue.dk_size}"].append(k)
    if not heur:
        raise SystemExit(f"{args.workspace}: no code decisions to score")
    h, f = np.asarray(heur), np.asarray(feat)
    assert math.isfinite(float(h.mean()))
    print(f"{h.size} decisions (profile {profile.name}, noise_sd {sd}, {args.nodes} nodes)")
    print(f"regret vs the oracle: logged strategy {h.mean():.3f}, feature oracle {f.mean():.3f} "
          f"(ratio {f.mean() / h.mean():.3f})")
    for name in sorted(slices):
        idx = slices[name]
        print(f"  {name:<16} n={len(idx):4d}  logged {h[idx].mean():6.2f}  feature oracle {f[idx].mean():6.2f}")


if __name__ == "__main__":
    main()
