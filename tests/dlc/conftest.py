"""Tests that call DeepLabCut's own code: they run in the DeepLabCut environment (``make test-dlc``, .venv-dlc from
scripts/setup_dlc_env.sh), never in the main run (pyproject's ``norecursedirs``).

Without an importable ``deeplabcut`` every test here is skipped; with TARDIS_REQUIRE_DLC=1 (CI) each fails instead.
Test modules here import deeplabcut inside fixtures or tests, not at module level, so that this rule decides.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRE_ENV = "TARDIS_REQUIRE_DLC"


def _deeplabcut_missing() -> str | None:
    """Why DeepLabCut cannot be used here, or None when it imports."""
    if importlib.util.find_spec("deeplabcut") is None:
        return "deeplabcut is not installed"
    try:
        import deeplabcut  # noqa: F401
    except Exception as error:  # an install that does not import (a torchvision beside the wrong torch, say)
        return f"import deeplabcut failed: {type(error).__name__}: {error}"
    return None


@pytest.fixture(autouse=True, scope="session")
def _deeplabcut_importable() -> None:
    reason = _deeplabcut_missing()
    if reason is None:
        return
    how = "run `bash scripts/setup_dlc_env.sh`, then `make test-dlc`"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, but {REQUIRE_ENV}=1: {how}")
    pytest.skip(f"{reason}: {how}")
