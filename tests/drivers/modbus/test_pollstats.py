"""Every device's latency and jitter percentiles, refreshed in one pass per session (issue 21: the
per-device refresh cost ~8 % of the event loop at 500 devices). The expected figures are computed
here from plain sorted Python lists (nearest rank), not with the module's numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from harness import wait_until

from drivers.modbus.pollstats import CHUNK_ROWS, WINDOW, PollStats
from edge.core.model import DeviceDiagnostics, DeviceState


def nearest_rank(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def f32(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


def record(row, samples: list[float]) -> None:
    for k, s in enumerate(samples):
        row.latency[k % WINDOW] = s


def test_percentiles_of_partly_filled_full_and_wrapped_rings():
    stats = PollStats()
    rng = np.random.default_rng(3)
    fills = [0, 1, 2, 7, 100, WINDOW, WINDOW + 77]
    diags = [DeviceDiagnostics(f"d{i}", "line") for i in range(len(fills))]
    rows = [stats.row(d, 60.0) for d in diags]
    written = []
    for row, n in zip(rows, fills, strict=True):
        samples = list(rng.exponential(0.004, n))
        record(row, samples)
        written.append(f32(samples[-WINDOW:] if n > WINDOW else samples))  # a wrapped ring keeps the last WINDOW
    stats.refresh(now=1000.0)
    for diag, samples in zip(diags, written, strict=True):
        if not samples:
            assert (diag.latency_p50_ms, diag.latency_p99_ms) == (0.0, 0.0)  # no sample: untouched
            continue
        assert diag.latency_p50_ms == pytest.approx(nearest_rank(samples, 0.5) * 1e3, rel=1e-12)
        assert diag.latency_p99_ms == pytest.approx(nearest_rank(samples, 0.99) * 1e3, rel=1e-12)


def test_jitter_counts_only_the_cycles_of_the_window_and_keeps_the_last_figure_without_any():
    stats = PollStats()
    short, long_, idle = (DeviceDiagnostics(n, "line") for n in ("short", "long", "idle"))
    rows = [stats.row(short, 10.0), stats.row(long_, 100.0), stats.row(idle, 10.0)]
    now = 500.0
    starts = [now - 50 + k * 0.5 for k in range(100)]  # cycles over the last 50 s
    delays = [0.001 * ((k * 37) % 23) for k in range(100)]
    for row in rows[:2]:
        for k, (at, late) in enumerate(zip(starts, delays, strict=True)):
            row.jitter[k] = late
            row.jitter_at[k] = at
    stats.refresh(now)
    in_short = f32([d for at, d in zip(starts, delays, strict=True) if at >= now - 10.0])
    assert short.jitter_p99_ms == pytest.approx(nearest_rank(in_short, 0.99) * 1e3, rel=1e-12)
    assert long_.jitter_p99_ms == pytest.approx(nearest_rank(f32(delays), 0.99) * 1e3, rel=1e-12)
    assert idle.jitter_p99_ms == 0.0
    before = short.jitter_p99_ms
    stats.refresh(now + 60.0)  # nothing recent any more: the last figure stays
    assert short.jitter_p99_ms == before


def test_a_released_row_is_handed_out_again_empty_and_chunks_grow():
    stats = PollStats()
    diags = [DeviceDiagnostics(f"d{i}", "line") for i in range(CHUNK_ROWS + 5)]
    rows = [stats.row(d, 60.0) for d in diags]
    for k, row in enumerate(rows):
        record(row, [0.001 * (k + 1)] * 3)
    stats.refresh(1.0)
    assert [d.latency_p50_ms for d in diags] == pytest.approx([k + 1.0 for k in range(len(diags))], rel=1e-6)
    stats.keep_only(set(rows[1:]))  # d0 left with a reload
    fresh = DeviceDiagnostics("new", "line")
    again = stats.row(fresh, 60.0)
    assert again.latency is not rows[0].latency and np.shares_memory(again.latency, rows[0].latency)
    assert math.isnan(float(again.latency[0]))  # the gone device's samples are not the new one's
    stats.refresh(2.0)
    assert fresh.latency_p50_ms == 0.0
    assert diags[0].latency_p50_ms == pytest.approx(1.0, rel=1e-6)  # no longer written


async def test_a_running_site_reports_the_percentiles_of_its_own_requests(make_site):
    """Two TCP devices on the simulator: the status loop's figures are the nearest-rank
    percentiles of the latencies each poller recorded (read back here as float64)."""
    devices = "\n".join(f"""  - name: d{i}
    bus: b
    port: {{port:d{i}}}
    interval_ms: 100
    points:
      - {{name: v, address: 0, type: float32, sim: {{kind: constant, value: {i}.5}}}}""" for i in range(2))
    site = await make_site(f"""
site: {{name: t}}
runtime: {{status_interval_s: 0.2}}
buses:
  - {{name: b, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 80}}
devices:
{devices}
""")
    assert await wait_until(lambda: all(site.diag(f"d{i}").polls_ok >= 10 for i in range(2)), 10)
    for i in range(2):
        poller = site.app.devices[f"d{i}"].runtime.poller
        diag = site.diag(f"d{i}")
        assert diag.state == DeviceState.ONLINE

        def matches(poller=poller, diag=diag) -> bool:
            n = min(poller._latency_n, WINDOW)
            samples = [float(v) for v in poller._latency[:n]]
            return bool(samples) and diag.latency_p99_ms == pytest.approx(nearest_rank(samples, 0.99) * 1e3) \
                and diag.latency_p50_ms == pytest.approx(nearest_rank(samples, 0.5) * 1e3)

        assert await wait_until(lambda p=poller: p._latency_n >= 10, 5)
        # the refresh and the polls interleave: within a few status intervals one refresh sees a quiet ring
        assert await wait_until(matches, 5)
        assert 0.0 < diag.latency_p50_ms <= diag.latency_p99_ms < 80.0
        assert diag.jitter_p99_ms >= 0.0
