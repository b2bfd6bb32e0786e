"""The poll schedule's wake grid: deadlines on a grid of the monotonic clock, so that devices
whose phases fall in one grid step wake in one event-loop iteration (issue 21: CPU per tag)."""
from __future__ import annotations

import numpy as np
import pytest
from harness import wait_until

from drivers.modbus.poller import WAKE_GRID_MAX_S, WAKE_SLOTS, on_grid
from edge.core.model import DeviceState


@pytest.mark.parametrize("interval_s", [0.01, 0.1, 0.25, 1.0, 3.7, 60.0])
def test_a_schedule_on_the_grid_does_not_creep(interval_s):
    grid = min(WAKE_GRID_MAX_S, interval_s / WAKE_SLOTS)
    t = on_grid(123456.789, interval_s)
    first = t
    for cycle in range(1, 20_001):
        t = on_grid(t + interval_s, interval_s)
        if cycle in (1, 7, 20_000):  # float rounding may not add up to a whole step more
            assert t == pytest.approx(first + cycle * interval_s, abs=grid * 1e-3)
    steps = t / grid
    assert abs(steps - round(steps)) < 1e-5


@pytest.mark.parametrize("interval_s", [0.02, 0.5, 1.0, 10.0])
def test_a_deadline_moves_forward_by_less_than_one_step(interval_s):
    grid = min(WAKE_GRID_MAX_S, interval_s / WAKE_SLOTS)
    rng = np.random.default_rng(7)
    for t in rng.uniform(1e3, 1e6, 2000):
        snapped = on_grid(float(t), interval_s)
        assert t - grid * 1e-5 <= snapped < t + grid
        assert abs(snapped / grid - round(snapped / grid)) < 1e-5
    # nearby deadlines share a wake-up; deadlines a step apart do not
    assert on_grid(1000.0 + 0.1 * grid, interval_s) == on_grid(1000.0 + 0.9 * grid, interval_s)
    assert on_grid(1000.0 + 0.5 * grid, interval_s) != on_grid(1000.0 + 1.5 * grid, interval_s)


async def test_devices_share_wake_ups_and_keep_their_rate(make_site):
    """24 TCP devices at 200 ms: their golden-ratio phases fall into at most 20 grid steps (10 ms),
    so several devices start their cycles at the same scheduled instant; each keeps its rate."""
    n, interval_ms = 24, 200
    devices = "\n".join(f"""  - name: d{i}
    bus: b
    port: {{port:d{i}}}
    interval_ms: {interval_ms}
    points:
      - {{name: v, address: 0, type: float32, sim: {{kind: constant, value: {i}.5}}}}""" for i in range(n))
    site = await make_site(f"""
site: {{name: t}}
buses:
  - {{name: b, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 150}}
devices:
{devices}
""")
    assert await wait_until(lambda: all(site.diag(f"d{i}").polls_ok >= 6 for i in range(n)), 10)
    grid = interval_ms / 1e3 / WAKE_SLOTS
    scheduled = []
    for i in range(n):
        poller = site.app.devices[f"d{i}"].runtime.poller
        k = min(poller._jitter_n, len(poller._jitter))
        starts = poller._jitter_at[:k] - poller._jitter[:k]  # when each cycle was due
        due = starts[2:]  # after the first cycle (at once) and the phased one
        steps = due / grid
        assert np.all(np.abs(steps - np.round(steps)) < 1e-4), f"d{i}: cycles due off the grid"
        assert np.all(np.diff(due) == pytest.approx(interval_ms / 1e3, abs=1e-6)), f"d{i}: irregular schedule"
        scheduled.append(round(float(due[-1] % (interval_ms / 1e3)) / grid) % WAKE_SLOTS)
        assert site.diag(f"d{i}").state == DeviceState.ONLINE
        assert site.diag(f"d{i}").overruns == 0
    assert len(set(scheduled)) <= WAKE_SLOTS < n  # devices share grid steps (one wake-up for several)
