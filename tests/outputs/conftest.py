"""Fixtures for the exporter tests: real VictoriaMetrics / InfluxDB 1.x servers (tests/fixtures/tsdb.py)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.tsdb import influxdb1, victoria_metrics  # noqa: E402,F401 - fixtures
