"""Every fault is observable by a real pymodbus client, switches on and off at run time, and is counted."""
from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError
from pymodbus.exceptions import ModbusException

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import RtuOverTcpTransport, SimDeviceSpec, TcpTransport, listening_socket

POINTS = [RegisterPoint(i, f"r{i}", Table.HOLDING, i, "uint16") for i in range(20)]


def device(name: str = "d", unit: int = 1, transport=None) -> SimDeviceSpec:
    return SimDeviceSpec(name=name, unit_id=unit, transport=transport or TcpTransport(), points=POINTS)


async def read(client, address: int = 0, count: int = 4, unit: int = 1):
    return await client.read_holding_registers(address, count=count, device_id=unit)


async def test_silence_times_out_then_recovers(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"), timeout=0.3)
    plant.set_fault("d", "silence")
    with pytest.raises(ModbusException):
        await read(client)
    assert plant.stats("d").dropped == 1
    plant.clear_fault("d")
    client = await connect(plant.address("d"))
    assert not (await read(client)).isError()


async def test_busy_answers_exception_6(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"))
    plant.set_fault("d", "busy")
    rr = await read(client)
    assert rr.isError() and rr.exception_code == 6
    assert plant.stats("d").exceptions == {6: 1}
    plant.clear_fault("d", "busy")
    assert not (await read(client)).isError()


async def test_illegal_address_only_inside_the_hole(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"))
    plant.set_fault("d", "illegal_address", start=8, count=2, table="holding")
    assert not (await read(client, 0, 8)).isError()  # ends just before the hole
    assert not (await read(client, 10, 5)).isError()  # starts just after it
    for address, count in ((0, 9), (9, 1), (5, 10)):
        rr = await read(client, address, count)
        assert rr.isError() and rr.exception_code == 2, (address, count)


async def test_illegal_address_respects_the_table(start_plant, connect) -> None:
    points = [*POINTS, RegisterPoint(99, "i0", Table.INPUT, 0, "uint16"), RegisterPoint(98, "i1", Table.INPUT, 1, "uint16")]
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=points)])
    client = await connect(plant.address("d"))
    plant.set_fault("d", "illegal_address", start=0, count=1, table="input")
    assert (await client.read_input_registers(0, count=2, device_id=1)).exception_code == 2
    assert not (await read(client, 0, 2)).isError()


async def test_garbage_on_tcp_is_not_a_valid_reply(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"), timeout=0.5)
    plant.set_fault("d", "garbage")
    with pytest.raises(ModbusException):  # random bytes are no MBAP frame: the client gives up
        await read(client)
    assert plant.stats("d").corrupted == 1


async def test_bad_crc_is_refused_on_modbus_tcp_with_a_clear_message(start_plant) -> None:
    plant = await start_plant([device()])
    with pytest.raises(ValueError, match="bad_crc.*RTU framing.*use 'garbage'"):
        plant.set_fault("d", "bad_crc")


@pytest.mark.parametrize("fault", ["bad_crc", "garbage"])
async def test_corrupt_rtu_over_tcp_replies_fail_the_crc_check(start_plant, connect, fault: str) -> None:
    plant = await start_plant([device(transport=RtuOverTcpTransport())])
    client = await connect(plant.address("d"), rtu=True, timeout=0.5)
    assert not (await read(client)).isError()
    plant.set_fault("d", fault)
    with pytest.raises(ModbusException):
        await read(client)
    plant.clear_fault("d")
    client = await connect(plant.address("d"), rtu=True, timeout=0.5)
    assert not (await read(client)).isError()


async def test_slow_replies_arrive_after_the_delay(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"), timeout=2.0)
    plant.set_fault("d", "slow", delay_ms=300)
    t0 = time.monotonic()
    rr = await read(client)
    assert not rr.isError()
    assert time.monotonic() - t0 >= 0.3  # a lower bound: the reply cannot come before the delay


async def test_offline_device_closes_its_port_and_comes_back(start_plant, connect) -> None:
    plant = await start_plant([device()])
    address = plant.address("d")
    client = await connect(address, timeout=0.5)
    plant.set_fault("d", "offline")
    with pytest.raises(ModbusException):
        await read(client)
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)  # refused: nothing listens
    plant.clear_fault("d", "offline")
    client = await connect(address)
    assert not (await read(client)).isError()


async def test_offline_on_a_shared_port_silences_only_that_unit(start_plant, connect) -> None:
    held = listening_socket()
    port = held.getsockname()[1]
    plant = await start_plant([device("a", 1, TcpTransport(port=port)), device("b", 2, TcpTransport(port=port))],
                              sockets={port: held})
    client = await connect(("127.0.0.1", port), timeout=0.3)
    plant.set_fault("a", "offline")
    assert not (await read(client, unit=2)).isError()
    with pytest.raises(ModbusException):
        await read(client, unit=1)


async def test_intermittent_fault_hits_some_requests(start_plant, connect) -> None:
    plant = await start_plant([device()])
    client = await connect(plant.address("d"))
    plant.set_fault("d", "busy", probability=0.5)
    codes = [(await read(client)).isError() for _ in range(60)]
    assert 5 < sum(codes) < 55
    assert plant.stats("d").exceptions[6] == sum(codes)


def test_fault_parameters_are_validated_with_clear_messages() -> None:
    from drivers.modbus.sim import SimPlant

    plant = SimPlant([device()])
    with pytest.raises(ValidationError, match="fault"):
        plant.set_fault("d", "on_fire")
    with pytest.raises(ValidationError, match="delay_ms > 0"):
        plant.set_fault("d", "slow")
    with pytest.raises(ValidationError, match="probability"):
        plant.set_fault("d", "busy", probability=2)
    with pytest.raises(ValidationError, match="Extra inputs"):
        plant.set_fault("d", "busy", delay=5)
    with pytest.raises(KeyError, match="no simulated device 'x'"):
        plant.set_fault("x", "busy")
