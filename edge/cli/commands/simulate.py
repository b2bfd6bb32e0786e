"""``edge simulate CONFIG``: serve every device of a configuration from its driver's simulator.

Each driver that has a simulator serves its devices' twins (the Modbus driver: TCP devices on
their configured ports, RTU devices on a socat pty pair at the bus's serial port, gateway
devices speaking RTU over TCP).
"""
from __future__ import annotations

import argparse
import asyncio
import signal

from edge.cli.commands import CliError
from edge.config.checks import by_driver
from edge.config.loader import load_config
from edge.config.resolved import LoadedConfig
from edge.driver.protocol import Simulation


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--fault", action="append", default=[], metavar="DEVICE=FAULT[:KEY=VALUE,...]",
                   help="start with a fault on a device (the driver's simulator lists its faults), e.g. "
                        "meter=slow:delay_ms=300 or plc=illegal_address:start=10,count=2; repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed of the signals' noise")


def parse_faults(items: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """``DEVICE=FAULT[:KEY=VALUE,...]`` -> (device, fault, params); the simulator validates them."""
    out = []
    for item in items:
        device, _, rest = item.partition("=")
        fault, _, params = rest.partition(":")
        pairs = [p.partition("=") for p in params.split(",") if p]
        if not fault or any(not sep for _, sep, _ in pairs):
            raise CliError(f"--fault takes DEVICE=FAULT[:KEY=VALUE,...], got {item!r}", 2)
        out.append((device, fault, {k: v for k, _, v in pairs}))
    return out


def simulations(loaded: LoadedConfig, seed: int) -> dict[str, tuple[Simulation, list[str]]]:
    """driver name -> (its simulation of the site's devices, their names); drivers without one are left out."""
    out: dict[str, tuple[Simulation, list[str]]] = {}
    for name, (driver, devices) in by_driver(loaded).items():
        sim = driver.simulation(devices, seed)
        if sim is not None:
            out[name] = (sim, [d.name for d in devices if d.plugin_error is None])
    return out


async def serve(loaded: LoadedConfig, faults: list[tuple[str, str, dict[str, str]]], seed: int) -> None:
    sims = simulations(loaded, seed)
    if not sims:
        raise CliError("no device of this configuration has a simulator")
    owner = {dev: sim for sim, devices in sims.values() for dev in devices}
    unknown = [d for d, _, _ in faults if d not in owner]
    if unknown:
        raise CliError(f"--fault names {unknown[0]!r}, which is not a simulated device; devices: {', '.join(owner)}", 2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Simulation] = []
    try:
        for sim, _ in sims.values():
            await sim.start()
            started.append(sim)
        for device, fault, params in faults:
            owner[device].set_fault(device, fault, **params)
        for sim, devices in sims.values():
            for dev in devices:
                print(f"simulating {dev:<16} at {sim.address(dev)}", flush=True)
        print("simulator ready (Ctrl-C to stop)", flush=True)
        await stop.wait()
    finally:
        for sim in started:
            await sim.stop()


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    asyncio.run(serve(loaded, parse_faults(args.fault), args.seed))
    return 0
