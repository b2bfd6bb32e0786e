"""The subprocess variant: servers in child processes, the same control calls, clean shutdown."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.exceptions import ModbusException

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import SerialTransport, SignalSpec, SimDeviceSpec, SimPlantProcess, TcpTransport

ROOT = Path(__file__).resolve().parents[4]
POINTS = [RegisterPoint(0, "level", Table.HOLDING, 0, "float32", low=0, high=10),
          RegisterPoint(1, "setpoint", Table.HOLDING, 2, "uint16", writable=True)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_children_serve_and_obey_control_calls(connect, tmp_path) -> None:
    specs = [SimDeviceSpec(name=f"tcp{i}", unit_id=1, transport=TcpTransport(), points=POINTS) for i in range(4)]
    specs.append(SimDeviceSpec(name="rtu", unit_id=2, transport=SerialTransport(path=str(tmp_path / "tty"), baud=115200),
                               points=POINTS))
    plant = SimPlantProcess(specs, processes=2, seed=3)
    await plant.start()
    try:
        pids = plant.pids()
        assert len(pids) == 2 and os.getpid() not in pids
        client = await connect(plant.address("tcp3"), timeout=0.5)
        plant.set_value("tcp3", "level", 7.25)
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert rr.registers == plant.get_registers("tcp3", "holding", 0, 2) == [0x40E8, 0]  # 7.25 as float32
        assert not (await client.write_register(2, 42, device_id=1)).isError()
        assert plant.get_value("tcp3", "setpoint") == 42
        plant.set_fault("tcp3", "busy")
        assert (await client.read_holding_registers(0, count=1, device_id=1)).exception_code == 6
        plant.clear_fault("tcp3")
        plant.set_fault("tcp3", "silence")
        with pytest.raises(ModbusException):
            await client.read_holding_registers(0, count=1, device_id=1)
        plant.clear_fault("tcp3")
        stats = plant.stats("tcp3")
        assert stats.requests == 4 and stats.dropped == 1 and stats.exceptions == {6: 1} and stats.writes == 1
        serial = await connect(plant.address("rtu"), baud=115200)
        assert not (await serial.read_holding_registers(0, count=3, device_id=2)).isError()
        with pytest.raises(KeyError, match="no simulated device 'nope'"):
            plant.set_value("nope", "level", 1)
        with pytest.raises(ValueError, match="delay_ms > 0"):
            plant.set_fault("tcp0", "slow")
        with pytest.raises(KeyError, match="no point 'x'"):
            plant.get_value("tcp0", "x")
    finally:
        await plant.stop()
    assert not any(pid_alive(p) for p in pids)
    assert not os.path.exists(tmp_path / "tty")  # socat is gone with its links


async def test_release_lets_a_pinned_signal_move_again() -> None:
    spec = SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=POINTS, update_interval_ms=10,
                         signals={"level": SignalSpec(kind="ramp", low=0, high=10, period_s=0.5)})
    async with SimPlantProcess([spec]) as plant:
        plant.set_value("d", "level", 99)  # outside the range on purpose: tests provoke Bad_OutOfRange
        await asyncio.sleep(0.05)
        assert plant.get_value("d", "level") == 99
        plant.release("d", "level")
        await asyncio.sleep(0.05)  # the next update rewrites it
        seen = set()
        for _ in range(20):
            seen.add(plant.get_value("d", "level"))
            await asyncio.sleep(0.01)
        assert len(seen) > 3 and all(0 <= v <= 10 for v in seen)


@pytest.mark.skipif(shutil.which("socat") is None, reason="Debian package socat is not installed")
def test_blocking_runner_stops_cleanly_on_sigterm(tmp_path) -> None:
    path = tmp_path / "ttyRun"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from drivers.modbus.points import RegisterPoint, Table\n"
        "from drivers.modbus.sim import SerialTransport, SimDeviceSpec, TcpTransport, run_blocking\n"
        "pts = [RegisterPoint(0, 'v', Table.HOLDING, 0, 'uint16')]\n"
        "specs = [SimDeviceSpec(name='a', unit_id=1, transport=TcpTransport(), points=pts),\n"
        "         SimDeviceSpec(name='b', unit_id=1, transport=SerialTransport(path=sys.argv[2]), points=pts)]\n"
        "sys.exit(run_blocking(specs))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("simulating 2 devices on 2 endpoints"), first
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "tcp 127.0.0.1:" in lines[0] and str(path) in lines[1]
        assert path.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read().strip() == "simulator stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.exists()  # socat killed, its links removed


@pytest.mark.skipif(shutil.which("socat") is None, reason="Debian package socat is not installed")
def test_children_and_socat_go_away_when_the_parent_is_killed(tmp_path) -> None:
    path = tmp_path / "ttyOrphan"
    script = (
        "import asyncio, sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from drivers.modbus.points import RegisterPoint, Table\n"
        "from drivers.modbus.sim import SerialTransport, SimDeviceSpec, SimPlantProcess\n"
        "async def main():\n"
        "    pts = [RegisterPoint(0, 'v', Table.HOLDING, 0, 'uint16')]\n"
        "    plant = SimPlantProcess([SimDeviceSpec(name='a', unit_id=1, transport=SerialTransport(path=sys.argv[2]),"
        " points=pts)])\n"
        "    await plant.start()\n"
        "    print(plant.pids()[0], flush=True)\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert pid_alive(child) and path.exists()
    finally:
        parent.kill()  # SIGKILL: no clean-up code runs in the parent
        parent.wait()
    deadline = time.monotonic() + 15
    while (pid_alive(child) or path.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child) and not path.exists()
