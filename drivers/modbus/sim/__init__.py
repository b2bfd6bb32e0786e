"""Simulated Modbus plant: devices with realistic signals, fault injection, TCP/RTU/serial servers.

See docs/simulator.md. In process: :class:`SimPlant`; in a child process:
:class:`SimPlantProcess`; blocking for ``edge simulate``: :func:`run_blocking`.
"""
from .faults import Fault, FaultSpec
from .plant import SimPlant, listening_socket
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
    "listening_socket",
    "run_blocking",
    "serve",
]
