"""Shared test fixtures: where the real-format sample files live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """`../shared/fixtures` beside the checkout; tests using it skip where it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(
            f"real-format fixtures not found at {FIXTURES} (../shared is not beside the repo)"
        )
    return FIXTURES
