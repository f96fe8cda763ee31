"""Simulated issues through the real kernel path: `cyntra sim init` + `cyntra run --until-idle`.

Target (issue 4): 10,000 issues in <= 60 s wall on the 2-core dev machine. Prints one JSON line.

The workspace goes under ``$TMPDIR``. The line names that filesystem and splits the run's CPU time
into user and system time: every candidate creates ~10 files and 2 directories, and on some disks
creating an inode costs 100x what it costs on tmpfs (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        report = run_kernel(session, until_idle=True, once=False)
        t_run, r2 = time.perf_counter() - t1, resource.getrusage(resource.RUSAGE_SELF)
        fs = filesystem_of(ws)
    print(json.dumps({
        "benchmark": "sim_until_idle", "issues": args.issues, "span_days": span, "dispatched": report.dispatched,
        "candidate_runs": report.candidates, "init_s": round(t_init, 2), "run_s": round(t_run, 2),
        # process CPU time (steadier than wall on a shared VM), and the part of it in the OS
        "run_cpu_s": round(r2.ru_utime + r2.ru_stime - r1.ru_utime - r1.ru_stime, 2),
        "run_sys_s": round(r2.ru_stime - r1.ru_stime, 2), "filesystem": fs,
        "per_dispatch_ms": round(1000 * t_run / max(1, report.dispatched), 2),
    }))


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


if __name__ == "__main__":
    main()
