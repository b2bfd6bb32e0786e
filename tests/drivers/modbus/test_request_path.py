"""The Modbus request path does not look up the running event loop per request or per cycle:
``asyncio.get_running_loop()`` makes a ``getpid()`` system call on Linux (CPython 3.11 checks the
loop's process), and strace showed ~2,000 of them per second at 1,000 requests/s (the transport's
future, the answer timeout's wake grid, the poller's sleep). The transport keeps its connection's
loop and grid; the poller keeps the grid."""
from __future__ import annotations

import asyncio

from harness import wait_until

from tests.drivers.modbus.test_cycle_batches import site_yaml


async def test_polling_does_not_look_up_the_running_loop_per_request(make_site, monkeypatch):
    site = await make_site(site_yaml(interval_ms=50, timeout_ms=40))
    diag = site.app.devices["d"].runtime.poller.diag
    assert await wait_until(lambda: diag.polls_ok >= 3, 10)
    calls = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    start = diag.requests
    assert await wait_until(lambda: diag.requests - start >= 60, 20)
    requests = diag.requests - start
    monkeypatch.undo()
    # 0 here after the change (150 for 60 requests before); anything else in the appliance that asks is not per request
    assert calls < requests / 4, (calls, requests)
