"""Simulated Modbus plant: devices with realistic signals, fault injection, TCP/RTU/serial servers.

See docs/simulator.md. In process: :class:`SimPlant`; in a child process:
:class:`SimPlantProcess`; blocking for ``edge simulate``: :func:`run_blocking`.
"""
from .faults import Fault, FaultSpec
from .plant import SimPlant, hold_port, listening_socket, reserve_port
from .process import SimPlantProcess
from .runner import run_blocking, serve
from .servers import DeviceStats
from .spec import RtuOverTcpTransport, SerialTransport, SignalSpec, SimDeviceSpec, TcpTransport

__all__ = [
    "DeviceStats",
    "Fault",
    "FaultSpec",
    "RtuOverTcpTransport",
    "SerialTransport",
    "SignalSpec",
    "SimDeviceSpec",
    "SimPlant",
    "SimPlantProcess",
    "TcpTransport",
    "hold_port",
    "listening_socket",
    "reserve_port",
    "run_blocking",
    "serve",
]
