"""Shared wake-ups (edge.core.wakeups): tasks waiting for one instant share one loop timer, wake
no earlier than asked, and one cancelled waiter leaves the others waiting."""
from __future__ import annotations

import asyncio
import time

from edge.core.wakeups import sleep_until, wake_grid


def test_waiters_of_one_instant_share_one_timer_and_none_wakes_early():
    async def main() -> tuple[list[float], int, int, int]:
        loop = asyncio.get_running_loop()
        grid = wake_grid()
        before = len(loop._scheduled)  # type: ignore[attr-defined]  # the loop's timer heap
        now = time.monotonic()
        first, second = now + 0.15, now + 0.3
        woke: list[float] = []

        async def waiter(when: float) -> None:
            await sleep_until(when)
            woke.append(time.monotonic() - when)

        tasks = [asyncio.create_task(waiter(first if i % 2 else second)) for i in range(100)]
        await asyncio.sleep(0.05)
        timers = len(loop._scheduled) - before  # type: ignore[attr-defined]
        pending = grid.pending()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return woke, timers, pending, grid.pending()

    woke, timers, pending, left = asyncio.run(main())
    assert len(woke) == 100 and min(woke) >= 0, woke  # nobody before its instant
    assert max(woke) < 0.1, max(woke)
    assert timers == 2 and pending == 2 and left == 0, (timers, pending, left)


def test_a_cancelled_waiter_leaves_the_others_of_its_instant_waiting():
    async def main() -> tuple[bool, bool]:
        when = time.monotonic() + 0.1
        a = asyncio.create_task(sleep_until(when))
        b = asyncio.create_task(sleep_until(when))
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.wait_for(b, 2)
        return a.cancelled(), b.done() and b.exception() is None

    assert asyncio.run(main()) == (True, True)


def test_an_instant_that_has_passed_does_not_wait_or_add_a_timer():
    async def main() -> tuple[float, int]:
        grid = wake_grid()
        t0 = time.monotonic()
        await sleep_until(t0 - 1.0)
        return time.monotonic() - t0, grid.timers

    took, timers = asyncio.run(main())
    assert took < 0.05 and timers == 0, (took, timers)


def test_callbacks_of_one_instant_share_its_timer_and_a_failing_one_stops_no_other(caplog):
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        grid = wake_grid()
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        when = time.monotonic() + 0.05
        called: list[int] = []

        def boom(_: int) -> None:
            raise RuntimeError("boom")

        grid.call_at(when, called.append, 1)
        grid.call_at(when, boom, 0)
        grid.call_at(when, called.append, 2)
        timers = len(loop._scheduled) - before  # type: ignore[attr-defined]
        await asyncio.sleep(0.15)
        return called, timers

    called, timers = asyncio.run(main())
    assert called == [1, 2] and timers == 1, (called, timers)
    assert "boom" in caplog.text
