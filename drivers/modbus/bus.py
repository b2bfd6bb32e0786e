"""The owner of one physical line: one transaction in flight, inter-frame gap, priorities.

Every device on a serial line (or behind one gateway, or on one TCP endpoint) reaches the
line through its :class:`Line`. Writes get priority over polls; between two transactions on
an RTU line the line stays silent for the inter-frame gap (3.5 characters, or the configured
gap); a device can ask for an extra pause after its own requests. The line also connects,
and reconnects with capped exponential back-off.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time

import numpy as np

from drivers.modbus.client import ModbusConnectionError, Transport
from drivers.modbus.points import Table

log = logging.getLogger("edge.bus")

PRIORITY_WRITE = 0
PRIORITY_POLL = 1


class _PriorityLock:
    """An asyncio lock whose waiters are served by (priority, arrival)."""

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int) -> None:
        if not self._locked and not self._waiters:
            self._locked = True
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were handed the lock while being cancelled: pass it on
            raise

    def try_acquire(self) -> bool:
        """Take the lock if it is free and nobody waits (no await: the poll path's common case)."""
        if self._locked or self._waiters:
            return False
        self._locked = True
        return True

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return  # ownership passes straight to the waiter
        self._locked = False


class Line:
    """One physical line and its transport."""

    def __init__(self, name: str, transport: Transport, gap_s: float = 0.0, connect_timeout_s: float = 2.0,
                 reconnect_max_s: float = 30.0):
        self.name = name
        self.transport = transport
        self.gap_s = gap_s  # silence between transactions (RTU: 3.5 characters)
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self._lock = _PriorityLock()
        self._free_at = 0.0  # monotonic time before which the line must stay silent
        self._reconnect_delay = 0.0
        self._next_connect = 0.0
        self.busy_s = 0.0  # time spent in transactions (for utilisation)
        self.last_transaction_s = 0.0  # duration of the last transaction, without the wait for the line
        self.transactions = 0
        self.last_error = ""
        self.connected_since = 0.0

    async def ensure_connected(self) -> None:
        if self.transport.connected:
            return
        now = time.monotonic()
        if now < self._next_connect:
            raise ModbusConnectionError(f"{self.name}: reconnecting in {self._next_connect - now:.1f} s "
                                        f"(last error: {self.last_error})")
        try:
            await self.transport.connect(self.connect_timeout_s)
        except ModbusConnectionError as exc:
            self._reconnect_delay = min(max(self._reconnect_delay * 2, 0.5), self.reconnect_max_s)
            self._next_connect = time.monotonic() + self._reconnect_delay
            if str(exc) != self.last_error:
                log.warning("line %s: %s (retry in %.1f s)", self.name, exc, self._reconnect_delay)
            self.last_error = str(exc)
            raise
        if self.last_error:
            log.info("line %s: connected", self.name)
        self._reconnect_delay = 0.0
        self.last_error = ""
        self.connected_since = time.monotonic()

    async def _begin(self, priority: int) -> float:
        """Own the line: wait for our turn, the inter-frame gap and a connection; the start time."""
        await self._lock.acquire(priority)
        try:
            wait = self._free_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.transport.connected:
                await self.ensure_connected()
        except BaseException:
            self._lock.release()
            raise
        return time.monotonic()

    def _begin_now(self) -> float:
        """Own the line at once if nothing is to be waited for (free, past the gap, connected): the
        start time, or 0.0 (then :meth:`_begin` waits). Saves two coroutines per poll request."""
        if self._lock.try_acquire():
            now = time.monotonic()
            if self._free_at <= now and self.transport.connected:
                return now
            self._lock.release()
        return 0.0

    def _end(self, start: float, pause_after_s: float) -> None:
        """Release the line after a transaction; the next one waits for the gap (and the pause)."""
        end = time.monotonic()
        self.last_transaction_s = end - start
        self.busy_s += end - start
        self.transactions += 1
        self._free_at = end + self.gap_s + pause_after_s
        self._lock.release()

    async def run(self, op, priority: int = PRIORITY_POLL, pause_after_s: float = 0.0):
        """Run ``await op(transport)`` as the only transaction(s) on the line (writes, read-modify-write)."""
        start = await self._begin(priority)
        try:
            return await op(self.transport)
        finally:
            self._end(start, pause_after_s)

    async def read(self, unit: int, table: Table, address: int, count: int, timeout_s: float,
                   priority: int = PRIORITY_POLL, pause_after_s: float = 0.0) -> np.ndarray:
        """One read as the only transaction on the line (the poll path: no closure per request)."""
        start = self._begin_now() or await self._begin(priority)
        try:
            return await self.transport.read(unit, table, address, count, timeout_s)
        finally:
            self._end(start, pause_after_s)

    def close(self) -> None:
        self.transport.close()
