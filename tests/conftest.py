"""Shared fixtures. Upstream files are read from ``../shared/upstream-cyntra`` (beside the clone)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Shared 2-core machines are noisy: judge properties, not how fast inputs are generated.
settings.register_profile("cyntra", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("cyntra")

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_DIR = REPO_ROOT.parent / "shared" / "upstream-cyntra"


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    """The real upstream Cyntra workspace files (read-only). Skips when not laid beside the clone."""
    if not UPSTREAM_DIR.is_dir():
        pytest.skip(f"upstream files not found at {UPSTREAM_DIR}")
    return UPSTREAM_DIR
