"""Modbus field driver: TCP, RTU on serial lines, RTU over TCP (serial gateways)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class DriverInfo:
    """What the registry knows of a field driver (entry point group ``edge.drivers``)."""

    name: str
    bus_types: tuple[str, ...]
    description: str


DRIVER = DriverInfo("modbus", ("modbus_tcp", "modbus_rtu", "rtu_over_tcp"),
                    "Modbus TCP, Modbus RTU on RS-485, RTU over TCP through serial gateways")
