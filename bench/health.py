"""The ``edge_health`` records of every device at one health tick: their cost on both sides (issue 21).

bench/e2e.py runs health every second for 500 devices; each tick used to build one dict of ~15
floats per device and JSON-encode them (loop thread), and the forwarder JSON-decoded the rows and
formatted one line per device with a per-field f-string. Measured in this process, one after the
other, on the same devices (counters, float latencies, 10 % with Modbus exception codes):

* ``loop_us_old`` / ``loop_us_new``: per tick, on the event loop: ``diagnostics_fields`` per device
  + ``encode_health_many`` per row of 256 (before) against ``diagnostics_table`` +
  ``encode_health_table`` per row (now; what ``append_diagnostics`` does besides queueing the rows);
* ``forwarder_us_old`` / ``forwarder_us_new``: per tick, in the forwarder thread: the rows' lines
  from :meth:`LineEncoder.encode_bytes` (what the forwarder calls), JSON rows against health tables;
  ``forwarder_python_us_new``: the Python encoder of health tables (used when the compiled one is
  not built, and the reference the tests compare with);
* ``identical``: both formats give the same bytes (checked here on every row);
* ``blob_bytes_old`` / ``blob_bytes_new``: the spool bytes of one tick.

    .venv/bin/python bench/health.py                # 500 devices, a few seconds
    .venv/bin/python bench/health.py --devices 2000
Ends with one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edge.config.storage import InfluxConfig, SpoolConfig  # noqa: E402
from edge.core.model import BusInfo, DeviceDiagnostics, DeviceState, Plant  # noqa: E402
from edge.outputs import influx  # noqa: E402
from edge.storage.spool import (  # noqa: E402
    HEALTH_MANY,
    HEALTH_MANY_MAX,
    KIND_HEALTH,
    HealthTable,
    Row,
    Spool,
    encode_health_many,
    encode_health_table,
)

TS_NS = 1_700_000_000_000_000_000


def devices(n: int) -> list[DeviceDiagnostics]:
    rng = np.random.default_rng(1)
    return [DeviceDiagnostics(f"dev{i}", "net", DeviceState.ONLINE if i % 50 else DeviceState.OFFLINE,
                              polls_ok=86_400 + i, polls_failed=i % 7, requests=3 * 86_400 + i, timeouts=i % 5,
                              latency_p50_ms=float(rng.uniform(1, 10)), latency_p99_ms=float(rng.uniform(10, 40)),
                              jitter_p99_ms=float(rng.uniform(0, 2)), holes=i % 3,
                              exceptions={2: i % 9 + 1, 4: 1} if i % 20 == 0 else ({2: 3} if i % 10 == 0 else {}))
            for i in range(n)]


def old_loop(diags: list[DeviceDiagnostics]) -> list[bytes]:
    """What ``_record_health`` did before: a dict per device, JSON per row of HEALTH_MANY_MAX."""
    records = [(d.name, influx.diagnostics_fields(d)) for d in diags]
    return [encode_health_many(records[i:i + HEALTH_MANY_MAX]) for i in range(0, len(records), HEALTH_MANY_MAX)]


def new_loop(diags: list[DeviceDiagnostics]) -> list[bytes]:
    """What ``append_diagnostics`` does now (without queueing): one table, a blob per row."""
    t = influx.diagnostics_table(diags)
    assert t is not None
    return [encode_health_table(HealthTable(t.keys, t.sources[i:i + HEALTH_MANY_MAX], t.values[i:i + HEALTH_MANY_MAX]))
            for i in range(0, len(t.sources), HEALTH_MANY_MAX)]


def best_us(fn: Callable[[], object], seconds: float) -> float:
    """The best of repeated runs within ``seconds`` (at most 2,000): the machine's noise left out."""
    best, end, k = float("inf"), time.monotonic() + seconds, 0
    while k < 2000 and (k < 3 or time.monotonic() < end):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        k += 1
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = ap.parse_args()
    if influx.encode_health_compiled is None:
        sys.exit("the compiled encoder is not built (python setup.py build_ext --inplace)")
    diags = devices(args.devices)
    with tempfile.TemporaryDirectory() as tmp:
        sp = Spool(Path(tmp) / "s.db", Plant("e2e", [BusInfo("net", "modbus_tcp", ())], [], []), SpoolConfig())
        sp.start()
        try:
            enc = influx.LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge"))
            old_rows = [Row(0, TS_NS, KIND_HEALTH, HEALTH_MANY, 0, sp.plant_id, b) for b in old_loop(diags)]
            new_rows = [Row(0, TS_NS, KIND_HEALTH, HEALTH_MANY, 0, sp.plant_id, b) for b in new_loop(diags)]
            old_lines = [enc.encode_bytes(r) for r in old_rows]
            identical = old_lines == [enc.encode_bytes(r) for r in new_rows] == [enc.encode(r).encode() for r in new_rows]
            s = args.seconds
            r = {"devices": args.devices, "identical": identical,
                 "lines": sum(b.count(b"\n") + 1 for b in old_lines),
                 "loop_us_old": best_us(lambda: old_loop(diags), s),
                 "loop_us_new": best_us(lambda: new_loop(diags), s),
                 "forwarder_us_old": best_us(lambda: [enc.encode_bytes(r) for r in old_rows], s),
                 "forwarder_us_new": best_us(lambda: [enc.encode_bytes(r) for r in new_rows], s),
                 "forwarder_python_us_new": best_us(lambda: [enc.encode(r) for r in new_rows], s),
                 "blob_bytes_old": sum(len(r.blob) for r in old_rows),
                 "blob_bytes_new": sum(len(r.blob) for r in new_rows)}
        finally:
            sp.close()
    r["loop_ratio"] = r["loop_us_old"] / r["loop_us_new"]
    r["forwarder_ratio"] = r["forwarder_us_old"] / r["forwarder_us_new"]
    r = {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}
    print(f"{args.devices} devices' health records per tick ({r['lines']} lines, identical bytes: {identical})")
    print(f"  event loop  encode         {r['loop_us_new']:>8} us  (JSON before: {r['loop_us_old']} us, "
          f"{r['loop_ratio']}x)")
    print(f"  forwarder   decode+lines   {r['forwarder_us_new']:>8} us  (JSON before: {r['forwarder_us_old']} us, "
          f"{r['forwarder_ratio']}x; Python encoder of tables {r['forwarder_python_us_new']} us)")
    print(f"  spool bytes per tick       {r['blob_bytes_new']:>8}     (JSON before: {r['blob_bytes_old']})")
    print("RESULT " + json.dumps(r))
    if not identical:
        sys.exit("the health tables' lines differ from the JSON rows'")


if __name__ == "__main__":
    main()
