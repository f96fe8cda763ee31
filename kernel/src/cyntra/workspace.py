"""Where things live in a Cyntra workspace (one place, so no module hard-codes a path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Workspace:
        return cls(Path(root).resolve())

    @property
    def beads_dir(self) -> Path:
        return self.root / ".beads"

    @property
    def issues_path(self) -> Path:
        return self.beads_dir / "issues.jsonl"

    @property
    def deps_path(self) -> Path:
        return self.beads_dir / "deps.jsonl"

    @property
    def cyntra_dir(self) -> Path:
        return self.root / ".cyntra"

    @property
    def config_path(self) -> Path:
        return self.cyntra_dir / "config.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.cyntra_dir / "logs"

    @property
    def events_path(self) -> Path:
        return self.logs_dir / "events.jsonl"

    @property
    def workcells_dir(self) -> Path:
        return self.cyntra_dir / "workcells"

    @property
    def archives_dir(self) -> Path:
        return self.cyntra_dir / "archives"

    @property
    def decisions_dir(self) -> Path:
        return self.cyntra_dir / "decisions"

    @property
    def dynamics_report_path(self) -> Path:
        return self.cyntra_dir / "dynamics" / "dynamics_report.json"

    @property
    def runs_dir(self) -> Path:
        return self.cyntra_dir / "runs"

    @property
    def index_dir(self) -> Path:
        return self.cyntra_dir / "index"

    @property
    def universes_dir(self) -> Path:
        return self.root / "universes"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"
