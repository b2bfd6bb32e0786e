"""Forwarding from the spool to a real VictoriaMetrics (v2 writes): counts, outage, errors."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest
from harness import wait_until_blocking as wait_until

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.outputs.influx import InfluxForwarder
from edge.storage.spool import Spool
from tests.fixtures.tsdb import VictoriaMetrics
from tests.outputs.demo import batch_for, compare, demo_plant, expected_points

MATCH = '{__name__=~"dev.*"}'


def test_every_point_written_is_read_back_and_counted(tmp_path, victoria_metrics):
    plant = demo_plant(4, 25, strings=True)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=50, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=victoria_metrics.url, bucket="edge", batch_max_points=5000,
                                          batch_max_age_ms=200))
    fw.start()
    try:
        for p in range(500):
            for d in range(4):
                sp.append_samples(batch_for(plant, d, p))
        assert sp.flush()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 60), (sp.stats(), fw.stats())
    finally:
        assert fw.close() and sp.close()
    expected = expected_points(plant, {d: range(500) for d in range(4)})
    assert len(expected) == 500 * 4 * (25 + 26)
    raw, missing, dupes, wrong, unexpected = compare(victoria_metrics.samples(MATCH), expected)
    assert (missing, dupes, wrong) == ([], 0, [])
    assert raw == 102_000 + 2000  # + the 2,000 string values, which VictoriaMetrics keeps as extra series
    assert len([k for k in unexpected if "_serial" in k[0]]) == 2000
    st, fs = sp.stats(), fw.stats()
    assert st["acked_points"] == 500 * 4 * 26 == fs["points_sent"]
    assert fs["retries"] == 0 and fs["server_down"] == 0 and st["dropped_points_total"] == 0


def test_wrong_path_is_a_reported_config_error_and_the_data_stay(tmp_path, influxdb1):
    """InfluxDB 1.6 has no /api/v2/write: a real 404, told apart from a server that is down."""
    plant = demo_plant(1, 5)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=influxdb1.url, bucket="nope", org="acme", api="v2",
                                          client_error_retry_ms=600_000))
    fw.start()
    try:
        for p in range(10):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        assert wait_until(lambda: fw.stats()["config_errors"] >= 1, 30)
        time.sleep(1.0)  # long enough for a retry loop to show up, were there one
        fs = fw.stats()
        assert fs["state"] == "refused" and fs["config_errors"] == 1 and fs["last_error_status"] == 404
        assert "404" in fs["last_error"] and "'nope'" in fs["last_error"] and "data kept" in fs["last_error"]
        assert fs["server_down"] == 0 and fs["points_sent"] == 0
        assert sp.stats()["unsent_points"] == 50
    finally:
        assert fw.close(5) and sp.close()


def test_server_down_is_retried_with_capped_backoff(tmp_path, refused_port):
    plant = demo_plant(1, 5)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=f"http://127.0.0.1:{refused_port}", bucket="b",
                                          retry_initial_ms=50, retry_max_ms=200, timeout_ms=500))
    fw.start()
    try:
        sp.append_samples(batch_for(plant, 0, 0))
        assert sp.flush()
        assert wait_until(lambda: fw.stats()["retries"] >= 6, 30)
        fs = fw.stats()
        assert fs["state"] == "retrying" and fs["config_errors"] == 0 and fs["points_sent"] == 0
        assert sp.stats()["unsent_points"] == 5
    finally:
        assert fw.close(5) and sp.close()


@pytest.mark.slow
async def test_outage_of_60s_loses_nothing_and_duplicates_nothing(tmp_path, victoria_metrics):
    """The demo plant polls on the asyncio loop while the server is stopped for 60 s, then restarted."""
    vm: VictoriaMetrics = victoria_metrics
    plant = demo_plant(4, 25)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=200, retention_s=0))
    sp.start()
    cfg = InfluxConfig(url=vm.url, bucket="edge", batch_max_points=2000, batch_max_age_ms=200,
                       retry_initial_ms=200, retry_max_ms=2000, backfill_points_per_s=4000, live_window_ms=2000,
                       timeout_ms=2000)
    fw = InfluxForwarder(sp, cfg)
    fw.start()
    polls = 0
    live_seen_during_backfill = False
    loop = asyncio.get_running_loop()

    async def plant_runs(seconds: float) -> None:
        nonlocal polls
        end = loop.time() + seconds
        while loop.time() < end:
            for d in range(4):
                assert sp.append_samples(batch_for(plant, d, polls))
            polls += 1
            await asyncio.sleep(0.05)  # 20 polls/s per device: 2,000 values/s

    await plant_runs(5)
    await asyncio.to_thread(vm.stop)
    await plant_runs(60)
    st = sp.stats()
    assert fw.stats()["server_down"] >= 1 and st["unsent_points"] > 50_000  # the outage really held data back
    await asyncio.to_thread(vm.start)
    restart_poll = polls
    for _ in range(200):  # the plant keeps running while the backlog drains
        await plant_runs(0.25)
        if not live_seen_during_backfill and sp.stats()["unsent_points"] > 20_000:
            ts_after_restart = batch_for(plant, 0, restart_poll + 5).ts_ns // 1_000_000
            got = await asyncio.to_thread(vm.export, '{__name__="dev00_t000"}')
            live_seen_during_backfill = any(t >= ts_after_restart for s in got for t in s["timestamps"])
        if sp.stats()["unsent_rows"] == 0 and polls > restart_poll + 20:
            break
    assert await asyncio.to_thread(sp.flush)
    assert await asyncio.to_thread(lambda: wait_until(lambda: sp.stats()["unsent_rows"] == 0, 60))
    assert await fw.stop() and await sp.stop()

    expected = expected_points(plant, {d: range(polls) for d in range(4)})
    raw, missing, dupes, wrong, unexpected = compare(await asyncio.to_thread(vm.samples, MATCH), expected)
    assert (len(missing), dupes, len(wrong), len(unexpected)) == (0, 0, 0, 0)
    assert raw == len(expected) == polls * 4 * 50
    st, fs = sp.stats(), fw.stats()
    assert st["dropped_points_total"] == 0 and st["acked_points"] == polls * 4 * 25
    assert fs["backfill_points"] > 50_000  # the backlog went through the rate-limited path
    assert live_seen_during_backfill, "live data should reach the server while the backlog drains"


def test_thin_policy_replaces_the_oldest_by_window_stats_and_all_reach_the_server(tmp_path, victoria_metrics):
    """Over budget with policy 'thin': the oldest polls become 60 s statistics, counted, nothing dropped."""
    plant = demo_plant(1, 10)
    polls = 3000  # one poll per second for fifty minutes
    cfg = SpoolConfig(max_bytes=256 << 10, over_budget="thin", thin_window_s=60, trim_interval_ms=600_000,
                      retention_s=0)
    sp = Spool(tmp_path / "s.db", plant, cfg)
    sp.start()
    for p in range(polls):
        sp.append_samples(batch_for(plant, 0, p, step_ns=1_000_000_000))
    assert sp.flush()
    sp.enforce_budget()
    st = sp.stats()
    assert st["dropped_points_total"] == 0 and st["disk_bytes"] <= cfg.max_bytes, st
    thinned_polls = st["thinned_points"] // 10
    assert st["thinned_points"] == thinned_polls * 10 and thinned_polls % 60 == 0 and thinned_polls >= 60
    assert st["thin_stats_written"] == (thinned_polls // 60) * 10  # one row per tag and 60 s window
    assert st["unsent_points"] == (polls - thinned_polls) * 10 + st["thin_stats_written"]
    fw = InfluxForwarder(sp, InfluxConfig(url=victoria_metrics.url, bucket="edge", batch_max_age_ms=100))
    fw.start()
    try:
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 60), fw.stats()
    finally:
        assert fw.close() and sp.close()
    kept = {0: range(thinned_polls, polls)}
    expected = expected_points(plant, kept, step_ns=1_000_000_000)
    raw, missing, dupes, wrong, _ = compare(victoria_metrics.samples(MATCH), expected)
    assert (len(missing), dupes, len(wrong), raw) == (0, 0, 0, len(expected))
    means = victoria_metrics.samples('{__name__="edge_window_t003_mean", window="thin_60s"}')
    (series, pts), = means.items()
    assert dict(series)["device"] == "dev00" and len(pts) == thinned_polls // 60
    for start_ns, v in pts:
        first = (start_ns - batch_for(plant, 0, 0).ts_ns) // 1_000_000_000
        vals = [batch_for(plant, 0, p, step_ns=1_000_000_000).values[3] for p in range(first, first + 60)]
        assert v == sum(vals) / 60
    counts = victoria_metrics.samples('{__name__="edge_window_t003_count"}')
    assert [v for _, v in next(iter(counts.values()))] == [60.0] * (thinned_polls // 60)


def disk_files(path) -> dict[str, int]:
    """Bytes of the spool database, its WAL and its rollback journal on disk (what the budget covers)."""
    return {suffix or "db": os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal", "-journal")
            if os.path.exists(f"{path}{suffix}")}


def disk_use(path) -> int:
    return sum(disk_files(path).values())


def test_small_budget_during_outage_drops_the_oldest_counted_exactly(tmp_path, victoria_metrics):
    """Server down, a small disk budget fills: the disk (database + WAL + journal) stays within
    1.25 x the budget (before: a 256 KiB budget used 4.55 MB, the WAL was not counted); the oldest
    are dropped and counted exactly, visible in stats(); the rest arrive."""
    vm = victoria_metrics
    plant = demo_plant(1, 50)
    budget = 256 << 10
    cfg = SpoolConfig(max_bytes=budget, commit_interval_ms=20, trim_interval_ms=50, retention_s=0)
    path = tmp_path / "s.db"
    sp = Spool(path, plant, cfg)
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=vm.url, bucket="edge", retry_initial_ms=100, retry_max_ms=300,
                                          timeout_ms=1000))
    fw.start()
    peak, at_peak = 0, {}

    def measure() -> None:
        nonlocal peak, at_peak
        files = disk_files(path)
        if sum(files.values()) > peak:
            peak, at_peak = sum(files.values()), files

    try:
        vm.stop()
        polls = 3000  # ~2 MB of payload: 8 x the budget
        for p in range(polls):
            sp.append_samples(batch_for(plant, 0, p))
            if p % 10 == 9:
                time.sleep(0.01)  # a plant's pace, compressed (~0.5 MB/s): the writer commits as data flow
                measure()
        assert sp.flush()
        sp.enforce_budget()
        measure()
        st = sp.stats()
        kept = st["unsent_rows"]
        assert peak <= 1.25 * budget, f"disk peaked at {peak} bytes ({at_peak}) for a {budget}-byte budget"
        assert st["disk_bytes"] <= budget
        assert 0 < kept < polls
        assert st["dropped_points"] == {"max_bytes": (polls - kept) * 50}
        assert st["dropped_batches"] == {"max_bytes": polls - kept}
        assert fw.stats()["points_sent"] == 0 and fw.stats()["server_down"] >= 1
        vm.start()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 60), fw.stats()
    finally:
        assert fw.close() and sp.close()
    expected = expected_points(plant, {0: range(polls - kept, polls)})  # exactly the newest polls
    raw, missing, dupes, wrong, unexpected = compare(vm.samples(MATCH), expected)
    assert (len(missing), dupes, len(wrong), len(unexpected), raw) == (0, 0, 0, 0, kept * 100)
    assert sp.stats()["acked_points"] == kept * 50


def test_an_undecodable_row_is_set_aside_counted_and_does_not_block_the_rest(tmp_path, victoria_metrics):
    plant = demo_plant(1, 5)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0, rejected_retention_s=1e9))
    sp.start()
    for p in range(3):
        sp.append_samples(batch_for(plant, 0, p))
    assert sp.flush()
    with sqlite3.connect(tmp_path / "s.db") as conn:  # damage the middle batch on disk
        conn.execute("UPDATE batches SET blob = x'00ff' WHERE seq = 2")
    fw = InfluxForwarder(sp, InfluxConfig(url=victoria_metrics.url, bucket="edge", batch_max_age_ms=50))
    fw.start()
    try:
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 30), fw.stats()
        fs = fw.stats()
        assert fs["undecodable_rows"] == 1 and "spool row 2 cannot be encoded" in fs["last_error"]
        assert fs["points_sent"] == 10 and sp.stats()["rejected_points"] == 5
    finally:
        assert fw.close() and sp.close()
    expected = expected_points(plant, {0: [0, 2]})
    raw, missing, dupes, wrong, unexpected = compare(victoria_metrics.samples(MATCH), expected)
    assert (len(missing), dupes, len(wrong), len(unexpected), raw) == (0, 0, 0, 0, 20)
    with sqlite3.connect(tmp_path / "s.db") as conn:  # kept for inspection, marked rejected
        assert conn.execute("SELECT seq, sent FROM batches").fetchall() == [(2, 2)]


def test_v2_write_request_has_the_documented_shape_and_a_401_is_a_config_error(tmp_path):
    """The v2 write as InfluxDB's API reference documents it (``POST /api/v2/write?org=&bucket=&precision=``,
    ``Authorization: Token``, gzip body), recorded by a stdlib HTTP server (a recorder, not a time-series
    server: no real server here checks a token; VictoriaMetrics and InfluxDB 1.x check the data above).
    The forwarder posts through urllib3 since influxdb-client left the runtime; a 401 with InfluxDB's
    JSON error body is a configuration error that names the token."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, dict[str, str], bytes]] = []
    status = [204]

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status[0])
            if status[0] == 401:
                answer = b'{"code":"unauthorized","message":"unauthorized access"}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            else:
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    plant = demo_plant(1, 5)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=f"http://127.0.0.1:{httpd.server_address[1]}", bucket="edge/autogen",
                                          org="acme plant", token="s3cret", api="v2", client_error_retry_ms=600_000))
    fw.start()
    try:
        sp.append_samples(batch_for(plant, 0, 0))
        assert sp.flush()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 30), fw.stats()
        path, headers, body = seen[0]
        assert path == "/api/v2/write?org=acme+plant&bucket=edge%2Fautogen&precision=ns"
        assert headers["authorization"] == "Token s3cret"
        assert headers["content-encoding"] == "gzip" and headers["content-type"].startswith("text/plain")
        lines = gzip.decompress(body).decode().split("\n")
        assert len(lines) == 1 and lines[0].startswith("dev00,site=demo,"), lines  # one device row
        assert [f.split("=")[0] for f in lines[0].split(" ")[1].split(",")][::2] == [f"t00{i}" for i in range(5)]
        status[0] = 401
        sp.append_samples(batch_for(plant, 0, 1))
        assert sp.flush()
        assert wait_until(lambda: fw.stats()["config_errors"] >= 1, 30), fw.stats()
        fs = fw.stats()
        assert fs["state"] == "refused" and fs["last_error_status"] == 401
        assert "token refused (401)" in fs["last_error"], fs["last_error"]
        assert sp.stats()["unsent_points"] == 5
    finally:
        assert fw.close(5) and sp.close()
        httpd.shutdown()
        httpd.server_close()
