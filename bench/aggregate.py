"""Benchmark of the ring-buffer aggregator, all figures from one run on the same data.

(a) batch push: blocks of 1,000 samples of one tag (``push_many``), and whole polls across
    1,000 tags (``consume``), samples/s;
(b) single-sample push from a Python loop, samples/s, next to the same loop doing nothing;
(c) window statistics over 10,000,000 samples (1 s windows of 1,000 samples), basic
    (count/min/max/mean) and full set, next to numpy (reshape + reductions), the pure-Python
    twin and ``numpy.copyto`` of the value array (the memory-bandwidth reference);
(d) M4 and MinMaxLTTB down to 2,000 points over the same 10,000,000 samples, next to the
    ``tsdownsample`` package (Rust, SIMD).

Every figure is the best of several repetitions (the machine is shared). The last line is
``RESULT {json}``. ``--long`` uses 50,000,000 samples and more repetitions.

    .venv/bin/python bench/aggregate.py [--long]
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

from edge.aggregate import ACTIVE_IMPL, RingStore, pyring  # noqa: E402

S = 1_000_000_000
T0 = 1_700_000_000 * S
WINDOW_SAMPLES = 1000
TARGETS = {  # the targets
    "batch_push_per_s": 500e6,
    "single_push_per_s": 25e6,
    "basic_vs_numpy": 2.0,
    "basic_vs_copy": 0.75,
    "full_vs_copy": 0.4,
    "m4_vs_tsdownsample": 0.5,
    "minmaxlttb_vs_tsdownsample": 0.5,
}


def best(fn, reps: int, setup=None) -> float:
    """Shortest wall time of ``fn`` over ``reps`` runs (``setup`` runs untimed before each)."""
    times = []
    for _ in range(reps):
        arg = setup() if setup else None
        gc.collect()
        t = time.perf_counter()
        fn(arg) if setup else fn()
        times.append(time.perf_counter() - t)
    return min(times)


def data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    ts = T0 + np.arange(n, dtype=np.int64) * 1_000_000  # 1 kHz, so 1 s windows hold 1,000 samples
    vs = np.cumsum(rng.normal(0.0, 1.0, n)) + 100.0
    qs = np.zeros(n, dtype=np.uint8)
    return ts, vs, qs


def filled(ts, vs, qs, basic: bool):
    store = RingStore(basic=basic)
    store.add_tag(1, len(ts), [S], 0)
    store.push_many(1, ts, vs, qs)
    return store


def bench_push(ts, vs, qs, reps: int) -> dict[str, float]:
    block = 1000
    n_blocks = 2000
    store = RingStore()
    store.add_tag(1, 600_000, [], 0)
    chunks = [(ts[k * block:(k + 1) * block], vs[k * block:(k + 1) * block], qs[k * block:(k + 1) * block])
              for k in range(n_blocks)]
    push_many = store.push_many

    def run_blocks():
        for t, v, q in chunks:
            push_many(1, t, v, q)

    run_blocks()  # touch the ring's pages once
    batch = n_blocks * block / best(run_blocks, reps)

    n_tags, polls = 1000, 1000
    store2 = RingStore()
    for tag in range(n_tags):
        store2.add_tag(tag, 6000, [S], 0)
    ids = np.arange(n_tags, dtype=np.int32)
    vals = vs[:n_tags].copy()
    qual = qs[:n_tags].copy()
    consume = store2.consume

    def run_polls():
        for k in range(polls):
            consume(ids, T0 + k * 100_000_000, vals, qual)

    run_polls()
    cons = n_tags * polls / best(run_polls, reps)

    m = block * n_blocks  # reference: numpy.copyto of the same bytes (ts, values, quality) in three bulk copies
    srcs = (ts[:m], vs[:m], qs[:m])
    dsts = tuple(np.empty_like(a) for a in srcs)

    def copy_all():
        for d, a in zip(dsts, srcs, strict=True):
            np.copyto(d, a)

    copy_all()
    copy = m / best(copy_all, reps)

    n1 = 1_000_000
    tl, vl = ts[:n1].tolist(), vs[:n1].tolist()
    store3 = RingStore()
    store3.add_tag(7, 6000, [], 0)
    push = store3.push

    def run_single():
        for t, v in zip(tl, vl, strict=True):
            push(7, t, v, 0)

    def run_empty():
        for _t, _v in zip(tl, vl, strict=True):
            pass

    single = n1 / best(run_single, reps)
    empty = n1 / best(run_empty, reps)
    return {"batch_push_per_s": batch, "consume_per_s": cons, "push_copy_ref_per_s": copy,
            "single_push_per_s": single, "empty_loop_per_s": empty}


def bench_windows(ts, vs, qs, reps: int) -> dict[str, float]:
    n = len(ts)
    basic = n / best(lambda store: store.collect(ts[-1] + S), reps, lambda: filled(ts, vs, qs, True))
    full = n / best(lambda store: store.collect(ts[-1] + S), reps, lambda: filled(ts, vs, qs, False))
    qbad = qs.copy()
    qbad[::997] = 3  # one bad sample in about every window: the checked (scalar) path everywhere
    full_bad = n / best(lambda store: store.collect(ts[-1] + S), reps, lambda: filled(ts, vs, qbad, False))
    blocks = vs.reshape(-1, WINDOW_SAMPLES)

    def numpy_basic():
        blocks.min(axis=1)
        blocks.max(axis=1)
        blocks.mean(axis=1)

    def numpy_full():
        numpy_basic()
        blocks.sum(axis=1)
        blocks.std(axis=1)
        blocks[:, 0].copy()
        blocks[:, -1].copy()

    npb = n / best(numpy_basic, reps)
    npf = n / best(numpy_full, reps)
    dst = np.empty_like(vs)
    np.copyto(dst, vs)
    copy = n / best(lambda: np.copyto(dst, vs), reps)
    m = 200_000  # the twin is a Python loop: a slice is enough for a rate
    twin = pyring.RingStore()
    twin.add_tag(1, m, [S], 0)
    twin.push_many(1, ts[:m], vs[:m], qs[:m])
    t = time.perf_counter()
    twin.collect(ts[m - 1] + S)
    twin_rate = m / (time.perf_counter() - t)
    # check the figures are of the same computation: the extension's windows equal numpy's
    [(_, _, _, st)] = filled(ts[:m], vs[:m], qs[:m], False).collect(ts[m - 1] + S)
    ref = vs[:m].reshape(-1, WINDOW_SAMPLES)
    assert np.array_equal(st["min"], ref.min(1)) and np.allclose(st["mean"], ref.mean(1), rtol=1e-12, atol=0)
    return {"basic_per_s": basic, "full_per_s": full, "full_with_bad_per_s": full_bad, "numpy_basic_per_s": npb, "numpy_full_per_s": npf,
            "copy_per_s": copy, "twin_full_per_s": twin_rate,
            "basic_vs_numpy": basic / npb, "basic_vs_copy": basic / copy, "full_vs_copy": full / copy,
            "full_vs_numpy_full": full / npf, "twin_vs_extension": twin_rate / full}


def bench_downsample(ts, vs, qs, reps: int, n_out: int = 2000) -> dict[str, float]:
    from tsdownsample import M4Downsampler, MinMaxLTTBDownsampler

    n = len(ts)
    store = filled(ts, vs, qs, True)
    t1 = int(ts[-1]) + 1
    m4 = n / best(lambda: store.downsample(1, int(ts[0]), t1, n_out, "m4"), reps)
    mml = n / best(lambda: store.downsample(1, int(ts[0]), t1, n_out, "minmaxlttb"), reps)
    tm4 = n / best(lambda: M4Downsampler().downsample(ts, vs, n_out=n_out), reps)
    tmml = n / best(lambda: MinMaxLTTBDownsampler().downsample(ts, vs, n_out=n_out), reps)
    return {"m4_per_s": m4, "tsdownsample_m4_per_s": tm4, "minmaxlttb_per_s": mml,
            "tsdownsample_minmaxlttb_per_s": tmml,
            "m4_vs_tsdownsample": m4 / tm4, "minmaxlttb_vs_tsdownsample": mml / tmml}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="50 M samples and more repetitions")
    args = parser.parse_args(argv)
    n = 50_000_000 if args.long else 10_000_000
    reps = 9 if args.long else 5
    if ACTIVE_IMPL != "cython":
        print("warning: the extension is not built; figures are for the pure-Python twin", file=sys.stderr)
    ts, vs, qs = data(n)
    res: dict[str, float | str | int] = {"impl": ACTIVE_IMPL, "samples": n}
    res.update(bench_push(ts, vs, qs, reps))
    res.update(bench_windows(ts, vs, qs, reps))
    res.update(bench_downsample(ts, vs, qs, reps))

    def m(key: str) -> str:
        return f"{res[key] / 1e6:9.1f} M/s"

    print(f"aggregator benchmark, {n:,} samples, implementation: {ACTIVE_IMPL}, best of {reps}")
    print(f"(a) batch push, blocks of 1000 (push_many) {m('batch_push_per_s')}   "
          f"x{res['batch_push_per_s'] / res['push_copy_ref_per_s']:.2f} of numpy.copyto of the same bytes "
          f"({m('push_copy_ref_per_s')})")
    print(f"    consume, polls of 1000 tags            {m('consume_per_s')}")
    print(f"(b) single push from Python                {m('single_push_per_s')}   "
          f"x{res['single_push_per_s'] / res['empty_loop_per_s']:.2f} of the same empty loop "
          f"({m('empty_loop_per_s')})")
    print(f"(c) windows, basic (count/min/max/mean)    {m('basic_per_s')}   x{res['basic_vs_numpy']:.2f} numpy "
          f"({m('numpy_basic_per_s')}), x{res['basic_vs_copy']:.2f} copy ({m('copy_per_s')})")
    print(f"    windows, full set (11 statistics)      {m('full_per_s')}   x{res['full_vs_copy']:.2f} copy, "
          f"x{res['full_vs_numpy_full']:.2f} numpy full ({m('numpy_full_per_s')})")
    print(f"    full set, one bad sample per window    {m('full_with_bad_per_s')}   "
          f"x{res['full_with_bad_per_s'] / res['copy_per_s']:.2f} copy (masked SIMD path)")
    print(f"    pure-Python twin, full set             {m('twin_full_per_s')}   "
          f"x{res['twin_vs_extension']:.4f} of the extension")
    print(f"(d) M4 to 2000 points                      {m('m4_per_s')}   x{res['m4_vs_tsdownsample']:.2f} "
          f"tsdownsample ({m('tsdownsample_m4_per_s')})")
    print(f"    MinMaxLTTB to 2000 points              {m('minmaxlttb_per_s')}   "
          f"x{res['minmaxlttb_vs_tsdownsample']:.2f} tsdownsample ({m('tsdownsample_minmaxlttb_per_s')})")
    print("against the issue's targets:")
    for key, target in TARGETS.items():
        value = float(res[key])
        shown = f"{value / 1e6:.1f} M/s" if target > 100 else f"x{value:.2f}"
        goal = f"{target / 1e6:.0f} M/s" if target > 100 else f"x{target:.2f}"
        print(f"    {key:28s} {shown:>12s}  target >= {goal:>9s}  {'met' if value >= target else 'NOT met'}")
    out = {k: (round(v, 4) if isinstance(v, float) and v < 1000 else round(v) if isinstance(v, float) else v)
           for k, v in res.items()}
    print("RESULT " + json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
