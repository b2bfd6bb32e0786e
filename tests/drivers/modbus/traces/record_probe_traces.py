"""Records the register traces that ``test_probe_traces.py`` ranks (run it to refresh them).

Each trace is what a technician's ``edge probe`` would read: successive reads of one 2- or
4-register span of a device whose register map is known. The device is the project's
simulator (its encoder is pymodbus's ``convert_to_registers``, not the appliance's codec); the
value evolves between reads as the named kind of value does on a real device (a noisy mains
voltage, an energy counter, a signed net-energy counter that crosses zero); every read is
made with a plain pymodbus client. The truth (type, order, and the value the simulator
encoded for each read) is stored beside the registers.

    .venv/bin/python tests/drivers/modbus/traces/record_probe_traces.py
"""
from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from drivers.modbus.points import RegisterPoint, Table  # noqa: E402
from drivers.modbus.sim import SimDeviceSpec, SimPlant, TcpTransport  # noqa: E402

OUT = Path(__file__).with_name("probe_traces.json")
READS = 6


def _voltage(rng: random.Random) -> list[float]:
    return [round(230.0 + rng.gauss(0, 0.8), 2) for _ in range(READS)]


def _counter(start: int, step: tuple[int, int], rng: random.Random) -> list[int]:
    out, v = [], start
    for _ in range(READS):
        out.append(v)
        v += rng.randint(*step)
    return out


def cases() -> list[dict]:
    rng = random.Random(16)
    out = [{"name": f"float32 {o} mains voltage", "type": "float32", "order": o, "values": _voltage(rng)}
           for o in ("ABCD", "CDAB", "BADC", "DCBA")]
    out += [
        # the 32-bit accumulator: 196401789 Wh; int32 reads the same numbers
        {"name": "acc32 energy accumulator", "type": "uint32", "order": "ABCD",
         "values": _counter(196_401_789, (3, 40), rng)},
        {"name": "uint32 counter above 2**31", "type": "uint32", "order": "ABCD",
         "values": _counter(3_500_000_123, (1, 30), rng)},
        {"name": "uint32 counter low word first", "type": "uint32", "order": "CDAB",
         "values": _counter(88_123_456, (5, 60), rng)},
        {"name": "int32 net energy crossing zero", "type": "int32", "order": "ABCD",
         "values": [40 - 17 * i for i in range(READS)]},
        # the int64 counter: its low word 0x3A2D reads as float64 CDAB 1.8e-28
        {"name": "int64 energy counter", "type": "int64", "order": "ABCD",
         "values": _counter(0x0BB4_3A2D, (1, 9), rng)},
        {"name": "int64 energy counter words reversed", "type": "int64", "order": "CDAB",
         "values": _counter(52_000_713_337, (10, 90), rng)},
        {"name": "uint64 pulse counter", "type": "uint64", "order": "ABCD",
         "values": _counter(1_234_567_890_123, (100, 900), rng)},
    ]
    return out


async def record() -> list[dict]:
    specs, points = [], {}
    for i, case in enumerate(cases()):
        p = RegisterPoint(tag_id=i, name=f"p{i}", table=Table.HOLDING, address=0, dtype=case["type"],
                          order=case["order"], writable=True)
        points[i] = p
        specs.append(SimDeviceSpec(name=f"dev{i}", unit_id=1, transport=TcpTransport(port=0), points=[p]))
    plant = SimPlant(specs)
    await plant.start()
    traces = []
    try:
        for i, case in enumerate(cases()):
            host, port = plant.address(f"dev{i}")
            client = AsyncModbusTcpClient(host, port=port)
            await client.connect()
            reads = []
            for value in case["values"]:
                plant.set_value(f"dev{i}", f"p{i}", value)
                rr = await client.read_holding_registers(0, count=points[i].count, device_id=1)
                reads.append(list(rr.registers))
            client.close()
            traces.append({**case, "reads": reads, "source": "drivers.modbus.sim (pymodbus encoder) read with "
                                                             "pymodbus AsyncModbusTcpClient"})
    finally:
        await plant.stop()
    return traces


if __name__ == "__main__":
    rows = ",\n".join(" " + json.dumps(t) for t in asyncio.run(record()))
    OUT.write_text("[\n" + rows + "\n]\n", encoding="utf-8")
    print(f"wrote {OUT}")
