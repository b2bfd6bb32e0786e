"""Shared wake-ups: tasks that wait for the same instant share one event-loop timer.

Hundreds of device pollers sleep until their next poll, and their deadlines sit on a wake grid
(drivers.modbus.poller.on_grid), so many of them wait for the very same instant. With
``asyncio.sleep`` each of them puts a TimerHandle through the loop's timer heap (whose
comparisons are Python calls) once per cycle; here the tasks that wait for one instant share
one timer, and each only gets a future (issue 21: bench/wakeups.py). The Modbus lines' answer
timeouts use it too (:meth:`WakeGrid.call_at`), on a grid of a few milliseconds.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class WakeGrid:
    """Futures that complete at given :func:`time.monotonic` instants, one loop timer per instant."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._waiting: dict[float, list[Any]] = {}  # futures and (callback, argument) pairs
        self.timers = 0  # loop timers created (one per distinct instant)
        self.waits = 0  # futures handed out

    def at(self, when: float) -> asyncio.Future[None]:
        """A future that completes at monotonic time ``when`` (at the next loop turn if that has passed).

        Cancelling it (a cancelled waiter) affects no other waiter of the same instant.
        """
        fut = self._loop.create_future()
        self.waits += 1
        self._slot(when).append(fut)
        return fut

    def call_at(self, when: float, callback: Callable[[Any], object], arg: Any) -> None:
        """Call ``callback(arg)`` at monotonic time ``when`` (not cancellable: the callback checks
        whether it is still wanted)."""
        self.waits += 1
        self._slot(when).append((callback, arg))

    def _slot(self, when: float) -> list[Any]:
        waiting = self._waiting.get(when)
        if waiting is None:
            self._waiting[when] = waiting = []
            self.timers += 1
            self._loop.call_at(self._loop.time() + (when - time.monotonic()), self._fire, when)
        return waiting

    def _fire(self, when: float) -> None:
        for item in self._waiting.pop(when, ()):
            if type(item) is tuple:
                try:
                    item[0](item[1])
                except Exception:  # noqa: BLE001 - one callback must not keep the others of its instant from running
                    log.exception("wake-up callback %r failed", item[0])
            elif not item.done():
                item.set_result(None)

    def pending(self) -> int:
        """Instants that still have a timer (for tests and diagnostics)."""
        return len(self._waiting)


_GRIDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WakeGrid] = weakref.WeakKeyDictionary()


#: The loop asked for last and its grid: one identity test per call instead of a weak-dictionary lookup
#: (called per poll and per Modbus request). It keeps that one loop alive until another one asks.
_LAST: list[Any] = [None, None]


def wake_grid() -> WakeGrid:
    """The running loop's shared wake grid."""
    loop = asyncio.get_running_loop()
    if _LAST[0] is loop:
        return _LAST[1]
    grid = _GRIDS.get(loop)
    if grid is None:
        _GRIDS[loop] = grid = WakeGrid(loop)
    _LAST[0], _LAST[1] = loop, grid
    return grid


async def sleep_until(when: float, grid: WakeGrid | None = None) -> None:
    """Sleep until monotonic time ``when``, sharing the timer with every task that waits for the same instant.

    ``grid``: the running loop's :func:`wake_grid`, for a caller that sleeps once per cycle and kept it
    (finding it takes ``asyncio.get_running_loop()``, which makes a ``getpid()`` system call on Linux)."""
    if when > time.monotonic():
        await (grid or wake_grid()).at(when)
