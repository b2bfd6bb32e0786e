"""The simulator's ground truth: ``SimPlant.value_served`` says which engineering value a client was
given at an instant, and a plain pymodbus client, decoding the registers itself, agrees exactly.

The parity test of the appliance (tests/test_one_value_everywhere.py) compares every output with this value, so
it is checked here against the wire: every point of the demo plant, read at moments that fall
anywhere between the signal updates, and a gateway so slow that a signal update always falls
between the device's answer and its arrival (the value "at the arrival" is then not the one sent).
"""
from __future__ import annotations

import asyncio
import decimal
import time
from pathlib import Path

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import RtuOverTcpTransport, SignalSpec, SimDeviceSpec, TcpTransport
from drivers.modbus.simulation import plant_specs
from edge.config.loader import load_config
from tests.drivers.modbus.sim.wire import struct_decode

DEMO = Path(__file__).resolve().parents[4] / "provisioning" / "sites" / "demo" / "edge.yaml"


def meaning(point: RegisterPoint, raw: float | int) -> float:
    """raw x scale + offset as decimals, then the nearest double (independent of the simulator's code)."""
    if point.scale == 1 and point.offset == 0:
        return float(raw)
    ctx = decimal.Context(prec=60)
    return float(ctx.add(ctx.multiply(decimal.Decimal(raw), decimal.Decimal(repr(point.scale))),
                         decimal.Decimal(repr(point.offset))))


def decode(point: RegisterPoint, words: list[int]) -> float | str:
    """A point's engineering value from the words a client read (reference decoder of the tests)."""
    if point.table.is_bits:
        return float(words[0])
    if point.dtype == "string":
        data = b"".join(w.to_bytes(2, "big") for w in words)
        if point.order in ("BADC", "DCBA"):
            data = b"".join(data[i + 1:i + 2] + data[i:i + 1] for i in range(0, len(data), 2))
        return data.decode("latin-1").rstrip("\x00")
    if point.dtype == "bool":
        word = int(struct_decode(words, point.bit_word, point.order)) if len(words) > 1 else words[0]
        return float((word >> (point.bit or 0)) & 1)
    return meaning(point, struct_decode(words, point.dtype, point.order))


async def read_point(client, point: RegisterPoint, unit: int) -> list[int]:
    """One request for exactly the point's registers or bit (the planner's blocks are not wanted here)."""
    count = 1 if point.table.is_bits else point.count
    fn = {Table.COIL: client.read_coils, Table.DISCRETE: client.read_discrete_inputs,
          Table.HOLDING: client.read_holding_registers, Table.INPUT: client.read_input_registers}[point.table]
    rr = await fn(point.address, count=count, device_id=unit)
    assert not rr.isError(), (point.name, rr)
    return [int(b) for b in rr.bits[:1]] if point.table.is_bits else list(rr.registers)


def tcp_twins(specs: list[SimDeviceSpec], update_ms: int = 100) -> list[SimDeviceSpec]:
    """The demo's devices, each on a TCP port of its own (port 0), signals updated every ``update_ms``."""
    return [s.model_copy(update={"transport": TcpTransport(), "update_interval_ms": update_ms}) for s in specs]


async def test_every_demo_point_as_a_plain_client_reads_it(start_plant, connect) -> None:
    specs = tcp_twins(plant_specs(load_config(DEMO)))
    plant = await start_plant(specs, seed=7)
    mismatches, checked = [], 0
    seen: dict[tuple[str, str], set] = {}
    deadline = time.monotonic() + 2.5
    for round_ in range(6):  # rounds over every point, at moments anywhere between the 100 ms updates
        for spec in specs:
            client = await connect(plant.address(spec.name))
            for point in spec.points:
                words = await read_point(client, point, spec.unit_id)
                arrived = time.time_ns()
                got = decode(point, words)
                want = plant.value_served(spec.name, point.name, arrived)
                checked += 1
                seen.setdefault((spec.name, point.name), set()).add(got)
                if got != want and not (got != got and want != want):
                    mismatches.append((spec.name, point.name, got, want))
            client.close()
        if time.monotonic() > deadline and round_ >= 2:
            break
        await asyncio.sleep(0.037 * (round_ + 1))
    assert checked >= 3 * sum(len(s.points) for s in specs)
    assert mismatches == [], mismatches[:10]
    moving = [k for k, v in seen.items() if len(v) > 1]
    assert len(moving) >= 20, "the signals should move between rounds"  # the test would be empty otherwise
    assert isinstance(plant.value_served("plc_line1", "recipe", time.time_ns()), str)


async def test_an_update_between_answer_and_arrival_is_not_what_was_sent(start_plant, connect) -> None:
    """A 1200-baud gateway takes ~90 ms to send a reply; the signal moves every 10 ms: the value at
    the arrival differs from the value the device read for its answer, which value_served gives."""
    point = RegisterPoint(0, "ramp", Table.INPUT, 0, "uint16", scale=0.1)
    spec = SimDeviceSpec(name="slow", unit_id=1, transport=RtuOverTcpTransport(baud=1200), points=[point],
                         signals={"ramp": SignalSpec(kind="ramp", low=0, high=6000, period_s=600)},
                         update_interval_ms=10)
    plant = await start_plant([spec])
    client = await connect(plant.address("slow"), rtu=True, timeout=2.0)
    differs = 0
    for _ in range(5):
        words = await read_point(client, point, 1)
        arrived = time.time_ns()
        got = decode(point, words)
        assert got == plant.value_served("slow", "ramp", arrived)
        latest = plant.devices["slow"].reads[-1]
        assert plant.value_at("slow", "ramp", latest.t) == got
        differs += plant.get_value("slow", "ramp") != got  # the registers moved on meanwhile
    assert differs >= 4


async def test_writes_are_part_of_the_truth(start_plant, connect) -> None:
    """A client's write changes what the device serves from then on, not before."""
    sp = RegisterPoint(0, "setpoint", Table.HOLDING, 0, "int16", scale=0.1, writable=True)
    spec = SimDeviceSpec(name="ctl", unit_id=1, transport=TcpTransport(), points=[sp],
                         signals={"setpoint": SignalSpec(kind="constant", value=21.5)})
    plant = await start_plant([spec])
    client = await connect(plant.address("ctl"))
    await read_point(client, sp, 1)
    before = time.time_ns()
    assert plant.value_served("ctl", "setpoint", before) == 21.5
    assert not (await client.write_register(0, 97, device_id=1)).isError()
    await read_point(client, sp, 1)
    assert plant.value_served("ctl", "setpoint", time.time_ns()) == 9.7  # 97 x 0.1, the nearest double
    assert plant.value_served("ctl", "setpoint", before) == 21.5
