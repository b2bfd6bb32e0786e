"""Codec: known wire vectors, block decode vs scalar decode, quality rules, exact inverses."""
from __future__ import annotations

import math
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import (
    INT_RANGES,
    BlockCodec,
    CodecError,
    DecodeError,
    EncodeError,
    EncodeRangeError,
    EncodeResolutionError,
    decode_point,
    encode,
    encode_bit,
    enum_name,
    evaluate,
)
from drivers.modbus.points import ORDERS, REGISTER_COUNT, RegisterPoint, Table
from edge.core.model import Quality

NUMERIC = [t for t in REGISTER_COUNT if t != "bool"]


def pt(dtype: str = "uint16", order: str = "ABCD", address: int = 0, tag_id: int = 0, **kw) -> RegisterPoint:
    table = kw.pop("table", Table.HOLDING)
    return RegisterPoint(tag_id=tag_id, name=kw.pop("name", f"p{tag_id}"), table=table, address=address,
                         dtype=dtype, order=order, writable=True, **kw)


# ----------------------------------------------------------------------------- known vectors

FLOAT_123_456 = {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
                 "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}
U64 = {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
       "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}


@pytest.mark.parametrize("order", ORDERS)
def test_float32_wire_vectors(order):
    p = pt("float32", order)
    assert encode(p, struct.unpack(">f", bytes.fromhex("42F6E979"))[0]) == FLOAT_123_456[order]
    assert decode_point(p, FLOAT_123_456[order]) == pytest.approx(123.456, rel=1e-7)


@pytest.mark.parametrize("order", ORDERS)
def test_uint64_wire_vectors(order):
    p = pt("uint64", order)
    assert decode_point(p, U64[order]) == 0x0102030405060708
    assert encode(p, 0x0102030405060708) == U64[order]


def test_one_register_types_honour_byte_swap_only():
    assert decode_point(pt("int16", "ABCD"), [0xFFFE]) == -2
    assert decode_point(pt("int16", "CDAB"), [0xFFFE]) == -2
    assert decode_point(pt("int16", "BADC"), [0xFEFF]) == -2
    assert decode_point(pt("uint16", "DCBA"), [0x3412]) == 0x1234


def test_strings_high_byte_first_and_nul_padding():
    p = pt("string", length=3)
    regs = encode(p, "ABC")
    assert regs == [0x4142, 0x4300, 0x0000]
    assert decode_point(p, regs) == "ABC"
    swapped = pt("string", "BADC", length=2)
    assert encode(swapped, "ABCD") == [0x4241, 0x4443]
    assert decode_point(swapped, [0x4241, 0x4443]) == "ABCD"


# ----------------------------------------------------------------------------- block decoding


def mixed_block() -> tuple[BlockCodec, list[RegisterPoint]]:
    points = [
        pt("uint16", address=0, tag_id=10),
        pt("int16", address=1, tag_id=11, scale=0.1, offset=-40.0),
        pt("float32", "CDAB", address=2, tag_id=12),
        pt("int32", "BADC", address=4, tag_id=13),
        pt("uint64", "DCBA", address=6, tag_id=14),
        pt("float64", "ABCD", address=10, tag_id=15),
        pt("bool", address=0, tag_id=16, bit=0),
        pt("bool", address=0, tag_id=17, bit=15),
        pt("bool", address=0, tag_id=18, bit=9),
        pt("string", address=14, tag_id=19, length=2),
        pt("uint16", address=16, tag_id=20, enum=((0, "stopped"), (1, "running"))),
    ]
    return BlockCodec(Table.HOLDING, 0, 17, points), points


def test_block_matches_scalar_decode_for_every_input_form():
    codec, points = mixed_block()
    regs = [0x8201] + [0] * 16
    regs[1] = encode(points[1], 21.5)[0]
    regs[2:4] = encode(points[2], -1.25)
    regs[4:6] = encode(points[3], -123456)
    regs[6:10] = encode(points[4], 2**40 + 7)
    regs[10:14] = encode(points[5], math.pi)
    regs[14:16] = encode(points[9], "ok")
    regs[16] = 1
    expected = [10.0 * 0 + 0x8201, 21.5, -1.25, -123456.0, float(2**40 + 7), math.pi, 1.0, 1.0, 1.0, math.nan, 1.0]
    as_u16 = np.array(regs, dtype=np.uint16)
    for form in (regs, as_u16, as_u16.astype(">u2"), as_u16.astype(">u2").tobytes()):
        values, quality = codec.decode(form)
        np.testing.assert_allclose(values, expected, rtol=1e-12)
        assert quality.tolist() == [Quality.GOOD] * len(points)
        assert codec.decode_texts(form) == {19: "ok"}
    batch = codec.decode_batch("dev", 123, regs)
    assert batch.texts == {19: "ok"} and batch.tag_ids.tolist() == [p.tag_id for p in points]
    assert enum_name(points[10], values[10]) == "running"
    assert enum_name(points[10], 7) is None


def test_decode_into_slices_of_a_poll_array():
    codec, points = mixed_block()
    values = np.full(20, -1.0)
    quality = np.full(20, 9, dtype=np.uint8)
    codec.decode([0] * 17, values[3:3 + len(points)], quality[3:3 + len(points)])
    assert values[:3].tolist() == [-1.0] * 3 and values[3 + len(points):].tolist() == [-1.0] * 6
    assert quality[3:3 + len(points)].tolist() == [0] * len(points)
    assert values[3 + 1] == pytest.approx(-40.0)


def test_range_clamp_nan_and_inf_rules():
    points = [
        pt("int16", address=0, tag_id=0, low=0, high=100),
        pt("int16", address=1, tag_id=1, low=0, high=100, clamp=True),
        pt("float32", address=2, tag_id=2),
        pt("float32", address=4, tag_id=3, low=-1, high=1, clamp=True),
        pt("float32", address=6, tag_id=4, high=5, clamp=True),
        pt("float32", address=8, tag_id=5, low=-5, clamp=True),
        pt("int16", address=10, tag_id=6, low=0, high=100),
    ]
    codec = BlockCodec(Table.HOLDING, 0, 11, points)
    nan = [0x7FC0, 0x0000]
    inf = [0x7F80, 0x0000]
    regs = [150, 0xFFFF] + nan + nan + inf + inf + [50]
    values, quality = codec.decode(regs)
    assert quality.tolist() == [5, 0, 5, 5, 0, 5, 0]
    assert values[1] == 0.0 and values[4] == 5.0 and values[6] == 50.0
    assert all(math.isnan(values[i]) for i in (0, 2, 3, 5))
    for p, v, q in zip(points, values, quality, strict=True):
        sv, sq = evaluate(p, decode_point(p, regs[p.address: p.end]))
        assert sq == q and (sv == v or (math.isnan(sv) and math.isnan(v)))


def test_bit_table_block():
    points = [pt("bool", table=Table.COIL, address=a, tag_id=a) for a in (0, 3, 1999)]
    codec = BlockCodec(Table.COIL, 0, 2000, points)
    bits = [False] * 2000
    bits[3] = bits[1999] = True
    values, quality = codec.decode(bits)
    assert values.tolist() == [0.0, 1.0, 1.0] and quality.tolist() == [0, 0, 0]
    padded = np.zeros(2008, dtype=bool)
    padded[0] = True
    assert codec.decode(padded)[0].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(DecodeError, match="1999 bits, the block needs 2000"):
        codec.decode(bits[:1999])


def test_short_response_is_a_clear_error():
    codec, _ = mixed_block()
    with pytest.raises(DecodeError, match="16 registers, the block needs 17"):
        codec.decode([0] * 16)


@pytest.mark.parametrize(("point", "message"), [
    (pt("int24"), "type 'int24' is unknown; allowed: bool, int16"),
    (pt("int32", "ACBD"), "order 'ACBD' is unknown; allowed: ABCD, CDAB, BADC, DCBA"),
    (pt("uint16", table=Table.COIL), "type must be bool"),
    (pt("bool"), "needs bit 0-15"),
    (pt("string", length=0), "length 1-125"),
    (pt("int16", scale=0.0), "scale must be finite and not 0"),
    (pt("float32", address=9), "outside the block 0..9"),
    (pt("bool", table=Table.DISCRETE), "is in table discrete, the block reads holding"),
])
def test_bad_points_are_rejected_at_compile_time(point, message):
    with pytest.raises(CodecError, match=message):
        BlockCodec(Table.HOLDING, 0, 10, [point])


# ----------------------------------------------------------------------------- encoding rules


@pytest.mark.parametrize(("point", "value", "message", "out_of_range"), [
    (pt("int16"), 40000, r"does not fit int16; allowed -32768 \.\. 32767", True),
    (pt("uint16", scale=0.1), -1, r"allowed 0 \.\. 6553\.5", True),
    (pt("int16"), 1.5, "takes whole numbers", False),
    (pt("int16", low=0, high=10), 11, r"outside the range \[0, 10\]", True),
    (pt("float32", low=0, high=10), math.nan, "NaN is outside the range", True),
    (pt("float32"), 1e39, "does not fit float32", True),
    (pt("int32"), math.inf, "takes a finite number", False),
    (pt("int16"), "abc", r"takes a number, not 'abc'", False),
    (pt("int16"), True, "takes a number, not bool", False),
    (pt("uint16", enum=((0, "off"), (1, "on"))), 2, r"not one of its states \(0=off, 1=on\)", True),
    (pt("uint16", enum=((0, "off"), (1, "on"))), "auto", "a number or one of off, on", False),
    (pt("string", length=1), "abc", "3 characters do not fit 1 registers", True),
    (pt("string", length=2), "é", "only ASCII", False),
    (pt("string", length=2), 5, "give text", False),
    (pt("bool", bit=3), True, "read-modify-write", False),
    (pt("bool", table=Table.COIL), 2, "give true/false or 1/0", False),
    (pt("bool", table=Table.COIL), "maybe", "give one of", False),
    (pt("uint16", table=Table.INPUT), 1, "cannot write", False),
])
def test_encode_errors_say_what_is_allowed(point, value, message, out_of_range):
    with pytest.raises(EncodeError, match=message) as caught:
        encode(point, value)
    assert isinstance(caught.value, EncodeRangeError) is out_of_range


def test_encode_parses_cli_text_and_enum_names():
    assert encode(pt("uint16", enum=((0, "off"), (4, "auto"))), "auto") == [4]
    assert encode(pt("int16"), "-12") == [0xFFF4]
    assert encode(pt("uint16"), "0x10") == [16]
    assert encode(pt("float32"), "1.5") == [0x3FC0, 0]
    assert encode(pt("bool", table=Table.COIL), "on") == [True]
    assert encode(pt("bool", table=Table.COIL), 0) == [False]


def test_scaled_int_takes_values_on_its_resolution_grid():
    """Issue 14: 0.5 degC on a 0.1-resolution tag is raw 5; a value between steps is refused
    with the resolution named, never silently rounded and reported Good."""
    p = pt("int16", scale=0.1)
    assert encode(p, 0.5) == [5]
    assert encode(p, 21.5) == [215]
    assert encode(p, -0.1) == [0xFFFF]
    assert encode(p, 84.6) == [846]
    with pytest.raises(EncodeResolutionError, match=r"resolution 0\.1.*nearest values 21\.5 and 21\.6"):
        encode(p, 21.54)
    q = pt("uint16", scale=0.01, offset=-40.0)
    assert encode(q, 44.6) == [8460]
    with pytest.raises(EncodeResolutionError, match="resolution 0.01"):
        encode(q, 44.605)


SCALES = [(0.1, 0.0), (0.01, 0.0), (0.001, 0.0), (0.1, -40.0), (0.01, 273.15), (0.5, 0.0), (10.0, 0.0)]


@pytest.mark.parametrize(("scale", "offset"), SCALES)
def test_decimal_scale_gives_the_nearest_double(scale, offset):
    """Issue 14: 97 x 0.1 is 9.7 (the double nearest the decimal value), not 9.700000000000001,
    in the scalar decoder, the numpy block path and the compiled kernel. The reference is
    exact rational arithmetic (fractions), independent of the codec's own scaling."""
    from decimal import Decimal
    from fractions import Fraction

    raws = list(range(-32768, 32768, 7)) + [97, 846, 202, -1, 0, 32767, -32768]
    p = pt("int16", scale=scale, offset=offset)
    exact = [float(Fraction(r) * Fraction(Decimal(repr(scale))) + Fraction(Decimal(repr(offset)))) for r in raws]
    regs = [r & 0xFFFF for r in raws]
    assert [decode_point(p, [w]) for w in regs] == exact
    points = [replace(p, tag_id=i, address=i) for i in range(len(regs))]
    for compiled in (False, True):
        codec = BlockCodec(Table.HOLDING, 0, len(regs), points, compiled=compiled)
        values, _ = codec.decode(np.array(regs, dtype=">u2"))
        assert values.tolist() == exact, f"compiled={compiled}"


def test_encode_bit_read_modify_write():
    p = pt("bool", bit=4)
    assert encode_bit(p, 0xFF00, True) == 0xFF10
    assert encode_bit(p, 0xFFFF, "off") == 0xFFEF
    assert encode_bit(pt("bool", bit=15), 0, 1) == 0x8000
    with pytest.raises(EncodeError, match="each 0..65535"):
        encode_bit(p, 70000, True)
    with pytest.raises(EncodeError, match="not a bit of a register"):
        encode_bit(pt("uint16"), 0, True)


# ----------------------------------------------------------------------------- exact inverses

orders = st.sampled_from(ORDERS)


def register_lists(n: int):
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("dtype", list(INT_RANGES))
@given(order=orders, data=st.data())
def test_int_value_roundtrip(dtype, order, data):
    lo, hi = INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    p = pt(dtype, order)
    regs = encode(p, value)
    assert len(regs) == p.count and all(0 <= r <= 0xFFFF for r in regs)
    assert decode_point(p, regs) == value


@pytest.mark.parametrize("dtype", NUMERIC)
@given(order=orders, data=st.data())
def test_registers_roundtrip(dtype, order, data):
    p = pt(dtype, order)
    regs = data.draw(register_lists(p.count))
    value = decode_point(p, regs)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads are not values; checked in test_nan_roundtrips_as_nan
    assert encode(p, value) == regs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(order=orders, data=st.data())
def test_float_value_roundtrip(dtype, order, data):
    width = 32 if dtype == "float32" else 64
    value = data.draw(st.floats(width=width, allow_nan=False))
    p = pt(dtype, order)
    back = decode_point(p, encode(p, value))
    assert back == value and math.copysign(1, back) == math.copysign(1, value)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("order", ORDERS)
def test_nan_roundtrips_as_nan(dtype, order):
    p = pt(dtype, order)
    assert math.isnan(decode_point(p, encode(p, math.nan)))


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32"])
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(order=orders, scale=st.sampled_from([0.1, 0.01, 0.5, 2.5, 10.0, -1.0]),
       offset=st.sampled_from([0.0, -40.0, 273.15, 1000.0]), data=st.data())
def test_scaled_registers_roundtrip(dtype, order, scale, offset, data):
    p = pt(dtype, order, scale=scale, offset=offset)
    regs = data.draw(register_lists(p.count))
    assert encode(p, decode_point(p, regs)) == regs


@given(order=orders, length=st.integers(1, 8), data=st.data())
def test_string_roundtrip(order, length, data):
    p = pt("string", order, length=length)
    text = data.draw(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=2 * length))
    assert decode_point(p, encode(p, text)) == text


@given(bit=st.integers(0, 15), reg=st.integers(0, 0xFFFF), on=st.booleans())
def test_bit_roundtrip(bit, reg, on):
    p = pt("bool", bit=bit)
    new = encode_bit(p, reg, on)
    assert decode_point(p, [new]) is on
    assert new & ~(1 << bit) == reg & ~(1 << bit)


@st.composite
def blocks(draw):
    """A block of random non-overlapping points, with random ranges, and random registers."""
    points, address, tag = [], 0, 0
    while address < 100 and len(points) < 30:
        address += draw(st.integers(0, 3))
        dtype = draw(st.sampled_from([*NUMERIC, "bool", "string"]))
        kw: dict = {}
        if dtype == "bool":
            kw["bit"] = draw(st.integers(0, 15))
        elif dtype == "string":
            kw["length"] = draw(st.integers(1, 4))
        else:
            if draw(st.booleans()):
                kw["scale"] = draw(st.sampled_from([0.1, 2.0, -0.5]))
                kw["offset"] = draw(st.sampled_from([0.0, -10.0]))
            if draw(st.booleans()):
                low = draw(st.floats(-1e6, 1e6))
                kw.update(low=low, high=low + draw(st.floats(0, 1e6)), clamp=draw(st.booleans()))
        p = pt(dtype, draw(orders), address=address, tag_id=tag, **kw)
        points.append(p)
        address, tag = p.end, tag + 1
    regs = draw(register_lists(address))
    return points, regs


@given(blocks())
def test_block_decode_equals_scalar_decode(block):
    points, regs = block
    codec = BlockCodec(Table.HOLDING, 0, len(regs), points)
    values, quality = codec.decode(regs)
    texts = codec.decode_texts(regs)
    for i, p in enumerate(points):
        scalar = decode_point(p, regs[p.address: p.end])
        if p.dtype == "string":
            assert texts[p.tag_id] == scalar and math.isnan(values[i]) and quality[i] == Quality.GOOD
            continue
        sv, sq = evaluate(p, float(scalar))
        assert quality[i] == sq, p
        assert _same(float(values[i]), sv) or values[i] == pytest.approx(sv, rel=1e-15), p
