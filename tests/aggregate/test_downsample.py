"""Visual downsampling (M4, MinMaxLTTB) over ring contents, checked against numpy and tsdownsample."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tsdownsample import MinMaxLTTBDownsampler

S = 1_000_000_000
T0 = 1_700_000_000 * S


def filled(store_cls, ts, vs, qs=None):
    s = store_cls()
    s.add_tag(1, max(1, len(ts)), [], 0)
    qs = np.zeros(len(ts), np.uint8) if qs is None else qs
    s.push_many(1, np.asarray(ts, np.int64), np.asarray(vs, np.float64), np.asarray(qs, np.uint8))
    return s


def bin_edges(t0, t1, nb):
    span = t1 - t0
    return [t0 + (span // nb) * k + ((span % nb) * k) // nb for k in range(nb + 1)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), nb=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_m4_keeps_first_min_max_last_of_every_bin(cyring, n, nb, seed):
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, 10 * S, n))
    vs = rng.normal(size=n).round(1)  # ties on purpose
    qs = (rng.random(n) < 0.1).astype(np.uint8) * 3
    vs[rng.random(n) < 0.05] = np.nan
    t0, t1 = T0 + S, T0 + 9 * S
    got_ts, got_vs, got_qs = filled(cyring.RingStore, ts, vs, qs).downsample(1, t0, t1, 4 * nb, "m4")
    assert np.all(np.diff(got_ts) >= 0) and np.all(got_qs == 0) and not np.isnan(got_vs).any()
    edges = bin_edges(t0, t1, nb)
    good = (qs == 0) & ~np.isnan(vs)
    expect = 0
    for a, b in zip(edges, edges[1:], strict=False):
        sel = good & (ts >= a) & (ts < b)
        out = (got_ts >= a) & (got_ts < b)
        if not sel.any():
            assert not out.any()
            continue
        idx = np.flatnonzero(sel)
        keep = {idx[0], idx[-1], idx[np.argmin(vs[idx])], idx[np.argmax(vs[idx])]}
        expect += len(keep)
        assert sorted(got_ts[out].tolist()) == sorted(ts[list(keep)].tolist())
        assert got_vs[out].min() == vs[idx].min() and got_vs[out].max() == vs[idx].max()
    assert len(got_ts) == expect


def test_minmaxlttb_shape_and_endpoints(store_cls):
    ts = T0 + np.arange(10_000) * 1_000_000
    vs = np.sin(np.arange(10_000) / 300.0)
    got_ts, got_vs, _ = filled(store_cls, ts, vs).downsample(1, ts[0], ts[-1] + 1, 100, "minmaxlttb")
    assert len(got_ts) == 100 and got_ts[0] == ts[0] and got_ts[-1] == ts[-1]
    assert np.all(np.diff(got_ts) > 0) and np.isin(got_ts, ts).all()
    assert got_vs.max() > 0.999 and got_vs.min() < -0.999  # the extremes of the sine survive


def test_minmaxlttb_returns_everything_when_small(store_cls):
    ts = T0 + np.arange(10)
    vs = np.arange(10.0)
    vs[3] = np.nan
    got_ts, got_vs, _ = filled(store_cls, ts, vs).downsample(1, T0, T0 + 100, 50, "minmaxlttb")
    assert got_ts.tolist() == [t for i, t in enumerate(ts.tolist()) if i != 3]


def test_minmaxlttb_keeps_spikes_like_tsdownsample(store_cls):
    rng = np.random.default_rng(5)
    n = 200_000
    ts = T0 + np.arange(n, dtype=np.int64) * 10_000_000
    vs = np.sin(np.arange(n) / 5000.0) + rng.normal(0, 0.01, n)
    spikes = np.sort(rng.choice(np.arange(1000, n - 1000), 6, replace=False))
    vs[spikes] += np.array([5.0, -5.0, 6.0, -6.0, 7.0, -7.0])
    ref = MinMaxLTTBDownsampler().downsample(ts, vs, n_out=500)
    assert set(spikes) <= set(ref.tolist())  # the reference library keeps them
    got_ts, _, _ = filled(store_cls, ts, vs).downsample(1, ts[0], ts[-1] + 1, 500, "minmaxlttb")
    assert len(got_ts) == 500
    assert set(ts[spikes].tolist()) <= set(got_ts.tolist())


def test_downsample_of_wrapped_and_unordered_rings(store_cls):
    s = store_cls()
    s.add_tag(1, 50, [], 0)
    order = np.random.default_rng(2).permutation(120)
    for k in order:
        s.push(1, T0 + int(k), float(k), 0)
    ts, vs, _ = s.read_range(1, 0, 2**62)
    assert np.all(np.diff(ts) > 0) and len(ts) == 50
    got_ts, got_vs, _ = s.downsample(1, T0, T0 + 120, 8, "m4")
    assert got_vs.min() == vs.min() and got_vs.max() == vs.max()


def test_downsample_errors(store_cls):
    s = filled(store_cls, [T0], [1.0])
    with pytest.raises(ValueError, match="n_out must be >= 4"):
        s.downsample(1, T0, T0 + 1, 2)
    with pytest.raises(ValueError, match="empty time range"):
        s.downsample(1, T0, T0, 8)
    assert [a.tolist() for a in s.downsample(1, 0, 10, 8)] == [[], [], []]


@pytest.mark.parametrize("method", ["m4", "minmaxlttb"])
def test_downsample_arrays_equals_the_ring_and_the_twin(cyring, method):
    """The arrays entry point (the history API's) selects what the ring's downsample selects, in
    both implementations, whatever the input order; samples outside [t0, t1) are ignored."""
    from edge.aggregate import pyring

    rng = np.random.default_rng(5)
    n = 5000
    ts = T0 + np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64) * 1000
    vs = np.cumsum(rng.normal(size=n))
    qs = (rng.random(n) < 0.1).astype(np.uint8)
    t0, t1 = int(ts[100]), int(ts[-100])
    ring = filled(cyring.RingStore, ts, vs, qs).downsample(1, t0, t1, 200, method)
    shuffled = rng.permutation(n)
    for impl in (cyring, pyring):
        got = impl.downsample_arrays(ts[shuffled], vs[shuffled], qs[shuffled], t0, t1, 200, method)
        for a, b in zip(got, ring, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="differ in length"):
        cyring.downsample_arrays(ts, vs[:-1], qs, t0, t1, 200, method)
    with pytest.raises(ValueError, match="n_out must be >= 4"):
        pyring.downsample_arrays(ts, vs, qs, t0, t1, 3, method)
