"""Shared test fixtures: where ../shared lives, and the rule that CI must not skip tests needing it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TARDIS_SHARED", ROOT.parent / "shared"))
OPENFIELD = SHARED / "data" / "openfield-Pranav-2018-10-30"
FIXTURES = SHARED / "data" / "mmpose-fixtures"
GOLDEN = SHARED / "golden"


def _need(path: Path) -> Path:
    """Return ``path`` or skip; with TARDIS_REQUIRE_SHARED=1 (CI) a missing ../shared fails instead."""
    if path.exists():
        return path
    if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
        pytest.fail(f"{path} is missing but TARDIS_REQUIRE_SHARED=1: put the shared data at {SHARED}")
    pytest.skip(f"{path} not found (set TARDIS_SHARED or place ../shared beside the project)")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def openfield_dir() -> Path:
    return _need(OPENFIELD)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _need(FIXTURES)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _need(GOLDEN)


@pytest.fixture(autouse=True, scope="session")
def _limit_threads():
    # CI has 2 cores; torch's default intra-op pool plus pytest would oversubscribe them.
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield
