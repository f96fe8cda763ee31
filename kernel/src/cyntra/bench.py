"""``python -m cyntra.bench`` (or ``make bench``): run every benchmark and rewrite the numbers
section of ``docs/benchmarks.md`` with what this machine measured, and when.

Benchmarks are scripts under ``scripts/`` (each prints its own figures); this runner records
their output verbatim between the markers, with the machine and the date. Run it from a checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

# (title, script, arguments, what the issue asks)
SUITE: list[tuple[str, str, list[str], str]] = [
    ("Scheduler: load + graph + one cycle, 100,000 issues / 50,000 deps", "bench_scheduler.py", [],
     "≤ 2 s"),
    ("Simulator through the real kernel, --until-idle (10,000 issues at 20/day)", "bench_sim.py",
     ["--issues", "10000"], "10,000 issues ≤ 60 s, i.e. ≤ ~4 ms per dispatch"),
    ("Dataset build (100,000 runs) and live planner input", "bench_dataset.py", [],
     "build ≤ 60 s; input ≤ 2 ms median, ≥ 50× faster than a scan"),
    ("URM planner: training, latency, throughput, FLOPs", "bench_train.py", [],
     "20,000 × 10 epochs ≤ 5 min; median ≤ 2 ms, p99 ≤ 10 ms; ≥ 2,000 decisions/s"),
    ("URM planner: one live decision including input building", "bench_decide.py", [],
     "median ≤ 2 ms, p99 ≤ 10 ms"),
    ("Heuristic vs oracle on the default profile", "sim_gap.py", ["--issues", "2000", "--markdown"],
     "gap measurable, and learnable"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _sections(body: str) -> dict[str, str]:
    """The ``### title`` blocks of the recorded section, by title."""
    out: dict[str, str] = {}
    for chunk in ("\n" + body).split("\n### ")[1:]:
        title = chunk.split("\n", 1)[0].strip()
        out[title] = "### " + chunk.rstrip("\n") + "\n"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="script names to run (default: all)")
    ap.add_argument("--doc", type=Path, default=None, help="benchmarks page to rewrite")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[3]
    scripts = root / "scripts"
    doc = args.doc or root / "docs" / "benchmarks.md"
    if not scripts.is_dir():
        sys.exit("run `python -m cyntra.bench` from a source checkout (scripts/ not found)")
    text = doc.read_text(encoding="utf-8") if doc.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    old_body, tail = rest.split(END, 1)
    kept = _sections(old_body)  # --only: the other benchmarks keep their last recorded output
    stamp = f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()} by `python -m cyntra.bench`"
    parts: list[str] = []
    for title, script, extra, target in SUITE:
        if args.only and script not in args.only:
            if title in kept:
                parts.append(kept[title])
            continue
        cmd = [sys.executable, str(scripts / script), *extra]
        print(f"== {title}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out = (proc.stdout or "") + (f"\n[exit {proc.returncode}]\n{proc.stderr[-2000:]}" if proc.returncode else "")
        print(out, flush=True)
        parts.append(f"### {title}\n\n{stamp}. Target: {target}. Command: "
                     f"`python scripts/{script} {' '.join(extra)}` ({wall:.0f} s wall).\n\n```\n{out.strip()}\n```\n")
    doc.write_text(head + BEGIN + "\n" + "\n".join(parts) + END + tail, encoding="utf-8")
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
