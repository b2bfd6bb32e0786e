"""The compiled store and its pure-Python twin give bit-identical results on random data.

Random data include NaN, infinities, bad qualities, empty windows, ring wrap-around,
duplicate and out-of-order timestamps, late samples and interleaved collects.
"""
from __future__ import annotations

import numpy as np
import pytest
from aggsupport import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.aggregate import pyring

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e308, -1e308]),
)
sample = st.tuples(st.integers(0, 400), values, st.sampled_from([0, 0, 0, 0, 1, 3]))


@st.composite
def scenarios(draw):
    """A list of operations on one store: pushes (single, block, batch) and collects."""
    ops = []
    now = 0
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["push", "many", "consume", "collect"]))
        if kind == "collect":
            now += draw(st.integers(0, 120))
            ops.append(("collect", now))
        elif kind == "consume":
            ts = draw(st.integers(0, 400))
            rows = draw(st.lists(st.tuples(st.sampled_from([0, 1, 2, 9]), values, st.sampled_from([0, 0, 2])),
                                 max_size=8))
            ops.append(("consume", ts, rows))
        else:
            ops.append((kind, draw(st.sampled_from([0, 1])), draw(st.lists(sample, max_size=40))))
    ops.append(("collect", 10_000))
    return ops


def run(cls, ops, caps, windows, grace, basic, n_out, ratio):
    s = cls(basic=basic)
    s.add_tag(0, caps[0], windows[0], grace)
    s.add_tag(1, caps[1], windows[1], grace)
    s.add_tag(2, caps[0], [], 0)  # ring only, no windows
    out = []
    for op in ops:
        if op[0] == "collect":
            out.append(s.collect(op[1]))
        elif op[0] == "consume":
            _, ts, rows = op
            s.consume(np.array([r[0] for r in rows], np.int32), ts,
                      np.array([r[1] for r in rows], np.float64), np.array([r[2] for r in rows], np.uint8))
        elif op[0] == "push":
            for ts, v, q in op[2]:
                s.push(op[1], ts, v, q)
        else:
            rows = op[2]
            s.push_many(op[1], np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float64),
                        np.array([r[2] for r in rows], np.uint8))
        for tag in (0, 1, 2):
            out.append(s.read_range(tag, 50, 300))
    for tag in (0, 1, 2):
        out.append(s.read_range(tag, -(2**62), 2**62))
        out.append(s.downsample(tag, 0, 500, n_out, "m4"))
        out.append(s.downsample(tag, 0, 500, n_out, "minmaxlttb", ratio))
        out.append(s.downsample(tag, 100, 101, n_out, "minmaxlttb", ratio))
        out.append(s.counters(tag))
    out.append(s.totals())
    out.append(s.window_lengths_ns)
    return out


@pytest.fixture(params=[0, 1, 2], ids=["scalar", "sse2", "avx2"])
def isa(request, cyring):
    """Pin the extension's kernels to one instruction set (falls back to the best the CPU has)."""
    used = cyring.set_isa(request.param)
    yield used
    cyring.set_isa(-1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=scenarios(), caps=st.tuples(st.integers(1, 64), st.integers(1, 64)),
       windows=st.tuples(st.lists(st.sampled_from([1, 7, 10, 25, 100]), max_size=3, unique=True),
                         st.lists(st.sampled_from([7, 50, 1000]), max_size=2, unique=True)),
       grace=st.sampled_from([0, 3, 40]), basic=st.booleans(), n_out=st.integers(4, 24), ratio=st.integers(1, 4))
def test_twin_matches_extension(cyring, isa, ops, caps, windows, grace, basic, n_out, ratio):
    a = run(cyring.RingStore, ops, caps, windows, grace, basic, n_out, ratio)
    b = run(pyring.RingStore, ops, caps, windows, grace, basic, n_out, ratio)
    assert same(a, b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(st.integers(0, 10**6), st.floats(-1e6, 1e6), st.sampled_from([0, 0, 0, 3])),
                     min_size=1, max_size=2000),
       window=st.sampled_from([1000, 10_000, 333_333]), sort=st.booleans(), all_good=st.booleans(),
       nan_at=st.none() | st.integers(0, 1999))
def test_twin_matches_extension_long_windows(cyring, isa, data, window, sort, all_good, nan_at):
    """Long windows: the all-good fast path (SIMD lanes), its NaN fallback and the checked path."""
    if sort:
        data = sorted(data, key=lambda r: r[0])
    ts = np.array([r[0] for r in data], np.int64)
    vs = np.array([r[1] for r in data], np.float64)
    qs = np.array([0 if all_good else r[2] for r in data], np.uint8)
    if nan_at is not None and nan_at < len(vs):
        vs[nan_at] = np.nan
    results = []
    for cls in (cyring.RingStore, pyring.RingStore):
        s = cls()
        s.add_tag(5, len(data), [window], 0)
        s.push_many(5, ts, vs, qs)
        results.append(s.collect(2 * 10**6))
    assert same(results[0], results[1])
    assert sum(len(r[1]) for r in results[0]) >= 1


def test_the_cpu_paths_are_exercised(cyring):
    """The parity tests above ran each available instruction set, not only the default."""
    best = cyring.set_isa(-1)
    assert [cyring.set_isa(k) for k in range(best + 1)] == list(range(best + 1))
    cyring.set_isa(-1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.tuples(st.integers(-20, 60), st.integers(0, 90), st.integers(-1, 89), st.booleans(),
                                 st.sampled_from([0, 0, 2])), max_size=10),
       cap=st.integers(1, 64), window=st.sampled_from([5, 16, 50]))
def test_block_push_matches_one_by_one(cyring, isa, blocks, cap, window):
    """Mostly ordered bursts (the block fast path) with a disorder, NaN, bad quality, overlap or wrap."""
    stores = [cyring.RingStore(), cyring.RingStore(), pyring.RingStore()]
    for s in stores:
        s.add_tag(0, cap, [window], 0)
    base = 0
    out: list[list] = [[], [], []]
    for start, n, swap, nan, q in blocks:
        ts = np.arange(base + start, base + start + n, dtype=np.int64)
        if 0 <= swap < n - 1:
            ts[[swap, swap + 1]] = ts[[swap + 1, swap]]
        vs = np.arange(n, dtype=np.float64)
        if nan and n:
            vs[n // 2] = np.nan
        qs = np.full(n, q, np.uint8)
        base += start + n
        stores[0].push_many(0, ts, vs, qs)
        for t, v, qq in zip(ts.tolist(), vs.tolist(), qs.tolist(), strict=True):
            stores[1].push(0, t, v, qq)
        stores[2].push_many(0, ts, vs, qs)
        for k, s in enumerate(stores):
            out[k].append(s.collect(base - 30))
            out[k].append(s.read_range(0, -(2**62), 2**62))
            out[k].append(s.counters(0))
    assert same(out[0], out[1]) and same(out[0], out[2])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 5000), nb=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       bad_share=st.sampled_from([0.0, 0.0, 0.01, 0.3]), nan_share=st.sampled_from([0.0, 0.001, 0.5]),
       n_out=st.integers(4, 200), ratio=st.integers(1, 6))
def test_downsampling_matches_on_large_bins(cyring, isa, n, nb, seed, bad_share, nan_share, n_out, ratio):
    """Bins of thousands of samples (the block-wise SIMD extrema), ties of 0.0 and -0.0, NaN, bad data."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 10**7, n)).astype(np.int64)
    vs = rng.choice(np.array([0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf]), n, p=[.3, .3, .1, .1, .1, .05, .05])
    vs[rng.random(n) < nan_share] = np.nan
    qs = (rng.random(n) < bad_share).astype(np.uint8)
    results = []
    for cls in (cyring.RingStore, pyring.RingStore):
        s = cls()
        s.add_tag(0, n, [], 0)
        s.push_many(0, ts, vs, qs)
        results.append([s.downsample(0, 0, 10**7, 4 * nb, "m4"),
                         s.downsample(0, 0, 10**7, n_out, "minmaxlttb", ratio)])
    assert same(results[0], results[1])
