"""Regenerate the JSON Schemas of the report artifacts from their pydantic models.

The record schemas (decision, manifest, proof, ...) are written by hand to accept the upstream
files; the reports below are ours alone, so their schema is the model's own
(``tests/test_report_schemas.py`` fails when a model changes and its schema was not regenerated).
Usage: ``python scripts/gen_report_schemas.py``.
"""

from __future__ import annotations

import json

from cyntra.schemas import schema_dir
from cyntra.schemas_reports import REPORT_SCHEMAS, generated_schema


def main() -> None:
    for name in REPORT_SCHEMAS:
        path = schema_dir() / f"{name}.schema.json"
        path.write_text(json.dumps(generated_schema(name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
