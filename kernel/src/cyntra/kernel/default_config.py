"""The commented default ``.cyntra/config.yaml`` that ``cyntra init`` writes."""

from __future__ import annotations

#: The policy file the default config names, relative to the workspace (``cyntra init`` writes it).
DEFAULT_POLICY = "policies/default.yaml"

DEFAULT_CONFIG_YAML = """\
version: "1.0"

# Cyntra kernel configuration. Upstream keys are read unchanged; the keys marked
# "(planner)" configure the decision engine. Unknown keys are warned about, never fatal.

# ============================================
# SCHEDULING
# ============================================
scheduling:
  max_concurrent_workcells: 3     # lanes; a speculating issue takes parallelism lanes
  max_concurrent_tokens: 300000   # sum of dk_estimated_tokens x candidates in flight
  starvation_threshold_hours: 4   # waiting longer raises an issue's priority one level

# ============================================
# TOOLCHAINS
# ============================================
toolchain_priority: [codex, claude, opencode, crush]

toolchains:
  codex:
    enabled: true
    path: codex                   # binary on PATH
    default_model: gpt-5.2
    timeout_minutes: 60
    config:
      sandbox: workspace-write
      ask_for_approval: never
  claude:
    enabled: true
    path: claude
    default_model: claude-opus-4-5-20251101
    timeout_minutes: 60
    config:
      skip_permissions: true
      output_format: json
      allowed_tools: ["Edit", "Write", "Bash", "Read"]
  opencode:
    enabled: true
    path: opencode
    default_model: openai/gpt-5-nano
    timeout_minutes: 45
  crush:
    enabled: true
    path: crush
    timeout_minutes: 45
  # Any other command: the generic adapter fills an argv template (no shell).
  # my-agent:
  #   adapter: command
  #   argv: ["python", "agent.py", "--prompt-file", "{prompt_file}", "--model", "{model}"]
  #   env: {MY_AGENT_MODE: batch}
  #   timeout_minutes: 30

# ============================================
# ROUTING (first match wins)
# ============================================
routing:
  rules:
    - match: { dk_tool_hint: "codex" }
      use: [codex]
    - match: { dk_tool_hint: "claude" }
      use: [claude]
    - match: { dk_tool_hint: "opencode" }
      use: [opencode]
    - match: { dk_tool_hint: "crush" }
      use: [crush]
    - match: { dk_risk: ["critical"] }
      speculate: true
      parallelism: 3
      use: [codex, claude, crush]
    - match: { dk_risk: ["high"] }
      speculate: true
      parallelism: 2
      use: [codex, claude]
    - match: { dk_size: ["XL"] }
      use: [codex]
    - match: { tags_any: ["architecture", "complex", "kernel", "deep-reasoning"] }
      use: [codex]
    - match: { dk_risk: ["low"], dk_size: ["XS", "S"] }
      use: [opencode]
    - match: {}
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
# EXPLORATION CONTROL (reads .cyntra/dynamics/dynamics_report.json)
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
# QUALITY GATES (shell commands, run from the workcell root)
# ============================================
gates:
  test_command: null              # e.g. "pytest -q"
  typecheck_command: null         # e.g. "mypy src"
  lint_command: null              # e.g. "ruff check ."
  build_command: null
  timeout_seconds: 900
  retry_flaky: 1

# ============================================
# DECISION ENGINE (planner)
# ============================================
# heuristic: today's rules decide.
# shadow:    the heuristic decides; the candidate (urm) is computed and recorded beside it.
# urm:       the learned planner decides (after the policy clamp), falling back to the
#            heuristic with a recorded reason on any failure.
strategy: heuristic

planner:
  checkpoint: null                # directory written by `cyntra planner train`
  device: auto                    # auto | cpu | cuda
  latency_budget_ms: 50           # a slower model decision falls back to the heuristic
  min_confidence: 0.0             # below this the heuristic's plan is applied

policy: policies/default.yaml     # the clamp every plan passes before it runs

exploration:
  epsilon: 0.0                    # >0: sometimes apply another clamp-allowed plan (logged with its propensity)
  candidate_share: 0.0            # shadow: share of those draws that apply the candidate's plan (OPE support)

workcells:
  backend: auto                   # auto | git | directory
"""
