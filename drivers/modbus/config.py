"""The Modbus driver's configuration schema: its bus types, devices and points.

Subclasses of the core's :class:`~edge.config.models.BusConfig`, ``DeviceConfig`` and
``PointConfig``: the loader validates every bus whose ``type`` is one of :data:`BUS_TYPES` and
every device on such a bus with these models, so errors name the file, line and key as for
any other section. Addresses are what the datasheet says (``address_base``,
``register_numbers``); :func:`drivers.modbus.resolve.protocol_address` converts them once.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from drivers.modbus.points import DTYPES, ORDERS, REGISTER_COUNT
from edge.config.models import BusConfig, DeviceConfig, Model, Name, PointConfig, Port, common_point_problems
from edge.plugins.models import PluginManifest, PluginPoints

Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
TableName = Literal["coil", "discrete", "holding", "input"]
Parity = Literal["N", "E", "O"]
TimeoutMs = Annotated[int, Field(ge=10, le=60_000)]
#: Widths of the integer types a bit can be taken from.
TYPE_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
Sentinel = int | Literal["all_nul"]
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)

assert set(ORDERS) == set(Order.__args__) and set(DTYPES) == set(DType.__args__)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- buses


class _ModbusBus(BusConfig):
    timeout_ms: TimeoutMs = 500
    retries: Annotated[int, Field(ge=0, le=5)] = 1


class ModbusTcpBus(_ModbusBus):
    """Modbus TCP: one connection per (host, port); devices may override host/port."""

    type: Literal["modbus_tcp"]
    host: str = "127.0.0.1"
    port: Port = 502
    timeout_ms: TimeoutMs = 1000


class _SerialTiming(Model):
    baud: int = 9600
    parity: Parity = "N"
    data_bits: Literal[7, 8] = 8
    stop_bits: Literal[1, 2] = 1
    inter_frame_gap_ms: Annotated[float, Field(ge=0, le=1000)] | None = None  # None: 3.5 characters

    @field_validator("baud")
    @classmethod
    def _standard_baud(cls, v: int) -> int:
        if v not in STANDARD_BAUDS:
            raise ValueError(f"baud must be one of {', '.join(map(str, STANDARD_BAUDS))}")
        return v


class ModbusRtuBus(_ModbusBus, _SerialTiming):
    """Modbus RTU on a serial line (RS-485): one transaction in flight on the whole line."""

    type: Literal["modbus_rtu"]
    port: Annotated[str, Field(min_length=1, description="serial device path, e.g. /dev/ttyUSB0")]


class RtuOverTcpBus(_ModbusBus, _SerialTiming):
    """RTU frames tunnelled through a serial-to-Ethernet gateway; the serial side sets the pace."""

    type: Literal["rtu_over_tcp"]
    host: str
    port: Port = 4001
    timeout_ms: TimeoutMs = 1000


ModbusBus = ModbusTcpBus | ModbusRtuBus | RtuOverTcpBus
BUS_MODELS: dict[str, type[_ModbusBus]] = {"modbus_tcp": ModbusTcpBus, "modbus_rtu": ModbusRtuBus,
                                           "rtu_over_tcp": RtuOverTcpBus}
BUS_TYPES = tuple(BUS_MODELS)


# ----------------------------------------------------------------------------- points


class ModbusPoint(PointConfig):
    """One tag of a Modbus device, as the datasheet describes it."""

    table: TableName = "holding"
    address: Annotated[int, Field(ge=0, le=465_536)]
    type: DType = "uint16"
    order: Order | None = None  # None: the device's order
    bit: Annotated[int, Field(ge=0, le=63)] | None = None  # bool: 0-15 of a register; integer types: a bit of the value
    length: Annotated[int, Field(ge=1, le=123)] | None = None  # registers, for strings
    scale: float = 1.0
    offset: float = 0.0
    invalid: list[Sentinel] | None = None  # sentinels; None: the plugin's default for the type
    scale_factor: Name | None = None  # the point holding this value's power of ten (SunSpec *_SF)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        problems = point_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def point_problems(p: ModbusPoint) -> list[str]:
    """Rules between the fields of one point (each problem says what is allowed)."""
    out = common_point_problems(p)
    bits = p.table in ("coil", "discrete")
    if bits and p.type != "bool":
        out.append(f"a {p.table} holds one bit: type must be bool, not {p.type}")
    width = TYPE_BITS.get(p.type)
    if p.bit is not None and (bits or (p.type != "bool" and width is None)):
        out.append("bit is for type bool (bit 0-15 of a register) or an integer type (a bit of its value) "
                   "in a holding or input register")
    elif p.bit is not None and p.bit >= (16 if p.type == "bool" else width or 16):
        out.append(f"bit {p.bit} does not exist in a {p.type}: bits are 0-{(16 if p.type == 'bool' else width or 16) - 1}")
    if not bits and p.type == "bool" and p.bit is None:
        out.append("a bool in a register needs 'bit' (0-15)")
    if p.bits is not None:
        if width is None or p.bit is not None or bits:
            out.append("bits (named bits) are for an integer point in a register, without 'bit'")
        elif any(b >= width for b in p.bits):
            out.append(f"bits of a {p.type} are 0-{width - 1}, got {max(p.bits)}")
    out.extend(_sentinel_problems(p, bits))
    if p.scale_factor is not None and p.type in ("bool", "string"):
        out.append(f"scale_factor does not apply to type {p.type}")
    if p.scale_factor is not None and p.bit is not None:
        out.append("scale_factor does not apply to a bit")
    if p.type == "string" and p.length is None:
        out.append("a string needs 'length' in registers (two characters each)")
    if p.length is not None and p.type != "string":
        out.append("length is only for type string")
    if p.scale == 0:
        out.append("scale must not be 0")
    if p.writable and p.table in ("discrete", "input"):
        out.append(f"a {p.table} is read-only in Modbus: writable needs table coil or holding")
    if p.enum is not None and p.type in ("float32", "float64", "string", "bool"):
        out.append("enum needs an integer type")
    if p.type in ("bool", "string") and (p.scale != 1.0 or p.offset != 0.0):
        out.append(f"scale and offset do not apply to type {p.type}")
    scaled = p.scale != 1.0 or p.offset != 0.0 or p.scale_factor is not None
    if p.value_type is not None and (not scaled or p.type in ("bool", "string", "float64") or p.bit is not None):
        out.append(f"value_type is for a scaled value (an integer or float32 with scale, offset or scale_factor); "
                   f"this {p.type} {'is not scaled' if not scaled else 'keeps its type'}: leave value_type out")
    return out


def _sentinel_problems(p: ModbusPoint, bits: bool) -> list[str]:
    if p.invalid is None:
        return []
    if p.type == "string" and any(v != "all_nul" for v in p.invalid):
        return ["a string's only invalid value is all_nul (every register NUL)"]
    if p.type != "string" and "all_nul" in p.invalid:
        return ["all_nul is for strings; numbers list raw values such as 0x8000"]
    if p.type != "string" and bits:
        return [f"invalid values are for registers, not a {p.table}"]
    if p.type not in ("string", "bool"):
        w = 16 * REGISTER_COUNT[p.type]
        wrong = [v for v in p.invalid if isinstance(v, int) and not -(1 << (w - 1)) <= v < 1 << w]
        if wrong:
            return [f"invalid value {wrong[0]} does not fit {w} bits (allowed {-(1 << (w - 1))} .. {(1 << w) - 1:#x})"]
    return []


# ----------------------------------------------------------------------------- devices


class ModbusDevice(DeviceConfig):
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    host: str | None = None  # modbus_tcp only: overrides the bus host
    port: Port | None = None  # modbus_tcp only: overrides the bus port
    address_base: Literal[0, 1] = 0
    register_numbers: bool = False  # 40001-style numbers: the leading digit names the table
    order: Order = "ABCD"
    timeout_ms: TimeoutMs | None = None  # None: the bus's
    retries: Annotated[int, Field(ge=0, le=5)] | None = None
    max_registers_per_request: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits_per_request: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124)] = 8  # unused registers read to merge two blocks
    one_request_per_tag: bool = False
    pause_between_requests_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    hole_reprobe_s: Annotated[float, Field(ge=0.1, le=86_400)] = Field(
        30.0, description="first re-probe of a learned address hole (exception 2), doubling from there")
    hole_reprobe_max_s: Annotated[float, Field(ge=0.1, le=86_400)] = Field(
        600.0, description="learned holes are re-probed at least this often")
    holes: Literal["reprobe", "permanent"] = Field(
        "reprobe", description="permanent: a learned hole is never read again (only for devices whose holes "
        "are real and whose re-probes cost too much)")
    points: list[ModbusPoint] = Field(default_factory=list)


# ----------------------------------------------------------------------------- plugins


class ModbusManifest(PluginManifest):
    """``manifest.yaml`` of a Modbus device plugin: how its datasheet numbers addresses."""

    address_base: Literal[0, 1] = 0
    register_numbers: bool = False


class ModbusPluginPoints(PluginPoints):
    """``points.yaml`` of a Modbus device plugin: the register map and the device's byte order."""

    order: Order = "ABCD"
    #: sentinels per type, used by every point of that type that does not set its own ``invalid``
    invalid: dict[DType, list[Sentinel]] = Field(default_factory=dict)
    points: list[ModbusPoint] = Field(min_length=1)


__all__ = ["BUS_MODELS", "BUS_TYPES", "ModbusBus", "ModbusDevice", "ModbusManifest", "ModbusPluginPoints",
           "ModbusPoint", "ModbusRtuBus", "ModbusTcpBus", "Name", "RtuOverTcpBus", "point_problems"]
