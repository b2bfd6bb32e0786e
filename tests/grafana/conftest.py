"""Fixtures for the Grafana tests: a real InfluxDB 1.x (tests/fixtures/tsdb.py) and the test sites."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (ROOT, HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from tests.fixtures.tsdb import influxdb1  # noqa: E402,F401 - fixture
