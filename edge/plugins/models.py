"""Models of a device plugin folder: ``manifest.yaml`` and ``points.yaml``.

A plugin describes one device model (its register map, taken from the datasheet) so that a
site config only says ``plugin: <id>`` plus the bus and unit id.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edge.config.models import DType, Model, Name, Order, Point, PollGroup

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="a Python function name")]


class PluginManifest(Model):
    id: Name
    name: str
    version: Annotated[str, Field(pattern=r"^\d+\.\d+(\.\d+)?$", description="MAJOR.MINOR[.PATCH]")]
    vendor: str
    model: str
    driver: str = "modbus"  # a registered field driver (see edge.driver.registry)
    address_base: Literal[0, 1] = 0
    register_numbers: bool = False
    min_appliance_version: Annotated[str, Field(pattern=r"^\d+\.\d+(\.\d+)?$")] = "0.1"
    description: str = ""
    documentation: str = ""  # the datasheet or Modbus map this plugin was written from


class DerivedPoint(Model):
    """A tag computed by a hook of the plugin's hooks.py from other points of the device."""

    name: Name
    inputs: list[Name] = Field(min_length=1)
    hook: Identifier
    type: Literal["float64", "bool", "int64"] = "float64"
    unit: str | None = None
    range: tuple[float, float] | None = None
    deadband: Annotated[float, Field(ge=0)] = 0.0
    description: str = ""
    enum: dict[int, str] | None = None
    panel: str | None = None


class PluginPoints(Model):
    """``points.yaml``: device-wide defaults, the register map and derived tags."""

    order: Order = "ABCD"
    #: sentinels per type, used by every point of that type that does not set its own ``invalid``
    invalid: dict[DType, list[int | Literal["all_nul"]]] = Field(default_factory=dict)
    interval_ms: Annotated[int, Field(ge=10)] | None = None
    poll_groups: dict[str, PollGroup] = Field(default_factory=dict)
    points: list[Point] = Field(min_length=1)
    derived: list[DerivedPoint] = Field(default_factory=list)
