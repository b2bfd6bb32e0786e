"""Configuration schema of the ``system`` driver: a ``system`` bus and points naming host metrics."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.models import BusConfig, DeviceConfig, PointConfig, common_point_problems
from edge.plugins.models import PluginManifest, PluginPoints

#: Metrics a point can name; ``path`` (disks), ``nic`` (network) and ``sensor`` (temperatures)
#: select which one where the host has several.
Metric = Literal[
    "cpu_percent", "cpu_count", "load_1m", "load_5m", "load_15m",
    "memory_percent", "memory_used_bytes", "memory_available_bytes", "memory_total_bytes", "swap_percent",
    "disk_percent", "disk_used_bytes", "disk_free_bytes",
    "net_bytes_sent", "net_bytes_recv", "net_errors",
    "temperature_c", "uptime_s", "process_rss_bytes", "process_cpu_percent",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]


class SystemBus(BusConfig):
    """The host itself: no line, no address; one per site is enough."""

    type: Literal["system"]


class SystemPoint(PointConfig):
    """One host metric (``metric: cpu_percent``), with its selector where the metric needs one."""

    metric: Metric
    path: str = Field("/", description="mount point, for disk_* metrics")
    nic: str | None = Field(None, description="network interface for net_* metrics (None: all interfaces)")
    sensor: str | None = Field(None, description="temperature sensor group, e.g. coretemp (None: the first)")

    @model_validator(mode="after")
    def _consistent(self) -> SystemPoint:
        problems = common_point_problems(self)
        if self.writable:
            problems.append("host metrics are read-only: writable must be false")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class SystemDevice(DeviceConfig):
    points: list[SystemPoint] = Field(default_factory=list)


class SystemManifest(PluginManifest):
    driver: Literal["system"] = "system"


class SystemPluginPoints(PluginPoints):
    points: list[SystemPoint] = Field(min_length=1)
