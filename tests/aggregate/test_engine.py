"""The Aggregator as the app uses it: config models in, SampleBatches in, WindowBatches out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.aggregate.engine import BYTES_PER_SAMPLE, Aggregator, AggregatorConfigError
from edge.config.aggregate import AggregatorSettings, TagAggregateConfig, parse_window, window_label
from edge.core.model import Quality, SampleBatch, TagInfo, WindowBatch

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000
T0 = 1_700_000_000 * S
GIB = 1 << 30


def tags(n: int, interval_ms: int = 100) -> list[TagInfo]:
    return [TagInfo(id=i, device=f"d{i // 100}", name=f"t{i}", bus="b", dtype="float32", interval_ms=interval_ms)
            for i in range(n)]


def batch(ts_ns: int, ids, values, quality=None) -> SampleBatch:
    ids = np.asarray(ids, np.int32)
    q = np.zeros(len(ids), np.uint8) if quality is None else np.asarray(quality, np.uint8)
    return SampleBatch(device="d0", ts_ns=ts_ns, tag_ids=ids, values=np.asarray(values, np.float64), quality=q)


def test_consume_and_collect_window_batches():
    cfg = TagAggregateConfig(windows=["1s", "10s"], capacity_s=60, grace_ms=0)
    agg = Aggregator.from_tags(tags(4), {0: cfg, 2: cfg})
    assert agg.impl in ("cython", "python")
    for k in range(20):  # 2 s at 100 ms; tag 1 and 3 have no ring
        agg.consume(batch(T0 + k * 100_000_000, [0, 1, 2, 3], [k, 100, 2 * k, 100],
                          [0, 0, Quality.BAD_COMM_ERROR if k == 5 else 0, 0]))
    out = agg.collect(T0 + 2 * S)
    assert [type(w) for w in out] == [WindowBatch] and out[0].window == "1s" and out[0].window_ns == S
    wb = out[0]
    assert wb.tag_ids.tolist() == [0, 0, 2, 2] and wb.start_ns.tolist() == [T0, T0 + S, T0, T0 + S]
    assert wb.stats["count"].tolist() == [10, 10, 9, 10] and wb.stats["bad_count"].tolist() == [0, 0, 1, 0]
    assert wb.stats["sum"].tolist() == [45.0, 145.0, 80.0, 290.0]
    assert set(wb.stats) == {"count", "min", "max", "mean", "first", "last", "sum", "std", "twa", "good_ratio",
                             "bad_count"}
    d = agg.diagnostics()
    assert d["ignored"] == 40 and d["bad"] == 1 and d["stored"] == 40 and d["windows_emitted"] == 4
    ts, vs, qs = agg.read_range(2, T0, T0 + S)
    assert len(ts) == 10 and qs.tolist().count(Quality.BAD_COMM_ERROR) == 1
    dts, dvs, _ = agg.downsample(0, T0, T0 + 2 * S, 8, method="m4")
    assert dvs.min() == 0.0 and dvs.max() == 19.0 and np.all(np.diff(dts) > 0)


def test_newest_window_per_opcua_tag():
    on = TagAggregateConfig(windows=["1s"], capacity_s=60, grace_ms=0, opcua=True)
    off = TagAggregateConfig(windows=["1s"], capacity_s=60, grace_ms=0)
    agg = Aggregator.from_tags(tags(3), {0: on, 1: off, 2: on})
    for k in range(30):  # 3 s
        agg.consume(batch(T0 + k * 100_000_000, [0, 1, 2], [k, k, 100 + k]))
    [wb] = agg.collect(T0 + 3 * S)
    assert len(wb) == 9
    latest = agg.for_opcua(wb)
    assert latest.tag_ids.tolist() == [0, 2] and latest.start_ns.tolist() == [T0 + 2 * S] * 2
    assert latest.stats["last"].tolist() == [29.0, 129.0] and latest.window == "1s"
    only_off = Aggregator.from_tags(tags(2), {1: off})
    only_off.consume(batch(T0, [1], [1.0]))
    assert only_off.for_opcua(only_off.collect(T0 + S)[0]) is None


def test_consume_accepts_arrays_of_other_dtypes():
    agg = Aggregator.from_tags(tags(2), {1: TagAggregateConfig(windows=[], capacity_samples=10)})
    b = SampleBatch(device="d", ts_ns=T0, tag_ids=np.array([0, 1], np.int64), values=np.array([1, 2], np.int64),
                    quality=np.array([0, 0], np.int64))
    agg.consume(b)
    assert agg.read_range(1, 0, 2**62)[1].tolist() == [2.0]


def test_basic_statistics_setting():
    agg = Aggregator.from_tags(tags(1), {0: TagAggregateConfig(windows=["1s"], grace_ms=0)},
                               AggregatorSettings(stats="basic"))
    agg.consume(batch(T0, [0], [3.0]))
    [wb] = agg.collect(T0 + S)
    assert set(wb.stats) == {"count", "min", "max", "mean", "sum", "good_ratio", "bad_count"}


def test_ten_thousand_tags_ten_minutes_at_100ms_fit_in_one_gib():
    cfg = TagAggregateConfig(windows=["1s", "1min"], capacity_s=600)
    assert cfg.capacity(100) == 6000
    rss0 = rss_bytes()
    agg = Aggregator.from_tags(tags(10_000), {i: cfg for i in range(10_000)})
    mem = agg.memory_bytes()
    assert 10_000 * 6000 * BYTES_PER_SAMPLE <= mem < GIB
    assert agg.diagnostics()["memory_bytes"] == mem
    ids = np.arange(10_000, dtype=np.int32)
    ones = np.ones(10_000)
    for k in range(6000):  # ten minutes of 100 ms polls: every ring full
        agg.consume(batch(T0 + k * 100_000_000, ids, ones))
    grown = rss_bytes() - rss0
    assert agg.diagnostics()["stored"] == 60_000_000 and agg.diagnostics()["overwritten"] == 0
    assert 0.9 * mem < grown < GIB  # the memory is really touched, and it is what memory_bytes() says


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_budget_is_checked_before_allocating():
    cfg = TagAggregateConfig(windows=["1s"], capacity_s=3600)
    with pytest.raises(AggregatorConfigError, match="over max_memory_bytes"):
        Aggregator.from_tags(tags(10_000), {i: cfg for i in range(10_000)})


def test_capacity_must_cover_the_longest_window():
    cfg = TagAggregateConfig(windows=["1min"], capacity_s=30)
    with pytest.raises(AggregatorConfigError, match=r"d0.t0: .* too small for window 1min"):
        Aggregator.from_tags(tags(1), {0: cfg})


def test_too_many_window_lengths_across_tags():
    cfgs = {i: TagAggregateConfig(windows=[f"{i + 1}s"], capacity_s=600) for i in range(9)}
    with pytest.raises(AggregatorConfigError, match="at most 8 allowed"):
        Aggregator.from_tags(tags(9), cfgs)


@pytest.mark.parametrize(("raw", "message"), [
    ({"windows": ["1sec"]}, "cannot read window '1sec'"),
    ({"windows": [10]}, "a window needs a unit"),
    ({"windows": ["1s", "1000ms"]}, "repeats"),
    ({"windows": ["1ms"]}, "allowed 10ms to 24h"),
    ({"capacity_s": 10, "capacity_samples": 100}, "not both"),
    ({"capacity_samples": 0}, "greater than or equal to 1"),
    ({"grace_ms": -1}, "greater than or equal to 0"),
    ({"window": ["1s"]}, "Extra inputs are not permitted"),
])
def test_config_errors_are_validation_errors(raw, message):
    with pytest.raises(ValidationError, match=message):
        TagAggregateConfig.model_validate(raw)


def test_window_labels_round_trip():
    for label in ("500ms", "1s", "10s", "1min", "15min", "1h"):
        assert window_label(parse_window(label)) == label
    assert window_label(parse_window("60s")) == "1min"
    assert TagAggregateConfig.model_validate({"windows": "10s"}).windows_ns == [10 * S]


def test_active_implementation_is_the_extension():
    import edge.aggregate

    assert edge.aggregate.ACTIVE_IMPL == "cython"
    assert edge.aggregate.describe().startswith("cython (")


def test_fallback_to_the_twin_warns_once():
    code = (
        "import sys, warnings\n"
        "sys.modules['edge.aggregate._ringbuf'] = None\n"  # as if the extension were not built
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import edge.aggregate\n"
        "    import edge.aggregate.engine\n"
        "    import edge.aggregate\n"
        "print(edge.aggregate.ACTIVE_IMPL, sum(issubclass(x.category, RuntimeWarning) for x in w))\n"
        "print(edge.aggregate.RingStore.__module__)\n"
        "print(edge.aggregate.describe().split()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "1", "edge.aggregate.pyring", "python"]
