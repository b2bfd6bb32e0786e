"""Order prober: the true type and order of a value rank first; bad input is refused clearly."""
from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import encode
from drivers.modbus.points import ORDERS, RegisterPoint, Table
from drivers.modbus.probe import AMBIGUOUS_MARGIN, format_probe, probe


def regs(dtype: str, order: str, value: float | int) -> list[int]:
    point = RegisterPoint(tag_id=0, name="x", table=Table.HOLDING, address=0, dtype=dtype, order=order)
    return encode(point, value)


@pytest.mark.parametrize("order", ORDERS)
def test_a_drifting_float32_is_found_in_every_order(order):
    reads = [regs("float32", order, v) for v in (23.5, 23.61, 23.58, 23.66)]
    best = probe(reads)[0]
    assert (best.dtype, best.order) == ("float32", order)
    assert best.values[0] == pytest.approx(23.5) and "stable" in best.reason


@pytest.mark.parametrize("order", ORDERS)
def test_a_counter_spanning_both_words_is_found(order):
    reads = [regs("uint32", order, v) for v in (131_060, 131_075, 131_090)]
    ranked = probe(reads)
    assert ranked[0].order == order and ranked[0].dtype in ("int32", "uint32")
    assert ranked[0].values == (131_060, 131_075, 131_090)
    assert {r.order for r in ranked[:2]} == {order}  # int32 and uint32 agree, nothing else comes close


@pytest.mark.parametrize("order", ORDERS)
def test_float64_with_a_range(order):
    reads = [regs("float64", order, v) for v in (1013.25, 1013.2, 1013.31)]
    ranked = probe(reads, low=900, high=1100)
    assert (ranked[0].dtype, ranked[0].order) == ("float64", order)
    assert "inside [900, 1100]" in ranked[0].reason
    assert all("outside" in r.reason or "NaN" in r.reason for r in ranked[1:] if r.dtype == "float64")


def test_a_negative_int32_beats_its_unsigned_reading():
    ranked = probe([regs("int32", "ABCD", -5), regs("int32", "ABCD", -4)], low=-50, high=50)
    assert (ranked[0].dtype, ranked[0].order, ranked[0].values) == ("int32", "ABCD", (-5, -4))
    unsigned = next(r for r in ranked if r.dtype == "uint32" and r.order == "ABCD")
    assert "outside" in unsigned.reason and unsigned.score < ranked[0].score - 30


def test_nan_and_denormal_readings_rank_last():
    ranked = probe([[0x7FC0, 0x0000]])
    nan = next(r for r in ranked if r.dtype == "float32" and r.order == "ABCD")
    assert math.isnan(nan.values[0]) and nan.reason == "NaN or infinite" and nan is ranked[-1]
    denormal = next(r for r in probe([[0x3F80, 0x0000]]) if r.dtype == "float32" and r.order == "CDAB")
    assert "denormal" in denormal.reason


def test_restricting_the_types_and_64_bit_candidates():
    reads = [regs("int64", "CDAB", -123_456), regs("int64", "CDAB", -123_400)]
    ranked = probe(reads, dtypes=["int64"])
    assert [r.dtype for r in ranked] == ["int64"] * 4 and ranked[0].order == "CDAB"
    assert {r.dtype for r in probe(reads)} == {"int64", "uint64", "float64"}


@pytest.mark.parametrize(("reads", "kw", "message"), [
    ([], {}, "at least one read"),
    ([[1, 2], [1, 2, 3, 4]], {}, r"2 registers \(32-bit\) or 4 \(64-bit\), got lengths \[2, 4\]"),
    ([[1, 2, 3]], {}, r"got lengths \[3\]"),
    ([[1, 70000]], {}, "0..65535"),
    ([[1, 2]], {"low": 5, "high": 1}, "low 5 is above high 1"),
    ([[1, 2]], {"dtypes": ["float64"]}, "do not span 2 registers; allowed: float32, int32, uint32"),
])
def test_bad_input(reads, kw, message):
    with pytest.raises(ValueError, match=message):
        probe(reads, **kw)


def test_format_and_ambiguity_note():
    """1.5 as float32 CDAB is 0x0000 0x3FC0: also int 16320 in ABCD. Unchanging reads cannot tell."""
    reads = [regs("float32", "CDAB", 1.5)] * 7
    text = format_probe(probe(reads), top=3).splitlines()
    assert len(text) == 5 and text[0].split()[:4] == ["#", "type", "order", "score"]
    assert [tuple(line.split()[1:3]) for line in text[1:4]] == [("int32", "ABCD"), ("uint32", "ABCD"),
                                                                ("float32", "CDAB")]
    assert text[-1].startswith("note: float32 CDAB reads other values and scores within 5 points")
    ranged = format_probe(probe(reads, low=0, high=10), top=3).splitlines()
    assert ranged[1].split()[:3] == ["1", "float32", "CDAB"] and len(ranged) == 4
    assert "1.5, 1.5, 1.5, 1.5, 1.5, ... (7 reads)" in ranged[1] and "(inside [0, 10]; stable)" in ranged[1]


@settings(max_examples=300, deadline=None)
@given(order=st.sampled_from(ORDERS),
       value=st.floats(1e-2, 1e6) | st.floats(-1e6, -1e-2),
       drift=st.lists(st.floats(-1e-3, 1e-3), min_size=3, max_size=6))
def test_float32_measurements_rank_first(order, value, drift):
    """A measured value with small relative noise: the true order of float32 ranks first, or the
    prober says that a rival is too close to call (it never confidently names a wrong order).

    Reads that never change carry no evidence about the order (see the ambiguity test)."""
    reads = [regs("float32", order, value * (1 + d)) for d in drift]
    assume(len({tuple(r) for r in reads}) > 1)
    ranked = probe(reads)
    truth = next(r for r in ranked if (r.dtype, r.order) == ("float32", order))
    assert truth is ranked[0] or ranked[0].score - truth.score < AMBIGUOUS_MARGIN
    if truth is not ranked[0]:
        assert "note:" in format_probe(ranked)


@settings(max_examples=200, deadline=None)
@given(order=st.sampled_from(ORDERS), value=st.floats(0.5, 1e5) | st.floats(-1e5, -0.5),
       drift=st.lists(st.floats(-0.02, 0.02), min_size=4, max_size=8))
def test_float32_with_percent_variation_ranks_first(order, value, drift):
    """A noisy measurement (a few per cent of variation, the low mantissa word varies): unambiguous.

    Without noise in the low word, 1.0 and 1.015625 (0x3F80 0x0000, 0x3F82 0x0000) read as
    int32 CDAB 16256 and 16258 are just as plausible; the first test covers that case."""
    reads = [regs("float32", order, value * (1 + d)) for d in drift]
    low_word = 1 if order in ("ABCD", "BADC") else 0
    assume(max(drift) - min(drift) > 0.005 and len({r[low_word] for r in reads}) > 2)
    best = probe(reads)[0]
    assert (best.dtype, best.order) == ("float32", order)
