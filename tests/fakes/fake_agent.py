#!/usr/bin/env python3
"""A fake agent CLI for tests: invoked as codex / claude / opencode / crush (symlinks to this file).

It really edits (and, in a git work tree, commits) files in its cwd, or fails, or hangs.
Behaviour comes from the environment:

  FAKE_<NAME>_MODE or FAKE_AGENT_MODE   edit (default) | nocommit | exit1 | exit2 | hang | noop
  FAKE_AGENT_FILE      file to write (default: <name>_output.txt)
  FAKE_AGENT_CONTENT   its content (default: "<name> was here" + the prompt's first line)
  FAKE_AGENT_LOG       append one JSON line per invocation: name, argv, cwd, stdin, env marker
  FAKE_AGENT_PIDFILE   (hang) write "<own pid> <child pid>"; the child also sleeps
  FAKE_AGENT_DELAY     seconds to work (sleep) before doing what the mode says
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    name = Path(sys.argv[0]).name
    mode = os.environ.get(f"FAKE_{name.upper()}_MODE") or os.environ.get("FAKE_AGENT_MODE", "edit")
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    prompt = stdin or (sys.argv[-1] if len(sys.argv) > 1 else "")

    log = os.environ.get("FAKE_AGENT_LOG")
    if log:
        record = {
            "name": name,
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "stdin": stdin,
            "env_marker": os.environ.get("FAKE_AGENT_MARKER"),
            "mode": mode,
        }
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    time.sleep(float(os.environ.get("FAKE_AGENT_DELAY", "0")))
    if mode == "hang":
        child = subprocess.Popen(["sleep", "600"])
        pidfile = os.environ.get("FAKE_AGENT_PIDFILE")
        if pidfile:
            Path(pidfile).write_text(f"{os.getpid()} {child.pid}\n")
        time.sleep(600)
        return 0
    if mode == "exit2":
        print(f"{name}: simulated failure", file=sys.stderr)
        return 2
    if mode == "noop":
        print(f"{name}: nothing to do")
        return 0

    target = Path(os.environ.get("FAKE_AGENT_FILE", f"{name}_output.txt"))
    first_line = prompt.strip().splitlines()[0] if prompt.strip() else ""
    content = os.environ.get("FAKE_AGENT_CONTENT", f"{name} was here\n{first_line}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    if mode == "edit" and Path(".git").exists():
        ident = ["-c", "user.name=Fake Agent", "-c", "user.email=fake@example.invalid"]
        subprocess.run(["git", *ident, "add", "-A"], check=True)
        subprocess.run(["git", *ident, "commit", "-q", "-m", f"{name}: edit {target}"], check=True)

    if name == "claude" and "json" in sys.argv:
        print(json.dumps({
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": f"edited {target}",
            "total_cost_usd": 0.0123,
            "usage": {"input_tokens": 1200, "output_tokens": 300,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 500},
        }))
    else:
        print(f"{name}: edited {target}")
    return 1 if mode == "exit1" else 0


if __name__ == "__main__":
    sys.exit(main())
