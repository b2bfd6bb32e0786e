"""The simulated twin of configured Modbus devices (``edge simulate``, ``edge demo``, the tests).

TCP devices listen on their configured ports, RTU devices answer on a socat pty pair whose
appliance end is the bus's configured serial port, gateway devices speak RTU over TCP; every
device serves exactly the register map the appliance polls, with the signals its points'
``sim:`` hints describe.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from drivers.modbus.config import ModbusTcpBus, RtuOverTcpBus
from drivers.modbus.points import RegisterPoint
from drivers.modbus.resolve import bus, config, data
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.sim.spec import (
    RtuOverTcpTransport,
    SerialTransport,
    SignalSpec,
    SimDeviceSpec,
    TcpTransport,
)

if TYPE_CHECKING:
    from edge.config.resolved import LoadedConfig, ResolvedDevice
    from edge.plugins.loader import LoadedPlugin


def device_spec(dev: ResolvedDevice) -> SimDeviceSpec:
    """The simulated twin of one configured device: same unit id, transport and register map."""
    b, cfg = bus(dev), config(dev)
    transport: TcpTransport | RtuOverTcpTransport | SerialTransport
    if isinstance(b, ModbusTcpBus):
        transport = TcpTransport(host=cfg.host or b.host, port=cfg.port or b.port)
    elif isinstance(b, RtuOverTcpBus):
        transport = RtuOverTcpTransport(host=b.host, port=b.port, baud=b.baud, parity=b.parity,
                                        data_bits=b.data_bits, stop_bits=b.stop_bits)
    else:
        transport = SerialTransport(path=b.port, baud=b.baud, parity=b.parity, data_bits=b.data_bits,
                                    stop_bits=b.stop_bits)
    signals = {rp.point.name: SignalSpec(**rp.point.sim) for rp in dev.points if rp.point.sim}
    interval = min(g.interval_ms for g in dev.poll_groups.values())
    return SimDeviceSpec(name=dev.name, unit_id=cfg.unit_id, transport=transport,
                         points=_fold_scale_factors(data(dev).register_points, signals), signals=signals or None,
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


def simulation(devices: Sequence[ResolvedDevice], seed: int = 0) -> SimPlant | None:
    """A simulated plant serving ``devices`` (those whose plugin loaded), or None if there are none."""
    specs = [device_spec(d) for d in devices if d.plugin_error is None]
    if not specs:
        return None
    for spec in specs:
        if isinstance(spec.transport, SerialTransport):
            Path(spec.transport.path).parent.mkdir(parents=True, exist_ok=True)
    return SimPlant(specs, seed=seed)


def plant_specs(loaded: LoadedConfig) -> list[SimDeviceSpec]:
    """The simulated twins of a site's Modbus devices (tests and benchmarks build SimPlant(Process) from these)."""
    return [device_spec(d) for d in loaded.devices if d.driver.name == "modbus" and d.plugin_error is None]


def sim_hint_problems(plugin: LoadedPlugin) -> list[str]:
    """Invalid ``sim:`` hints of a plugin's points, each as file:line and what is allowed."""
    assert plugin.points is not None and plugin.source is not None
    out = []
    for i, p in enumerate(plugin.points.points):
        if not p.sim:
            continue
        try:
            SignalSpec(**p.sim)
        except (ValidationError, TypeError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
            text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}".lstrip(": ") for e in errors)
            out.append(str(plugin.source.issue(("points", i, "sim"), f"simulator hint of {p.name!r}: {text}")))
    return out
