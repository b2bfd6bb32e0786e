"""The latest-value store: the compiled scatter and the numpy path keep the same arrays."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import store as store_module
from edge.core.model import Plant, Quality, SampleBatch, TagInfo
from edge.core.store import LatestStore

N_TAGS = 16


def plant() -> Plant:
    return Plant(site="t", tags=[TagInfo(id=i, device="d", name=f"t{i}", bus="b", dtype="float64")
                                 for i in range(N_TAGS)])


def test_the_compiled_scatter_is_active():
    assert store_module.LatestArrays is not None
    assert LatestStore(plant())._compiled is not None


batches = st.lists(
    st.tuples(st.lists(st.integers(0, N_TAGS - 1), min_size=0, max_size=24),
              st.integers(0, 2**62), st.data()),
    min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(batches)
def test_compiled_and_numpy_scatter_agree(spec):
    compiled, reference = LatestStore(plant()), LatestStore(plant())
    reference._compiled = None
    for ids, ts, data in spec:
        n = len(ids)
        values = np.array(data.draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n)), dtype=np.float64)
        quality = np.array(data.draw(st.lists(st.sampled_from([0, 0, 0, int(Quality.BAD_OUT_OF_RANGE),
                                                                int(Quality.BAD_NO_COMMUNICATION)]),
                                              min_size=n, max_size=n)), dtype=np.uint8)
        batch = SampleBatch("d", ts, np.array(ids, dtype=np.int32), values, quality)
        compiled.consume(batch)
        reference.consume(batch)
    np.testing.assert_array_equal(compiled.values, reference.values)
    np.testing.assert_array_equal(compiled.quality, reference.quality)
    np.testing.assert_array_equal(compiled.ts_ns, reference.ts_ns)
    assert compiled.samples == reference.samples


def test_a_bad_sample_keeps_the_last_value_and_flags_it():
    s = LatestStore(plant())
    s.consume(SampleBatch("d", 10, np.array([3, 4], dtype=np.int32), np.array([1.5, 2.5]), np.zeros(2, np.uint8)))
    bad = int(Quality.BAD_NO_COMMUNICATION)
    s.consume(SampleBatch("d", 20, np.array([3], dtype=np.int32), np.array([np.nan]), np.array([bad], np.uint8)))
    assert s.get(3) == (1.5, Quality.BAD_NO_COMMUNICATION, 20)
    assert s.get(4) == (2.5, Quality.GOOD, 10)


def test_other_array_layouts_take_the_numpy_path():
    s = LatestStore(plant())
    wide = np.arange(8, dtype=np.float64).reshape(4, 2)
    s.consume(SampleBatch("d", 5, np.array([0, 1, 2, 3], dtype=np.int64), wide[:, 1], np.zeros(4, np.uint8)))
    assert s.values[:4].tolist() == [1.0, 3.0, 5.0, 7.0] and s.ts_ns[:4].tolist() == [5] * 4


def test_an_unknown_tag_id_is_an_error_and_writes_nothing():
    s = LatestStore(plant())
    with pytest.raises(IndexError):
        s.consume(SampleBatch("d", 5, np.array([0, N_TAGS], dtype=np.int32), np.ones(2), np.zeros(2, np.uint8)))
    assert np.isnan(s.values[0]) and s.ts_ns[0] == 0
