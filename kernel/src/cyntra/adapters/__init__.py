"""Toolchain adapters: run an agent CLI (or any command) in a workcell under a time budget."""

from cyntra.adapters.base import (
    AdapterResult,
    ProcessResult,
    PromptVia,
    RunRequest,
    Sampling,
    Status,
    SubprocessAdapter,
    ToolchainAdapter,
    build_env,
    parse_usage,
    run_process,
    status_from_exit_code,
)
from cyntra.adapters.cli_agents import CLI_SPECS, CliAgentAdapter
from cyntra.adapters.command import PLACEHOLDERS, CommandAdapter
from cyntra.adapters.registry import (
    UnavailableAdapter,
    adapter_kind,
    build_adapter,
    register_adapter,
    registered_kinds,
)
from cyntra.adapters.telemetry import TelemetryWriter

__all__ = [
    "CLI_SPECS",
    "PLACEHOLDERS",
    "AdapterResult",
    "CliAgentAdapter",
    "CommandAdapter",
    "ProcessResult",
    "PromptVia",
    "RunRequest",
    "Sampling",
    "Status",
    "SubprocessAdapter",
    "TelemetryWriter",
    "ToolchainAdapter",
    "UnavailableAdapter",
    "adapter_kind",
    "build_adapter",
    "build_env",
    "parse_usage",
    "register_adapter",
    "registered_kinds",
    "run_process",
    "status_from_exit_code",
]
