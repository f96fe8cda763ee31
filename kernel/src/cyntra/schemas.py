"""Access to the JSON Schemas in ``kernel/schemas/cyntra/`` (bundled as ``cyntra/_schemas``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from cyntra.errors import InputError


def schema_dir() -> Path:
    bundled = Path(__file__).parent / "_schemas"
    if bundled.is_dir():
        return bundled
    # Editable install / source checkout: kernel/src/cyntra -> kernel/schemas/cyntra
    return Path(__file__).resolve().parents[2] / "schemas" / "cyntra"


@functools.lru_cache(maxsize=64)
def load_schema(name: str) -> dict[str, Any]:
    """Load ``<name>.schema.json`` (``name`` without the suffix)."""
    path = schema_dir() / f"{name}.schema.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@functools.lru_cache(maxsize=64)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def schema_errors(name: str, instance: Any) -> list[str]:
    """Every violation as ``path: message`` (empty when valid)."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    out = []
    for err in errors:
        loc = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{loc}: {err.message}")
    return out


def validate(name: str, instance: Any, *, path: str | Path | None = None) -> None:
    """Raise :class:`InputError` naming the file and the first failing field."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        loc = ".".join(str(p) for p in err.absolute_path) or "<root>"
        raise InputError(path, err.message, field=loc)
