"""Fixtures for the simulator tests: started plants and real pymodbus clients, stopped afterwards."""
from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient  # noqa: E402
from pymodbus.framer import FramerType  # noqa: E402

from drivers.modbus.sim import SimDeviceSpec, SimPlant  # noqa: E402

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # fault tests provoke errors on purpose


@pytest.fixture
async def start_plant() -> AsyncIterator[Callable]:
    """``plant = await start_plant(specs)``: a started SimPlant, stopped after the test."""
    plants: list[SimPlant] = []

    async def start(specs: list[SimDeviceSpec], **kwargs) -> SimPlant:
        plant = SimPlant(specs, **kwargs)
        plants.append(plant)
        await plant.start()
        return plant

    yield start
    for plant in plants:
        await plant.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable]:
    """``client = await connect(address, rtu=False, timeout=1.0, baud=9600)``: a connected pymodbus client.

    ``address`` is (host, port) for TCP (``rtu=True``: RTU framing on TCP) or a pty path for serial.
    Clients never retry, so every fault shows up on the first request.
    """
    clients: list = []

    async def make(address, *, rtu: bool = False, timeout: float = 1.0, baud: int = 9600):
        if isinstance(address, str):
            client = AsyncModbusSerialClient(
                address, baudrate=baud, parity="N", bytesize=8, stopbits=1, timeout=timeout, retries=0
            )
        else:
            host, port = address
            client = AsyncModbusTcpClient(
                host, port=port, timeout=timeout, retries=0, framer=FramerType.RTU if rtu else FramerType.SOCKET
            )
        clients.append(client)
        assert await client.connect(), f"could not connect to {address}"
        return client

    yield make
    for client in clients:
        client.close()
