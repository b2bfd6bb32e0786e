"""Modbus TCP devices: every dtype and order reads back right, writes stick, signals move, mbpoll agrees."""
from __future__ import annotations

import asyncio
import re
import shutil
import struct
import time

import pytest
from pymodbus.client.mixin import ModbusClientMixin

from drivers.modbus.points import ORDERS, RegisterPoint, Table
from drivers.modbus.sim import RtuOverTcpTransport, SignalSpec, SimDeviceSpec, TcpTransport, listening_socket
from tests.drivers.modbus.sim.wire import struct_decode

VALUES = {"int16": -1234, "uint16": 54321, "int32": -123456789, "uint32": 3_000_000_000,
          "int64": -1_234_567_890_123, "uint64": 2**63 + 12345, "float32": 123.456, "float64": -9876.54321}


def typed_points(table: Table = Table.HOLDING) -> list[RegisterPoint]:
    """One point per dtype and order, packed one after the other."""
    points, address = [], 0
    for dtype in VALUES:
        for order in ORDERS:
            p = RegisterPoint(len(points), f"{dtype}_{order}", table, address, dtype, order)
            points.append(p)
            address = p.end
    return points


def constant_signals(points: list[RegisterPoint]) -> dict[str, SignalSpec]:
    return {p.name: SignalSpec(kind="constant", value=float(VALUES[p.dtype])) for p in points}


async def read_all(client, table: Table, count: int, unit: int = 1) -> list[int]:
    words: list[int] = []
    read = client.read_holding_registers if table is Table.HOLDING else client.read_input_registers
    for start in range(0, count, 125):
        rr = await read(start, count=min(125, count - start), device_id=unit)
        assert not rr.isError(), rr
        words += rr.registers
    return words


def check_words(words: list[int], points: list[RegisterPoint]) -> None:
    for p in points:
        got = struct_decode(words[p.address : p.end], p.dtype, p.order)
        want = VALUES[p.dtype]
        if p.dtype == "float32":
            assert got == pytest.approx(want, rel=1e-6), p.name
        elif p.dtype in ("int64", "uint64"):
            assert got == pytest.approx(want, rel=1e-15), p.name  # the constant signal is a float64
        else:
            assert got == want, p.name


async def test_every_dtype_and_order_through_the_signal_path(start_plant, connect) -> None:
    points = typed_points(Table.INPUT)
    spec = SimDeviceSpec(name="typed", unit_id=1, transport=TcpTransport(), points=points,
                         signals=constant_signals(points))
    plant = await start_plant([spec])
    client = await connect(plant.address("typed"))
    check_words(await read_all(client, Table.INPUT, points[-1].end), points)


async def test_every_dtype_and_order_through_set_value(start_plant, connect) -> None:
    points = typed_points()
    plant = await start_plant([SimDeviceSpec(name="typed", unit_id=7, transport=TcpTransport(), points=points)])
    for p in points:
        plant.set_value("typed", p.name, VALUES[p.dtype])
    client = await connect(plant.address("typed"))
    words = await read_all(client, Table.HOLDING, points[-1].end, unit=7)
    for p in points:
        assert struct_decode(words[p.address : p.end], p.dtype, p.order) == pytest.approx(VALUES[p.dtype], rel=1e-6)
        if p.dtype.startswith("int") or p.dtype.startswith("uint"):
            assert struct_decode(words[p.address : p.end], p.dtype, p.order) == VALUES[p.dtype]  # exact
        assert plant.get_value("typed", p.name) == pytest.approx(VALUES[p.dtype], rel=1e-6)


async def test_scaled_bits_strings_and_bit_tables(start_plant, connect) -> None:
    points = [
        RegisterPoint(0, "temp", Table.INPUT, 0, "int16", scale=0.1, offset=-40.0, low=-40, high=120),
        RegisterPoint(1, "serial_no", Table.HOLDING, 0, "string", "BADC", length=4),
        RegisterPoint(2, "status", Table.HOLDING, 4, "uint16"),
        RegisterPoint(3, "door_open", Table.HOLDING, 4, "bool", bit=9),
        RegisterPoint(4, "running", Table.DISCRETE, 3, "bool"),
    ]
    signals = {"serial_no": SignalSpec(kind="constant", value="SN-42"),
               "status": SignalSpec(kind="constant", value=0x0005)}
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=points,
                                             signals=signals, update_interval_ms=60_000)])
    plant.set_value("d", "temp", 21.5)
    plant.set_value("d", "door_open", 1)
    plant.set_value("d", "running", 1)
    client = await connect(plant.address("d"))
    assert (await client.read_input_registers(0, count=1, device_id=1)).registers == [615]  # (21.5 + 40) / 0.1
    regs = (await client.read_holding_registers(0, count=5, device_id=1)).registers
    text = b"".join(w.to_bytes(2, "little") for w in regs[:4]).rstrip(b"\0")  # BADC: bytes swapped per word
    assert text == b"SN-42"
    assert regs[4] == 0x0205  # status word 5 with bit 9 set by the bool point
    assert (await client.read_discrete_inputs(0, count=4, device_id=1)).bits[:4] == [False, False, False, True]
    assert plant.get_value("d", "serial_no") == "SN-42"


async def test_writes_stick_and_read_only_points_refuse(start_plant, connect) -> None:
    points = [
        RegisterPoint(0, "setpoint", Table.HOLDING, 10, "float32", "CDAB", writable=True, low=0, high=500),
        RegisterPoint(1, "mode", Table.HOLDING, 12, "uint16", writable=True),
        RegisterPoint(2, "pressure", Table.HOLDING, 0, "float32", low=0, high=10),
        RegisterPoint(3, "pump_on", Table.COIL, 5, "bool", writable=True),
    ]
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=3, transport=TcpTransport(), points=points,
                                             update_interval_ms=20)])
    client = await connect(plant.address("d"))
    words = ModbusClientMixin.convert_to_registers(321.5, ModbusClientMixin.DATATYPE.FLOAT32)[::-1]  # CDAB
    assert not (await client.write_registers(10, words, device_id=3)).isError()
    assert not (await client.write_register(12, 4, device_id=3)).isError()
    assert not (await client.write_coil(5, True, device_id=3)).isError()
    await asyncio.sleep(0.1)  # five signal updates later the written values are still there
    assert plant.get_value("d", "setpoint") == pytest.approx(321.5)
    assert plant.get_value("d", "mode") == 4
    assert plant.get_registers("d", Table.COIL, 5, 1) == [1]
    assert (await client.read_holding_registers(10, count=3, device_id=3)).registers == [*words, 4]
    refused = await client.write_register(0, 1, device_id=3)
    assert refused.isError() and refused.exception_code == 2
    outside = await client.read_holding_registers(12, count=2, device_id=3)  # table ends at 13
    assert outside.isError() and outside.exception_code == 2
    assert plant.stats("d").writes == 3


async def test_signals_move_within_range(start_plant, connect) -> None:
    points = [
        RegisterPoint(0, "temperature", Table.INPUT, 0, "float32", low=10, high=30),
        RegisterPoint(1, "energy_count", Table.INPUT, 2, "uint32"),
        RegisterPoint(2, "mode", Table.INPUT, 4, "uint16", enum=((1, "auto"), (2, "manual"), (5, "off"))),
        RegisterPoint(3, "status_word", Table.INPUT, 5, "uint16"),
    ]
    signals = {
        "temperature": SignalSpec(kind="sine", mean=20, amplitude=8, noise=0.5, period_s=0.4),
        "energy_count": SignalSpec(kind="counter", start=100, rate_per_s=50),
        "mode": SignalSpec(kind="enum", levels=(1, 2, 5), period_s=0.05),
        "status_word": SignalSpec(kind="status_bits", bits=(0, 3), period_s=0.05),
    }
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=points,
                                             signals=signals, update_interval_ms=20)])
    client = await connect(plant.address("d"))
    temps, counts, modes, status = [], [], set(), set()
    for _ in range(25):
        regs = (await client.read_input_registers(0, count=6, device_id=1)).registers
        temps.append(struct.unpack(">f", struct.pack(">HH", *regs[0:2]))[0])
        counts.append((regs[2] << 16) | regs[3])
        modes.add(regs[4])
        status.add(regs[5])
        await asyncio.sleep(0.03)
    assert all(10 <= t <= 30 for t in temps) and len(set(temps)) > 5
    assert counts == sorted(counts) and counts[-1] > counts[0] >= 100
    assert modes <= {1, 2, 5} and len(modes) >= 2
    assert status <= {0, 1, 8, 9} and len(status) >= 2


async def test_one_port_serves_several_unit_ids_and_answers_unknown_units_with_exception_11(
    start_plant, connect
) -> None:
    held = listening_socket()  # one port for three units, held until the simulator serves on it
    port = held.getsockname()[1]
    point = [RegisterPoint(0, "v", Table.HOLDING, 0, "uint16")]
    specs = [SimDeviceSpec(name=f"d{u}", unit_id=u, transport=TcpTransport(port=port), points=point,
                           signals={"v": SignalSpec(kind="constant", value=100 + u)}) for u in (1, 2, 9)]
    plant = await start_plant(specs, sockets={port: held})
    assert len(plant.endpoints) == 1 and plant.address("d9") == ("127.0.0.1", port)
    client = await connect(("127.0.0.1", port))
    for u in (1, 2, 9):
        assert (await client.read_holding_registers(0, count=1, device_id=u)).registers == [100 + u]
    unknown = await client.read_holding_registers(0, count=1, device_id=4)
    assert unknown.isError() and unknown.exception_code == 11


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="Debian package mbpoll is not installed")
async def test_mbpoll_reads_the_encoded_registers(start_plant) -> None:
    points = [RegisterPoint(0, "flow", Table.HOLDING, 0, "float32", "ABCD", low=0, high=50),
              RegisterPoint(1, "level", Table.HOLDING, 2, "int16", scale=0.01),
              RegisterPoint(2, "count", Table.HOLDING, 3, "uint32", "CDAB")]
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=points,
                                             update_interval_ms=60_000)])
    plant.set_value("d", "flow", 12.5)
    plant.set_value("d", "level", -3.21)
    plant.set_value("d", "count", 70000)
    host, port = plant.address("d")
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-a", "1", "-p", str(port), "-t", "4", "-0", "-r", "0", "-c", "5", "-1", host,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    regs = {int(a): int(v) & 0xFFFF for a, v in re.findall(r"\[(\d+)\]:\s+(-?\d+)", out.decode())}
    assert [regs[i] for i in range(5)] == plant.get_registers("d", Table.HOLDING, 0, 5)
    assert struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0] == 12.5
    assert struct.unpack(">h", struct.pack(">H", regs[2]))[0] == -321
    assert (regs[4] << 16) | regs[3] == 70000


async def test_rtu_over_tcp_gateway_serves_its_units_one_at_a_time_at_line_speed(start_plant, connect) -> None:
    held = listening_socket()
    port = held.getsockname()[1]
    gateway = RtuOverTcpTransport(port=port, baud=9600)
    points = [RegisterPoint(i, f"r{i}", Table.HOLDING, i, "uint16") for i in range(125)]
    specs = [SimDeviceSpec(name=f"meter{u}", unit_id=u, transport=gateway, points=points,
                           signals={"r0": SignalSpec(kind="constant", value=u)}) for u in (1, 2)]
    plant = await start_plant(specs, sockets={port: held})
    assert len(plant.endpoints) == 1
    a = await connect(("127.0.0.1", port), rtu=True, timeout=3.0)
    b = await connect(("127.0.0.1", port), rtu=True, timeout=3.0)
    frame_s = (8 + 255) * 10 / 9600  # request + 125-register reply, 8N1 at 9600 baud
    t0 = time.monotonic()
    ra, rb = await asyncio.gather(a.read_holding_registers(0, count=125, device_id=1),
                                  b.read_holding_registers(0, count=125, device_id=2))
    assert (ra.registers[0], rb.registers[0]) == (1, 2)
    assert time.monotonic() - t0 >= 2 * frame_s  # two clients, one serial line behind the gateway


async def test_requests_pymodbus_cannot_decode_get_exception_1_or_3(start_plant) -> None:
    points = [RegisterPoint(i, f"r{i}", Table.HOLDING, i, "uint16") for i in range(130)]
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=points)])
    reader, writer = await asyncio.open_connection(*plant.address("d"))
    try:
        too_many = struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, 0, 126)  # 126 registers: over the protocol limit
        unknown = struct.pack(">HHHBB", 8, 0, 2, 1, 0x41)  # a function code nobody defines
        writer.write(too_many + unknown)  # pipelined in one segment
        replies = [await asyncio.wait_for(reader.readexactly(9), 5) for _ in range(2)]
    finally:
        writer.close()
    assert replies[0] == struct.pack(">HHHBBB", 7, 0, 3, 1, 0x83, 3)
    assert replies[1] == struct.pack(">HHHBBB", 8, 0, 3, 1, 0xC1, 1)
    assert plant.stats("d").exceptions == {3: 1, 1: 1}


async def test_a_lone_tcp_device_also_answers_units_0_and_255(start_plant, connect) -> None:
    plant = await start_plant([SimDeviceSpec(name="d", unit_id=17, transport=TcpTransport(),
                                             points=[RegisterPoint(0, "v", Table.HOLDING, 0, "uint16")],
                                             signals={"v": SignalSpec(kind="constant", value=5)})])
    client = await connect(plant.address("d"))
    for unit in (17, 0, 255):
        assert (await client.read_holding_registers(0, count=1, device_id=unit)).registers == [5]
    assert (await client.read_holding_registers(0, count=1, device_id=3)).exception_code == 11


async def test_port_zero_shared_by_the_devices_behind_one_gateway(start_plant, connect) -> None:
    """Tests bind port 0; the drives behind one simulated gateway share its (free) port, others get their own."""
    gw = RtuOverTcpTransport(share="gateway")
    point = RegisterPoint(0, "v", Table.HOLDING, 0, "uint16")
    specs = [SimDeviceSpec(name=f"drive{u}", unit_id=u, transport=gw, points=[point],
                           signals={"v": SignalSpec(kind="constant", value=float(u))}) for u in (1, 2)]
    specs.append(SimDeviceSpec(name="alone", unit_id=1, transport=RtuOverTcpTransport(), points=[point]))
    plant = await start_plant(specs)
    assert plant.address("drive1") == plant.address("drive2") != plant.address("alone")
    client = await connect(plant.address("drive1"), rtu=True)
    for unit in (1, 2):
        assert (await client.read_holding_registers(0, count=1, device_id=unit)).registers == [unit]
