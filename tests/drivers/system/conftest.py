"""Fixtures for the system driver tests: a real VictoriaMetrics (tests/fixtures/tsdb.py)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.tsdb import victoria_metrics  # noqa: E402,F401 - fixture
