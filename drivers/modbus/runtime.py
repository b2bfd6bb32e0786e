"""The Modbus driver at run time: one session per appliance owning the lines, one runtime per device.

A :class:`ModbusSession` keeps one :class:`~drivers.modbus.bus.Line` per physical line (serial
port, gateway endpoint, Modbus TCP endpoint), shared by every device on it, and opens a
:class:`ModbusDeviceRuntime` per device: its request plan with the device's tag ids, its
:class:`~drivers.modbus.poller.DevicePoller` and its write path.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from drivers.modbus.bus import Line
from drivers.modbus.client import RtuOverTcpTransport, SerialParams, SerialTransport, TcpTransport, Transport
from drivers.modbus.config import ModbusRtuBus, ModbusTcpBus, RtuOverTcpBus
from drivers.modbus.device_plan import DevicePlan
from drivers.modbus.points import RegisterPoint
from drivers.modbus.poller import DevicePoller
from drivers.modbus.pollstats import PollStats
from drivers.modbus.resolve import bus, config, data, device_plan, line_gap_s, line_key, retries, timeout_ms
from drivers.modbus.writer import write_point
from edge.core.model import DeviceDiagnostics, SampleBatch, WriteResult, WriteStatus
from edge.driver.protocol import DeviceContext, DeviceRuntime, Publish

if TYPE_CHECKING:
    from edge.config.resolved import ResolvedDevice


def make_transport(dev: ResolvedDevice) -> Transport:
    """The transport of the device's line (TCP, RTU over TCP, or a serial port)."""
    b, key = bus(dev), line_key(dev)
    if isinstance(b, ModbusTcpBus):
        cfg = config(dev)
        return TcpTransport(key, cfg.host or b.host, cfg.port or b.port)
    if isinstance(b, RtuOverTcpBus):
        return RtuOverTcpTransport(key, b.host, b.port)
    assert isinstance(b, ModbusRtuBus)
    return SerialTransport(key, SerialParams(b.port, b.baud, b.parity, b.data_bits, b.stop_bits))


#: After a timeout on an RTU line, listen this share of the timeout for the late answer (see drivers.modbus.client)
DRAIN_SHARE = 0.5


def open_line(dev: ResolvedDevice) -> Line:
    """The line of a device, with its gap, connect timeout and, on RTU framing, the drain of late answers."""
    line = Line(line_key(dev), make_transport(dev), gap_s=line_gap_s(dev),
                connect_timeout_s=max(timeout_ms(dev) / 1e3, 1.0))
    if not isinstance(bus(dev), ModbusTcpBus):  # RTU framing: a late answer must not reach the next request
        line.transport.drain_s = DRAIN_SHARE * timeout_ms(dev) / 1e3
    return line


class ModbusDeviceRuntime:
    """One Modbus device of a running appliance (implements :class:`edge.driver.protocol.DeviceRuntime`)."""

    def __init__(self, dev: ResolvedDevice, line: Line, ctx: DeviceContext, stats: PollStats):
        self.name = dev.name
        self.unit_id = config(dev).unit_id
        self.timeout_s = timeout_ms(dev) / 1e3
        self._line = line
        self.diag: DeviceDiagnostics = ctx.diag
        self._publish = ctx.publish
        self.points = [replace(p, tag_id=ctx.tag_ids[p.name]) for p in data(dev).register_points]
        self._by_id = {p.tag_id: p for p in self.points}
        self.plan: DevicePlan = device_plan(dev, self.points)
        cfg = config(dev)
        self.poller = DevicePoller(
            dev.name, cfg.unit_id, line, self.plan, self._forward, ctx.diag, stats.row(ctx.diag, ctx.stats_window_s),
            timeout_s=self.timeout_s, retries=retries(dev), pause_s=cfg.pause_between_requests_ms / 1e3,
            offline_after=cfg.offline_after_failures, backoff_max_s=cfg.backoff_max_s, phase=ctx.phase,
        )

    @property
    def line(self) -> str:
        return self._line.name

    @property
    def line_object(self) -> Line:
        return self._line

    def _forward(self, batch: SampleBatch) -> None:
        self._publish(batch)

    async def run(self) -> None:
        await self.poller.run()

    async def poll_once(self) -> None:
        for group in self.plan.groups():
            await self.poller.poll_group(group)

    async def write(self, tag_id: int, value: object) -> WriteResult:
        point = self._by_id.get(tag_id)
        if point is None:
            return WriteResult(WriteStatus.BAD_NOT_WRITABLE, f"tag id {tag_id} is not a register point of {self.name}")
        result = await write_point(self._line, self.unit_id, point, value, self.timeout_s)
        if result.ok and result.read_back is not None and not isinstance(result.read_back, str):
            # show the new value at once instead of waiting for the next poll
            self._publish(SampleBatch(self.name, time.time_ns(), np.array([point.tag_id], dtype=np.int32),
                                      np.array([result.read_back], dtype=np.float64), np.zeros(1, dtype=np.uint8)))
        return result

    def renumber(self, id_map: np.ndarray) -> None:
        self.plan.renumber(id_map)
        self.points = [replace(p, tag_id=int(id_map[p.tag_id])) for p in self.points]
        self._by_id = {p.tag_id: p for p in self.points}
        self.poller.refresh_ids()

    def set_publish(self, publish: Publish) -> None:
        self._publish = publish


class ModbusSession:
    """The Modbus lines of one running appliance (implements :class:`edge.driver.protocol.DriverSession`)."""

    def __init__(self) -> None:
        self.lines: dict[str, Line] = {}
        self.started_at = time.monotonic()
        self.stats = PollStats()  # every device's latency and jitter rings, refreshed in one pass

    def open_device(self, dev: ResolvedDevice, ctx: DeviceContext) -> DeviceRuntime:
        key = line_key(dev)
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = open_line(dev)
        return ModbusDeviceRuntime(dev, line, ctx, self.stats)

    def release_unused(self, in_use: Iterable[DeviceRuntime]) -> None:
        running = [rt for rt in in_use if isinstance(rt, ModbusDeviceRuntime)]
        self.stats.keep_only({rt.poller.stats for rt in running})
        used = {rt.line for rt in running}
        for key in [k for k in self.lines if k not in used]:
            self.lines.pop(key).close()

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        self.lines.clear()

    def update_stats(self) -> None:
        self.stats.refresh(time.monotonic())

    def line_utilisation(self, elapsed_s: float) -> dict[str, float]:
        elapsed = max(elapsed_s, 1e-9)
        return {key: 100.0 * line.busy_s / elapsed for key, line in self.lines.items()}


def register_points(dev: ResolvedDevice) -> list[RegisterPoint]:
    """The device's register points as configured (tag ids -1)."""
    return data(dev).register_points
