"""RS-485 lines made of socat pty pairs: shared line, paced replies, faults, unplugging."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import time

import pytest
from pymodbus.exceptions import ModbusException

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import SerialTransport, SignalSpec, SimDeviceSpec

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="Debian package socat is not installed")

POINTS = [RegisterPoint(i, f"r{i}", Table.HOLDING, i, "uint16") for i in range(125)]


def line_devices(path: str, units=(1, 2, 3), baud: int = 9600) -> list[SimDeviceSpec]:
    transport = SerialTransport(path=path, baud=baud)
    return [SimDeviceSpec(name=f"dev{u}", unit_id=u, transport=transport, points=POINTS,
                          signals={"r0": SignalSpec(kind="constant", value=1000 + u)}) for u in units]


async def test_one_line_serves_several_units_and_ignores_unknown_ones(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyRS485")
    plant = await start_plant(line_devices(path, baud=115200))
    assert len(plant.endpoints) == 1 and plant.address("dev2") == path
    client = await connect(path, baud=115200, timeout=0.5)
    for u in (1, 2, 3):
        rr = await client.read_holding_registers(0, count=2, device_id=u)
        assert rr.registers[0] == 1000 + u
    with pytest.raises(ModbusException):  # nobody on the line answers unit 9: silence, as on RS-485
        await client.read_holding_registers(0, count=1, device_id=9)


async def test_replies_are_paced_at_the_baud_rate(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyS9600")
    plant = await start_plant(line_devices(path, units=(1,), baud=9600))
    client = await connect(path, baud=9600, timeout=2.0)
    char_s = 10 / 9600  # 8N1: start + 8 data + stop bits
    frame_s = (8 + 255) * char_s  # request (8 bytes) + reply (5 + 2 * 125 bytes) on the wire
    t0 = time.monotonic()
    rr = await client.read_holding_registers(0, count=125, device_id=1)
    elapsed = time.monotonic() - t0
    assert len(rr.registers) == 125 and rr.registers[0] == 1001
    assert elapsed >= frame_s  # a lower bound: the line cannot carry it faster
    assert plant.stats("dev1").replies == 1


@pytest.mark.parametrize("fault", ["bad_crc", "garbage", "silence"])
async def test_corrupt_or_missing_replies_fail_on_the_client(start_plant, connect, tmp_path, fault: str) -> None:
    path = str(tmp_path / "ttyF")
    plant = await start_plant(line_devices(path, units=(1, 2), baud=115200))
    client = await connect(path, baud=115200, timeout=0.3)
    plant.set_fault("dev1", fault)
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=4, device_id=1)
    rr = await client.read_holding_registers(0, count=4, device_id=2)  # the other device is fine
    assert rr.registers[0] == 1002
    plant.clear_fault("dev1")
    await asyncio.sleep(0.05)
    assert (await client.read_holding_registers(0, count=4, device_id=1)).registers[0] == 1001


async def test_busy_and_illegal_address_on_a_serial_line(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyE")
    plant = await start_plant(line_devices(path, units=(4,), baud=115200))
    client = await connect(path, baud=115200)
    plant.set_fault("dev4", "busy")
    assert (await client.read_holding_registers(0, count=1, device_id=4)).exception_code == 6
    plant.clear_fault("dev4")
    plant.set_fault("dev4", "illegal_address", start=50, count=10)
    assert (await client.read_holding_registers(45, count=6, device_id=4)).exception_code == 2
    assert not (await client.read_holding_registers(60, count=6, device_id=4)).isError()


async def test_writes_over_the_line_stick(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyW")
    points = [RegisterPoint(0, "speed_sp", Table.HOLDING, 0, "int16", scale=0.1, writable=True, low=-100, high=100),
              RegisterPoint(1, "enable", Table.COIL, 0, "bool", writable=True)]
    plant = await start_plant([SimDeviceSpec(name="vfd", unit_id=5, transport=SerialTransport(path=path, baud=57600),
                                             points=points, update_interval_ms=20)])
    client = await connect(path, baud=57600)
    assert not (await client.write_register(0, 0xFF38, device_id=5)).isError()  # -200 raw = -20.0
    assert not (await client.write_coil(0, True, device_id=5)).isError()
    await asyncio.sleep(0.1)
    assert plant.get_value("vfd", "speed_sp") == pytest.approx(-20.0)
    assert plant.get_value("vfd", "enable") == 1.0


async def test_unplugging_the_line_removes_the_port_and_plugging_restores_it(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyU")
    plant = await start_plant(line_devices(path, units=(1,), baud=115200))
    client = await connect(path, baud=115200, timeout=0.3)
    assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1001]
    await plant.unplug_line(path)
    assert not os.path.exists(path)
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=1, device_id=1)
    client.close()
    await plant.plug_line(path)
    assert os.path.exists(path)
    client = await connect(path, baud=115200)
    assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1001]


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="Debian package mbpoll is not installed")
async def test_mbpoll_reads_over_the_pty_pair(start_plant, tmp_path) -> None:
    path = str(tmp_path / "ttyM")
    plant = await start_plant(line_devices(path, units=(2,), baud=19200))
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "rtu", "-b", "19200", "-P", "none", "-a", "2", "-t", "4", "-0", "-r", "0", "-c", "3", "-1",
        path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    regs = [int(v) & 0xFFFF for _, v in re.findall(r"\[(\d+)\]:\s+(-?\d+)", out.decode())]
    assert regs == plant.get_registers("dev2", Table.HOLDING, 0, 3) and regs[0] == 1002


async def test_broadcast_writes_reach_every_device_and_nobody_answers(start_plant, connect, tmp_path) -> None:
    path = str(tmp_path / "ttyB")
    points = [RegisterPoint(0, "mode", Table.HOLDING, 0, "uint16", writable=True)]
    transport = SerialTransport(path=path, baud=115200)
    plant = await start_plant([SimDeviceSpec(name=f"d{u}", unit_id=u, transport=transport, points=points)
                               for u in (1, 2)])
    client = await connect(path, baud=115200, timeout=0.3)
    await client.write_register(0, 7, device_id=0, no_response_expected=True)
    await asyncio.sleep(0.1)
    assert plant.get_value("d1", "mode") == plant.get_value("d2", "mode") == 7
    assert (await client.read_holding_registers(0, count=1, device_id=2)).registers == [7]  # the line is quiet
