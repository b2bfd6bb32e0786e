"""Outages seen and survived (issue 17): InfluxDB 1.x through /write, recovery within the probe
period, errors in words, supervised threads, a stats() that never queries on the caller's thread.

Judged by the servers' own query APIs (InfluxQL on Debian's InfluxDB 1.6.7, VictoriaMetrics)."""
from __future__ import annotations

import logging
import time

from harness import wait_until_blocking as wait_until

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.outputs.influx import InfluxForwarder
from edge.storage.spool import Spool
from tests.outputs.demo import batch_for, demo_plant


def test_influxdb_1x_receives_every_point_of_an_outage(tmp_path, influxdb1):
    """Debian's InfluxDB 1.6.7 has no /api/v2/write (before: 404, nothing delivered, next try in
    5 minutes): /ping says 1.x, the forwarder writes through /write; every point of an outage
    arrives once (InfluxQL counts)."""
    influxdb1.create_database("plant")
    plant = demo_plant(2, 10)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=influxdb1.url, database="plant", retry_initial_ms=100,
                                          retry_max_ms=500, timeout_ms=1000, batch_max_age_ms=50))
    fw.start()
    polls = 0
    try:
        for _ in range(100):
            for d in range(2):
                sp.append_samples(batch_for(plant, d, polls))
            polls += 1
        assert sp.flush()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 30), fw.stats()
        assert fw.stats()["api"] == "v1" and fw.stats()["server_version"].startswith("1.")
        influxdb1.stop()
        for _ in range(300):  # the outage
            for d in range(2):
                sp.append_samples(batch_for(plant, d, polls))
            polls += 1
            time.sleep(0.002)
        assert wait_until(lambda: fw.stats()["state"] == "retrying", 10), fw.stats()
        fs = fw.stats()
        assert fs["last_error"] == f"{influxdb1.url} not reachable: connection refused", fs["last_error"]
        assert sp.flush() and sp.stats()["unsent_points"] > 0
        influxdb1.start()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 30), fw.stats()
        assert fw.stats()["state"] == "ok"
    finally:
        assert fw.close() and sp.close()
    for dev in ("dev00", "dev01"):
        res = influxdb1.query(f'SELECT count(*) FROM "{dev}"', db="plant")["results"][0]["series"][0]
        counts = dict(zip(res["columns"], res["values"][0], strict=True))
        assert {k: v for k, v in counts.items() if k != "time"} == {
            **{f"count_t{t:03d}": polls for t in range(10)}, **{f"count_q_t{t:03d}": polls for t in range(10)}}
    st = sp.stats()
    assert st["acked_points"] == polls * 2 * 10 and st["dropped_points_total"] == 0


def test_forwarder_on_v1_with_retention_policy_and_user(tmp_path, influxdb1):
    """database/retention-policy from ``bucket``; user and password sent (1.6 without auth ignores them)."""
    influxdb1.create_database("db1")
    influxdb1.query('CREATE RETENTION POLICY "week" ON "db1" DURATION 10000w REPLICATION 1')
    plant = demo_plant(1, 3)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=influxdb1.url, bucket="db1/week", api="v1", username="edge",
                                          password="secret", batch_max_age_ms=50))
    fw.start()
    try:
        for p in range(20):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 20), fw.stats()
    finally:
        assert fw.close() and sp.close()
    res = influxdb1.query('SELECT count("t000") FROM "db1"."week"."dev00"')["results"][0]["series"][0]
    assert res["values"][0][1] == 20


def test_server_back_drains_within_the_probe_period(tmp_path, victoria_metrics):
    """Default probing: a server that is down is tried at most 10 s apart (before: back-off to 30 s),
    and the spool drains as soon as it answers."""
    vm = victoria_metrics
    plant = demo_plant(1, 5)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0))
    sp.start()
    cfg = InfluxConfig(url=vm.url, bucket="edge", timeout_ms=500, batch_max_age_ms=50)
    assert cfg.retry_max_ms == 10_000
    fw = InfluxForwarder(sp, cfg)
    fw.start()
    try:
        vm.stop()
        for p in range(50):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        time.sleep(14.0)  # long enough for the back-off to reach its cap (0.5, 1, 2, 4, 8 -> 10 s)
        assert fw.stats()["state"] == "retrying" and sp.stats()["unsent_rows"] == 50
        vm.start()
        t0 = time.monotonic()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 15), fw.stats()
        assert time.monotonic() - t0 <= 10.5
    finally:
        assert fw.close() and sp.close()


def test_retry_warning_names_the_url_in_words(tmp_path, caplog, refused_port):
    """Before: 'NewConnectionError: <urllib3.connection.HTTPConnection object at 0x...>'."""
    url = f"http://127.0.0.1:{refused_port}"
    plant = demo_plant(1, 2)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=url, bucket="b", api="v2", retry_initial_ms=50, retry_max_ms=100))
    caplog.set_level(logging.WARNING, logger="edge.outputs.influx")
    fw.start()
    try:
        sp.append_samples(batch_for(plant, 0, 0))
        assert wait_until(lambda: fw.stats()["retries"] >= 3, 10)
    finally:
        assert fw.close() and sp.close()
    assert fw.stats()["last_error"] == f"{url} not reachable: connection refused"
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge.outputs.influx"]
    assert warnings and all(url in w and "object at 0x" not in w for w in warnings), warnings
    assert len(warnings) == 1  # one warning per outage, not one per retry


def test_forwarder_thread_crash_is_counted_and_restarted(tmp_path, victoria_metrics):
    plant = demo_plant(1, 2)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=victoria_metrics.url, bucket="edge", batch_max_age_ms=50))
    real_pick, calls = fw._pick, []

    def pick_once_broken():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated bug in the forwarder")
        return real_pick()

    fw._pick = pick_once_broken
    fw.start()
    try:
        assert wait_until(lambda: fw.stats()["thread"]["crashes"] == 1, 10), fw.stats()
        for p in range(10):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 20), fw.stats()
        th = fw.stats()["thread"]
        assert th["state"] == "running" and "simulated bug" in th["last_crash"]
    finally:
        assert fw.close() and sp.close()


def test_spool_writer_crash_is_counted_and_restarted(tmp_path):
    plant = demo_plant(1, 2)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    real, calls = sp._commit_locked, []

    def commit_once_broken(batch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated bug in the writer")
        real(batch)

    sp._commit_locked = commit_once_broken
    sp.start()
    try:
        sp.append_samples(batch_for(plant, 0, 0))
        assert wait_until(lambda: sp.stats()["writer"]["crashes"] == 1, 10)
        sp.append_samples(batch_for(plant, 0, 1))
        assert sp.flush(10)
        st = sp.stats()
        assert st["writer"]["state"] == "running" and st["dropped_points"] == {"writer_error": 2}
        assert st["committed_points"] == 2 and st["unsent_rows"] == 1
    finally:
        sp.close()


def test_stats_runs_no_query_on_the_calling_thread(tmp_path):
    """The app's loop asks stats() every 50 ms while draining: it must not touch SQLite (issue 18)."""
    plant = demo_plant(1, 2)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    try:
        for p in range(5):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        for _ in range(50):
            st = sp.stats()
        assert getattr(sp._read_local, "conn", None) is None  # no connection was opened for this thread
        assert st["unsent_rows"] == 5 and st["oldest_unsent_age_s"] > 0
        sp.ack(sp.unsent(0, None, 100)[:5])
        assert sp.stats()["oldest_unsent_age_s"] == 0.0
    finally:
        sp.close()
