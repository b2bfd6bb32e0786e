"""Typed models of a site configuration (one YAML file per appliance): the protocol-neutral part.

Field names carry their units (``interval_ms``, ``timeout_ms``). Every model forbids unknown
keys, so a misspelt key is an error that lists the allowed ones, not a silently ignored line.

Buses, devices and points are described here only by what every protocol shares
(:class:`BusConfig`, :class:`DeviceConfig`, :class:`PointConfig`); each field driver
subclasses them with its own keys (``drivers/modbus/config.py``: unit ids, registers, byte
orders). The loader (``edge.config.loader``) validates each bus and device with the model of
the driver its bus type belongs to. Checks across objects live in ``edge.config.checks`` and
in the drivers.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config.aggregate import AggregatorSettings, TagAggregateConfig
from edge.config.intelligence import AlarmConfig, ApiConfig, RuleConfig
from edge.config.mqtt import MqttConfig
from edge.config.opcua import OpcUaConfig
from edge.config.paths import ConfigPath
from edge.config.storage import InfluxConfig, SpoolConfig

Name = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$",
          description="letters, digits, '_' and '-', starting with a letter or '_', at most 63 characters"),
]
Port = Annotated[int, Field(ge=1, le=65535)]
IntervalMs = Annotated[int, Field(ge=10, le=86_400_000)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ----------------------------------------------------------------------------- site


class Site(Model):
    name: Name
    description: str = ""


# ----------------------------------------------------------------------------- buses, points, devices


class BusConfig(Model):
    """What every bus has; a driver's bus model adds its keys and a ``type`` literal."""

    name: Name
    type: str
    description: str = ""


class PointConfig(Model):
    """What every tag has, whatever its protocol; a driver's point model adds where it lives."""

    name: Name
    unit: str | None = None
    range: tuple[float, float] | None = None
    clamp: bool = False
    deadband: Annotated[float, Field(ge=0)] = 0.0
    writable: bool = False
    group: Name = "default"
    description: str = ""
    enum: dict[int, str] | None = None
    bits: dict[Annotated[int, Field(ge=0, le=63)], Name] | None = None  # named bits of an integer value
    aggregate: TagAggregateConfig | None = None  # raw ring + window statistics for this tag
    panel: str | None = None  # dashboard panel group; default: by unit
    sim: dict[str, Any] | None = None  # signal hints for the simulator
    value_type: Literal["float32", "float64"] | None = Field(
        None, description="the type a scaled value is served in (OPC UA Float or Double); default float64")


def common_point_problems(p: PointConfig) -> list[str]:
    """Rules between the protocol-neutral fields of one point (each problem says what is allowed)."""
    out: list[str] = []
    if p.range is not None and not p.range[0] < p.range[1]:
        out.append(f"range must be [low, high] with low < high, got {list(p.range)}")
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
    value_type: Literal["float32", "float64"] | None = None  # the type a scaled value is served in


class PollGroup(Model):
    interval_ms: IntervalMs


class DeviceConfig(Model):
    """What every device has; a driver's device model adds its keys and types ``points``."""

    name: Name
    bus: Name
    enabled: bool = True
    description: str = ""
    plugin: Name | None = None
    interval_ms: IntervalMs = 1000  # the "default" poll group
    poll_groups: dict[str, PollGroup] = Field(default_factory=dict)
    offline_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_max_s: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        8.0, description="an offline device is probed at most this far apart (back within ~10 s of answering); "
        "never more often than one timeout per 10 timeouts of its line")
    points: Sequence[PointConfig] = Field(default_factory=list)
    drop: list[Name] = Field(default_factory=list)  # plugin points to leave out
    override: dict[str, PointOverride] = Field(default_factory=dict)  # plugin point name -> changes

    @model_validator(mode="after")
    def _has_points(self) -> DeviceConfig:
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
    data_dir: ConfigPath = Path("var/{site}")  # spool, audit log, state
    status_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 1.0  # latency/jitter statistics, OPC UA Status objects, the console line
    health_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0  # edge_health records
    stats_window_s: Annotated[float, Field(ge=1, le=3600)] = 60.0  # latency/jitter percentiles cover this
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(
        default_factory=dict, description="per component, e.g. {drivers.modbus.poller: debug, asyncua: warning}")
    audit_max_bytes: Annotated[int, Field(ge=64 * 1024, le=2**34)] = Field(
        10 * 1024 * 1024, description="the audit log (data_dir/audit.log) is rotated beyond this size")
    audit_backups: Annotated[int, Field(ge=0, le=1000)] = Field(
        5, description="rotated audit logs kept (audit.log.1 ... audit.log.N); the oldest is deleted")


class SiteConfig(Model):
    """The whole appliance configuration.

    ``buses`` and ``devices`` hold the drivers' models (subclasses of :class:`BusConfig` and
    :class:`DeviceConfig`): the loader validates each one with its driver's model and puts the
    results here; this model itself checks the other sections.
    """

    site: Site
    plugins_dir: ConfigPath = Path("plugins")
    runtime: Runtime = Field(default_factory=Runtime)
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    outputs: Outputs = Field(default_factory=Outputs)
    alarms: list[AlarmConfig] | None = None  # edge.intelligence.alarms
    rules: list[RuleConfig] | None = None  # edge.intelligence.rules
    api: ApiConfig | None = None  # edge.api: HTTP API and status page
