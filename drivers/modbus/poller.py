"""Per-device polling: schedule by deadline, read blocks through the line, decode, publish.

One :class:`DevicePoller` per device. Each poll group has its own interval and deadline; a
cycle that starts more than one interval late counts as an overrun and the missed cycles are
skipped, never queued. Failures are classified: an exception response marks the block's tags
bad but the device answered; busy (exception 6) is retried after a pause; timeouts and bad
frames count towards going offline. An offline device's tags are published once as
Bad_NoCommunication and the device is then probed at a growing interval, capped at
``backoff_max_s`` (default 8 s: a device is back within 10 s of answering again) and never
more often than one timeout per ``1 / PROBE_LINE_SHARE`` timeouts, so a dead device costs its
line at most 10 % of its time.

Learned address holes are re-probed on their own back-off (:class:`~drivers.modbus.planner.ReprobePolicy`):
a span that reads again is forgotten and the device re-planned, so a transient exception 2
(a PLC in STOP, a gateway booting) costs the refused tags at most one re-probe period.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from drivers.modbus.bus import PRIORITY_POLL, PRIORITY_WRITE, Line
from drivers.modbus.client import (
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from drivers.modbus.codec import DecodeError
from drivers.modbus.cycle import CycleBatch, CycleLayout
from drivers.modbus.device_plan import DevicePlan
from drivers.modbus.planner import ReadBlock
from drivers.modbus.pollstats import WINDOW as LATENCY_WINDOW
from drivers.modbus.pollstats import StatsRow
from edge.core.model import DeviceDiagnostics, DeviceState, Quality, SampleBatch
from edge.core.wakeups import sleep_until, wake_grid

log = logging.getLogger("drivers.modbus.poller")

BUSY_CODES = (5, 6)  # acknowledge, server busy: the device is alive, ask again shortly
ILLEGAL_ADDRESS = 2
PROBE_LINE_SHARE = 0.1  # an offline device's probes take at most this share of its line's time
#: Poll deadlines lie on a grid of the monotonic clock: ``WAKE_SLOTS`` points per interval, at most
#: ``WAKE_GRID_MAX_S`` apart. Devices whose phases fall in one step wake in one event-loop
#: iteration instead of one iteration each (fewer, fuller wake-ups: see docs/decisions.md, issue 21).
WAKE_SLOTS = 20
WAKE_GRID_MAX_S = 0.05


def on_grid(t: float, interval_s: float) -> float:
    """``t`` moved forward to the next point of the wake grid of ``interval_s``.

    The tolerance keeps a deadline that is already on the grid (up to float rounding) where it is,
    so a schedule of whole grid steps does not creep by one step per cycle.
    """
    grid_s = min(WAKE_GRID_MAX_S, interval_s / WAKE_SLOTS)
    if grid_s <= 0:
        return t
    return math.ceil(t / grid_s - 1e-6) * grid_s


class DevicePoller:
    """Polls one device forever (until cancelled) and publishes one SampleBatch per poll cycle (per run of
    blocks answered within ``JOIN_SPAN_NS``: :mod:`drivers.modbus.cycle`)."""

    def __init__(self, name: str, unit_id: int, line: Line, plan: DevicePlan, publish: Callable[[SampleBatch], None],
                 diag: DeviceDiagnostics, stats: StatsRow, *, timeout_s: float, retries: int,
                 pause_s: float = 0.0, offline_after: int = 3, backoff_max_s: float = 8.0,
                 busy_wait_s: float = 0.05, phase: float = 0.0):
        self.name = name
        self.unit_id = unit_id
        self.line = line
        self.plan = plan
        self.publish = publish
        self.diag = diag
        self.timeout_s = timeout_s
        self.retries = retries
        self.pause_s = pause_s
        self.offline_after = offline_after
        # one probe (a timeout at worst) per 1/PROBE_LINE_SHARE timeouts at most: the line's budget
        self.backoff_max_s = max(backoff_max_s, timeout_s * (1 + line.transport.drain_s / max(timeout_s, 1e-3))
                                 / PROBE_LINE_SHARE)
        self.busy_wait_s = busy_wait_s
        self.failures = 0  # consecutive cycles in which the device did not answer at all
        # rings in the session's shared matrices: the status loop refreshes every device's percentiles at once
        self.stats = stats
        self._latency = stats.latency
        self._latency_n = 0
        self._jitter = stats.jitter
        self._jitter_at = stats.jitter_at  # when each cycle started
        self._jitter_n = 0
        self.phase = phase % 1.0  # where in its interval this device polls: spreads a line's load
        self._backoff_s = 0.0
        self._all_ids = plan.tag_ids()
        self.cycles = 0
        self._cycle: CycleBatch | None = None  # a cycle of several blocks: they decode into one batch
        self._layouts: dict[str, CycleLayout] = {}  # per poll group, while its blocks stay the same

    def refresh_ids(self) -> None:
        """After the plan's tag ids were renumbered in place (a configuration reload)."""
        self._all_ids = self.plan.tag_ids()
        self._layouts.clear()

    # ------------------------------------------------------------------ schedule

    async def run(self) -> None:
        """Poll every group at its interval; when offline, probe at the back-off interval."""
        groups = self.plan.groups()
        if not groups:  # nothing to read (e.g. a SunSpec device whose models are not known yet): idle
            log.warning("device %s: no points to poll", self.name)
            await asyncio.Event().wait()
        now = time.monotonic()
        deadlines = {g: now for g in groups}  # every group once at once, then each at its phase
        phased: set[str] = set()
        grid = wake_grid()
        while True:
            if self.diag.state == DeviceState.OFFLINE:
                await asyncio.sleep(self._backoff_s)
                if await self._probe():
                    now = time.monotonic()
                    deadlines = {g: now for g in groups}
                continue
            if self.plan.holes.next_due() <= time.monotonic():
                await self.reprobe_holes()
            group = min(deadlines, key=deadlines.__getitem__)
            await sleep_until(deadlines[group], grid)  # devices due at the same grid point share one timer
            now = time.monotonic()
            self._jitter[self._jitter_n % LATENCY_WINDOW] = now - deadlines[group]
            self._jitter_at[self._jitter_n % LATENCY_WINDOW] = now
            self._jitter_n += 1
            await self.poll_group(group)
            interval = self.plan.interval_s(group)
            deadline = deadlines[group] + interval
            if group not in phased:
                phased.add(group)
                deadline += self.phase * interval
            late = time.monotonic() - deadline
            if late > 0:  # the cycle overran its slot: skip the missed cycles instead of queuing them
                missed = int(late // interval) + 1
                self.diag.overruns += missed
                deadline += missed * interval
            deadlines[group] = on_grid(deadline, interval)

    async def poll_group(self, group: str) -> None:
        blocks = list(self.plan.blocks(group))
        self.cycles += 1
        if not blocks:
            return  # every point of the group is a learned hole: nothing asked, nothing to judge
        answered = False
        self._cycle = CycleBatch(self.name, self._layout(group, blocks)) if len(blocks) > 1 else None
        try:
            for slot, block in enumerate(blocks):
                answered |= await self._poll_block(block, slot=slot)
        finally:
            self._flush_held()
            self._cycle = None
        if answered:
            self.diag.polls_ok += 1
            self._set_online()
        else:
            self.diag.polls_failed += 1
            self.failures += 1
            if self.failures >= self.offline_after and self.diag.state != DeviceState.OFFLINE:
                self._set_offline()

    def _layout(self, group: str, blocks: list[ReadBlock]) -> CycleLayout:
        layout = self._layouts.get(group)
        if layout is None or not layout.fits(blocks):
            layout = self._layouts[group] = CycleLayout(blocks)
        return layout

    # ------------------------------------------------------------------ one block

    async def _poll_block(self, block: ReadBlock, retries: int | None = None, slot: int | None = None) -> bool:
        """Read and publish one block; True if the device answered (even with an exception).

        ``slot``: the block's place in the cycle's blocks, whose answers are published together."""
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                data = await self.line.read(self.unit_id, block.table, block.start, block.count, self.timeout_s,
                                            PRIORITY_POLL, self.pause_s)
            except ModbusExceptionResponse as exc:
                self._count_exception(exc)
                if exc.code in BUSY_CODES and attempt < retries:
                    attempt += 1
                    await asyncio.sleep(self.busy_wait_s)
                    continue
                if exc.code == ILLEGAL_ADDRESS:
                    return await self._learn_hole(block)
                self._publish_bad(block, Quality.BAD_COMM_ERROR)
                return True
            except ModbusError as exc:
                self._count_failure(exc)
                if attempt < retries and not isinstance(exc, ModbusConnectionError):
                    attempt += 1
                    continue
                self._publish_bad(block, Quality.BAD_COMM_ERROR)
                return False
            ts_ns = time.time_ns()
            self._record_latency(self.line.last_transaction_s)
            self.diag.last_ok_ns = ts_ns
            cycle = self._cycle
            try:
                if cycle is None or slot is None:
                    self._flush_held()
                    self.publish(block.codec.decode_batch(self.name, ts_ns, data))
                else:
                    if cycle.due_before(ts_ns):
                        self._flush_held()
                    cycle.hold(slot, ts_ns, data)
            except DecodeError as exc:
                self._note_error(f"decode: {exc}")
                self._publish_bad(block, Quality.BAD_CONFIG_ERROR)
            return True

    def _flush_held(self) -> None:
        """Publish the blocks of this cycle held so far, as one batch."""
        if self._cycle is not None and (batch := self._cycle.take()) is not None:
            self.publish(batch)

    async def _learn_hole(self, block: ReadBlock) -> bool:
        """An illegal-address answer: split the block, remember the hole, read the parts now.

        A block that cannot be split further makes its points unreadable: they are published
        once as Bad_ConfigurationError and not requested again.
        """
        parts = self.plan.split(block)
        if not parts:
            names = ", ".join(p.name for p in block.points)
            log.error("device %s: %s %d+%d is refused (illegal data address): %s not readable; check the "
                      "addresses", self.name, block.table.value, block.start, block.count, names)
            self._note_error(f"illegal data address for {names}")
            self._publish_bad(block, Quality.BAD_CONFIG_ERROR)
            self._update_holes()
            return True
        log.info("device %s: %s %d+%d has an address hole; split into %d reads", self.name, block.table.value,
                 block.start, block.count, len(parts))
        self._update_holes()
        answered = False
        for part in parts:
            answered |= await self._poll_block(part)
        return answered

    async def reprobe_holes(self) -> None:
        """Read each learned hole whose re-probe is due; forget the ones that read again."""
        now = time.monotonic()
        for hole in self.plan.holes.due(now):
            table, start, end = hole.span
            try:
                await self.line.read(self.unit_id, table, start, end - start, self.timeout_s, PRIORITY_POLL,
                                     self.pause_s)
            except ModbusExceptionResponse as exc:
                self._count_exception(exc)
                if exc.code == ILLEGAL_ADDRESS:
                    self.plan.holes.refused_again(hole)
                    log.info("device %s: %s still refused; next re-probe in %.0f s", self.name, hole.describe(),
                             hole.interval_s)
                else:
                    self.plan.holes.postpone(hole)
                continue
            except ModbusError as exc:
                self._count_failure(exc)
                self.plan.holes.postpone(hole)
                continue
            self._record_latency(self.line.last_transaction_s)
            self.plan.heal(hole)
            log.warning("device %s: %s %d+%d reads again; hole forgotten, points polled again", self.name,
                        table.value, start, end - start)
        self._update_holes()

    def _update_holes(self) -> None:
        """The learned holes in the diagnostics (API, status table, OPC UA Status)."""
        holes = self.plan.holes
        self.diag.holes = len(holes.learned)
        self.diag.holes_healed = holes.healed
        self.diag.unreadable_points = self.plan.unreadable_count()
        self.diag.holes_detail = holes.describe()

    async def _probe(self) -> bool:
        """One cheap read while offline; back off further when it fails."""
        block = self.plan.probe_block()
        if block is None:
            due = self.plan.holes.learned
            if not due:
                return False
            for hole in due:  # every point is a learned hole: re-probing them is the probe
                hole.next_probe = 0.0
            await self.reprobe_holes()
            return self.plan.probe_block() is not None
        ok = await self._poll_block(block, retries=0)
        if ok:
            self._set_online()
            return True
        self._backoff_s = min(self._backoff_s * 2, self.backoff_max_s)
        return False

    # ------------------------------------------------------------------ state and counters

    def _set_online(self) -> None:
        self.failures = 0
        if self.diag.state != DeviceState.ONLINE:
            if self.diag.state == DeviceState.OFFLINE:
                log.warning("device %s: back online", self.name)
            else:
                log.info("device %s: online", self.name)
            self.diag.state = DeviceState.ONLINE

    def _set_offline(self) -> None:
        self._flush_held()
        self.diag.state = DeviceState.OFFLINE
        self._backoff_s = min(max(self.plan.min_interval_s(), 1.0), self.backoff_max_s)
        log.warning("device %s: offline after %d failed polls (%s); probing every %.0f s up to %.0f s",
                    self.name, self.failures, self.diag.last_error, self._backoff_s, self.backoff_max_s)
        self.publish(SampleBatch.bad(self.name, time.time_ns(), self._all_ids, Quality.BAD_NO_COMMUNICATION))

    def _publish_bad(self, block: ReadBlock, quality: Quality) -> None:
        self._flush_held()  # the good blocks before it keep their place in the order
        if self.diag.state == DeviceState.OFFLINE:
            return  # already published as Bad_NoCommunication; do not repeat on every probe
        self.publish(SampleBatch.bad(self.name, time.time_ns(), block.codec.tag_ids, quality))

    def _count_exception(self, exc: ModbusExceptionResponse) -> None:
        self._flush_held()  # a failed answer: the cycle's good blocks wait no longer
        self.diag.requests += 1
        self.diag.exceptions[exc.code] = self.diag.exceptions.get(exc.code, 0) + 1
        self._note_error(str(exc))

    def _count_failure(self, exc: ModbusError) -> None:
        self._flush_held()  # a failed answer: the cycle's good blocks wait no longer
        self.diag.requests += 1
        if isinstance(exc, ModbusTimeout):
            self.diag.timeouts += 1
        elif isinstance(exc, ModbusFrameError):
            self.diag.crc_errors += 1
        self._note_error(f"{type(exc).__name__.removeprefix('Modbus')}: {exc}")

    def _note_error(self, text: str) -> None:
        self.diag.last_error = text
        self.diag.last_error_ns = time.time_ns()

    def _record_latency(self, seconds: float) -> None:
        self.diag.requests += 1
        self._latency[self._latency_n % LATENCY_WINDOW] = seconds
        self._latency_n += 1


__all__ = ["DevicePoller", "PRIORITY_WRITE"]
