"""The ``system`` field driver as the core sees it (entry point ``edge.drivers: system``)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from drivers.system.config import SystemBus, SystemDevice, SystemManifest, SystemPluginPoints, SystemPoint
from drivers.system.runtime import SystemSession
from edge.config.errors import ConfigIssue
from edge.driver.protocol import Command, DriverSession, LineLoad, ResolveContext

if TYPE_CHECKING:
    from edge.config.models import PointConfig
    from edge.config.resolved import LoadedConfig, ResolvedDevice
    from edge.driver.protocol import Simulation
    from edge.plugins.loader import LoadedPlugin


class SystemDriver:
    name = "system"
    description = "the appliance host's CPU, memory, disks, temperatures and network counters (psutil)"
    bus_models = {"system": SystemBus}
    device_model = SystemDevice
    point_model = SystemPoint
    manifest_model = SystemManifest
    plugin_points_model = SystemPluginPoints
    builtin_plugins: frozenset[str] = frozenset()

    def builtin_plugin(self, dev: ResolvedDevice, ctx: ResolveContext, issues: list[ConfigIssue]) -> LoadedPlugin | None:
        return None

    def resolve(self, dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
        dev.driver_data = None  # the points say everything

    def check(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
        return None

    def line_loads(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice],
                   issues: list[ConfigIssue] | None = None) -> list[LineLoad]:
        return []

    def tag_type(self, point: PointConfig) -> tuple[str, float | None]:
        return point.value_type or "float64", None

    def type_range(self, point: PointConfig) -> tuple[float, float] | None:
        return None

    def device_address(self, dev: ResolvedDevice) -> str:
        return "this host"

    def timeout_s(self, dev: ResolvedDevice) -> float:
        return 1.0

    def session(self) -> DriverSession:
        return SystemSession()

    def simulation(self, devices: Sequence[ResolvedDevice], seed: int = 0) -> Simulation | None:
        return None  # it measures the real host

    def commands(self) -> list[Command]:
        return []

    def point_location(self, dev: ResolvedDevice, point: str) -> str:
        p = next(rp.point for rp in dev.points if rp.point.name == point)
        assert isinstance(p, SystemPoint)
        where = {"disk": p.path, "net": p.nic or "all interfaces", "temperature": p.sensor or "first sensor"}
        return f"{p.metric} ({where.get(p.metric.split('_')[0], 'host')})"

    def plugin_problems(self, plugin: LoadedPlugin) -> list[str]:
        return []

    def plugin_test_site(self, plugin: str, plugins_dir: Path, data_dir: Path, timeout_ms: int) -> dict[str, Any]:
        return {"site": {"name": "plugin_check"}, "plugins_dir": str(plugins_dir),
                "runtime": {"data_dir": str(data_dir), "status_interval_s": 1},
                "buses": [{"name": "host", "type": "system"}],
                "devices": [{"name": plugin, "bus": "host", "plugin": plugin}]}

    def doctor(self) -> list[tuple[str, bool, str]]:
        return [("host metrics (psutil)", True, f"psutil {psutil.__version__}")]


DRIVER = SystemDriver()
