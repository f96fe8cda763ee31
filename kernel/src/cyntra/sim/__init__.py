"""The simulated agent world: the embedded default backend and the measuring instrument.

``profile`` (the YAML world profile), ``population`` (issue generator), ``world`` (one candidate
run's outcome, seeded and reproducible), ``objective`` (utility and how candidates combine),
``oracle`` (expected utility of every plan, best plan, regret) and ``workspace_template``
(config + universe files of a sim workspace). Downstream code (datasets, training) must not
import this package: it reads archives and the issues store only.
"""

from __future__ import annotations

from cyntra.sim.objective import PlanOutcome, combine_serial, combine_speculate, utility
from cyntra.sim.oracle import (
    PlanEstimate,
    SimpleRouting,
    best_plan,
    expected_utility,
    oracle_table,
    regret,
    toolchains_for_plan,
)
from cyntra.sim.population import generate_issues
from cyntra.sim.profile import SimProfile, load_profile
from cyntra.sim.world import CandidateOutcome, sample_candidate

__all__ = [
    "CandidateOutcome",
    "PlanEstimate",
    "PlanOutcome",
    "SimProfile",
    "SimpleRouting",
    "best_plan",
    "combine_serial",
    "combine_speculate",
    "expected_utility",
    "generate_issues",
    "load_profile",
    "oracle_table",
    "regret",
    "sample_candidate",
    "toolchains_for_plan",
    "utility",
]
