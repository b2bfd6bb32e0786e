"""Typed models of a site configuration (one YAML file per appliance).

Field names carry their units (``interval_ms``, ``timeout_ms``). Every model forbids unknown
keys, so a misspelt key is an error that lists the allowed ones, not a silently ignored line.
Checks that involve several objects (names, ports, addresses, bus load) live in
``edge.config.checks``.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.modbus.points import DTYPES, ORDERS, REGISTER_COUNT
from edge.config.aggregate import AggregatorSettings, TagAggregateConfig
from edge.config.intelligence import AlarmConfig, ApiConfig, RuleConfig
from edge.config.mqtt import MqttConfig
from edge.config.opcua import OpcUaConfig
from edge.config.storage import InfluxConfig, SpoolConfig

Name = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$",
          description="letters, digits, '_' and '-', starting with a letter or '_', at most 63 characters"),
]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
TableName = Literal["coil", "discrete", "holding", "input"]
Parity = Literal["N", "E", "O"]
Port = Annotated[int, Field(ge=1, le=65535)]
TimeoutMs = Annotated[int, Field(ge=10, le=60_000)]
IntervalMs = Annotated[int, Field(ge=10, le=86_400_000)]
#: Widths of the integer types a bit can be taken from.
TYPE_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)

assert set(ORDERS) == set(Order.__args__) and set(DTYPES) == set(DType.__args__)  # type: ignore[attr-defined]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ----------------------------------------------------------------------------- site and buses


class Site(Model):
    name: Name
    description: str = ""


class _BusCommon(Model):
    name: Name
    timeout_ms: TimeoutMs = 500
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    description: str = ""


class ModbusTcpBus(_BusCommon):
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


class ModbusRtuBus(_BusCommon, _SerialTiming):
    """Modbus RTU on a serial line (RS-485): one transaction in flight on the whole line."""

    type: Literal["modbus_rtu"]
    port: Annotated[str, Field(min_length=1, description="serial device path, e.g. /dev/ttyUSB0")]


class RtuOverTcpBus(_BusCommon, _SerialTiming):
    """RTU frames tunnelled through a serial-to-Ethernet gateway; the serial side sets the pace."""

    type: Literal["rtu_over_tcp"]
    host: str
    port: Port = 4001
    timeout_ms: TimeoutMs = 1000


Bus = Annotated[ModbusTcpBus | ModbusRtuBus | RtuOverTcpBus, Field(discriminator="type")]
BUS_TYPES = ("modbus_tcp", "modbus_rtu", "rtu_over_tcp")


# ----------------------------------------------------------------------------- points


class Point(Model):
    """One tag of a device, as the datasheet describes it."""

    name: Name
    table: TableName = "holding"
    address: Annotated[int, Field(ge=0, le=465_536)]
    type: DType = "uint16"
    order: Order | None = None  # None: the device's order
    bit: Annotated[int, Field(ge=0, le=63)] | None = None  # bool: 0-15 of a register; integer types: a bit of the value
    bits: dict[Annotated[int, Field(ge=0, le=63)], Name] | None = None  # named bits: one bool tag each
    length: Annotated[int, Field(ge=1, le=123)] | None = None  # registers, for strings
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    range: tuple[float, float] | None = None
    clamp: bool = False
    deadband: Annotated[float, Field(ge=0)] = 0.0
    writable: bool = False
    group: Name = "default"
    description: str = ""
    enum: dict[int, str] | None = None
    invalid: list[int | Literal["all_nul"]] | None = None  # sentinels; None: the plugin's default for the type
    scale_factor: Name | None = None  # the point holding this value's power of ten (SunSpec *_SF)
    aggregate: TagAggregateConfig | None = None  # raw ring + window statistics for this tag
    panel: str | None = None  # dashboard panel group; default: by unit
    sim: dict[str, Any] | None = None  # signal hints for the simulator

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        problems = point_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def point_problems(p: Point) -> list[str]:
    """Rules between the fields of one point (each problem says what is allowed)."""
    out: list[str] = []
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
    if p.invalid is not None:
        if p.type == "string" and any(v != "all_nul" for v in p.invalid):
            out.append("a string's only invalid value is all_nul (every register NUL)")
        elif p.type != "string" and "all_nul" in p.invalid:
            out.append("all_nul is for strings; numbers list raw values such as 0x8000")
        elif p.type != "string" and bits:
            out.append(f"invalid values are for registers, not a {p.table}")
        elif p.type not in ("string", "bool"):
            w = 16 * REGISTER_COUNT[p.type]
            wrong = [v for v in p.invalid if isinstance(v, int) and not -(1 << (w - 1)) <= v < 1 << w]
            if wrong:
                out.append(f"invalid value {wrong[0]} does not fit {w} bits (allowed {-(1 << (w - 1))} .. "
                           f"{(1 << w) - 1:#x})")
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
    if p.range is not None and not p.range[0] < p.range[1]:
        out.append(f"range must be [low, high] with low < high, got {list(p.range)}")
    if p.writable and p.table in ("discrete", "input"):
        out.append(f"a {p.table} is read-only in Modbus: writable needs table coil or holding")
    if p.enum is not None and p.type in ("float32", "float64", "string", "bool"):
        out.append("enum needs an integer type")
    if p.type in ("bool", "string") and (p.scale != 1.0 or p.offset != 0.0):
        out.append(f"scale and offset do not apply to type {p.type}")
    return out


class PointOverride(Model):
    """Changes a site makes to one point of a plugin without copying it."""

    group: Name | None = None
    deadband: Annotated[float, Field(ge=0)] | None = None
    range: tuple[float, float] | None = None
    writable: bool | None = None
    unit: str | None = None
    description: str | None = None
    aggregate: TagAggregateConfig | None = None
    sim: dict[str, Any] | None = None  # simulator hints for this device (e.g. its model's parameters)


class PollGroup(Model):
    interval_ms: IntervalMs


# ----------------------------------------------------------------------------- devices


class Device(Model):
    name: Name
    bus: Name
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    enabled: bool = True
    description: str = ""
    host: str | None = None  # modbus_tcp only: overrides the bus host
    port: Port | None = None  # modbus_tcp only: overrides the bus port
    plugin: Name | None = None
    address_base: Literal[0, 1] = 0
    register_numbers: bool = False  # 40001-style numbers: the leading digit names the table
    order: Order = "ABCD"
    interval_ms: IntervalMs = 1000  # the "default" poll group
    poll_groups: dict[str, PollGroup] = Field(default_factory=dict)
    timeout_ms: TimeoutMs | None = None  # None: the bus's
    retries: Annotated[int, Field(ge=0, le=5)] | None = None
    max_registers_per_request: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits_per_request: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124)] = 8  # unused registers read to merge two blocks
    one_request_per_tag: bool = False
    pause_between_requests_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    offline_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_max_s: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        8.0, description="an offline device is probed at most this far apart (back within ~10 s of answering); "
        "never more often than one timeout per 10 timeouts of its line")
    hole_reprobe_s: Annotated[float, Field(ge=0.1, le=86_400)] = Field(
        30.0, description="first re-probe of a learned address hole (exception 2), doubling from there")
    hole_reprobe_max_s: Annotated[float, Field(ge=0.1, le=86_400)] = Field(
        600.0, description="learned holes are re-probed at least this often")
    holes: Literal["reprobe", "permanent"] = Field(
        "reprobe", description="permanent: a learned hole is never read again (only for devices whose holes "
        "are real and whose re-probes cost too much)")
    points: list[Point] = Field(default_factory=list)
    drop: list[Name] = Field(default_factory=list)  # plugin points to leave out
    override: dict[str, PointOverride] = Field(default_factory=dict)  # plugin point name -> changes

    @model_validator(mode="after")
    def _has_points(self) -> Device:
        if self.plugin is None and not self.points:
            raise ValueError("a device needs a plugin or a list of points")
        if self.plugin is None and (self.drop or self.override):
            raise ValueError("drop and override change a plugin's points: set 'plugin' or edit 'points'")
        return self


# ----------------------------------------------------------------------------- outputs


class GrafanaOutput(Model):
    url: str = "http://127.0.0.1:3000"
    token: str | None = None  # ${GRAFANA_TOKEN}
    folder: str = "Edge"
    datasource_name: str = "edge-influxdb"


class Outputs(Model):
    opcua: OpcUaConfig | None = None  # no section: no OPC UA server
    influxdb: InfluxConfig | None = None  # no section: the spool is the local historian
    mqtt: MqttConfig | None = None  # no section: no MQTT (Sparkplug B / JSON namespace) output
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    grafana: GrafanaOutput | None = None
    aggregator: AggregatorSettings = Field(default_factory=AggregatorSettings)


class Runtime(Model):
    data_dir: str = "var/{site}"  # relative to the config file; spool, audit log, state
    status_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    health_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0  # edge_health records
    stats_window_s: Annotated[float, Field(ge=1, le=3600)] = 60.0  # latency/jitter percentiles cover this
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(
        default_factory=dict, description="per component, e.g. {drivers.modbus.poller: debug, asyncua: warning}")


class SiteConfig(Model):
    """The whole appliance configuration."""

    site: Site
    plugins_dir: str = "plugins"  # relative to the config file's folder, or absolute
    runtime: Runtime = Field(default_factory=Runtime)
    buses: list[Bus] = Field(min_length=1)
    devices: list[Device] = Field(min_length=1)
    outputs: Outputs = Field(default_factory=Outputs)
    alarms: list[AlarmConfig] | None = None  # edge.intelligence.alarms
    rules: list[RuleConfig] | None = None  # edge.intelligence.rules
    api: ApiConfig | None = None  # edge.api: HTTP API and status page
