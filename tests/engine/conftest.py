"""Fixtures of the engine tests (helpers live in `engine_fixtures`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fixtures import write_tiny_data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a two-set dataset: `seg` (semantic PNGs) and `tag` (tagging JSON), 8 frames each."""
    return write_tiny_data(tmp_path_factory.mktemp("tiny_data"))
