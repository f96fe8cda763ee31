"""The simulated agent world: the embedded default backend and the measuring instrument.

``profile`` (the YAML world profile), ``population`` (issue generator), ``world`` (one candidate
run's outcome, seeded and reproducible), ``objective`` (utility and how candidates combine),
``oracle`` (expected utility of every plan, best plan, regret) and ``workspace_template``
(config + universe files of a sim workspace). Downstream code (datasets, training) must not
import this package: it reads archives and the issues store only.
"""

from __future__ import annotations

# Submodules are imported where they are used (``from cyntra.sim.oracle import ...``): importing
# this package stays cheap, which matters for short-lived sim world candidate processes.
