"""Reading host metrics with psutil: one call per poll returns every configured point's value.

Runs in a worker thread (psutil reads /proc and /sys files): the event loop never waits on it.
A metric the host does not have (no such disk, interface or sensor) is NaN, and the runtime
marks it Bad_ConfigurationError; a psutil error marks the poll's points Bad_CommunicationError.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import psutil

from drivers.system.config import METRICS, SystemPoint

_PROCESS = psutil.Process(os.getpid())


def _disk(point: SystemPoint, field: str) -> float:
    try:
        usage = psutil.disk_usage(point.path)
    except OSError:
        return math.nan
    return float(getattr(usage, field))


def _net(point: SystemPoint, field: str) -> float:
    # one NIC's counters (None if it is gone), or every NIC's together
    counters = psutil.net_io_counters(pernic=True).get(point.nic) if point.nic is not None else \
        psutil.net_io_counters()
    if counters is None:
        return math.nan
    if field == "errors":
        return float(counters.errin + counters.errout)
    return float(getattr(counters, field))


def _temperature(point: SystemPoint) -> float:
    read = getattr(psutil, "sensors_temperatures", None)
    groups = read() if read is not None else {}
    if point.sensor is not None:
        entries = groups.get(point.sensor, [])
    else:
        entries = next(iter(groups.values()), [])
    return float(entries[0].current) if entries else math.nan


_READERS: dict[str, Callable[[SystemPoint], float]] = {
    "cpu_percent": lambda p: float(psutil.cpu_percent(interval=None)),
    "cpu_count": lambda p: float(psutil.cpu_count() or math.nan),
    "load_1m": lambda p: float(os.getloadavg()[0]),
    "load_5m": lambda p: float(os.getloadavg()[1]),
    "load_15m": lambda p: float(os.getloadavg()[2]),
    "memory_percent": lambda p: float(psutil.virtual_memory().percent),
    "memory_used_bytes": lambda p: float(psutil.virtual_memory().used),
    "memory_available_bytes": lambda p: float(psutil.virtual_memory().available),
    "memory_total_bytes": lambda p: float(psutil.virtual_memory().total),
    "swap_percent": lambda p: float(psutil.swap_memory().percent),
    "disk_percent": lambda p: _disk(p, "percent"),
    "disk_used_bytes": lambda p: _disk(p, "used"),
    "disk_free_bytes": lambda p: _disk(p, "free"),
    "net_bytes_sent": lambda p: _net(p, "bytes_sent"),
    "net_bytes_recv": lambda p: _net(p, "bytes_recv"),
    "net_errors": lambda p: _net(p, "errors"),
    "temperature_c": _temperature,
    "uptime_s": lambda p: time.time() - psutil.boot_time(),
    "process_rss_bytes": lambda p: float(_PROCESS.memory_info().rss),
    "process_cpu_percent": lambda p: float(_PROCESS.cpu_percent(interval=None)),
}
assert set(_READERS) == set(METRICS), "every configurable metric needs a reader"


def read(points: Sequence[SystemPoint]) -> list[float]:
    """The current value of every point, in order (NaN where the host has no such metric)."""
    return [_READERS[p.metric](p) for p in points]
