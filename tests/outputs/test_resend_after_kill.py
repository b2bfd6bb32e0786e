"""The forwarder's at-least-once window, made reproducible: the appliance (`edge run`) is killed with
SIGKILL right after the time-series server acknowledged a write and before the spool could record
it (a tap in front of the server swallows that answer and sends the kill). After a restart the
batch goes out again; the server's own query API must then count every polled point once: 0 lost,
0 duplicated (issue 17; docs/decisions.md "Exactly once as a query sees it").

Judged against VictoriaMetrics run as the deployment documents it (``-dedup.minScrapeInterval=1ms``;
without the flag this test fails with the swallowed request's points counted twice) and against
Debian's InfluxDB 1.6.7 (InfluxQL), which stores a point with the same series and timestamp once.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.storage.spool import KIND_SAMPLES, _plant_tags, decode_samples
from tests.fixtures.ack_tap import AckTap
from tests.fixtures.tsdb import InfluxDB1, VictoriaMetrics

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
site: {name: t}
buses:
  - {name: net, type: modbus_tcp, timeout_ms: 40}
devices:
  - name: a
    bus: net
    port: {port:a}
    interval_ms: 50
    points:
      - {name: x, address: 0, sim: {kind: constant, value: 1}}
      - {name: y, address: 1, sim: {kind: constant, value: 2}}
outputs:
  influxdb: {url: 'TAP', bucket: edge, org: edge, token: t}
  spool: {commit_interval_ms: 100}
runtime: {data_dir: '{tmp}/data', status_interval_s: 0.5}
"""


def spooled(db: Path) -> tuple[dict[str, list[int]], int]:
    """Per tag of device a, the timestamps (ns) of every committed poll in the spool; unsent points."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        plants = {pid: _plant_tags(pid, site, tags) for pid, site, tags in conn.execute(
            "SELECT id, site, tags FROM plants")}
        out: dict[str, list[int]] = {}
        unsent = 0
        for ts, source, plant, sent, n, blob in conn.execute(
                "SELECT ts_ns, source, plant, sent, n, blob FROM batches WHERE kind = ? ORDER BY seq", (KIND_SAMPLES,)):
            if source != "a":
                continue
            unsent += n if sent == 0 else 0
            for tag_id in decode_samples(blob).tag_ids.tolist():
                out.setdefault(plants[plant].name[tag_id], []).append(ts)
        return out, unsent
    finally:
        conn.close()


async def edge_run(config: Path, log: Path, *args: str) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", "run", str(config),
                                                    "--no-status", *args, cwd=REPO,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=err)


def server_timestamps(server: VictoriaMetrics | InfluxDB1, tag: str) -> list[int]:
    """Every stored timestamp (ms) of ``a.q_<tag>`` as the server's query API returns it, duplicates included."""
    if isinstance(server, VictoriaMetrics):
        series = server.export(f'{{__name__="a_q_{tag}"}}')
        return sorted(t for s in series for t in s["timestamps"])
    result = server.query(f'SELECT "q_{tag}" FROM "a"', db="edge")["results"][0]
    rows = result.get("series", [{}])[0].get("values", [])
    return sorted(int(t) // 1_000_000 for t, _ in rows)


async def visible(server: VictoriaMetrics | InfluxDB1, tag: str, enough: Callable[[list[int]], bool]) -> bool:
    """Wait (at most 15 s) until what the server shows satisfies ``enough``: VictoriaMetrics makes
    ingested rows searchable about a second after it acknowledged them."""
    deadline = time.monotonic() + 15
    while True:
        if enough(await asyncio.to_thread(server_timestamps, server, tag)):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


def server_count(server: VictoriaMetrics | InfluxDB1, tag: str) -> int:
    """What a dashboard's count query answers for ``a.q_<tag>``."""
    if isinstance(server, VictoriaMetrics):
        result = server.query(f'sum(count_over_time(a_q_{tag}[1d]))', at_s=time.time() + 60)
        return int(float(result[0]["value"][1])) if result else 0
    result = server.query(f'SELECT count("q_{tag}") FROM "a"', db="edge")["results"][0]
    return int(result["series"][0]["values"][0][1]) if "series" in result else 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["victoria-metrics", "influxdb-1.6"])
async def test_kill_after_the_server_acked_and_before_the_spool_did_counts_every_point_once(
        kind, make_site, tmp_path):
    if kind == "victoria-metrics":
        server: VictoriaMetrics | InfluxDB1 = VictoriaMetrics(tmp_path / "vm", dedup=True)
        server.start()
    else:
        server = InfluxDB1(tmp_path / "influxdb")
        server.start()
        server.create_database("edge")
    victim: dict[str, int] = {}
    tap = AckTap(server.url, fire_after=5, on_swallow=lambda: os.kill(victim["pid"], signal.SIGKILL))
    await tap.start()
    try:
        site = await make_site(CONFIG.replace("TAP", tap.url), start_app=False)
        config, db = site.loaded.path, site.loaded.data_dir / "spool.db"
        proc = await edge_run(config, tmp_path / "run1.log")
        victim["pid"] = proc.pid
        try:
            await asyncio.wait_for(tap.fired.wait(), 60)
        finally:
            if proc.returncode is None and not tap.fired.is_set():
                proc.kill()
            await asyncio.wait_for(proc.wait(), 15)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "run1.log").read_text()[-3000:]

        # the window was hit: the server acknowledged these lines, the killed spool still has them unsent
        swallowed = sorted(int(ln.rsplit(b" ", 1)[1]) for ln in tap.swallowed_lines if ln.startswith(b"a,"))
        assert swallowed, tap.swallowed_lines[:5]
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        unsent_ts = {ts for (ts,) in conn.execute("SELECT ts_ns FROM batches WHERE sent = 0 AND source = 'a'")}
        conn.close()
        assert set(swallowed) <= unsent_ts
        acked = {ts // 1_000_000 for ts in swallowed}
        assert await visible(server, "x", lambda got: acked <= set(got)), "the server should hold the swallowed batch"

        # restart: the unacknowledged rows (the swallowed batch among them) are sent again, then a clean stop
        proc = await edge_run(config, tmp_path / "run2.log", "--duration", "4")
        await asyncio.wait_for(proc.wait(), 90)
        assert proc.returncode == 0, (tmp_path / "run2.log").read_text()[-3000:]

        polls, unsent = spooled(db)
        assert unsent == 0 and len(polls["x"]) > 40
        for tag in ("x", "y"):
            want = sorted(ts // 1_000_000 for ts in polls[tag])
            n = len(want)
            await visible(server, tag, lambda got, n=n: len(got) >= n)
            got = await asyncio.to_thread(server_timestamps, server, tag)
            assert len(want) == len(set(want))  # one poll per millisecond at most (50 ms interval)
            lost, duplicated = len(set(want) - set(got)), len(got) - len(set(got))
            assert (lost, duplicated, len(got)) == (0, 0, len(want)), (tag, len(swallowed))
            assert await asyncio.to_thread(server_count, server, tag) == len(want)
    finally:
        await tap.close()
        server.close()
