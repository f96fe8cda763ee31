"""Simulated issues through the real kernel path: `cyntra sim init` + `cyntra run --until-idle`.

Target (issue 4): 10,000 issues in <= 60 s wall on the 2-core dev machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cyntra.kernel.runner import run_kernel
from cyntra.kernel.session import KernelSession
from cyntra.sim.cli import init_workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--issues", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--span-days", type=float, default=None,
                    help="arrival window (default: issues / 20 per day, the default profile's rate)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        span = args.span_days if args.span_days is not None else args.issues / 20.0
        init_workspace(ws, n_issues=args.issues, seed=args.seed, profile_ref=args.profile, span_days=span)
        t_init = time.perf_counter() - t0
        session = KernelSession.open(ws)
        t1, c1 = time.perf_counter(), time.process_time()
        report = run_kernel(session, until_idle=True, once=False)
        t_run, c_run = time.perf_counter() - t1, time.process_time() - c1
    print(json.dumps({
        "benchmark": "sim_until_idle", "issues": args.issues, "span_days": span, "dispatched": report.dispatched,
        "candidate_runs": report.candidates, "init_s": round(t_init, 2), "run_s": round(t_run, 2),
        "run_cpu_s": round(c_run, 2),  # process CPU time: steadier than wall on a shared VM
        "per_dispatch_ms": round(1000 * t_run / max(1, report.dispatched), 2),
    }))


if __name__ == "__main__":
    main()
