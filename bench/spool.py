"""Benchmark: points/s into the spool and from the spool to a real server, against baselines.

Figures (RESULT names):
  spool_append_per_s        points/s appended from a loop and committed to disk (SQLite WAL,
                            synchronous=FULL, one commit per commit_interval_ms)
  segment_log_append_per_s  the same blobs into a minimal append-only segment file (write +
                            fsync at the same cadence): the alternative storage, measured in the same run
  append_us_per_batch       loop-side cost of one append (100-point batch), microseconds
  forward_per_s             points/s from the spool to VictoriaMetrics (spool drained, acked, deleted)
  direct_per_s              influxdb-client's own batching WriteApi straight to the same server,
                            same line protocol, encoding included
  direct_nogzip_per_s       the same baseline with gzip off (the client's gzip is level 9, ours level 1)
  forward_vs_direct_nogzip  forward_per_s / direct_nogzip_per_s (the forwarder still gzips): for transparency
  end_to_end_per_s          appending and forwarding at the same time, until the last point is acked
  forward_vs_direct         forward_per_s / direct_per_s (target >= 0.8)

Usage: .venv/bin/python bench/spool.py [--long]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influxdb_client import InfluxDBClient, WriteOptions  # noqa: E402

from edge.config.storage import InfluxConfig, SpoolConfig  # noqa: E402
from edge.outputs.influx import InfluxForwarder, LineEncoder  # noqa: E402
from edge.storage.spool import KIND_SAMPLES, Row, Spool, encode_samples  # noqa: E402
from tests.fixtures.tsdb import VictoriaMetrics  # noqa: E402
from tests.outputs.demo import batch_for, demo_plant  # noqa: E402

DEVICES, TAGS = 10, 100


def make_batches(plant, polls: int, first: int = 0):
    return [batch_for(plant, d, p) for p in range(first, first + polls) for d in range(DEVICES)]


def bench_append(path: Path, plant, batches) -> tuple[float, float]:
    """(points/s committed, loop-side µs per append)."""
    sp = Spool(path, plant, SpoolConfig(commit_interval_ms=200, synchronous="full"))
    sp.start()
    t0 = time.perf_counter()
    loop_s = 0.0
    for i in range(0, len(batches), 100):  # the loop appends in bursts, like pollers finishing together
        a = time.perf_counter()
        for b in batches[i:i + 100]:
            sp.append_samples(b)
        loop_s += time.perf_counter() - a
    assert sp.flush(120)
    dt = time.perf_counter() - t0
    sp.close()
    points = sum(len(b) for b in batches)
    return points / dt, loop_s / len(batches) * 1e6


def bench_segment_log(path: Path, batches, commit_interval_s: float = 0.2) -> float:
    """A minimal append-only segment log: length-prefixed blobs, written and fsynced by a thread."""
    pending: list[bytes] = []
    lock = threading.Lock()
    done = threading.Event()

    def writer() -> None:
        with open(path, "ab") as f:
            while True:
                finished = done.wait(commit_interval_s)
                with lock:
                    chunk, pending[:] = list(pending), []
                if chunk:
                    f.write(b"".join(len(c).to_bytes(4, "little") + c for c in chunk))
                    f.flush()
                    os.fsync(f.fileno())
                if finished and not pending:
                    return

    th = threading.Thread(target=writer)
    t0 = time.perf_counter()
    th.start()
    for b in batches:
        blob = encode_samples(b)
        header = b.ts_ns.to_bytes(8, "little") + b.device.encode()
        with lock:
            pending.append(header + blob)
    done.set()
    th.join()
    dt = time.perf_counter() - t0
    return sum(len(b) for b in batches) / dt


def bench_forward(vm: VictoriaMetrics, path: Path, plant, batches) -> float:
    sp = Spool(path, plant, SpoolConfig(commit_interval_ms=200, retention_s=0))
    sp.start()
    for b in batches:
        sp.append_samples(b)
    assert sp.flush(120)
    fw = InfluxForwarder(sp, InfluxConfig(url=vm.url, bucket="edge", batch_max_points=50_000,
                                          backfill_points_per_s=0))
    t0 = time.perf_counter()
    fw.start()
    while sp.stats()["unsent_rows"] and time.perf_counter() - t0 < 300:
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    st = fw.stats()
    fw.close()
    sp.close()
    assert st["points_sent"] == sum(len(b) for b in batches), st
    return st["points_sent"] / dt


def bench_end_to_end(vm: VictoriaMetrics, path: Path, plant, batches) -> float:
    """Points/s appended and forwarded at the same time, until the server acknowledged the last one."""
    sp = Spool(path, plant, SpoolConfig(commit_interval_ms=200, retention_s=0))
    sp.start()
    fw = InfluxForwarder(sp, InfluxConfig(url=vm.url, bucket="edge", batch_max_points=50_000,
                                          backfill_points_per_s=0, batch_max_age_ms=200))
    fw.start()
    t0 = time.perf_counter()
    for i in range(0, len(batches), 100):
        for b in batches[i:i + 100]:
            sp.append_samples(b)
        time.sleep(0.001)  # the loop yields between bursts of polls
    assert sp.flush(120)
    while sp.stats()["unsent_rows"] and time.perf_counter() - t0 < 300:
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    st = fw.stats()
    fw.close()
    sp.close()
    assert st["points_sent"] == sum(len(b) for b in batches), st
    return st["points_sent"] / dt


def bench_direct(vm: VictoriaMetrics, path: Path, plant, batches, gzip: bool = True) -> float:
    """influxdb-client's batching writer, fed the same line protocol (encoded in the timed loop)."""
    sp = Spool(path, plant, SpoolConfig(), forwarding=False)  # only for the encoder's tag tables
    sp.start()
    enc = LineEncoder(sp, InfluxConfig(url=vm.url, bucket="edge"))
    errors: list[Exception] = []
    client = InfluxDBClient(url=vm.url, token="x", org="-", enable_gzip=gzip, timeout=30_000)
    api = client.write_api(write_options=WriteOptions(batch_size=500, flush_interval=1000),
                           error_callback=lambda conf, data, e: errors.append(e))
    t0 = time.perf_counter()
    for b in batches:
        api.write(bucket="edge", record=enc.samples(Row(0, b.ts_ns, KIND_SAMPLES, b.device, len(b),
                                                        sp.plant_id, encode_samples(b))))
    api.close()  # flushes and waits for the last batch
    dt = time.perf_counter() - t0
    client.close()
    sp.close()
    assert not errors, errors[:1]
    return sum(len(b) for b in batches) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="10x more data")
    args = ap.parse_args()
    polls = 2000 if args.long else 300
    plant = demo_plant(DEVICES, TAGS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        batches = make_batches(plant, polls)
        points = sum(len(b) for b in batches)
        print(f"{points:,} points in {len(batches):,} batches of {TAGS} ({DEVICES} devices x {polls} polls)")
        seg = bench_segment_log(tmp / "segment.log", batches)
        app, us = bench_append(tmp / "append.db", plant, batches)
        print(f"append   spool (SQLite WAL, FULL): {app:>12,.0f} points/s  ({us:.1f} µs per 100-point append on the loop)")
        print(f"baseline segment log (fsync):      {seg:>12,.0f} points/s  ratio spool/segment {app / seg:.2f}")
        vm = VictoriaMetrics(tmp / "vm")
        vm.start()
        try:
            fwd_batches = make_batches(plant, polls // 2)
            # alternate: direct, spool, direct, spool (distinct timestamps each run); keep each one's best
            direct, forward = [], []
            for rep in range(2):
                direct.append(bench_direct(vm, tmp / f"d{rep}.db", plant,
                                           make_batches(plant, polls // 2, first=(2 * rep + 1) * 100_000)))
                forward.append(bench_forward(vm, tmp / f"f{rep}.db", plant,
                                             fwd_batches if rep == 0 else make_batches(plant, polls // 2, 500_000)))
            nogzip = bench_direct(vm, tmp / "dn.db", plant, make_batches(plant, polls // 2, first=700_000), gzip=False)
            e2e = bench_end_to_end(vm, tmp / "e2e.db", plant, make_batches(plant, polls // 2, first=900_000))
        finally:
            vm.stop()
        fwd_pts = sum(len(b) for b in fwd_batches)
        print(f"forward  spool -> VictoriaMetrics:   {max(forward):>12,.0f} points/s  runs {[round(x) for x in forward]}"
              f" ({fwd_pts:,} points each)")
        print(f"baseline influxdb-client WriteApi:   {max(direct):>12,.0f} points/s  runs {[round(x) for x in direct]}")
        print(f"  (influxdb-client WriteApi without gzip: {nogzip:,.0f} points/s; the client gzips at level 9, "
              f"the forwarder at level 1)")
        print(f"append + forward at once, end to end: {e2e:>10,.0f} points/s")
        ratio = max(forward) / max(direct)
        print(f"forward_vs_direct {ratio:.2f} (target >= 0.8); spool append target >= 200,000 points/s")
        print("RESULT " + json.dumps({
            "spool_append_per_s": round(app), "segment_log_append_per_s": round(seg),
            "append_us_per_batch": round(us, 2), "forward_per_s": round(max(forward)),
            "direct_per_s": round(max(direct)), "direct_nogzip_per_s": round(nogzip),
            "end_to_end_per_s": round(e2e), "forward_vs_direct_nogzip": round(max(forward) / nogzip, 3),
            "forward_vs_direct": round(ratio, 3), "points": points,
        }))


if __name__ == "__main__":
    main()
