"""Sim worlds: a deterministic candidate program, so world evolution runs without external tools.

``python -m cyntra.sim.worlds --params P --metrics M --seed S`` reads a params JSON and writes a
metrics JSON. The metrics are a pure function of (params, seed) — a noisy concave bowl — so an
evolution over the parameters has something real to climb, and two runs with the same seeds
write byte-identical files:

    overall     = 1 − Σ_i (x_i − t_i)² / n  +  N(0, noise²)         (max; 1 at the target)
    duration_ms = 100 + 400 · mean_i |x_i|  (rounded)                 (min; bigger values cost)
    loss        = 1 − overall

over the numeric, non-control parameters ``x_i``. The target ``t_i`` is ``_target_<name>`` when
given, else a fixed value in [0.2, 0.8] derived from the name. Control parameters (leading
underscore) make the program misbehave on purpose, for tests and failure drills:

    _noise: σ of the noise (default 0.01)      _fail: exit with code 3 before writing
    _hang: sleep this many seconds first        _invalid: "json" | "object" | "missing" | "nan"
    _exit: exit with this code after writing    (writes bad metrics of that kind)
    _faults: {"<generation>-<candidate>" or "<candidate>": "fail" | "hang:<s>" | "invalid:<kind>"
              | "exit:<n>"} — a fault for one candidate only (the first key that matches wins)

:func:`sim_world_files` returns a ready universe + ``world.yaml`` using this program.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_NOISE = 0.01
FAIL_EXIT_CODE = 3
INVALID_KINDS = ("json", "object", "missing", "nan")


def default_target(name: str) -> float:
    """A fixed target in [0.2, 0.8] per parameter name (same on every machine)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return 0.2 + 0.6 * (int.from_bytes(digest[:4], "big") / 2**32)


def _numeric(params: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in params.items()
        if not k.startswith("_") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def evaluate(params: Mapping[str, Any], seed: int) -> dict[str, float]:
    """The metrics of one candidate (the formula in the module docstring)."""
    xs = _numeric(params)
    noise = float(params.get("_noise", DEFAULT_NOISE))
    rng = random.Random(seed)
    if xs:
        sq = sum((x - float(params.get(f"_target_{k}", default_target(k)))) ** 2 for k, x in xs.items())
        overall = 1.0 - sq / len(xs)
        mean_abs = sum(abs(x) for x in xs.values()) / len(xs)
    else:
        overall, mean_abs = 0.0, 0.0
    overall += rng.gauss(0.0, noise) if noise > 0 else 0.0
    overall = round(overall, 9)
    return {
        "overall": overall,
        "duration_ms": float(round(100 + 400 * mean_abs)),
        "loss": round(1.0 - overall, 9),
    }


def _write_invalid(path: Path, kind: str, metrics: dict[str, float]) -> None:
    if kind == "json":
        path.write_text("{not json", encoding="utf-8")
    elif kind == "object":
        path.write_text("[1, 2, 3]\n", encoding="utf-8")
    elif kind == "missing":
        path.write_text(json.dumps({"loss": metrics["loss"]}) + "\n", encoding="utf-8")
    else:  # nan: JSON that Python can write but that is no finite number
        path.write_text('{"overall": NaN, "duration_ms": 100.0, "loss": NaN}\n', encoding="utf-8")


def apply_faults(params: dict[str, Any], generation: int, candidate: int) -> dict[str, Any]:
    """``params`` with this candidate's ``_faults`` entry turned into the plain control keys."""
    faults = params.get("_faults") or {}
    if not isinstance(faults, dict):
        return params
    fault = faults.get(f"{generation}-{candidate}", faults.get(str(candidate)))
    if not isinstance(fault, str):
        return params
    kind, _, arg = fault.partition(":")
    out = dict(params)
    if kind == "fail":
        out["_fail"] = True
    elif kind == "hang":
        out["_hang"] = float(arg or 3600)
    elif kind == "invalid":
        out["_invalid"] = arg or "json"
    elif kind == "exit":
        out["_exit"] = int(arg or 1)
    return out


def run(params_path: Path, metrics_path: Path, seed: int, generation: int = 0, candidate: int = 0) -> int:
    """One candidate: read params, misbehave if told to, write metrics. Returns the exit code."""
    params = json.loads(params_path.read_text(encoding="utf-8"))
    if not isinstance(params, dict):
        print(f"{params_path}: params must be a JSON object", file=sys.stderr)
        return 2
    params = apply_faults(params, generation, candidate)
    hang = float(params.get("_hang", 0) or 0)
    if hang > 0:
        time.sleep(hang)
    if params.get("_fail"):
        print("sim world: told to fail (_fail)", file=sys.stderr)
        return FAIL_EXIT_CODE
    metrics = evaluate(params, seed)
    invalid = params.get("_invalid")
    if invalid:
        if invalid not in INVALID_KINDS:
            print(f"_invalid must be one of {INVALID_KINDS}, got {invalid!r}", file=sys.stderr)
            return 2
        _write_invalid(metrics_path, str(invalid), metrics)
    else:
        metrics_path.write_text(json.dumps(metrics, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"seed": seed, "metrics": metrics}, sort_keys=True))
    return int(params.get("_exit", 0) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cyntra.sim.worlds",
                                 description="Sim world candidate: params JSON in, metrics JSON out.")
    ap.add_argument("--params", type=Path, required=True, help="params JSON to read")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--generation", type=int, default=0, help="selects a _faults entry")
    ap.add_argument("--candidate", type=int, default=0, help="selects a _faults entry")
    args = ap.parse_args(argv)
    return run(args.params, args.metrics, args.seed, args.generation, args.candidate)


# --------------------------------------------------------------------------- workspace files

_WORLD_YAML = """\
schema_version: "1.0"
world_id: {world_id}
description: >
  Simulated world: python -m cyntra.sim.worlds climbs a noisy concave bowl over x, y, z.
command:
  - "{{python}}"
  - "-m"
  - "cyntra.sim.worlds"
  - "--params"
  - "{{params_file}}"
  - "--metrics"
  - "{{metrics_file}}"
  - "--seed"
  - "{{seed}}"
  - "--generation"
  - "{{generation}}"
  - "--candidate"
  - "{{candidate}}"
params:
  x: {{type: float, low: 0.0, high: 1.0, default: 0.05}}
  y: {{type: float, low: 0.0, high: 1.0, default: 0.95}}
  z: {{type: float, low: 0.0, high: 1.0, default: 0.5}}
overrides:
  _noise: 0.002
metrics: [overall, duration_ms, loss]
gates:
  metrics_written: "test -s metrics.json"
  sane_overall: {{metric: overall, min: -10.0}}
timeout_seconds: 30
gate_timeout_seconds: 30
generations: 4
seed: 7
mutation: {{scale: 0.25, decay: 0.85}}
issue: {{priority: P2, risk: medium, size: M}}
tags: ["sim"]
"""

_UNIVERSE_YAML = """\
schema_version: "1.0"
universe_id: {universe_id}
name: Simulated evolution
worlds:
  - world_id: {world_id}
    world_kind: simulation
    path: universes/{universe_id}/worlds/{world_id}/world.yaml
    enabled: true
    tags: ["sim", "evolve"]
policies:
  budgets:
    max_concurrent_workcells: 3
    max_run_minutes: 120
defaults:
  swarm_id: speculate_vote
  objective_id: sim_bowl_v1
"""

_SWARMS_YAML = """\
schema_version: "1.0"
swarms:
  speculate_vote:
    type: parallel_compete
    population_size: 3
    selection: {mode: objectives, require_all_gates_pass: true}
  serial_handoff:
    type: serial_handoff
    population_size: 1
    selection: {mode: objectives, require_all_gates_pass: true}
"""

_OBJECTIVES_YAML = """\
schema_version: "1.0"
objectives:
  sim_bowl_v1:
    description: Maximise the bowl's overall score, then keep the simulated duration low.
    metrics:
      overall: max
      duration_ms: min
"""


def sim_world_files(universe_id: str = "sim_evolve", world_id: str = "bowl") -> dict[str, str]:
    """A universe with one sim world, keyed by path relative to the workspace root."""
    base = f"universes/{universe_id}"
    return {
        f"{base}/universe.yaml": _UNIVERSE_YAML.format(universe_id=universe_id, world_id=world_id),
        f"{base}/swarms.yaml": _SWARMS_YAML,
        f"{base}/objectives.yaml": _OBJECTIVES_YAML,
        f"{base}/worlds/{world_id}/world.yaml": _WORLD_YAML.format(world_id=world_id),
    }


if __name__ == "__main__":
    sys.exit(main())
