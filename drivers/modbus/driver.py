"""The Modbus field driver as the core sees it (entry point ``edge.drivers: modbus``).

Modbus TCP, Modbus RTU on RS-485 lines and RTU over TCP through serial gateways. Implements
:class:`edge.driver.protocol.Driver` by delegating to the modules that do each job:
``config`` (schema), ``resolve`` (addresses, register points), ``checks`` (lines, unit ids,
bus load), ``runtime`` (lines, pollers, writes), ``simulation`` and ``cli``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.modbus import checks, cli, resolve, runtime, simulation
from drivers.modbus.codec import INT_RANGES
from drivers.modbus.config import BUS_MODELS, ModbusDevice, ModbusManifest, ModbusPluginPoints, ModbusPoint
from drivers.modbus.points import scaling_of
from drivers.modbus.sim.plant import SimPlant, hold_port
from edge.config.errors import ConfigIssue
from edge.driver.protocol import Command, DriverSession, LineLoad, ResolveContext

if TYPE_CHECKING:
    from edge.config.models import PointConfig
    from edge.config.resolved import LoadedConfig, ResolvedDevice
    from edge.plugins.loader import LoadedPlugin

_INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")


class ModbusDriver:
    name = "modbus"
    description = "Modbus TCP, Modbus RTU on RS-485, RTU over TCP through serial gateways"
    bus_models = BUS_MODELS
    device_model = ModbusDevice
    point_model = ModbusPoint
    manifest_model = ModbusManifest
    plugin_points_model = ModbusPluginPoints
    builtin_plugins = frozenset({"sunspec"})

    def resolve(self, dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
        resolve.resolve_device(dev, issues)

    def builtin_plugin(self, dev: ResolvedDevice, ctx: ResolveContext, issues: list[ConfigIssue]) -> LoadedPlugin | None:
        """``plugin: sunspec``: the points of the models the device serves (drivers/modbus/sunspec/)."""
        from drivers.modbus.sunspec.plugin import sunspec_plugin

        return sunspec_plugin(dev, ctx, issues)

    def check(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
        checks.check(loaded, devices, issues)

    def line_loads(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice],
                   issues: list[ConfigIssue] | None = None) -> list[LineLoad]:
        return checks.line_loads(loaded, devices, issues)

    def tag_type(self, point: PointConfig) -> tuple[str, float | None]:
        """A scaled or offset value is a Double everywhere downstream (OPC UA, history, API), never
        its raw integer type: 97 x 0.1 is 9.7, not 9 (a Float with ``value_type: float32``).
        Unscaled integers keep their type (step 1)."""
        assert isinstance(point, ModbusPoint)
        engineering = point.value_type or "float64"
        if point.bit is not None:
            return "bool", None
        if point.scale_factor is not None:  # 10**sf, read with the value: the step changes at run time
            return engineering, None
        scaled = point.scale != 1.0 or point.offset != 0.0
        if point.type in _INTEGER_TYPES:
            return (engineering, abs(point.scale)) if scaled else (point.type, 1.0)
        if point.type == "float32" and scaled:
            return engineering, None
        return point.type, None

    def type_range(self, point: PointConfig) -> tuple[float, float] | None:
        """A scaled integer's raw limits x scale + offset, each the double nearest the exact decimal
        (uint16 x 0.1: 0..6553.5). None for unscaled integers (their OPC UA DataType says it), floats,
        bits and points with a scale-factor register (the factor changes at run time)."""
        assert isinstance(point, ModbusPoint)
        if point.type not in _INTEGER_TYPES or point.bit is not None or point.scale_factor is not None:
            return None
        if point.scale == 1.0 and point.offset == 0.0:
            return None
        scaling = scaling_of(point.scale, point.offset)  # the codec's arithmetic: its values lie inside
        lo, hi = (scaling.apply(float(raw)) for raw in INT_RANGES[point.type])
        return (lo, hi) if lo <= hi else (hi, lo)

    def device_address(self, dev: ResolvedDevice) -> str:
        return f"unit {resolve.config(dev).unit_id}"

    def timeout_s(self, dev: ResolvedDevice) -> float:
        return resolve.timeout_ms(dev) / 1e3

    def session(self) -> DriverSession:
        return runtime.ModbusSession()

    def simulation(self, devices: Sequence[ResolvedDevice], seed: int = 0) -> SimPlant | None:
        return simulation.simulation(devices, seed)

    def commands(self) -> list[Command]:
        return list(cli.COMMANDS)

    def point_location(self, dev: ResolvedDevice, point: str) -> str:
        """Where a point is read: ``input 0..1 CDAB``, ``holding 148 bit 1``."""
        p = next(r for r in resolve.data(dev).register_points if r.name == point)
        text = f"{p.dtype:<8} {p.table.value} {p.address}" + (f"..{p.end - 1}" if p.count > 1 else "")
        if p.count > 1 and p.dtype != "string":
            text += f" {p.order}"
        return text + (f" bit {p.bit}" if p.bit is not None else "")

    def plugin_problems(self, plugin: LoadedPlugin) -> list[str]:
        return simulation.sim_hint_problems(plugin)

    def plugin_test_site(self, plugin: str, plugins_dir: Path, data_dir: Path, timeout_ms: int) -> dict[str, Any]:
        """Modbus TCP on a free loopback port held until the simulator serves it (``hold_port``), unit 1."""
        return {
            "site": {"name": "plugin_check"},
            "plugins_dir": str(plugins_dir),
            "runtime": {"data_dir": str(data_dir), "status_interval_s": 1},
            "buses": [{"name": "check_net", "type": "modbus_tcp", "host": "127.0.0.1", "port": hold_port(),
                       "timeout_ms": timeout_ms}],
            "devices": [{"name": plugin, "bus": "check_net", "unit_id": 1, "plugin": plugin}],
        }

    def doctor(self) -> list[tuple[str, bool, str]]:
        from drivers.modbus import codec

        compiled = codec.DECODER == "compiled"
        return [("Modbus block decoder", compiled, "compiled (Cython)" if compiled else
                 "numpy (the compiled decoder is not built: same results, several times the CPU per block)")]


DRIVER = ModbusDriver()
