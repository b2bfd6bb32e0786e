"""Fixtures of the MQTT output tests: a real Mosquitto per test (mqtt_broker.py) and the test host."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from mqtt_broker import Mosquitto, Pki
from spb_host import SpbHost


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def hosts() -> Iterator[list[SpbHost]]:
    """Test hosts started by a test; stopped afterwards."""
    started: list[SpbHost] = []
    yield started
    for h in started:
        h.client.loop_stop()
        h.client.disconnect()
