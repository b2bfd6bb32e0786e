"""The history endpoint with ``max_points`` (issue 20): a trend of 10,000 stored samples comes back as at
most N points whose min and max in every time bucket are the raw data's (the M4 property), through
the real appliance, its spool on disk and the HTTP API. The raw data are the test's own arrays."""
from __future__ import annotations

import asyncio
import time

import numpy as np
from harness import wait_until
from room_site import room_config

from edge.core.model import Quality, SampleBatch

SAMPLES = 10_000


def stored_history(site, key: str, start_ns: int, step_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put SAMPLES polls of one tag into the appliance's spool (as old polls): a random walk with spikes
    and a tenth of them of bad quality. Returns what was stored."""
    tag = site.app.plant.tag_by_key()[key]
    rng = np.random.default_rng(20)
    values = 21.0 + np.cumsum(rng.normal(0, 0.05, SAMPLES))
    values[rng.integers(0, SAMPLES, 30)] += rng.normal(0, 5, 30)  # spikes M4 must keep
    quality = np.where(rng.random(SAMPLES) < 0.1, int(Quality.BAD_COMM_ERROR), 0).astype(np.uint8)
    values[quality != 0] = np.nan
    ts = start_ns + np.arange(SAMPLES, dtype=np.int64) * step_ns
    spool = site.app.outputs.spool
    ids = np.array([tag.id], dtype=np.int32)
    for t, v, q in zip(ts.tolist(), values.tolist(), quality.tolist(), strict=True):
        assert spool.append_samples(SampleBatch(tag.device, t, ids, np.array([v]), np.array([q], dtype=np.uint8)))
    return ts, values, quality


def bucket_extrema(ts: np.ndarray, values: np.ndarray, start: int, end: int, buckets: int) -> list:
    """(min, max) of the finite values in each of ``buckets`` equal time buckets of [start, end)."""
    edges = [start + (end - start) * k // buckets for k in range(buckets + 1)]
    out = []
    for a, b in zip(edges, edges[1:], strict=False):
        v = values[(ts >= a) & (ts < b) & np.isfinite(values)]
        out.append((float(v.min()), float(v.max())) if len(v) else None)
    return out


async def test_history_max_points_keeps_every_buckets_min_and_max(make_room):
    room = await make_room(room_config(rules=False))
    site = room.site
    start = time.time_ns() - 7200 * 10**9  # two hours ago: before the appliance polled anything
    ts, values, quality = await asyncio.to_thread(stored_history, site, "room.temperature", start, 10**8)
    assert await asyncio.to_thread(site.app.outputs.spool.flush)
    end = int(ts[-1]) + 1
    async with room.client(room.viewer) as v:
        raw = (await v.get("/api/tags/room.temperature/history",
                           params={"start_ns": start, "end_ns": end, "max_values": SAMPLES})).json()
        assert len(raw["ts_ns"]) == SAMPLES  # the spool holds them all
        for n in (400, 1000, 64):
            r = (await v.get("/api/tags/room.temperature/history",
                             params={"start_ns": start, "end_ns": end, "max_points": n})).json()
            assert r["raw_samples"] == SAMPLES and not r["truncated"]
            assert 0 < len(r["ts_ns"]) <= n, (n, len(r["ts_ns"]))
            assert set(r["quality"]) == {0} and r["ts_ns"] == sorted(r["ts_ns"])
            got_ts, got = np.array(r["ts_ns"]), np.array(r["values"], dtype=float)
            assert set(got_ts) <= set(ts.tolist())  # real samples, not interpolations
            expected = bucket_extrema(ts, values, start, end, n // 4)
            assert bucket_extrema(got_ts, got, start, end, n // 4) == expected  # the M4 property
        # MinMaxLTTB: at most N points, every one a real good sample, the global extrema kept
        r = (await v.get("/api/tags/room.temperature/history",
                         params={"start_ns": start, "end_ns": end, "max_points": 500, "method": "minmaxlttb"})).json()
        assert len(r["ts_ns"]) == 500 and set(r["quality"]) == {0}
        assert max(r["values"]) == np.nanmax(values) and min(r["values"]) == np.nanmin(values)
        # bad requests say what is allowed
        bad = await v.get("/api/tags/room.temperature/history", params={"max_points": 2})
        assert bad.status_code == 422 and "max_points" in str(bad.json()["detail"])
        bad = await v.get("/api/tags/room.temperature/history", params={"max_points": 100, "method": "lttb"})
        assert bad.status_code == 422 and "m4" in str(bad.json()["detail"])
        # the live part of the same tag works too (its samples since the start)
        assert await wait_until(lambda: site.diag("room").polls_ok > 10, 5)
        assert await asyncio.to_thread(site.app.outputs.spool.flush)
        live = (await v.get("/api/tags/room.temperature/history", params={"max_points": 40})).json()
        assert 0 < len(live["ts_ns"]) <= 40 and live["raw_samples"] >= len(live["ts_ns"])
