"""Line-protocol encoding of spooled sample rows: the forwarder's per-value cost, against baselines.

The plant of bench/e2e.py: devices of 100 float32 tags (sine around 10 + k, amplitude 5, noise 0.5,
widened to float64 as the codec does), one spooled row per poll. Measured in this process, one
after the other, on the same rows:

* ``encode_us_per_value``: :meth:`edge.outputs.influx.LineEncoder.encode_bytes` (the compiled
  encoder, what the forwarder calls per row: row decoding included);
* ``python_us_per_value``: the Python encoder (:meth:`LineEncoder.encode`), the baseline the
  compiled one must equal byte for byte (checked here on every row);
* ``format_ns_per_value`` / ``format_cpython_ns_per_value``: the float formatter alone over the
  same values: ours (std::to_chars laid out as repr) and CPython's ``PyOS_double_to_string``
  (what the encoder used before); ``format_ratio`` = CPython's / ours.

    .venv/bin/python bench/lineproto.py            # 200,000 values, a few seconds
    .venv/bin/python bench/lineproto.py --long     # 2,000,000 values
Ends with one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edge.config.storage import InfluxConfig, SpoolConfig  # noqa: E402
from edge.core.model import BusInfo, DeviceInfo, Plant, SampleBatch, TagInfo  # noqa: E402
from edge.outputs import influx  # noqa: E402
from edge.storage.spool import Spool  # noqa: E402

TAGS = 100


def plant(devices: int) -> Plant:
    names = [f"dev{d}" for d in range(devices)]
    tags = [TagInfo(d * TAGS + k, f"dev{d}", f"t{k}", "net", "float32", plugin="bench_device")
            for d in range(devices) for k in range(TAGS)]
    devs = [DeviceInfo(f"dev{d}", "net", f"unit {d}", "bench_device", "1.0", tuple(range(d * TAGS, (d + 1) * TAGS)))
            for d in range(devices)]
    return Plant("e2e", [BusInfo("net", "modbus_tcp", tuple(names))], devs, tags)


def batches(devices: int, polls: int) -> list[SampleBatch]:
    rng = np.random.default_rng(1)
    k = np.arange(TAGS)
    out = []
    for p in range(polls):
        for d in range(devices):
            v = 10 + k + 5 * np.sin(2 * np.pi * (p + d / devices) / 60) + rng.normal(0, 0.5, TAGS)
            ids = (d * TAGS + k).astype(np.int32)
            out.append(SampleBatch(f"dev{d}", 1_700_000_000_000_000_000 + p * 1_000_000_000 + d, ids,
                                   v.astype(np.float32).astype(np.float64), np.zeros(TAGS, np.uint8)))
    return out


def best_of(fn, rounds: int = 3) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="10x more values")
    args = ap.parse_args()
    devices, polls = 100, (200 if args.long else 20)
    if influx.encode_samples_compiled is None:
        sys.exit("the compiled encoder is not built (python setup.py build_ext --inplace)")
    from edge.outputs._lineproto import repr_doubles

    with tempfile.TemporaryDirectory() as tmp:
        pt = plant(devices)
        sp = Spool(Path(tmp) / "s.db", pt, SpoolConfig(retention_s=0))
        sp.start()
        try:
            for b in batches(devices, polls):
                sp.append_samples(b)
            assert sp.flush()
            rows = sp.unsent(0, None, devices * polls * TAGS + 10)
        finally:
            sp.close()
    enc = influx.LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge"))
    n_values = len(rows) * TAGS
    compiled = [enc.encode_bytes(r) for r in rows]
    python = [enc.encode(r).encode() for r in rows]
    identical = compiled == python
    t_compiled = best_of(lambda: [enc.encode_bytes(r) for r in rows])
    t_python = best_of(lambda: [enc.encode(r) for r in rows], rounds=1)
    values = np.concatenate([influx.decode_samples(r.blob).values for r in rows])
    t_fmt = best_of(lambda: repr_doubles(values, b","))
    t_fmt_cpython = best_of(lambda: repr_doubles(values, b",", cpython=True))
    r = {
        "values": n_values,
        "identical_to_python": identical,
        "encode_us_per_value": round(t_compiled / n_values * 1e6, 3),
        "python_us_per_value": round(t_python / n_values * 1e6, 3),
        "encode_vs_python": round(t_python / t_compiled, 2),
        "format_ns_per_value": round(t_fmt / n_values * 1e9, 1),
        "format_cpython_ns_per_value": round(t_fmt_cpython / n_values * 1e9, 1),
        "format_ratio": round(t_fmt_cpython / t_fmt, 2),
        "bytes_per_value": round(sum(map(len, compiled)) / n_values, 1),
    }
    print(f"{n_values} float32 values in {len(rows)} rows of {TAGS} (line protocol identical to the Python encoder: "
          f"{identical})")
    print(f"  compiled encoder   {r['encode_us_per_value']:>7} us/value  ({r['encode_vs_python']}x the Python encoder's "
          f"{r['python_us_per_value']} us)")
    print(f"  float text alone   {r['format_ns_per_value']:>7} ns/value  (CPython's conversion "
          f"{r['format_cpython_ns_per_value']} ns: {r['format_ratio']}x)")
    print("RESULT " + json.dumps(r))
    if not identical:
        sys.exit("the compiled encoder's bytes differ from the Python encoder's")


if __name__ == "__main__":
    main()
