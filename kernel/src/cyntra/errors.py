"""Errors that name the file, line and field, so an operator can fix their input."""

from __future__ import annotations

from pathlib import Path


class CyntraError(Exception):
    """Base class for every error the kernel raises on purpose."""


class InputError(CyntraError):
    """Bad user input: carries where it is (path, line, field) and why it is refused."""

    def __init__(
        self,
        path: str | Path | None,
        reason: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(self.location() + reason)

    def location(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if self.line is not None:
            parts.append(str(self.line))
        loc = ":".join(parts)
        if self.field:
            loc = f"{loc}: {self.field}" if loc else self.field
        return f"{loc}: " if loc else ""


class ConfigError(InputError):
    """A config, universe or policy file that cannot be used."""
