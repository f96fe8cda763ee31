"""Which adapter runs a toolchain: ``toolchains.<name>.adapter``, else the name when it is a
registered kind (codex, claude, opencode, crush, and whatever was registered, e.g. ``sim``),
else the generic ``command`` adapter.

A toolchain that cannot be built (unknown adapter kind, no argv) still gets an adapter: one whose
``available()`` is False and says why, so the kernel can report it and fall back.
"""

from __future__ import annotations

from collections.abc import Callable

from cyntra import clock
from cyntra.adapters.base import AdapterResult, RunRequest, ToolchainAdapter
from cyntra.adapters.cli_agents import CLI_SPECS, CliAgentAdapter
from cyntra.adapters.command import CommandAdapter
from cyntra.errors import ConfigError
from cyntra.kernel.config import ToolchainConfig

AdapterFactory = Callable[[str, ToolchainConfig], ToolchainAdapter]

_FACTORIES: dict[str, AdapterFactory] = {}


def register_adapter(kind: str, factory: AdapterFactory, *, replace: bool = False) -> None:
    """Make ``kind`` buildable (the simulator registers ``sim``). Re-registering needs ``replace``."""
    if kind in _FACTORIES and not replace:
        raise ValueError(f"adapter kind {kind!r} is already registered")
    _FACTORIES[kind] = factory


def registered_kinds() -> list[str]:
    return sorted(_FACTORIES)


def adapter_kind(name: str, toolchain_config: ToolchainConfig) -> str:
    if toolchain_config.adapter:
        return toolchain_config.adapter
    return name if name in _FACTORIES else "command"


class UnavailableAdapter:
    """Stands in for a toolchain that cannot run; ``run`` returns an ``error`` result."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def available(self) -> bool:
        return False

    def unavailable_reason(self) -> str | None:
        return self.reason

    def build_argv(self, request: RunRequest) -> list[str]:
        raise ConfigError(None, self.reason, field=f"toolchains.{self.name}")

    async def run(self, request: RunRequest) -> AdapterResult:
        now = clock.now()
        return AdapterResult(
            toolchain=self.name, model=request.model, status="error", started_at=now,
            completed_at=now, duration_ms=0, error=self.reason, confidence=0.0,
        )


def build_adapter(name: str, toolchain_config: ToolchainConfig | None = None) -> ToolchainAdapter:
    """The adapter for toolchain ``name`` as configured; never raises for a bad toolchain."""
    tc = toolchain_config or ToolchainConfig()
    kind = adapter_kind(name, tc)
    factory = _FACTORIES.get(kind)
    if factory is None:
        return UnavailableAdapter(
            name, f"toolchain {name!r}: unknown adapter {kind!r} (known: {', '.join(registered_kinds())})"
        )
    try:
        return factory(name, tc)
    except (ConfigError, ValueError, KeyError) as exc:
        return UnavailableAdapter(name, f"toolchain {name!r}: cannot build adapter {kind!r}: {exc}")


def _cli_factory(kind: str) -> AdapterFactory:
    def make(name: str, tc: ToolchainConfig) -> ToolchainAdapter:
        return CliAgentAdapter(name, tc, kind=kind)

    return make


for _kind in CLI_SPECS:
    register_adapter(_kind, _cli_factory(_kind))
register_adapter("command", CommandAdapter)
