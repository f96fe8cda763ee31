"""Templates for a sim workspace: ``.cyntra/config.yaml`` and the ``sim`` universe files.

The config mirrors upstream's (same toolchain names and timeouts, same routing rules without the
fab-world/comfyui rules, same fallbacks, speculation and control blocks) so the heuristic behaves
exactly as it would on a real workspace; only the adapters (``sim``) and gate commands
(``sim:test`` …, evaluated in-process from the candidate's outcome) differ.
"""

from __future__ import annotations

import json
from pathlib import Path

from cyntra.sim.profile import SimProfile

UNIVERSE_ID = "sim"
OBJECTIVE_ID = "sim_utility_v1"

_CONFIG = """\
version: "1.0"

# Cyntra sim workspace: every toolchain is the embedded simulator (adapter: sim), drawing its
# outcome from the world profile below. Routing, fallbacks and speculation follow upstream's
# defaults so the heuristic behaves as it would on a real workspace. See docs/sim.md.

# ============================================
# SIMULATOR
# ============================================
sim:
  profile: {profile_ref}   # "default", a bundled profile name, or a YAML file
  seed: {seed}              # seeds every candidate draw with (seed, issue, attempt, toolchain)

# ============================================
# SCHEDULING
# ============================================
scheduling:
  max_concurrent_workcells: 3
  max_concurrent_tokens: 300000
  starvation_threshold_hours: 4

# ============================================
# TOOLCHAINS (simulated; names match upstream so routing rules work unchanged)
# ============================================
toolchain_priority:
  - codex
  - claude
  - opencode
  - crush

toolchains:
  codex:
    enabled: true
    adapter: sim
    default_model: sim-codex
    timeout_minutes: 60
  claude:
    enabled: true
    adapter: sim
    default_model: sim-claude
    timeout_minutes: 60
  opencode:
    enabled: true
    adapter: sim
    default_model: sim-opencode
    timeout_minutes: 45
  crush:
    enabled: true
    adapter: sim
    default_model: sim-crush
    timeout_minutes: 45

# ============================================
# ROUTING (upstream defaults, first match wins)
# ============================================
routing:
  rules:
    # Explicit tool hint
    - match: {{ dk_tool_hint: "codex" }}
      use: [codex]
    - match: {{ dk_tool_hint: "claude" }}
      use: [claude]
    - match: {{ dk_tool_hint: "opencode" }}
      use: [opencode]
    - match: {{ dk_tool_hint: "crush" }}
      use: [crush]

    # High-risk work: speculate across best+workhorse (and optionally a cheap 3rd)
    - match: {{ dk_risk: ["critical"] }}
      speculate: true
      parallelism: 3
      use: [codex, claude, crush]
    - match: {{ dk_risk: ["high"] }}
      speculate: true
      parallelism: 2
      use: [codex, claude]

    # Deep reasoning / large context -> Codex
    - match: {{ dk_size: ["XL"] }}
      use: [codex]
    - match:
        {{ tags_any: ["architecture", "complex", "kernel", "deep-reasoning"] }}
      use: [codex]

    # Low-risk / small tasks -> cheap model
    - match: {{ dk_risk: ["low"], dk_size: ["XS", "S"] }}
      use: [opencode]

    # Default: Claude workhorse
    - match: {{}}
      use: [claude]

  fallbacks:
    codex: [claude, opencode]
    claude: [codex, opencode]
    opencode: [claude]
    crush: [opencode, claude]

# ============================================
# SPECULATION
# ============================================
speculation:
  enabled: true
  default_parallelism: 2
  max_parallelism: 3
  vote_threshold: 0.7
  auto_trigger_on_critical_path: true
  auto_trigger_risk_levels: ["high", "critical"]

# ============================================
# EXPLORATION CONTROL
# ============================================
control:
  enabled: true
  action_low: 0.1
  action_high: 0.5
  temperature_base: 0.2
  temperature_min: 0.1
  temperature_max: 0.6
  temperature_step: 0.1
  parallelism_step: 1

# ============================================
# QUALITY GATES (sim: gates are read from the candidate's simulated outcome)
# ============================================
gates:
  test_command: "sim:test"
  typecheck_command: "sim:typecheck"
  lint_command: "sim:lint"
  build_command: null
  timeout_seconds: 900
  retry_flaky: 0   # flakiness is part of the simulated outcome

# ============================================
# WORKCELLS AND STRATEGY
# ============================================
workcells:
  backend: directory   # plain directories: no git needed for simulated runs

strategy: heuristic

# ============================================
# OBJECTIVE (copied from the world profile so realised and oracle utilities agree)
# U = value_by_priority[p]*value_size_factor[s]*passed - cost_usd
#     - wall_cost_per_minute[p]*wall_minutes - fail_penalty*(1 - passed)
# ============================================
objective:
  value_by_priority: {value_by_priority}
  value_size_factor: {value_size_factor}
  wall_cost_per_minute: {wall_cost_per_minute}
  fail_penalty: {fail_penalty}
"""

_UNIVERSE = """\
schema_version: "1.0"
universe_id: sim
name: Simulated world
description: >
  Embedded simulated agent world ({profile_name}); runs are drawn from the world profile.

worlds:
  - world_id: sim_world
    world_kind: simulation
    path: {profile_ref}
    enabled: true
    tags: ["sim"]

policies:
  determinism:
    enforce_cpu_only: true
    pythonhashseed: 0
  budgets:
    max_concurrent_workcells: 3
    max_run_minutes: 120
  routing_overrides: []

defaults:
  swarm_id: serial_handoff
  objective_id: sim_utility_v1
"""

_SWARMS = """\
schema_version: "1.0"

# Swarm catalog of the sim universe: the two topologies of the action space.
swarms:
  speculate_vote:
    type: parallel_compete
    population_size: 3
    selection:
      mode: objectives
      require_all_gates_pass: true

  serial_handoff:
    type: serial_handoff
    population_size: 1
    selection:
      mode: objectives
      require_all_gates_pass: true
"""

_OBJECTIVES = """\
schema_version: "1.0"
objectives:
  sim_utility_v1:
    description: >
      U = value[priority] * size_factor[size] * passed - cost_usd
      - wall_cost[priority] * wall_minutes - fail_penalty * (1 - passed)
      (values from the world profile; see docs/sim.md).
    metrics:
      all_gates_pass: max
      cost_usd: min
      duration_ms: min
"""


def sim_config_yaml(profile: SimProfile, profile_ref: str | Path = "default", seed: int | None = None) -> str:
    """A commented ``.cyntra/config.yaml`` for a sim workspace (seed defaults to the profile's)."""
    obj = profile.objective
    return _CONFIG.format(
        profile_ref=_yaml_scalar(str(profile_ref)),
        seed=profile.seed if seed is None else int(seed),
        value_by_priority=json.dumps(obj.value_by_priority),
        value_size_factor=json.dumps(obj.value_size_factor),
        wall_cost_per_minute=json.dumps(obj.wall_cost_per_minute),
        fail_penalty=json.dumps(obj.fail_penalty),
    )


def sim_universe_files(profile: SimProfile, profile_ref: str | Path = "default") -> dict[str, str]:
    """Universe ``sim`` files, keyed by path relative to the workspace root."""
    ref = _yaml_scalar(str(profile_ref))
    return {
        f"universes/{UNIVERSE_ID}/universe.yaml": _UNIVERSE.format(profile_name=profile.name, profile_ref=ref),
        f"universes/{UNIVERSE_ID}/swarms.yaml": _SWARMS,
        f"universes/{UNIVERSE_ID}/objectives.yaml": _OBJECTIVES,
    }


def _yaml_scalar(text: str) -> str:
    """Quote a string for YAML (JSON strings are valid YAML scalars)."""
    return json.dumps(text)
