"""The generic ``command`` adapter: any program, its argv given as a template in the config.

.. code-block:: yaml

    toolchains:
      my-agent:
        adapter: command
        argv: ["python", "agent.py", "{prompt_file}", "--model", "{model}"]
        prompt_via: file        # file (default) | stdin | arg
        env: {AGENT_MODE: fast}

Placeholders (whole or inside an argument): {prompt_file}, {prompt}, {workcell}, {logs_dir},
{model}, {issue_id}, {workcell_id}, {temperature}, {top_p}, {timeout_seconds}; a value that is
not set becomes the empty string. Anything else in braces is a config error that makes the
toolchain unavailable (with the reason). The argv is never given to a shell.
``prompt_via: stdin`` also feeds the prompt on stdin; ``prompt_via: arg`` appends the prompt as
the last argument when the template has no ``{prompt}``. The prompt file is always written.
"""

from __future__ import annotations

import re

from cyntra.adapters.base import PromptVia, RunRequest, SubprocessAdapter
from cyntra.errors import ConfigError
from cyntra.kernel.config import ToolchainConfig

PLACEHOLDERS = frozenset({
    "prompt_file", "prompt", "workcell", "logs_dir", "model", "issue_id", "workcell_id",
    "temperature", "top_p", "timeout_seconds",
})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class CommandAdapter(SubprocessAdapter):
    kind = "command"
    default_prompt_via: PromptVia = "file"

    def __init__(self, name: str, config: ToolchainConfig | None = None) -> None:
        super().__init__(name, config)
        self.template = list(self.config.argv or [])
        self._config_error = self._check_template()

    def _check_template(self) -> str | None:
        if not self.template:
            return (f"toolchain {self.name!r} has no adapter for its name and no `argv` template "
                    "(set toolchains.<name>.argv or adapter)")
        for i, part in enumerate(self.template):
            for found in _PLACEHOLDER.findall(part):
                if found not in PLACEHOLDERS:
                    return (f"toolchains.{self.name}.argv[{i}]: unknown placeholder {{{found}}} "
                            f"(known: {', '.join(sorted(PLACEHOLDERS))})")
        return None

    @property
    def executable(self) -> str:
        return self.template[0] if self.template else (self.config.path or self.name)

    def unavailable_reason(self) -> str | None:
        if self._config_error is not None:
            return self._config_error
        exe = self.executable
        if "{" in exe:
            return None  # resolved per run
        if not exe.startswith("/") and "/" in exe:
            return None  # relative to the workcell: only known at run time
        return super().unavailable_reason()

    def values(self, request: RunRequest) -> dict[str, str]:
        return {
            "prompt_file": str(request.prompt_file),
            "prompt": self.prompt_text(request),
            "workcell": str(request.workcell_path),
            "logs_dir": str(request.logs_dir),
            "model": _fmt(self.model_for(request)),
            "issue_id": _fmt(request.issue_id),
            "workcell_id": _fmt(request.workcell_id),
            "temperature": _fmt(request.sampling.temperature),
            "top_p": _fmt(request.sampling.top_p),
            "timeout_seconds": _fmt(request.timeout_seconds),
        }

    def build_argv(self, request: RunRequest) -> list[str]:
        if self._config_error is not None:
            raise ConfigError(None, self._config_error, field=f"toolchains.{self.name}.argv")
        values = self.values(request)
        argv = [_PLACEHOLDER.sub(lambda m: values[m.group(1)], part) for part in self.template]
        if self.prompt_via == "arg" and not any("{prompt}" in part for part in self.template):
            argv.append(values["prompt"])
        return argv

