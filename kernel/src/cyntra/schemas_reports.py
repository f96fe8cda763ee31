"""The report artifacts whose JSON Schema is generated from their pydantic model.

Each entry: schema name → (model, title, description). ``scripts/gen_report_schemas.py`` writes
``kernel/schemas/cyntra/<name>.schema.json`` from :func:`generated_schema`; a test keeps the
committed files equal to it.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

REPORT_SCHEMAS: dict[str, tuple[str, str, str]] = {
    "strategy_diff": (
        "cyntra.strategy.diff:DiffReport",
        "Cyntra strategy diff report (cyntra.strategy_diff.v1)",
        "What `cyntra strategy diff --format json` writes: heuristic vs candidate agreement, confusion matrices, "
        "slices, priced deltas, clamp hits, fallbacks, latency and OPE estimates.",
    ),
    "run_report": (
        "cyntra.kernel.runner:RunReport",
        "Cyntra run report (cyntra.run_report.v1)",
        "What `cyntra run --json` prints: dispatches, outcomes, cost, recovered orphans and how the run stopped.",
    ),
    "sim_report": (
        "cyntra.sim.report:SimReport",
        "Cyntra sim report (cyntra.sim_report.v1)",
        "What `cyntra sim report --json` prints: the applied plans' realised and expected utility against "
        "the simulator's oracle, with intervals and slices.",
    ),
    "sim_benchmark": (
        "cyntra.sim.benchmark:BenchmarkResult",
        "Cyntra sim benchmark (cyntra.sim_benchmark.v1)",
        "`benchmark.json` from `cyntra sim benchmark`: each strategy's held-out figures against the oracle, "
        "slices, off-policy estimates beside the realised values, and the issue-8 target check.",
    ),
    "best_of_k_report": (
        "cyntra.planner.best_of_k:BestOfKReport",
        "Cyntra best-of-K report (cyntra.best_of_k_report.v1)",
        "`.cyntra/best_of_k/last_run.json` from `cyntra planner best-of-k`: what was labelled and what it cost.",
    ),
}


def report_model(name: str) -> type[BaseModel]:
    module, _, attr = REPORT_SCHEMAS[name][0].partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), attr)
    return model


def generated_schema(name: str) -> dict[str, Any]:
    """The schema file's content: the model's serialization schema plus ids and a description."""
    _, title, description = REPORT_SCHEMAS[name]
    body = report_model(name).model_json_schema(mode="serialization")
    body.pop("description", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://cyntra/schemas/cyntra/{name}.schema.json",
        **body,
        "title": title,
        "description": f"{description} Generated from {REPORT_SCHEMAS[name][0].replace(':', '.')} "
                       "(scripts/gen_report_schemas.py; tests/test_report_schemas.py keeps them equal).",
    }
