"""Benchmark of the history endpoint's downsampling (``GET /api/tags/{key}/history?max_points=N``).

A week of one tag's samples (1 Hz: 604,800; ``--long``: 10 Hz, 6,048,000), with 5 % bad-quality
samples, goes down to N = 1,000 points with what the endpoint calls (``edge.aggregate.
downsample_arrays``: the compiled M4 and MinMaxLTTB), next to, in the same run and on the same
arrays: a numpy M4 (bucket edges by searchsorted, min/max by reduceat, the four indices per
bucket) and the ``tsdownsample`` package (Rust, SIMD; it has no quality mask, so it gets the good
samples only, the mask's cost not counted). Also timed: turning the N points into the
endpoint's JSON body.

It checks the M4 property on the result (every bucket's min and max equal the raw good data's,
at most N points) and prints the figures; the last line is ``RESULT {json}``.

    .venv/bin/python bench/history.py [--long] [--points N]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.aggregate import ACTIVE_IMPL, downsample_arrays  # noqa: E402

S = 1_000_000_000
T0 = 1_767_225_600 * S
WEEK_S = 7 * 86400


def best(fn, reps: int) -> float:
    """Shortest wall time of ``fn`` over ``reps`` runs (the machine is shared)."""
    times = []
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def week(rate_hz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = WEEK_S * rate_hz
    rng = np.random.default_rng(7)
    ts = T0 + np.arange(n, dtype=np.int64) * (S // rate_hz)
    t = np.arange(n) / rate_hz
    values = 22 + 3 * np.sin(2 * np.pi * t / 86400) + np.cumsum(rng.normal(0, 0.01, n)) + rng.normal(0, 0.1, n)
    values[rng.integers(0, n, 50)] += 8  # short spikes the trend must show
    quality = (rng.random(n) < 0.05).astype(np.uint8) * 3
    values[quality != 0] = np.nan
    return ts, values, quality


def numpy_m4(ts: np.ndarray, values: np.ndarray, quality: np.ndarray, t0: int, t1: int, n_out: int) -> np.ndarray:
    """M4 with numpy only: indices of each bucket's first, min, max and last good sample."""
    good = np.flatnonzero(quality == 0)
    gts, gv = ts[good], values[good]
    nb = n_out // 4
    edges = t0 + (t1 - t0) * np.arange(nb + 1, dtype=np.int64) // nb
    starts = np.searchsorted(gts, edges[:-1])
    ends = np.searchsorted(gts, edges[1:])
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    mins = np.minimum.reduceat(gv, starts)
    maxs = np.maximum.reduceat(gv, starts)
    # the index of the min/max in each bucket: the first position holding it
    bucket = np.repeat(np.arange(len(starts)), ends - starts)
    pos = np.arange(len(gv))
    imin = np.full(len(starts), len(gv))
    imax = np.full(len(starts), len(gv))
    np.minimum.at(imin, bucket[gv == mins[bucket]], pos[gv == mins[bucket]])
    np.minimum.at(imax, bucket[gv == maxs[bucket]], pos[gv == maxs[bucket]])
    idx = np.unique(np.concatenate([starts, imin, imax, ends - 1]))
    return good[idx]


def bucket_extrema(ts: np.ndarray, values: np.ndarray, t0: int, t1: int, nb: int) -> np.ndarray:
    """(min, max) of the finite values per bucket; NaN rows for empty buckets."""
    edges = t0 + (t1 - t0) * np.arange(nb + 1, dtype=np.int64) // nb
    out = np.full((nb, 2), np.nan)
    finite = np.isfinite(values)
    ts, values = ts[finite], values[finite]
    a = np.searchsorted(ts, edges[:-1])
    b = np.searchsorted(ts, edges[1:])
    for k in np.flatnonzero(b > a):
        out[k] = values[a[k]:b[k]].min(), values[a[k]:b[k]].max()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="10 Hz for a week (6 M samples) instead of 1 Hz")
    ap.add_argument("--points", type=int, default=1000, help="max_points (default 1000)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rate = 10 if args.long else 1
    ts, values, quality = week(rate)
    n, n_out = len(ts), args.points
    t0, t1 = int(ts[0]), int(ts[-1]) + 1
    print(f"{n:,} samples (a week at {rate} Hz, 5 % bad), max_points {n_out}, aggregator: {ACTIVE_IMPL}")

    m4 = downsample_arrays(ts, values, quality, t0, t1, n_out, "m4")
    lt = downsample_arrays(ts, values, quality, t0, t1, n_out, "minmaxlttb")
    assert len(m4[0]) <= n_out and len(lt[0]) <= n_out
    assert np.array_equal(bucket_extrema(m4[0], m4[1], t0, t1, n_out // 4),
                          bucket_extrema(ts, values, t0, t1, n_out // 4), equal_nan=True), "M4 property"
    ref = numpy_m4(ts, values, quality, t0, t1, n_out)
    assert np.array_equal(bucket_extrema(ts[ref], values[ref], t0, t1, n_out // 4),
                          bucket_extrema(ts, values, t0, t1, n_out // 4), equal_nan=True), "numpy reference"

    t_m4 = best(lambda: downsample_arrays(ts, values, quality, t0, t1, n_out, "m4"), args.reps)
    t_lt = best(lambda: downsample_arrays(ts, values, quality, t0, t1, n_out, "minmaxlttb"), args.reps)
    t_np = best(lambda: numpy_m4(ts, values, quality, t0, t1, n_out), max(2, args.reps // 2))
    figures = {"samples": n, "max_points": n_out, "m4_points": len(m4[0]), "minmaxlttb_points": len(lt[0]),
               "m4_ms": round(t_m4 * 1e3, 3), "minmaxlttb_ms": round(t_lt * 1e3, 3),
               "numpy_m4_ms": round(t_np * 1e3, 3), "m4_vs_numpy": round(t_np / t_m4, 1),
               "m4_msamples_per_s": round(n / t_m4 / 1e6, 1)}
    print(f"compiled M4        {t_m4 * 1e3:8.2f} ms  ({n / t_m4 / 1e6:.0f} M samples/s) -> {len(m4[0])} points")
    print(f"compiled MinMaxLTTB{t_lt * 1e3:8.2f} ms -> {len(lt[0])} points")
    print(f"numpy M4           {t_np * 1e3:8.2f} ms  (compiled is x{t_np / t_m4:.1f})")
    try:
        from tsdownsample import M4Downsampler, MinMaxLTTBDownsampler
    except ImportError:
        print("tsdownsample not installed: no Rust baseline")
    else:
        good = quality == 0
        x, y = ts[good], values[good]
        t_ts = best(lambda: M4Downsampler().downsample(x, y, n_out=n_out), args.reps)
        t_tl = best(lambda: MinMaxLTTBDownsampler().downsample(x, y, n_out=n_out), args.reps)
        figures.update(tsdownsample_m4_ms=round(t_ts * 1e3, 3), tsdownsample_minmaxlttb_ms=round(t_tl * 1e3, 3),
                       m4_vs_tsdownsample=round(t_ts / t_m4, 2), minmaxlttb_vs_tsdownsample=round(t_tl / t_lt, 2))
        print(f"tsdownsample M4    {t_ts * 1e3:8.2f} ms on the good samples only (compiled is x{t_ts / t_m4:.2f})")
        print(f"tsdownsample MinMaxLTTB {t_tl * 1e3:8.2f} ms (compiled is x{t_tl / t_lt:.2f})")

    def body() -> bytes:
        return json.dumps({"ts_ns": m4[0].tolist(), "values": m4[1].tolist(), "quality": m4[2].tolist()}).encode()

    t_json = best(body, args.reps)
    figures.update(json_ms=round(t_json * 1e3, 3), body_bytes=len(body()))
    print(f"JSON body of the points {t_json * 1e3:.2f} ms, {len(body()):,} bytes "
          f"(the raw week as JSON would be ~{n * 40 / 1e6:.0f} MB)")
    print("RESULT " + json.dumps(figures))


if __name__ == "__main__":
    main()
