"""The compiled block decoder gives exactly the arrays of the numpy path, for every input form."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.modbus import codec as codec_module
from drivers.modbus.codec import BlockCodec, DecodeError
from drivers.modbus.points import ORDERS, REGISTER_COUNT, RegisterPoint, Table

NUMERIC = [t for t in REGISTER_COUNT if t != "bool"]
# Register patterns that stress the rules: NaN, +-inf, -0.0, extremes of every integer width.
SPECIAL_WORDS = [0x7FC0, 0x7F80, 0xFF80, 0x8000, 0x0000, 0xFFFF, 0x7FFF, 0x7FF8, 0x7FF0, 0xFFF0, 0x0001,
                 0xFFFE, 0xFFF5, 0x000B, 0x000A, 0xFFF6]  # scale factors -2, -11, 11, 10, -10


def test_the_compiled_decoder_is_active():
    """CI builds the extension (setup.py); falling back to numpy there would hide a broken build."""
    assert codec_module.DECODER == "compiled"


@st.composite
def blocks(draw):
    """Random points, overlapping ones included (bits of a status word next to the word itself),
    with sentinels, bits of 16/32/64-bit words, all-NUL strings and scale-factor registers."""
    points, address = [], 0
    n = draw(st.integers(1, 40))
    for tag in range(n):
        address = max(0, address + draw(st.integers(-2, 3)))
        dtype = draw(st.sampled_from([*NUMERIC, "bool", "string"]))
        kw: dict = {}
        if dtype == "bool":
            kw["word"] = draw(st.sampled_from([None, "uint16", "uint32", "uint64"]))
            kw["bit"] = draw(st.integers(0, {None: 16, "uint16": 16, "uint32": 32, "uint64": 64}[kw["word"]] - 1))
        elif dtype == "string":
            kw["length"] = draw(st.integers(1, 4))
            kw["nul_invalid"] = draw(st.booleans())
        else:
            if draw(st.booleans()):
                kw["scale"] = draw(st.sampled_from([0.1, 2.0, -0.5, 1e-3, 3.0]))
                kw["offset"] = draw(st.sampled_from([0.0, -10.0, 273.15]))
            if draw(st.booleans()):
                low = draw(st.one_of(st.none(), st.floats(-1e6, 1e6)))
                high = draw(st.one_of(st.none(), st.floats(-1e6, 1e6)))
                if low is not None and high is not None and high < low:
                    low, high = high, low
                kw.update(low=low, high=high, clamp=draw(st.booleans()))
            if draw(st.booleans()):  # its power of ten in a register at most 6 away (any word, any value)
                kw["sf_address"] = max(0, address + draw(st.integers(-6, 6)))
        if dtype != "string" and draw(st.booleans()):
            width = 16 * (REGISTER_COUNT[dtype] if dtype != "bool" else {None: 1, "uint16": 1, "uint32": 2,
                                                                          "uint64": 4}[kw["word"]])
            kw["invalid"] = tuple(draw(st.lists(st.sampled_from(_patterns(width)), min_size=1, max_size=3)))
        p = RegisterPoint(tag_id=tag, name=f"p{tag}", table=Table.HOLDING, address=address, dtype=dtype,
                          order=draw(st.sampled_from(ORDERS)), **kw)
        points.append(p)
        address = p.end if draw(st.booleans()) else address
    count = max(p.span_end for p in points) + draw(st.integers(0, 3))
    words = draw(st.lists(st.one_of(st.integers(0, 0xFFFF), st.sampled_from(SPECIAL_WORDS)),
                          min_size=count, max_size=count))
    return points, words


def _patterns(width: int) -> list[int]:
    """Sentinel patterns that random words hit often: all ones, the sign bit alone, zero, 0x7FFF.."""
    ones = (1 << width) - 1
    return [ones, 1 << (width - 1), 0, ones >> 1, 0xFFFF, 0x8000]


def _assert_identical(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])  # NaN equals NaN here
    np.testing.assert_array_equal(np.signbit(a[0]), np.signbit(b[0]))
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].dtype == b[0].dtype and a[1].dtype == b[1].dtype


@settings(max_examples=400, deadline=None)
@given(blocks())
def test_compiled_equals_numpy_for_random_blocks(block):
    points, words = block
    count = len(words)
    assume(max(p.span_end - p.span_start for p in points) <= 125)
    compiled = BlockCodec(Table.HOLDING, 0, count, points)
    reference = BlockCodec(Table.HOLDING, 0, count, points, compiled=False)
    wire = struct.pack(f">{count}H", *words)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf patterns: numpy says so, the kernel does not
        expected = reference.decode(words)
    for form in (wire, bytearray(wire), memoryview(wire), np.frombuffer(wire, dtype=">u2"),
                 np.frombuffer(wire, dtype=np.uint8)):
        _assert_identical(compiled.decode(form), expected)
    assert compiled.decode_texts(wire) == reference.decode_texts(words)


def test_other_input_forms_fall_back_to_numpy_with_the_same_result():
    points = [RegisterPoint(tag_id=0, name="a", table=Table.HOLDING, address=0, dtype="int32", order="CDAB"),
              RegisterPoint(tag_id=1, name="b", table=Table.HOLDING, address=2, dtype="uint16", scale=0.5)]
    codec = BlockCodec(Table.HOLDING, 0, 3, points)
    native = np.array([0xFFFF, 0xFFFE, 7], dtype=np.uint16)  # little-endian storage: not wire bytes
    for form in ([0xFFFF, 0xFFFE, 7], native, native.astype(np.int64)):
        values, quality = codec.decode(form)
        assert values.tolist() == [float(0xFFFEFFFF - (1 << 32)), 3.5] and quality.tolist() == [0, 0]
    out = np.zeros((2, 2))  # a strided output column: not something the kernel writes into
    codec.decode(native.astype(">u2"), out[:, 0], np.zeros(2, dtype=np.uint8))
    assert out[:, 0].tolist() == [float(0xFFFEFFFF - (1 << 32)), 3.5]


def test_short_response_is_the_same_clear_error():
    points = [RegisterPoint(tag_id=0, name="a", table=Table.HOLDING, address=0, dtype="float64")]
    for compiled in (True, False):
        codec = BlockCodec(Table.HOLDING, 0, 4, points, compiled=compiled)
        with pytest.raises(DecodeError, match="response has 3 registers, the block needs 4"):
            codec.decode(b"\x00" * 6)


def test_decode_into_slices_of_a_poll_array():
    points = [RegisterPoint(tag_id=i, name=f"p{i}", table=Table.HOLDING, address=i, dtype="int16") for i in range(3)]
    codec = BlockCodec(Table.HOLDING, 0, 3, points)
    values, quality = np.full(6, -1.0), np.full(6, 9, dtype=np.uint8)
    got = codec.decode(struct.pack(">3h", -5, 0, 5), values[2:5], quality[2:5])
    assert values.tolist() == [-1.0, -1.0, -5.0, 0.0, 5.0, -1.0] and quality.tolist() == [9, 9, 0, 0, 0, 9]
    assert np.shares_memory(got[0], values)
