"""Make the synthetic-batch helpers of tests/tasks (`batches.py`) importable from model tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
