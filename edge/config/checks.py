"""Checks across objects of a site configuration, run by the loader once the schema holds.

Each check appends :class:`ConfigIssue` objects that point at the offending line. The bus
load check also produces the per-bus load figures that ``edge check`` prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.config.errors import ConfigIssue
from edge.config.intelligence_checks import check_intelligence
from edge.config.mqtt import check_mqtt

if TYPE_CHECKING:
    from edge.config.loader import LoadedConfig, ResolvedDevice


def run_checks(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    for check in (_unique_names, _serial_ports, _unit_ids, _tcp_overrides, _point_names, _writable_overlaps,
                  _timeouts, _aggregates, _bus_load, check_intelligence, check_mqtt):
        check(loaded, issues)


def _unique_names(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    src = loaded.source
    for section in ("buses", "devices"):
        seen: dict[str, int] = {}
        for pos, item in enumerate(getattr(loaded.config, section)):
            i = loaded.file_index(section, pos)
            if item.name in seen:
                issues.append(src.issue((section, i, "name"),
                                        f"duplicate name: {section}[{seen[item.name]}] is already called {item.name!r}",
                                        item.name))
            seen.setdefault(item.name, i)


def _serial_ports(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Two buses cannot own one serial port, nor one gateway endpoint."""
    owners: dict[str, int] = {}
    for pos, bus in enumerate(loaded.config.buses):
        i = loaded.file_index("buses", pos)
        if bus.type == "modbus_rtu":
            key = bus.port
        elif bus.type == "rtu_over_tcp":
            key = f"{bus.host}:{bus.port}"
        else:
            continue
        if key in owners:
            issues.append(loaded.source.issue(
                ("buses", i, "port"),
                f"{key} is already used by bus {loaded.source.data['buses'][owners[key]].get('name')!r}: one line has "
                "one owner; "
                "put both devices on that bus", key))
        owners.setdefault(key, i)


def _unit_ids(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Unit ids are unique per line (per serial bus, gateway, or TCP endpoint)."""
    seen: dict[tuple[str, int], str] = {}
    for dev in loaded.devices:
        line = line_key(dev)
        key = (line, dev.config.unit_id)
        if key in seen:
            issues.append(loaded.source.issue(
                ("devices", dev.index, "unit_id"),
                f"unit id {dev.config.unit_id} is already used by device {seen[key]!r} on the same line ({line})",
                dev.config.unit_id))
        seen.setdefault(key, dev.name)
        if dev.bus.type == "modbus_rtu" and not 1 <= dev.config.unit_id <= 247:
            issues.append(loaded.source.issue(("devices", dev.index, "unit_id"),
                                              "on a serial line unit ids are 1-247 (0 is broadcast)",
                                              dev.config.unit_id))


def line_key(dev: ResolvedDevice) -> str:
    """The physical line a device is on: one transaction at a time per line."""
    bus = dev.bus
    if bus.type == "modbus_tcp":
        return f"tcp://{dev.config.host or bus.host}:{dev.config.port or bus.port}"
    if bus.type == "rtu_over_tcp":
        return f"rtu+tcp://{bus.host}:{bus.port}"
    return f"serial://{bus.port}"


def _tcp_overrides(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    for dev in loaded.devices:
        if dev.bus.type != "modbus_tcp":
            for key in ("host", "port"):
                if getattr(dev.config, key) is not None:
                    issues.append(loaded.source.issue(
                        ("devices", dev.index, key),
                        f"{key} is only for devices on a modbus_tcp bus; bus {dev.bus.name!r} is {dev.bus.type}",
                        getattr(dev.config, key)))


def _point_names(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    for dev in loaded.devices:
        seen: set[str] = set()
        for rp in dev.points:
            if rp.point.name in seen:
                issues.append(rp.source.issue((*rp.path, "name"),
                                              f"duplicate tag name {rp.point.name!r} in device {dev.name!r}",
                                              rp.point.name))
            seen.add(rp.point.name)


def _writable_overlaps(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Two writable values sharing a register would overwrite each other (bits of a word are fine)."""
    for dev in loaded.devices:
        by_name = {rp.point.name: rp for rp in dev.points}
        spans = sorted((p for p in dev.register_points if p.writable), key=lambda p: (p.table, p.address))
        for a, b in zip(spans, spans[1:], strict=False):
            # a bit written by read-modify-write may share its word with other bits or the word itself
            if a.table == b.table and b.address < a.end and a.bit is None and b.bit is None:
                rp = by_name[b.name]
                issues.append(rp.source.issue((*rp.path, "address"),
                                              f"writable point {b.name!r} overlaps writable point {a.name!r} "
                                              f"({a.table} {a.address}-{a.end - 1}) in device {dev.name!r}",
                                              rp.point.address))


def _timeouts(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    bus_index = {b.name: loaded.file_index("buses", i) for i, b in enumerate(loaded.config.buses)}
    for dev in loaded.devices:
        used = {rp.point.group for rp in dev.points}
        for group in sorted(used & set(dev.poll_groups)):
            interval = dev.interval_ms(group)
            if dev.timeout_ms() > interval:
                where = ("devices", dev.index, "timeout_ms") if dev.config.timeout_ms else \
                    ("buses", bus_index[dev.bus.name], "timeout_ms")
                issues.append(loaded.source.issue(
                    where,
                    f"timeout {dev.timeout_ms()} ms of device {dev.name!r} is longer than the poll interval "
                    f"{interval} ms of its group {group!r}: a dead device would overrun every cycle; "
                    "shorten the timeout or poll slower", dev.timeout_ms()))
                break


def _aggregates(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """What the aggregator would refuse at start-up: ring capacity, OPC UA statistics, memory."""
    from edge.aggregate.engine import Aggregator
    from edge.core.model import TagInfo

    tags, configs, where = {}, {}, {}  # the plant is not built yet: number the aggregated tags here
    for dev in loaded.devices:
        if dev.point_errors:
            continue  # its points are reported already; their groups may not exist
        for rp in dev.points:
            if rp.point.aggregate is not None:
                i = len(tags)
                tags[i] = TagInfo(id=i, device=dev.name, name=rp.point.name, bus=dev.bus.name, dtype=rp.point.type,
                                  interval_ms=dev.interval_ms(rp.point.group))
                configs[i], where[i] = rp.point.aggregate, rp
    if not configs:
        return
    settings = loaded.config.outputs.aggregator
    for tag_id, message in Aggregator(settings).problems(tags, configs):
        if tag_id is None:
            issues.append(loaded.source.issue(("outputs", "aggregator"), message))
        else:
            rp = where[tag_id]
            issues.append(rp.source.issue((*rp.path, "aggregate"), message))


@dataclass(frozen=True)
class BusLoad:
    bus: str
    line: str
    load_pct: float  # share of the line's time the configured polling needs
    requests_per_s: float


def bus_loads(loaded: LoadedConfig, issues: list[ConfigIssue] | None = None) -> list[BusLoad]:
    """Estimated load per physical line, from each device's request plan and the frame-time model.

    A device whose points cannot be planned (e.g. a point longer than its request limit) is
    reported in ``issues`` and left out of the estimate.
    """
    from drivers.modbus.planner import PlanError
    from drivers.modbus.timing import BusTiming
    from edge.runtime.app import device_plan

    share: dict[str, float] = {}
    rate: dict[str, float] = {}
    bus_of: dict[str, str] = {}
    for dev in loaded.devices:
        if dev.plugin_error or not dev.config.enabled or dev.point_errors:
            continue
        try:
            plan = device_plan(dev)
        except PlanError as exc:
            if issues is not None:
                issues.append(loaded.source.issue(("devices", dev.index), str(exc)))
            continue
        key = line_key(dev)
        timing = BusTiming.from_bus_config(dev.bus)
        share[key] = share.get(key, 0.0) + plan.busy_share(timing, dev.config.pause_between_requests_ms)
        rate[key] = rate.get(key, 0.0) + plan.requests_per_s()
        bus_of[key] = dev.bus.name
    return [BusLoad(bus_of[k], k, 100.0 * share[k], rate[k]) for k in share]


def _bus_load(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    for load in bus_loads(loaded, issues):
        index = next(loaded.file_index("buses", i) for i, b in enumerate(loaded.config.buses) if b.name == load.bus)
        if load.load_pct > 100.0:
            issues.append(loaded.source.issue(
                ("buses", index),
                f"line {load.line} needs {load.load_pct:.0f}% of its time for the configured poll rates "
                f"({load.requests_per_s:.1f} requests/s): poll slower, raise the baud rate or split the line",
                None))
        elif load.load_pct > 80.0:
            issues.append(loaded.source.issue(
                ("buses", index), f"line {load.line} is {load.load_pct:.0f}% loaded: little room for retries "
                "and writes", None, "warning"))

