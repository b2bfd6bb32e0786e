"""What the dashboards draw, read once from a loaded site configuration.

A :class:`SiteView` holds only names, units, ranges and window labels: the dashboard builders
never look at the configuration models themselves, so they can be tested from a plain view.
Devices are grouped by type (their plugin; a device without a plugin is a type of its own),
one dashboard per type.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

from edge.config.aggregate import parse_window, window_label
from edge.config.checks import line_loads
from edge.config.loader import LoadedConfig
from edge.config.models import GrafanaOutput
from edge.core.model import TagInfo

DEFAULT_DATABASE = "edge"
#: units of cumulative energy meters: drawn as the increase per interval (consumption), not a level
ENERGY_UNITS = frozenset({"Wh", "kWh", "MWh", "varh", "kvarh", "Mvarh", "VAh", "kVAh"})
#: names of cumulative counters among unscaled integers (parts made, starts, pulses, a heartbeat)
COUNTER_NAME = re.compile(r"(^|_)(count|counter|parts|starts|pulses|heartbeat)(_|$)")
INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")


@dataclass(frozen=True, slots=True)
class TagView:
    """One tag as a dashboard shows it (the first device of its type that has it defines it)."""

    name: str
    dtype: str
    panel: str  # the panel group: the point's ``panel``, else its unit, else "values"
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    enum: tuple[tuple[int, str], ...] = ()
    windows: tuple[str, ...] = ()  # window labels of the tag's ``aggregate:`` block, shortest first
    description: str = ""

    @property
    def is_string(self) -> bool:
        return self.dtype == "string"

    @property
    def is_discrete(self) -> bool:
        """Status bits and enumerations: drawn as a state timeline, not a curve."""
        return self.dtype == "bool" or bool(self.enum)

    @property
    def is_counter(self) -> bool:
        """A cumulative counter (an energy register, parts made, run hours): what matters is its
        increase per interval, drawn as bars; its reading is in the latest-values panel."""
        if self.is_discrete or self.is_string:
            return False
        if self.unit in ENERGY_UNITS:
            return True
        if self.unit == "h" and "hours" in self.name:
            return True
        return self.dtype in INTEGER_TYPES and not self.unit and bool(COUNTER_NAME.search(self.name))


@dataclass(frozen=True, slots=True)
class DeviceType:
    """Devices sharing one dashboard: all devices of a plugin, or one device without a plugin."""

    key: str  # plugin id, or the device name when there is no plugin
    plugin: str | None
    devices: tuple[str, ...]
    tags: tuple[TagView, ...]
    measurement: str | None  # the shared measurement (per-plugin schema); None: each device's own

    def panels(self) -> dict[str, list[TagView]]:
        """Panel group -> its tags, in the order the points file lists them."""
        out: dict[str, list[TagView]] = {}
        for t in self.tags:
            out.setdefault(t.panel, []).append(t)
        return out


@dataclass(frozen=True, slots=True)
class SiteView:
    site: str
    devices: tuple[str, ...]
    lines: tuple[str, ...]  # physical lines (bus utilisation fields of the appliance health record)
    types: tuple[DeviceType, ...]
    window_measurement: str = "edge_window"
    health_measurement: str = "edge_health"
    grafana: GrafanaOutput = field(default_factory=GrafanaOutput)
    influx_url: str = "http://127.0.0.1:8086"
    alarms: tuple[str, ...] = ()  # names of the configured alarms (edge_alarms records)
    database: str = DEFAULT_DATABASE
    retention_policy: str | None = None
    forwarding: bool = False  # an InfluxDB output: the forwarder's state is in edge_health

    @property
    def datasource_uid(self) -> str:
        return uid_for(self.grafana.datasource_name)

    @property
    def folder_uid(self) -> str:
        return uid_for(f"edge-{self.site}-folder")


def uid_for(name: str) -> str:
    """A stable Grafana uid (at most 40 characters of ``[A-Za-z0-9_-]``) derived from a name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x"
    if len(slug) <= 40:
        return slug
    return f"{slug[:31]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _tag_view(tag: TagInfo, windows: tuple[str, ...]) -> TagView:
    enum = tuple(sorted((int(k), str(v)) for k, v in (tag.enum or {}).items()))
    return TagView(name=tag.name, dtype=tag.dtype, panel=tag.group, unit=tag.unit, low=tag.low, high=tag.high,
                   enum=enum, windows=windows, description=tag.description)


def _windows(loaded: LoadedConfig) -> dict[str, tuple[str, ...]]:
    """``device.tag`` -> canonical labels of its aggregate windows (as the exporter tags them)."""
    out: dict[str, tuple[str, ...]] = {}
    for dev in loaded.devices:
        for rp in dev.points:
            if rp.point.aggregate is not None:
                lengths = sorted({parse_window(w) for w in rp.point.aggregate.windows})
                out[f"{dev.name}.{rp.point.name}"] = tuple(window_label(ns) for ns in lengths)
    return out


def windows_in_order(labels: set[str]) -> tuple[str, ...]:
    """Window labels, shortest first."""
    return tuple(sorted(labels, key=parse_window))


def site_view(loaded: LoadedConfig) -> SiteView:
    """Read the plant, the exporter's schema options and the Grafana output section."""
    plant = loaded.plant
    outputs = loaded.config.outputs
    influx = outputs.influxdb
    per_plugin = influx is not None and influx.measurement == "plugin"
    windows = _windows(loaded)
    by_type: dict[str, tuple[str | None, list[str], dict[str, TagView]]] = {}
    shared: dict[tuple[str, str], set[str]] = {}  # windows every device of a type has for a tag
    for dev in plant.devices:
        key = dev.plugin or dev.name
        _, names, tags = by_type.setdefault(key, (dev.plugin, [], {}))
        names.append(dev.name)
        for tid in dev.tag_ids:
            tag = plant.tags[tid]
            mine = set(windows.get(tag.key, ()))
            shared[key, tag.name] = shared[key, tag.name] & mine if (key, tag.name) in shared else mine
            if tag.name not in tags:
                tags[tag.name] = _tag_view(tag, ())
    for key, (_, _, tags) in by_type.items():  # one dashboard serves all devices of a type: only common windows
        for name, view in tags.items():
            tags[name] = replace(view, windows=windows_in_order(shared[key, name]))
    types = tuple(
        DeviceType(key=key, plugin=plugin, devices=tuple(names), tags=tuple(tags.values()),
                   measurement=(plugin if per_plugin and plugin else None))
        for key, (plugin, names, tags) in sorted(by_type.items()))
    lines = tuple(sorted({load.line for load in line_loads(loaded)}))
    alarms = tuple(alarm_name(a) for a in (loaded.config.alarms or ()))
    base = SiteView(site=plant.site, devices=tuple(d.name for d in plant.devices), lines=lines, types=types,
                    grafana=outputs.grafana or GrafanaOutput(), alarms=alarms)
    if influx is None:
        return base
    db, rp = influx.v1_target()  # database/retention policy, from `database:` or the bucket's two parts
    return SiteView(site=base.site, devices=base.devices, lines=lines, types=types,
                    window_measurement=influx.window_measurement, health_measurement=influx.health_measurement,
                    grafana=base.grafana, influx_url=influx.url, database=db, retention_policy=rp,
                    alarms=alarms, forwarding=True)


def alarm_name(alarm) -> str:
    """The unique name of a configured alarm (its default is ``<tag or device>.<kind>``)."""
    return alarm.name or f"{alarm.tag or alarm.device}.{alarm.kind}"
