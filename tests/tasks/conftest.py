"""Make the shared synthetic-batch helpers (`batches.py`) importable from the task tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
