"""``edge simulate CONFIG``: serve every device of a configuration from simulated Modbus devices.

TCP devices listen on their configured ports, RTU devices answer on a socat pty pair whose
appliance end is the bus's configured serial port, gateway devices speak RTU over TCP.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import replace
from pathlib import Path

from drivers.modbus.points import RegisterPoint
from drivers.modbus.sim.faults import Fault
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.sim.spec import (
    RtuOverTcpTransport,
    SerialTransport,
    SignalSpec,
    SimDeviceSpec,
    TcpTransport,
)
from edge.cli.commands import CliError
from edge.config.loader import LoadedConfig, ResolvedDevice, load_config


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--fault", action="append", default=[], metavar="DEVICE=FAULT[:KEY=VALUE,...]",
                   help=f"start with a fault on a device ({', '.join(f.value for f in Fault)}), e.g. "
                        "meter=slow:delay_ms=300 or plc=illegal_address:start=10,count=2; repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed of the signals' noise")


def device_spec(dev: ResolvedDevice) -> SimDeviceSpec:
    """The simulated twin of one configured device: same unit id, transport and register map."""
    bus = dev.bus
    if bus.type == "modbus_tcp":
        transport = TcpTransport(host=dev.config.host or bus.host, port=dev.config.port or bus.port)
    elif bus.type == "rtu_over_tcp":
        transport = RtuOverTcpTransport(host=bus.host, port=bus.port, baud=bus.baud, parity=bus.parity,
                                        data_bits=bus.data_bits, stop_bits=bus.stop_bits)
    else:
        transport = SerialTransport(path=bus.port, baud=bus.baud, parity=bus.parity, data_bits=bus.data_bits,
                                    stop_bits=bus.stop_bits)
    signals = {rp.point.name: SignalSpec(**rp.point.sim) for rp in dev.points if rp.point.sim}
    interval = min(g.interval_ms for g in dev.poll_groups.values())
    return SimDeviceSpec(name=dev.name, unit_id=dev.config.unit_id, transport=transport,
                         points=_fold_scale_factors(dev.register_points, signals), signals=signals or None,
                         update_interval_ms=max(100, min(interval, 1000)))


def _fold_scale_factors(points: list[RegisterPoint], signals: dict[str, SignalSpec]) -> list[RegisterPoint]:
    """The simulator encodes values with a fixed scale: a point with a scale-factor register is
    served with the factor its register holds (the factor point's constant ``sim`` value, else 0)."""
    factor_at = {(p.table, p.address): p for p in points if p.dtype == "int16"}
    out = []
    for p in points:
        if p.sf_address is not None:
            holder = factor_at.get((p.table, p.sf_address))
            signal = signals.get(holder.name) if holder is not None else None
            k = int(signal.value) if signal is not None and signal.kind == "constant" else 0
            p = replace(p, scale=p.scale * 10.0**k, sf_address=None)
        out.append(p)
    return out


def plant_specs(loaded: LoadedConfig) -> list[SimDeviceSpec]:
    return [device_spec(d) for d in loaded.devices if not d.plugin_error]


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


async def serve(loaded: LoadedConfig, faults: list[tuple[str, str, dict[str, str]]], seed: int) -> None:
    specs = plant_specs(loaded)
    for spec in specs:
        if isinstance(spec.transport, SerialTransport):
            Path(spec.transport.path).parent.mkdir(parents=True, exist_ok=True)
    plant = SimPlant(specs, seed=seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await plant.start()
    try:
        for device, fault, params in faults:
            plant.set_fault(device, fault, **params)
        for spec in plant_specs(loaded):
            print(f"simulating {spec.name:<16} unit {spec.unit_id:<3} at {plant.address(spec.name)}", flush=True)
        print("simulator ready (Ctrl-C to stop)", flush=True)
        await stop.wait()
    finally:
        await plant.stop()


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    asyncio.run(serve(loaded, parse_faults(args.fault), args.seed))
    return 0
