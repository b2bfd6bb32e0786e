"""Checks of a site configuration that need Modbus knowledge, run by the loader (``edge check``).

Shared lines (one owner per serial port or gateway), unit ids per line, host/port overrides,
writable points overlapping in a register, timeouts longer than poll intervals, and the bus
load estimated from each device's real request plan with the frame-time model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from drivers.modbus.config import ModbusRtuBus, ModbusTcpBus, RtuOverTcpBus
from drivers.modbus.planner import PlanError
from drivers.modbus.resolve import config, data, device_plan, line_key, timeout_ms
from drivers.modbus.timing import BusTiming
from edge.config.errors import ConfigIssue
from edge.driver.protocol import LineLoad

if TYPE_CHECKING:
    from edge.config.resolved import LoadedConfig, ResolvedDevice


def check(loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    _serial_ports(loaded, issues)
    _unit_ids(loaded, devices, issues)
    _tcp_overrides(loaded, devices, issues)
    _writable_overlaps(devices, issues)
    _timeouts(loaded, devices, issues)
    _bus_load(loaded, devices, issues)


def _serial_ports(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Two buses cannot own one serial port, nor one gateway endpoint."""
    owners: dict[str, str] = {}
    for pos, bus in enumerate(loaded.config.buses):
        i = loaded.file_index("buses", pos)
        if isinstance(bus, ModbusRtuBus):
            key = bus.port
        elif isinstance(bus, RtuOverTcpBus):
            key = f"{bus.host}:{bus.port}"
        else:
            continue
        if key in owners:
            issues.append(loaded.source.issue(
                ("buses", i, "port"),
                f"{key} is already used by bus {owners[key]!r}: one line has one owner; "
                "put both devices on that bus", key))
        owners.setdefault(key, bus.name)


def _unit_ids(loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    """Unit ids are unique per line (per serial bus, gateway, or TCP endpoint)."""
    seen: dict[tuple[str, int], str] = {}
    for dev in devices:
        line, unit = line_key(dev), config(dev).unit_id
        if (line, unit) in seen:
            issues.append(loaded.source.issue(
                ("devices", dev.index, "unit_id"),
                f"unit id {unit} is already used by device {seen[(line, unit)]!r} on the same line ({line})", unit))
        seen.setdefault((line, unit), dev.name)
        if isinstance(dev.bus, ModbusRtuBus) and not 1 <= unit <= 247:
            issues.append(loaded.source.issue(("devices", dev.index, "unit_id"),
                                              "on a serial line unit ids are 1-247 (0 is broadcast)", unit))


def _tcp_overrides(loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    for dev in devices:
        if isinstance(dev.bus, ModbusTcpBus):
            continue
        for key in ("host", "port"):
            value = getattr(config(dev), key)
            if value is not None:
                issues.append(loaded.source.issue(
                    ("devices", dev.index, key),
                    f"{key} is only for devices on a modbus_tcp bus; bus {dev.bus.name!r} is {dev.bus.type}", value))


def _writable_overlaps(devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    """Two writable values sharing a register would overwrite each other (bits of a word are fine)."""
    for dev in devices:
        by_name = {rp.point.name: rp for rp in dev.points}
        spans = sorted((p for p in data(dev).register_points if p.writable), key=lambda p: (p.table, p.address))
        for a, b in zip(spans, spans[1:], strict=False):
            # a bit written by read-modify-write may share its word with other bits or the word itself
            if a.table == b.table and b.address < a.end and a.bit is None and b.bit is None:
                rp = by_name[b.name]
                issues.append(rp.source.issue((*rp.path, "address"),
                                              f"writable point {b.name!r} overlaps writable point {a.name!r} "
                                              f"({a.table} {a.address}-{a.end - 1}) in device {dev.name!r}",
                                              getattr(rp.point, "address", None)))


def _timeouts(loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    bus_index = {b.name: loaded.file_index("buses", i) for i, b in enumerate(loaded.config.buses)}
    for dev in devices:
        used = {rp.point.group for rp in dev.points}
        timeout = timeout_ms(dev)
        for group in sorted(used & set(dev.poll_groups)):
            interval = dev.interval_ms(group)
            if timeout > interval:
                where = ("devices", dev.index, "timeout_ms") if config(dev).timeout_ms else \
                    ("buses", bus_index[dev.bus.name], "timeout_ms")
                issues.append(loaded.source.issue(
                    where,
                    f"timeout {timeout} ms of device {dev.name!r} is longer than the poll interval "
                    f"{interval} ms of its group {group!r}: a dead device would overrun every cycle; "
                    "shorten the timeout or poll slower", timeout))
                break


def line_loads(loaded: LoadedConfig, devices: Sequence[ResolvedDevice],
               issues: list[ConfigIssue] | None = None) -> list[LineLoad]:
    """Estimated load per physical line, from each device's request plan and the frame-time model.

    A device whose points cannot be planned (e.g. a point longer than its request limit) is
    reported in ``issues`` and left out of the estimate.
    """
    share: dict[str, float] = {}
    rate: dict[str, float] = {}
    bus_of: dict[str, str] = {}
    for dev in devices:
        if not dev.runnable or dev.point_errors:
            continue
        try:
            plan = device_plan(dev)
        except PlanError as exc:
            if issues is not None:
                issues.append(loaded.source.issue(("devices", dev.index), str(exc)))
            continue
        key = line_key(dev)
        timing = BusTiming.from_bus_config(dev.bus)
        share[key] = share.get(key, 0.0) + plan.busy_share(timing, config(dev).pause_between_requests_ms)
        rate[key] = rate.get(key, 0.0) + plan.requests_per_s()
        bus_of[key] = dev.bus.name
    return [LineLoad(bus_of[k], k, 100.0 * share[k], rate[k]) for k in share]


def _bus_load(loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
    for load in line_loads(loaded, devices, issues):
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
