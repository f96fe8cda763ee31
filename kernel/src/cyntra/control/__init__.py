"""Exploration control: the heuristic's temperature / parallelism controller."""

from cyntra.control.controller import (
    DOMAINS,
    MODE_RANK,
    REPORT_PATH,
    ControlDecision,
    ExplorationController,
    issue_domain,
)

__all__ = [
    "DOMAINS",
    "MODE_RANK",
    "REPORT_PATH",
    "ControlDecision",
    "ExplorationController",
    "issue_domain",
]
