"""The task prompt handed to a toolchain: the issue, its constraints and how it will be judged."""

from __future__ import annotations

from cyntra.state.issue import Issue


def render_prompt(issue: Issue, gates: dict[str, str]) -> str:
    lines = [f"# Task {issue.id}: {issue.title}", ""]
    if issue.description:
        lines += [issue.description.strip(), ""]
    lines += [
        f"Priority {issue.dk_priority}, risk {issue.dk_risk}, size {issue.dk_size}.",
    ]
    if issue.tags:
        lines.append("Tags: " + ", ".join(issue.tags))
    if issue.dk_forbidden_paths:
        lines += ["", "Do not modify these paths:"] + [f"- {p}" for p in issue.dk_forbidden_paths]
    if gates:
        lines += ["", "Your change is accepted only if these commands pass from the repository root:"]
        lines += [f"- {name}: `{cmd}`" for name, cmd in gates.items()]
    lines += ["", "Make the change in this working tree and commit it."]
    return "\n".join(lines) + "\n"
