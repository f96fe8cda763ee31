"""The four agent CLIs upstream Cyntra dispatches to: codex, claude, opencode, crush.

Each is one table row: how to build its non-interactive command line from the model, the
toolchain's ``config:`` block and the sampling settings, and how it takes the prompt. Everything
else (prompt file, env, timeout, logs, telemetry) is :class:`SubprocessAdapter`.

Command lines (``<exe>`` is the toolchain's ``path``, default its name):

* codex    ``<exe> exec [--model M] --sandbox S -c approval_policy="A" [-c model_reasoning_effort="E"]
  [-c temperature=T -c top_p=P] [--skip-git-repo-check] [extra_args…] -`` (prompt on stdin).
  ``codex exec`` rejects ``--ask-for-approval`` (openai/codex#13614), so ``ask_for_approval``
  is passed as the ``approval_policy`` config override.
* claude   ``<exe> -p [--model M] [--output-format F] [--allowedTools a,b] [--dangerously-skip-permissions]
  [extra_args…]`` (prompt on stdin; ``ultrathink: true`` prefixes it). JSON output carries usage/cost.
* opencode ``<exe> run [--model M] [--agent A] [extra_args…]`` (prompt on stdin).
* crush    ``<exe> [-y] run --quiet [--model M] [extra_args…]`` (prompt on stdin; ``auto_approve`` → ``-y``).

``prompt_via: arg`` puts the prompt text as the last argument instead; ``prompt_via: file`` passes
a pointer to ``logs/prompt.md`` (``@path`` for claude, an instruction sentence otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cyntra.adapters.base import PromptVia, RunRequest, Sampling, SubprocessAdapter
from cyntra.kernel.config import ToolchainConfig

ArgvBuilder = Callable[[str, str | None, dict[str, Any], Sampling], list[str]]


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _codex(exe: str, model: str | None, cfg: dict[str, Any], sampling: Sampling) -> list[str]:
    argv = [exe, "exec"]
    if model:
        argv += ["--model", model]
    argv += ["--sandbox", str(cfg.get("sandbox", "workspace-write"))]
    approval = cfg.get("ask_for_approval", "never")
    argv += ["-c", f"approval_policy={json.dumps(str(approval))}"]
    effort = cfg.get("model_reasoning_effort", cfg.get("reasoning_effort"))
    if effort:
        argv += ["-c", f"model_reasoning_effort={json.dumps(str(effort))}"]
    if sampling.temperature is not None:
        argv += ["-c", f"temperature={float(sampling.temperature)}"]
    if sampling.top_p is not None:
        argv += ["-c", f"top_p={float(sampling.top_p)}"]
    if _flag(cfg, "skip_git_repo_check", False):
        argv.append("--skip-git-repo-check")
    return argv


def _claude(exe: str, model: str | None, cfg: dict[str, Any], sampling: Sampling) -> list[str]:
    argv = [exe, "-p"]
    if model:
        argv += ["--model", model]
    if cfg.get("output_format"):
        argv += ["--output-format", str(cfg["output_format"])]
    tools = cfg.get("allowed_tools")
    if isinstance(tools, list) and tools:
        argv += ["--allowedTools", ",".join(str(t) for t in tools)]
    elif isinstance(tools, str) and tools:
        argv += ["--allowedTools", tools]
    if _flag(cfg, "skip_permissions", True):
        argv.append("--dangerously-skip-permissions")
    return argv


def _opencode(exe: str, model: str | None, cfg: dict[str, Any], sampling: Sampling) -> list[str]:
    argv = [exe, "run"]
    if model:
        argv += ["--model", model]
    if cfg.get("agent"):
        argv += ["--agent", str(cfg["agent"])]
    return argv


def _crush(exe: str, model: str | None, cfg: dict[str, Any], sampling: Sampling) -> list[str]:
    argv = [exe]
    if _flag(cfg, "auto_approve", True):
        argv.append("-y")
    argv += ["run", "--quiet"]
    if model:
        argv += ["--model", model]
    return argv


@dataclass(frozen=True)
class CliSpec:
    """One agent CLI: its argv builder, how it reads the prompt, and its prompt-file pointer."""

    build: ArgvBuilder
    prompt_via: PromptVia = "stdin"
    stdin_marker: str | None = None  # an argument that tells the CLI to read stdin (codex: "-")
    file_pointer: str = "Read {prompt_file} and complete the task it describes."


CLI_SPECS: dict[str, CliSpec] = {
    "codex": CliSpec(_codex, stdin_marker="-"),
    "claude": CliSpec(_claude, file_pointer="@{prompt_file}"),
    "opencode": CliSpec(_opencode),
    "crush": CliSpec(_crush),
}


class CliAgentAdapter(SubprocessAdapter):
    """An agent CLI from :data:`CLI_SPECS`."""

    def __init__(self, name: str, config: ToolchainConfig | None = None, *, kind: str | None = None) -> None:
        super().__init__(name, config)
        self.kind = kind or name
        if self.kind not in CLI_SPECS:
            raise KeyError(f"no CLI spec for {self.kind!r}")
        self.spec = CLI_SPECS[self.kind]
        self.default_binary = self.kind
        self.default_prompt_via = self.spec.prompt_via

    def prompt_text(self, request: RunRequest) -> str:
        prompt = request.prompt
        if self.kind == "claude" and _flag(self.options(request), "ultrathink", False) \
                and "ultrathink" not in prompt:
            prompt = f"ultrathink\n\n{prompt}"
        return prompt

    def build_argv(self, request: RunRequest) -> list[str]:
        cfg = self.options(request)
        argv = self.spec.build(self.executable, self.model_for(request), cfg, request.sampling)
        extra = cfg.get("extra_args")
        if isinstance(extra, list):
            argv += [str(a) for a in extra]
        if self.prompt_via == "arg":
            argv.append(self.prompt_text(request))
        elif self.prompt_via == "file":
            argv.append(self.spec.file_pointer.format(prompt_file=request.prompt_file))
        elif self.spec.stdin_marker:
            argv.append(self.spec.stdin_marker)
        return argv
