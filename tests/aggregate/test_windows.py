"""Window statistics, late samples, wrap-around and history reads, checked against numpy.

Each test runs on both implementations (``store_cls``: compiled and twin).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

S = 1_000_000_000
T0 = 1_700_000_000 * S  # an aligned wall-clock second


def arrays(ts, vs, qs=None):
    ts = np.asarray(ts, np.int64)
    vs = np.asarray(vs, np.float64)
    qs = np.zeros(len(ts), np.uint8) if qs is None else np.asarray(qs, np.uint8)
    return ts, vs, qs


def test_statistics_match_numpy(store_cls):
    rng = np.random.default_rng(7)
    n = 10_000  # 10 windows of 1 s at 1 kHz
    ts = T0 + np.arange(n, dtype=np.int64) * 1_000_000
    vs = rng.normal(50.0, 3.0, n)
    s = store_cls()
    s.add_tag(3, n, [S], 0)
    s.push_many(3, *arrays(ts, vs))
    [(w, tags, starts, stats)] = s.collect(T0 + 10 * S)
    assert w == S and tags.tolist() == [3] * 10
    assert starts.tolist() == [T0 + k * S for k in range(10)]
    blocks = vs.reshape(10, 1000)
    assert stats["count"].tolist() == [1000] * 10 and stats["count"].dtype == np.int64
    np.testing.assert_array_equal(stats["min"], blocks.min(1))
    np.testing.assert_array_equal(stats["max"], blocks.max(1))
    np.testing.assert_allclose(stats["mean"], blocks.mean(1), rtol=1e-13)
    np.testing.assert_allclose(stats["sum"], blocks.sum(1), rtol=1e-13)
    np.testing.assert_allclose(stats["std"], blocks.std(1), rtol=1e-10)
    np.testing.assert_array_equal(stats["first"], blocks[:, 0])
    np.testing.assert_array_equal(stats["last"], blocks[:, -1])
    np.testing.assert_allclose(stats["twa"], blocks.mean(1), rtol=1e-13)  # regular sampling: twa == mean
    assert stats["good_ratio"].tolist() == [1.0] * 10 and stats["bad_count"].tolist() == [0] * 10


def test_std_is_stable_with_a_large_offset(store_cls):
    """1e9 + small noise: a naive sum-of-squares formula loses every digit here."""
    rng = np.random.default_rng(1)
    vs = 1e9 + rng.normal(0, 1e-3, 1000)
    s = store_cls()
    s.add_tag(0, 1000, [S], 0)
    s.push_many(0, *arrays(T0 + np.arange(1000) * 1_000_000, vs))
    [(_, _, _, stats)] = s.collect(T0 + S)
    assert stats["std"][0] == pytest.approx(vs.std(), rel=1e-6)


def test_bad_samples_are_excluded_and_counted(store_cls):
    ts = T0 + np.arange(6) * 100_000_000
    vs = [1.0, 100.0, 3.0, float("nan"), 5.0, -100.0]
    qs = [0, 3, 0, 0, 0, 1]  # 100.0 comm error, NaN with Good, -100.0 uncertain
    s = store_cls()
    s.add_tag(0, 10, [S], 0)
    s.push_many(0, *arrays(ts, vs, qs))
    [(_, _, _, st)] = s.collect(T0 + S)
    assert st["count"][0] == 3 and st["bad_count"][0] == 3
    assert (st["min"][0], st["max"][0], st["sum"][0], st["mean"][0]) == (1.0, 5.0, 9.0, 3.0)
    assert (st["first"][0], st["last"][0]) == (1.0, 5.0)
    assert st["good_ratio"][0] == 0.5
    assert s.counters(0)["bad"] == 3


def test_time_weighted_mean_uses_step_interpolation(store_cls):
    # 10 held for 0.1 s, 20 for 0.6 s, 40 for the last 0.3 s of the window
    s = store_cls()
    s.add_tag(0, 10, [S], 0)
    s.push_many(0, *arrays([T0, T0 + 100_000_000, T0 + 700_000_000], [10.0, 20.0, 40.0]))
    [(_, _, _, st)] = s.collect(T0 + S)
    assert st["twa"][0] == pytest.approx(10 * 0.1 + 20 * 0.6 + 40 * 0.3)
    assert st["mean"][0] == pytest.approx(70 / 3)


def test_twa_skips_bad_intervals(store_cls):
    # good 10 for 0.5 s, then bad for 0.5 s: the bad stretch is not in the average
    s = store_cls()
    s.add_tag(0, 10, [S], 0)
    s.push_many(0, *arrays([T0, T0 + 500_000_000], [10.0, 99.0], [0, 3]))
    [(_, _, _, st)] = s.collect(T0 + S)
    assert st["twa"][0] == 10.0 and st["count"][0] == 1


def test_all_bad_window_is_emitted_with_nan_statistics(store_cls):
    s = store_cls()
    s.add_tag(0, 10, [S], 0)
    s.push_many(0, *arrays([T0, T0 + 1], [1.0, 2.0], [2, 2]))
    [(_, _, _, st)] = s.collect(T0 + S)
    assert st["count"][0] == 0 and st["bad_count"][0] == 2 and st["good_ratio"][0] == 0.0
    assert all(math.isnan(st[k][0]) for k in ("min", "max", "mean", "first", "last", "std", "twa"))


def test_empty_windows_are_not_emitted(store_cls):
    s = store_cls()
    s.add_tag(0, 10, [S], 0)
    s.push_many(0, *arrays([T0, T0 + 5 * S], [1.0, 2.0]))
    [(_, _, starts, st)] = s.collect(T0 + 6 * S)
    assert starts.tolist() == [T0, T0 + 5 * S]
    assert s.collect(T0 + 60 * S) == []


def test_windows_close_after_grace_and_several_lengths(store_cls):
    s = store_cls()
    s.add_tag(0, 100, [S, 10 * S], grace_ns=S // 2)
    ts = T0 + np.arange(25) * 400_000_000  # 0.4 s apart, 10 s of data
    s.push_many(0, *arrays(ts, np.arange(25.0)))
    assert s.collect(T0 + S + S // 4) == []  # the first second has ended, but not its grace
    out = s.collect(T0 + S + S // 2)
    assert [o[0] for o in out] == [S] and out[0][3]["count"].tolist() == [3]
    out = s.collect(T0 + 10 * S + S // 2)
    by_len = {o[0]: o for o in out}
    assert by_len[S][2].tolist() == [T0 + k * S for k in range(1, 10)]
    assert by_len[10 * S][3]["count"].tolist() == [25]


def test_late_samples_are_counted_not_merged(store_cls):
    s = store_cls()
    s.add_tag(0, 100, [S], grace_ns=0)
    s.push(0, T0 + 100, 1.0, 0)
    [(_, _, _, st)] = s.collect(T0 + S)
    assert st["sum"][0] == 1.0
    s.push(0, T0 + 200, 50.0, 0)  # its window was already emitted
    s.push(0, T0 + S + 1, 2.0, 0)
    assert s.counters(0)["late"] == 1
    [(_, _, starts, st)] = s.collect(T0 + 2 * S)
    assert starts.tolist() == [T0 + S] and st["sum"].tolist() == [2.0]
    assert s.totals()["late"] == 1


def test_out_of_order_samples_within_grace_are_windowed_in_time_order(store_cls):
    s = store_cls()
    s.add_tag(0, 100, [S], grace_ns=S)
    s.push(0, T0 + 500, 5.0, 0)
    s.push(0, T0 + S + 10, 7.0, 0)
    s.push(0, T0 + 100, 1.0, 0)  # older than the previous one, but its window is still open
    [(_, _, starts, st)] = s.collect(T0 + 2 * S)
    assert starts.tolist() == [T0]
    assert (st["first"][0], st["last"][0], st["count"][0]) == (1.0, 5.0, 2)
    ts, vs, _ = s.read_range(0, T0, T0 + 2 * S)
    assert ts.tolist() == [T0 + 100, T0 + 500, T0 + S + 10] and vs.tolist() == [1.0, 5.0, 7.0]
    [(_, _, starts, st)] = s.collect(T0 + 3 * S)
    assert starts.tolist() == [T0 + S] and st["count"].tolist() == [1]


def test_ring_overwrites_oldest_and_counts(store_cls):
    s = store_cls()
    s.add_tag(4, 5, [], 0)
    s.push_many(4, *arrays(T0 + np.arange(12), np.arange(12.0)))
    ts, vs, qs = s.read_range(4, 0, 2**62)
    assert vs.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0] and ts.dtype == np.int64 and qs.dtype == np.uint8
    c = s.counters(4)
    assert (c["stored"], c["held"], c["overwritten"], c["capacity"]) == (12, 5, 7, 5)
    ts, vs, _ = s.read_range(4, T0 + 8, T0 + 10)
    assert vs.tolist() == [8.0, 9.0]


def test_windows_across_the_wrap_point(store_cls):
    s = store_cls()
    s.add_tag(0, 13, [10], 0)
    out = []
    for k in range(40):
        s.push(0, k, float(k), 0)
        if k % 3 == 0:
            out.extend(s.collect(k))
    out.extend(s.collect(100))
    starts = np.concatenate([o[2] for o in out])
    sums = np.concatenate([o[3]["sum"] for o in out])
    assert starts.tolist() == [0, 10, 20, 30]
    assert sums.tolist() == [sum(range(b, b + 10)) for b in (0, 10, 20, 30)]
    assert s.counters(0)["unwindowed"] == 0


def test_samples_overwritten_before_their_window_closed_are_counted(store_cls):
    s = store_cls()
    s.add_tag(0, 7, [10], 0)  # the ring holds less than one window
    s.push_many(0, *arrays(np.arange(10), np.ones(10)))
    [(_, _, _, st)] = s.collect(10)
    assert st["count"].tolist() == [7]
    assert s.counters(0)["unwindowed"] == 3 and s.totals()["unwindowed"] == 3


def test_consume_skips_tags_without_ring(store_cls):
    s = store_cls()
    s.add_tag(2, 10, [S], 0)
    s.consume(np.array([0, 2, 5, 1 << 20], np.int32), T0, np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4, np.uint8))
    assert s.totals()["ignored"] == 3
    assert s.read_range(2, 0, 2**62)[1].tolist() == [2.0]


def test_bad_input_gives_clear_errors(store_cls):
    s = store_cls()
    s.add_tag(1, 10, [S], 0)
    with pytest.raises(KeyError, match="tag 9 has no ring"):
        s.push(9, T0, 1.0, 0)
    with pytest.raises(ValueError, match="already has a ring"):
        s.add_tag(1, 10)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        s.add_tag(2, 0)
    with pytest.raises(ValueError, match="same length"):
        s.push_many(1, np.zeros(3, np.int64), np.zeros(2), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="dtype mismatch"):
        s.push_many(1, np.zeros(3, np.float64), np.zeros(3), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="unknown downsampling method"):
        s.downsample(1, 0, 10, 100, "lttb")
    with pytest.raises(ValueError, match="at most 8 distinct window lengths"):
        s.add_tag(3, 10, [S * k for k in range(2, 10)])
    assert s.read_range(1, 0, 2**62)[0].tolist() == []  # nothing stored by the failed calls
