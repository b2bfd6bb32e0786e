"""Fixtures of the intelligence tests: a room with a temperature sensor and a fan coil, both simulated
by real pymodbus servers, polled by the real appliance with OPC UA, the spool forwarding to a real
VictoriaMetrics, and the Intelligence object (alarms, rules, HTTP API) on top."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from room_site import Room

from edge.api.tokens import add_token
from edge.intelligence.service import Intelligence
from tests.fixtures.tsdb import victoria_metrics  # noqa: F401 - fixture


@pytest.fixture
async def make_room(make_site, tmp_path: Path) -> AsyncIterator[Callable]:
    """``room = await make_room(config_text)``: site + started Intelligence with a viewer and an operator token."""

    async def make(text: str) -> Room:
        viewer = add_token(tmp_path / "tokens.txt", "view", "viewer")
        operator = add_token(tmp_path / "tokens.txt", "op", "operator")
        site = await make_site(text)  # the appliance starts its Intelligence; make_site stops it
        intel = site.app.intelligence
        assert isinstance(intel, Intelligence) and intel.started
        return Room(site, intel, viewer, operator)

    yield make
