"""A configured Modbus device in the driver's own terms: protocol addresses, register points, lines.

Run once when a configuration loads (:meth:`drivers.modbus.driver.ModbusDriver.resolve`):
datasheet addresses become 0-based protocol (PDU) addresses here, so nothing downstream deals
with 1-based or 40001-style numbering, and every point becomes a :class:`RegisterPoint`
(without its tag id: the runtime binds ids when it opens the device).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.modbus.config import (
    TYPE_BITS,
    ModbusBus,
    ModbusDevice,
    ModbusManifest,
    ModbusPluginPoints,
    ModbusPoint,
    ModbusRtuBus,
    ModbusTcpBus,
    RtuOverTcpBus,
)
from drivers.modbus.device_plan import DevicePlan
from drivers.modbus.planner import PlanLimits, ReprobePolicy
from drivers.modbus.points import REGISTER_COUNT, RegisterPoint, Table
from drivers.modbus.timing import inter_frame_gap_s
from edge.config.errors import ConfigIssue
from edge.config.resolved import ResolvedPoint
from edge.config.validation import validate

if TYPE_CHECKING:
    from edge.config.resolved import ResolvedDevice

_TABLE_PREFIX = {"coil": 0, "discrete": 1, "input": 3, "holding": 4}


@dataclass
class ModbusDeviceData:
    """What :func:`resolve_device` derives from a device's configuration (``ResolvedDevice.driver_data``)."""

    register_points: list[RegisterPoint] = field(default_factory=list)  # tag_id -1: bound at run time
    default_order: str = "ABCD"  # the site device's order if it sets one, else the plugin's


def data(dev: ResolvedDevice) -> ModbusDeviceData:
    """The Modbus form of a resolved device (filled by :func:`resolve_device`)."""
    assert isinstance(dev.driver_data, ModbusDeviceData), f"device {dev.name} was not resolved by the Modbus driver"
    return dev.driver_data


def config(dev: ResolvedDevice) -> ModbusDevice:
    assert isinstance(dev.config, ModbusDevice)
    return dev.config


def protocol_address(p: ModbusPoint, address_base: int, register_numbers: bool) -> tuple[int | None, str | None]:
    """Datasheet address -> 0-based protocol address, or an error saying why not."""
    a = p.address
    if register_numbers:
        prefix = _TABLE_PREFIX[p.table]
        width = 100_000 if a >= 100_000 else 10_000  # 400001-style (6 digits) or 40001-style (5)
        if prefix == 0 and 1 <= a <= 65536:  # coils: 00001.. has no leading digit to check
            return a - 1, None
        if a // width == prefix and 1 <= a % width <= 65536:
            return a % width - 1, None
        return None, (f"register number {a} does not belong to table {p.table} "
                      f"(expected {prefix}0001-{prefix}9999 or {prefix}00001-{prefix}65536)")
    if address_base == 1:
        if a < 1:
            return None, "addresses of this device are 1-based: 0 is not a valid address"
        a -= 1
    if a > 65535:
        return None, f"address {a} is beyond the Modbus range 0-65535 (is this a 40001-style number? " \
                     "then set register_numbers: true)"
    return a, None


def resolve_device(dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
    """Expand named bits into tags, then fill ``dev.driver_data`` with the device's register points
    (addresses converted once, sentinels and scale-factor registers resolved)."""
    cfg = config(dev)
    manifest = dev.manifest if isinstance(dev.manifest, ModbusManifest) else None
    base = manifest.address_base if manifest else cfg.address_base
    numbers = manifest.register_numbers if manifest else cfg.register_numbers
    plugin_points = dev.plugin_points if isinstance(dev.plugin_points, ModbusPluginPoints) else None
    order = cfg.order
    if "order" not in cfg.model_fields_set and plugin_points is not None:
        order = plugin_points.order
    invalid_defaults: dict[str, list[Any]] = \
        {dtype: list(values) for dtype, values in plugin_points.invalid.items()} if plugin_points is not None else {}
    dev.points = expand_named_bits(dev.points, issues)
    out: list[RegisterPoint] = []
    for rp in dev.points:
        p = rp.point
        assert isinstance(p, ModbusPoint)
        addr, error = protocol_address(p, base, numbers)
        if error or addr is None:
            issues.append(rp.source.issue((*rp.path, "address"), error or "no address", p.address))
            continue
        sf_address = None
        if p.scale_factor is not None:
            sf_address = _scale_factor_address(dev, rp, base, numbers, issues)
            if sf_address is None:
                continue
        invalid, nul = _sentinels(p, invalid_defaults)
        is_bit = p.bit is not None
        rpoint = RegisterPoint(
            tag_id=-1, name=p.name, table=Table(p.table), address=addr, dtype="bool" if is_bit else p.type,
            order=p.order or order, bit=p.bit, length=p.length or 0, scale=p.scale, offset=p.offset,
            low=p.range[0] if p.range else None, high=p.range[1] if p.range else None, clamp=p.clamp,
            enum=tuple(sorted(p.enum.items())) if p.enum else None, writable=p.writable,
            invalid=invalid, nul_invalid=nul, sf_address=sf_address,
            word=f"uint{TYPE_BITS[p.type]}" if is_bit and p.type != "bool" else None,
        )
        if rpoint.end > 65536:
            issues.append(rp.source.issue((*rp.path, "address"),
                                          f"point spans {rpoint.count} registers from {addr}: beyond address 65535",
                                          p.address))
            continue
        out.append(rpoint)
    dev.driver_data = ModbusDeviceData(out, order)


def expand_named_bits(points: list[ResolvedPoint], issues: list[ConfigIssue]) -> list[ResolvedPoint]:
    """Each named bit of a point (``bits: {0: ground_fault}``) becomes a bool tag
    ``<point>_<name>`` read from that bit of the point's value, right after the point."""
    out: list[ResolvedPoint] = []
    for rp in points:
        out.append(rp)
        p = rp.point
        assert isinstance(p, ModbusPoint)
        for bit, label in sorted((p.bits or {}).items()):
            name = f"{p.name}_{label}"
            data = {"name": name, "table": p.table, "address": p.address, "type": p.type, "bit": bit,
                    "order": p.order, "group": p.group, "panel": p.panel,
                    "description": f"bit {bit} of {p.name}: {label}"}
            if p.invalid is not None:
                data["invalid"] = p.invalid
            issue_count = len(issues)
            point = validate(ModbusPoint, {k: v for k, v in data.items() if v is not None}, rp.source,
                             (*rp.path, "bits", bit), issues)
            if point is None:
                for i in range(issue_count, len(issues)):  # say which generated tag failed
                    issues[i] = ConfigIssue(issues[i].file, issues[i].line, issues[i].path,
                                            f"named bit {bit} ({label!r}) makes tag {name!r}: {issues[i].message}",
                                            issues[i].value)
                continue
            out.append(ResolvedPoint(point, rp.source, (*rp.path, "bits", bit)))
    return out


def _sentinels(p: ModbusPoint, defaults: dict[str, list[Any]]) -> tuple[tuple[int, ...], bool]:
    """The raw patterns (unsigned) and the all-NUL flag of a point: its own, else the plugin's for its type."""
    values = p.invalid if p.invalid is not None else defaults.get(p.type, [])
    if p.type in ("string", "bool"):
        return (), "all_nul" in values and p.type == "string"
    mask = (1 << (16 * REGISTER_COUNT[p.type])) - 1
    return tuple(sorted({int(v) & mask for v in values if v != "all_nul"})), False


def _scale_factor_address(dev: ResolvedDevice, rp: ResolvedPoint, base: int, numbers: bool,
                          issues: list[ConfigIssue]) -> int | None:
    """Protocol address of the int16 point a point names in ``scale_factor``, or an issue saying why not."""
    p = rp.point
    assert isinstance(p, ModbusPoint)
    target = next((other.point for other in dev.points if other.point.name == p.scale_factor), None)
    problem = None
    if not isinstance(target, ModbusPoint):
        problem = f"no point {p.scale_factor!r} in device {dev.name!r} to take the scale factor from"
    elif target.type != "int16" or target.table != p.table or target.bit is not None:
        problem = (f"scale factor {p.scale_factor!r} must be an int16 register in the {p.table} table, "
                   f"not {target.type} in {target.table}")
    else:
        addr, problem = protocol_address(target, base, numbers)
        if problem is None:
            return addr
    issues.append(rp.source.issue((*rp.path, "scale_factor"), problem or "no address", p.scale_factor))
    return None


def device_plan(dev: ResolvedDevice, points: list[RegisterPoint] | None = None) -> DevicePlan:
    """The request plan of a configured device, one PollPlan per poll group.

    ``points`` are the device's register points with their tag ids (the runtime's); without
    them the plan is built from the configuration's points (ids -1), enough for bus load and
    ``edge plan``.
    """
    group_of = {rp.point.name: rp.point.group for rp in dev.points}
    points = data(dev).register_points if points is None else points
    cfg = config(dev)
    reprobe = ReprobePolicy(cfg.hole_reprobe_s, max(cfg.hole_reprobe_max_s, cfg.hole_reprobe_s),
                            permanent=cfg.holes == "permanent")
    return DevicePlan(((group_of[p.name], p) for p in points),
                      {g: pg.interval_ms for g, pg in dev.poll_groups.items()},
                      PlanLimits.from_device_config(cfg), reprobe=reprobe)


def bus(dev: ResolvedDevice) -> ModbusBus:
    assert isinstance(dev.bus, ModbusTcpBus | ModbusRtuBus | RtuOverTcpBus)
    return dev.bus


def line_key(dev: ResolvedDevice) -> str:
    """The physical line a device is on: one transaction at a time per line."""
    b, cfg = bus(dev), config(dev)
    if isinstance(b, ModbusTcpBus):
        return f"tcp://{cfg.host or b.host}:{cfg.port or b.port}"
    if isinstance(b, RtuOverTcpBus):
        return f"rtu+tcp://{b.host}:{b.port}"
    return f"serial://{b.port}"


def line_gap_s(dev: ResolvedDevice) -> float:
    """The silent interval between two transactions on the device's line (0 on Modbus TCP)."""
    b = bus(dev)
    if isinstance(b, ModbusTcpBus):
        return 0.0
    if b.inter_frame_gap_ms is not None:
        return b.inter_frame_gap_ms / 1e3
    return inter_frame_gap_s(b.baud, b.parity, b.data_bits, b.stop_bits)


def timeout_ms(dev: ResolvedDevice) -> int:
    return config(dev).timeout_ms or bus(dev).timeout_ms


def retries(dev: ResolvedDevice) -> int:
    cfg = config(dev)
    return bus(dev).retries if cfg.retries is None else cfg.retries
