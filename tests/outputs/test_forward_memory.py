"""The forwarder while the server is down: failed attempts leave nothing behind, retries are small.

Found by the long soak (docs/soak-report.md): every failed request stayed in memory (rows,
line protocol, gzip body) through a reference cycle between urllib3's frames and the
exception, until the garbage collector's next pass, which the app's settled thresholds make
rare: +73 MB during a 108 s outage of the demo plant.
"""
from __future__ import annotations

import gc

import pytest
from harness import wait_until_blocking as wait_until

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.outputs.influx import PROBE_POINTS, InfluxForwarder
from edge.storage.spool import Row, Spool
from tests.outputs.demo import batch_for, demo_plant


def rows_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Row)


@pytest.mark.slow
def test_failed_attempts_are_freed_without_the_garbage_collector(tmp_path, refused_port):
    plant = demo_plant(1, 25)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    for p in range(200):  # 200 rows, 5,000 points: the first attempt takes them all
        sp.append_samples(batch_for(plant, 0, p))
    assert sp.flush()
    fw = InfluxForwarder(sp, InfluxConfig(url=f"http://127.0.0.1:{refused_port}", bucket="b",
                                          retry_initial_ms=10, retry_max_ms=20, timeout_ms=500))
    gc.collect()
    before = rows_alive()
    gc.disable()  # what the app's high thresholds amount to over a few minutes
    try:
        fw.start()
        assert wait_until(lambda: fw.stats()["server_down"] >= 40, 30), fw.stats()
        # without the fix: 200 + 39 x 40 rows of failed attempts are still here
        assert rows_alive() - before <= 200, rows_alive() - before
    finally:
        gc.enable()
        assert fw.close(5) and sp.close()


def test_retries_while_down_are_small_and_full_requests_resume(tmp_path, victoria_metrics):
    vm = victoria_metrics
    plant = demo_plant(1, 50)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=vm.url, bucket="edge", api="v2", retry_initial_ms=50, retry_max_ms=100,
                                          timeout_ms=1000, backfill_points_per_s=0, batch_max_points=50_000))
    requests: list[tuple[int, bool]] = []  # (points, succeeded)
    write = fw._write

    def recording_write(rows, lines):
        n = sum(r.n for r in rows)
        try:
            write(rows, lines)
        except Exception:
            requests.append((n, False))
            raise
        requests.append((n, True))

    fw._write = recording_write
    vm.stop()
    for p in range(400):  # 20,000 points
        sp.append_samples(batch_for(plant, 0, p))
    assert sp.flush()
    try:
        fw.start()
        assert wait_until(lambda: fw.stats()["server_down"] >= 5, 30), fw.stats()
        vm.start()
        assert wait_until(lambda: sp.stats()["unsent_rows"] == 0, 60), fw.stats()
    finally:
        assert fw.close() and sp.close()
    first_ok = next(i for i, (_, ok) in enumerate(requests) if ok)
    assert requests[0] == (20_000, False)  # the first attempt does not know the server is down
    assert all(n <= PROBE_POINTS for n, _ in requests[1:first_ok + 1]), requests[:first_ok + 1]
    assert requests[first_ok + 1][0] > PROBE_POINTS, requests  # after one success, full-size requests
    assert sum(n for n, ok in requests if ok) == 20_000
