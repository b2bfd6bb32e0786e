"""The ``system`` driver at run time: each poll group read at its interval, off the event loop.

One :class:`SystemDeviceRuntime` per configured device; its poll groups run on deadlines like
any field device's (phase spread, overruns skipped, jitter and latency percentiles), and each
poll publishes one :class:`~edge.core.model.SampleBatch` stamped when the reading finished.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from drivers.system.config import SystemPoint
from drivers.system.metrics import read
from edge.core.model import (
    QUALITY_DTYPE,
    TAG_ID_DTYPE,
    DeviceState,
    Quality,
    SampleBatch,
    WriteResult,
    WriteStatus,
)
from edge.driver.protocol import DeviceContext, DeviceRuntime, Publish

if TYPE_CHECKING:
    from edge.config.resolved import ResolvedDevice

log = logging.getLogger(__name__)
WINDOW = 256


class SystemDeviceRuntime:
    """Host metrics as one device (implements :class:`edge.driver.protocol.DeviceRuntime`)."""

    line = "host"

    def __init__(self, dev: ResolvedDevice, ctx: DeviceContext):
        self.name = dev.name
        self.diag = ctx.diag
        self._publish = ctx.publish
        self._phase = ctx.phase
        self._stats_window_s = ctx.stats_window_s
        self.groups: dict[str, tuple[list[SystemPoint], np.ndarray, float]] = {}
        for rp in dev.points:
            assert isinstance(rp.point, SystemPoint)
            points, _, _ = self.groups.setdefault(rp.point.group, ([], np.zeros(0), dev.interval_ms(rp.point.group) / 1e3))
            points.append(rp.point)
        self.groups = {g: (pts, np.array([ctx.tag_ids[p.name] for p in pts], dtype=TAG_ID_DTYPE), iv)
                       for g, (pts, _, iv) in self.groups.items()}
        self._latency = np.zeros(WINDOW)
        self._n = 0

    async def run(self) -> None:
        now = time.monotonic()
        deadlines = {g: now + self._phase * iv for g, (_, _, iv) in self.groups.items()}
        while True:
            group = min(deadlines, key=deadlines.__getitem__)
            wait = deadlines[group] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._poll(group)
            interval = self.groups[group][2]
            deadlines[group] += interval
            late = time.monotonic() - deadlines[group]
            if late > 0:  # a slow read: skip the missed cycles instead of queuing them
                missed = int(late // interval) + 1
                self.diag.overruns += missed
                deadlines[group] += missed * interval

    async def poll_once(self) -> None:
        for group in self.groups:
            await self._poll(group)

    async def _poll(self, group: str) -> None:
        points, ids, _ = self.groups[group]
        start = time.monotonic()
        self.diag.requests += 1
        try:
            values = np.array(await asyncio.to_thread(read, points), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - psutil may fail in many ways; the device goes on
            self.diag.polls_failed += 1
            self.diag.last_error = f"{type(exc).__name__}: {exc}"
            self.diag.last_error_ns = time.time_ns()
            self._publish(SampleBatch.bad(self.name, time.time_ns(), ids, Quality.BAD_COMM_ERROR))
            return
        quality = np.where(np.isnan(values), Quality.BAD_CONFIG_ERROR, Quality.GOOD).astype(QUALITY_DTYPE)
        ts = time.time_ns()
        self._latency[self._n % WINDOW] = time.monotonic() - start
        self._n += 1
        self.diag.polls_ok += 1
        self.diag.last_ok_ns = ts
        self.diag.state = DeviceState.ONLINE
        if quality.any():
            missing = [p.name for p, q in zip(points, quality.tolist(), strict=True) if q]
            self.diag.last_error = f"this host has no such metric for {', '.join(missing)}"
        self._publish(SampleBatch(self.name, ts, ids.copy(), values, quality))

    async def write(self, tag_id: int, value: object) -> WriteResult:
        return WriteResult(WriteStatus.BAD_NOT_WRITABLE, "host metrics are read-only")

    def renumber(self, id_map: np.ndarray) -> None:
        self.groups = {g: (pts, id_map[ids].astype(TAG_ID_DTYPE), iv) for g, (pts, ids, iv) in self.groups.items()}

    def set_publish(self, publish: Publish) -> None:
        self._publish = publish

    def update_stats(self) -> None:
        n = min(self._n, WINDOW)
        if n:
            ordered = np.sort(self._latency[:n])
            self.diag.latency_p50_ms = float(ordered[(n - 1) // 2]) * 1e3
            self.diag.latency_p99_ms = float(ordered[int(0.99 * (n - 1))]) * 1e3


class SystemSession:
    """Nothing is shared between host-metric devices: the session opens them and refreshes their statistics."""

    def __init__(self) -> None:
        self.devices: list[SystemDeviceRuntime] = []

    def open_device(self, dev: ResolvedDevice, ctx: DeviceContext) -> DeviceRuntime:
        runtime = SystemDeviceRuntime(dev, ctx)
        self.devices.append(runtime)
        return runtime

    def release_unused(self, in_use: Iterable[DeviceRuntime]) -> None:
        running = {id(rt) for rt in in_use}
        self.devices = [rt for rt in self.devices if id(rt) in running]

    def close(self) -> None:
        return None

    def update_stats(self) -> None:
        for runtime in self.devices:  # a handful of host-metric devices at most: one by one is fine
            runtime.update_stats()

    def line_utilisation(self, elapsed_s: float) -> dict[str, float]:
        return {}
