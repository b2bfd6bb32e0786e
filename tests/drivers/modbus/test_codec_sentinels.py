"""Sentinels, scale-factor registers and bits of 32/64-bit words in the block codec (issue 16).

Registers are built with ``struct`` (an independent encoder); both decoders (compiled and
numpy) must give the same, expected values and qualities.
"""
from __future__ import annotations

import math
import struct

import pytest

from drivers.modbus.codec import (
    BlockCodec,
    DecodeError,
    EncodeError,
    decode_point,
    encode,
    encode_bits,
    is_sentinel,
)
from drivers.modbus.planner import PollPlan
from drivers.modbus.points import RegisterPoint, Table
from edge.core.model import Quality

H = Table.HOLDING


def regs(fmt: str, *values) -> list[int]:
    raw = struct.pack(">" + fmt, *values)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def decode_both(points, words, start=0):
    out = []
    for compiled in (True, False):
        codec = BlockCodec(H, start, len(words), points, compiled=compiled)
        values, quality = codec.decode(struct.pack(f">{len(words)}H", *words) if compiled else words)
        out.append((values.tolist(), [Quality(q) for q in quality]))
    assert repr(out[0]) == repr(out[1])  # the same bits, NaN included
    return out[0]


def test_declared_sentinels_are_bad_sensor_failure_not_out_of_range():
    """Before: a sensor's 0x7FFF during a fault could only be faked as out of range."""
    points = [RegisterPoint(0, "temp", H, 0, "int16", scale=0.1, invalid=(0x7FFF, 0x8000), low=-40, high=125),
              RegisterPoint(1, "power", H, 1, "uint16", invalid=(0xFFFF,)),
              RegisterPoint(2, "energy", H, 2, "uint32", order="CDAB", invalid=(0xFFFFFFFF,)),
              RegisterPoint(3, "f", H, 4, "float32", invalid=(0x7FC00000,))]
    words = regs("hH", 0x7FFF, 0xFFFF) + [0xFFFF, 0xFFFF] + regs("I", 0x7FC00000)
    values, quality = decode_both(points, words)
    assert quality == [Quality.BAD_SENSOR_FAILURE] * 4 and all(math.isnan(v) for v in values)
    words = regs("hH", 215, 1200) + regs("HH", 0x0002, 0x0001) + regs("f", 1.5)
    values, quality = decode_both(points, words)
    assert values == [21.5, 1200.0, float(0x00010002), 1.5] and quality == [Quality.GOOD] * 4
    # out of range stays out of range
    values, quality = decode_both(points[:1], regs("h", 1300))
    assert quality == [Quality.BAD_OUT_OF_RANGE]


def test_an_all_nul_string_can_be_marked_absent():
    points = [RegisterPoint(0, "serial", H, 0, "string", length=4, nul_invalid=True),
              RegisterPoint(1, "name", H, 4, "string", length=2)]
    _, quality = decode_both(points, [0] * 6)
    assert quality == [Quality.BAD_SENSOR_FAILURE, Quality.GOOD]
    codec = BlockCodec(H, 0, 6, points)
    text = regs("8s4s", b"AB12\0\0\0\0", b"x\0\0\0")
    assert codec.decode_texts(struct.pack(">6H", *text)) == {0: "AB12", 1: "x"}
    assert [Quality(q) for q in codec.decode(struct.pack(">6H", *text))[1]] == [Quality.GOOD, Quality.GOOD]
    assert is_sentinel(points[0], [0, 0, 0, 0]) and not is_sentinel(points[0], text[:4])


def test_scale_factor_register_from_the_same_response():
    """raw x 10**sf with sf in its own register, changing between responses."""
    w = RegisterPoint(0, "W", H, 0, "int16", sf_address=2)
    a = RegisterPoint(1, "A", H, 1, "uint16", sf_address=3, invalid=(0xFFFF,))
    for sf_w, sf_a, raw_w, raw_a, want_w, want_a in [(0, -2, 1234, 1575, 1234.0, 15.75),
                                                      (-1, -1, -4711, 157, -471.1, 15.7),
                                                      (2, 0, 12, 7, 1200.0, 7.0)]:
        values, quality = decode_both([w, a], regs("hHhh", raw_w, raw_a, sf_w, sf_a))
        assert values == [want_w, want_a] and quality == [Quality.GOOD, Quality.GOOD]
        assert decode_point(w, regs("h", raw_w), sf_w) == want_w


def test_a_bad_scale_factor_makes_its_values_bad_not_wrong():
    w = RegisterPoint(0, "W", H, 0, "int16", sf_address=1)
    for sf, q in [(-32768, Quality.BAD_SENSOR_FAILURE), (11, Quality.BAD_OUT_OF_RANGE),
                  (-11, Quality.BAD_OUT_OF_RANGE), (10, Quality.GOOD), (-10, Quality.GOOD)]:
        values, quality = decode_both([w], regs("hh", 5, sf))
        assert quality == [q] and (math.isnan(values[0]) == (q is not Quality.GOOD))
    with pytest.raises(DecodeError, match="not implemented"):
        decode_point(w, [5], -32768)


def test_writes_apply_the_scale_factor_inversely():
    w = RegisterPoint(0, "WMaxLim", H, 0, "uint16", sf_address=1, writable=True)
    assert encode(w, 75.5, -1) == [755] and encode(w, 7500, 2) == [75]
    with pytest.raises(EncodeError, match="resolution"):
        encode(w, 75.55, -1)
    with pytest.raises(EncodeError, match="not implemented"):
        encode(w, 1, -32768)
    with pytest.raises(EncodeError, match="needs its scale factor"):
        encode(w, 1)


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_bits_of_32_and_64_bit_words_follow_the_order(order):
    word32, word64 = 0x8001_0004, 0x8000_0000_0001_0020
    raw32 = struct.pack(">I", word32)
    raw64 = struct.pack(">Q", word64)

    def wire(raw: bytes) -> list[int]:  # put bytes A.. in the point's order on the wire
        words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
        if order in ("CDAB", "DCBA"):
            words = words[::-1]
        if order in ("BADC", "DCBA"):
            words = [w[::-1] for w in words]
        return [int.from_bytes(w, "big") for w in words]

    bits32 = [2, 16, 31, 0, 30]
    bits64 = [5, 16, 63, 0, 62]
    points = [RegisterPoint(i, f"a{b}", H, 0, "bool", order, bit=b, word="uint32") for i, b in enumerate(bits32)]
    points += [RegisterPoint(10 + i, f"b{b}", H, 2, "bool", order, bit=b, word="uint64") for i, b in enumerate(bits64)]
    values, quality = decode_both(points, wire(raw32) + wire(raw64))
    assert values == [1.0, 1.0, 1.0, 0.0, 0.0] * 2 and quality == [Quality.GOOD] * 10
    # a whole-word sentinel makes its bits bad too (SunSpec bitfield32 0xFFFFFFFF)
    flagged = [RegisterPoint(0, "x", H, 0, "bool", order, bit=3, word="uint32", invalid=(0xFFFFFFFF,))]
    assert decode_both(flagged, [0xFFFF, 0xFFFF])[1] == [Quality.BAD_SENSOR_FAILURE]
    # read-modify-write of bit 31 keeps the others, in the device's order
    p = RegisterPoint(0, "x", H, 0, "bool", order, bit=31, word="uint32", writable=True)
    assert encode_bits(p, wire(struct.pack(">I", 0x0000_0004)), True) == wire(struct.pack(">I", 0x8000_0004))


def test_the_planner_reads_a_value_and_its_factor_in_one_request():
    """The factor 30 registers before its value: one block covers both even with max_gap 0."""
    from drivers.modbus.planner import PlanLimits
    p = RegisterPoint(0, "W", H, 40, "int16", sf_address=10)
    q = RegisterPoint(1, "other", H, 100, "uint16")
    plan = PollPlan([p, q], PlanLimits(max_gap=0))
    block = next(b for b in plan.blocks if p in b.points)
    assert block.start <= 10 and block.end >= 41
    far = RegisterPoint(2, "far", H, 300, "int16", sf_address=10)
    with pytest.raises(ValueError, match="one read"):
        PollPlan([far])
