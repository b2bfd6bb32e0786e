"""Benchmark of the simulator's signal update and serving, for ``bench/`` (run: python -m drivers.modbus.sim.benchmark).

Figures (RESULT names): ``update_ms_per_tick`` for the vectorised update of every point of
the plant (default 500 TCP devices x 100 tags), ``baseline_ms_per_tick`` for the same values
encoded one point at a time with pymodbus's ``convert_to_registers`` (measured in the same
run), their ``speedup``, ``update_cpu_share`` (update time per second of plant time at 1 Hz),
``start_s`` for starting every server, and ``reads_per_s`` for sequential 100-register reads
from one pymodbus client spread over all devices (in this process, so a lower bound).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

import numpy as np
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus.points import ORDERS, RegisterPoint, Table

from .encoding import encode_value
from .plant import SimPlant
from .spec import SimDeviceSpec, TcpTransport

DTYPES = ("float32", "int16", "uint32", "uint16")


def make_specs(devices: int, tags: int) -> list[SimDeviceSpec]:
    """Devices with a mix of dtypes and orders, every tag regenerated once per second."""
    specs = []
    for d in range(devices):
        points, address = [], 0
        for i in range(tags):
            dtype = DTYPES[i % len(DTYPES)]
            p = RegisterPoint(i, f"temperature_{i}", Table.HOLDING, address, dtype, ORDERS[(i // 4) % 4],
                              scale=0.1 if dtype.endswith("16") else 1.0, low=0, high=100)
            points.append(p)
            address = p.end
        specs.append(SimDeviceSpec(name=f"dev{d:04d}", unit_id=1, transport=TcpTransport(), points=points))
    return specs


def baseline_tick(plant: SimPlant, values_by_bank: dict[int, np.ndarray]) -> float:
    """Seconds to encode the same values point by point with pymodbus into the images."""
    t0 = time.perf_counter()
    for interval, bank in plant.banks.items():
        values = values_by_bank[interval]
        for i, entry in enumerate(bank.entries):
            view = entry.image.view(entry.point.table)
            view[entry.point.address : entry.point.end] = encode_value(entry.point, float(values[i]))
    return time.perf_counter() - t0


async def measure(devices: int, tags: int, ticks: int, reads: int) -> dict[str, float]:
    specs = make_specs(devices, tags)
    plant = SimPlant(specs)
    t0 = time.perf_counter()
    await plant.start()
    start_s = time.perf_counter() - t0
    try:
        mem = plant.memory
        tick_s: list[float] = []
        values: dict[int, np.ndarray] = {}
        for k in range(ticks):
            t1 = time.perf_counter()
            for interval, bank in plant.banks.items():
                values[interval] = bank.tick(100.0 + k, mem.regs, mem.bits)
            tick_s.append(time.perf_counter() - t1)
        base_s = [baseline_tick(plant, values) for _ in range(max(1, ticks // 3))]
        update_ms, baseline_ms = 1000 * min(tick_s), 1000 * min(base_s)
        count = min(100, tags)
        names = [s.name for s in specs]
        clients = {}
        t2 = time.perf_counter()
        for r in range(reads):
            name = names[r % len(names)]
            if name not in clients:
                address = plant.address(name)
                assert isinstance(address, tuple), "TCP devices only"  # (host, port); a serial one gives its path
                host, port = address
                clients[name] = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
                await clients[name].connect()
            rr = await clients[name].read_holding_registers(0, count=count, device_id=1)
            assert not rr.isError(), rr
        reads_s = time.perf_counter() - t2
        for c in clients.values():
            c.close()
    finally:
        await plant.stop()
    return {
        "devices": devices,
        "tags": devices * tags,
        "start_s": round(start_s, 3),
        "update_ms_per_tick": round(update_ms, 3),
        "baseline_ms_per_tick": round(baseline_ms, 3),
        "speedup": round(baseline_ms / update_ms, 1),
        "update_cpu_share": round(update_ms / 1000.0, 4),
        "reads_per_s": round(reads / reads_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also 10 devices x 1000 tags, more ticks and reads")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--tags", type=int, default=100)
    args = parser.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    ticks, reads = (30, 5000) if args.long else (9, 1000)
    result = asyncio.run(measure(args.devices, args.tags, ticks, reads))
    print(f"{result['devices']} devices, {result['tags']} tags: start {result['start_s']} s; update "
          f"{result['update_ms_per_tick']} ms/tick vs per-point pymodbus baseline {result['baseline_ms_per_tick']} "
          f"ms/tick (x{result['speedup']}); {result['reads_per_s']} reads/s of 100 registers")
    if args.long:
        wide = asyncio.run(measure(10, 1000, ticks, reads))
        print(f"10 devices x 1000 tags: update {wide['update_ms_per_tick']} ms/tick vs baseline "
              f"{wide['baseline_ms_per_tick']} ms (x{wide['speedup']})")
        report: dict[str, object] = {**result, "wide": wide}
        print("RESULT " + json.dumps(report))
        return 0
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
