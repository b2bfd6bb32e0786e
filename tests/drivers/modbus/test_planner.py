"""Planner: merging, gaps, limits, one request per tag, bit tables, learning address holes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import decode_point, encode
from drivers.modbus.planner import Holes, PlanError, PlanLimits, PollPlan, describe
from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.timing import BusTiming, SerialLine
from edge.core.model import Quality

_ids = iter(range(1_000_000))


def pt(address: int, dtype: str = "uint16", table: Table = Table.HOLDING, **kw) -> RegisterPoint:
    if table.is_bits:
        dtype = "bool"
    tag = next(_ids)
    return RegisterPoint(tag_id=tag, name=kw.pop("name", f"t{tag}"), table=table, address=address, dtype=dtype, **kw)


def layout(plan: PollPlan) -> list[tuple[str, int, int]]:
    return [(str(b.table), b.start, b.count) for b in plan.blocks]


def test_adjacent_points_merge_into_one_block():
    plan = PollPlan([pt(2), pt(0), pt(1), pt(3, "float32")])
    assert layout(plan) == [("holding", 0, 5)]
    assert [p.address for p in plan.blocks[0].points] == [0, 1, 2, 3]
    assert plan.blocks[0].function_code == 3


@pytest.mark.parametrize(("max_gap", "expected"), [
    (8, [("holding", 0, 1), ("holding", 10, 1)]),
    (9, [("holding", 0, 11)]),
    (0, [("holding", 0, 1), ("holding", 10, 1)]),
])
def test_gap_bridging(max_gap, expected):
    assert layout(PollPlan([pt(0), pt(10)], PlanLimits(max_gap=max_gap))) == expected


def test_request_limit_and_no_straddling():
    points = [pt(a) for a in range(124)] + [pt(124, "float32")] + [pt(a) for a in range(126, 200)]
    assert layout(PollPlan(points)) == [("holding", 0, 124), ("holding", 124, 76)]
    limited = PollPlan([pt(a) for a in range(200)], PlanLimits(max_registers=50))
    assert layout(limited) == [("holding", s, 50) for s in (0, 50, 100, 150)]


def test_one_request_per_tag():
    plan = PollPlan([pt(0), pt(1), pt(2, "int32"), pt(2, "bool", bit=3)], PlanLimits(one_per_tag=True))
    assert layout(plan) == [("holding", 0, 1), ("holding", 1, 1), ("holding", 2, 1), ("holding", 2, 2)]


def test_bit_tables_and_tables_are_separate():
    coils = [pt(a, table=Table.COIL) for a in range(3000)]
    plan = PollPlan([*coils, pt(0), pt(0, table=Table.INPUT), pt(5, table=Table.DISCRETE),
                     pt(133, table=Table.DISCRETE), pt(400, table=Table.DISCRETE)])
    assert layout(plan) == [("coil", 0, 2000), ("coil", 2000, 1000), ("discrete", 5, 129),
                            ("discrete", 400, 1), ("holding", 0, 1), ("input", 0, 1)]
    assert [b.function_code for b in plan.blocks] == [1, 1, 2, 2, 3, 4]
    assert layout(PollPlan([pt(0, table=Table.COIL), pt(30, table=Table.COIL)], PlanLimits(max_gap_bits=28))) == [
        ("coil", 0, 1), ("coil", 30, 1)]


def test_overlapping_points_stay_in_one_block():
    word = pt(124)
    bits = [pt(124, "bool", bit=b) for b in range(16)]
    plan = PollPlan([*[pt(a) for a in range(124)], word, *bits, pt(125, "int32")])
    assert layout(plan) == [("holding", 0, 125), ("holding", 125, 2)]


@pytest.mark.parametrize(("points", "limits", "message"), [
    ([pt(0, "string", length=60)], PlanLimits(max_registers=50), "spans 60 registers, more than this device's 50"),
    ([pt(65535, "int32")], PlanLimits(), "outside the address space"),
    ([pt(0, "int24")], PlanLimits(), "type 'int24' is unknown"),
])
def test_points_that_cannot_be_planned(points, limits, message):
    with pytest.raises((PlanError, ValueError), match=message):
        PollPlan(points, limits)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_registers must be 1..125, got 126"):
        PlanLimits(max_registers=126)
    with pytest.raises(ValueError, match="max_bits must be 1..2000"):
        PlanLimits(max_bits=0)


def test_every_block_decodes_its_own_batch_and_the_plan_covers_every_point():
    points = [pt(0, "float32", name="f"), pt(40, "int16", scale=0.1, name="s"), pt(2, "bool", bit=1, name="b"),
              pt(7, table=Table.COIL, name="c")]
    plan = PollPlan(points, PlanLimits(max_gap=10))
    image = {Table.HOLDING: [0] * 50, Table.COIL: [False] * 10}
    image[Table.HOLDING][0:2] = encode(points[0], 2.5)
    image[Table.HOLDING][40:41] = encode(points[1], -3.2)
    image[Table.HOLDING][2] = 0b10
    image[Table.COIL][7] = True
    by_tag: dict[int, float] = {}
    for b in plan.blocks:
        batch = b.codec.decode_batch("dev", 1, image[b.table][b.start:b.end])
        assert batch.quality.tolist() == [0] * len(b.points)
        by_tag |= dict(zip(batch.tag_ids.tolist(), batch.values.tolist(), strict=True))
    assert by_tag == {points[0].tag_id: 2.5, points[1].tag_id: pytest.approx(-3.2),
                      points[2].tag_id: 1.0, points[3].tag_id: 1.0}
    assert sorted(plan.tag_ids.tolist()) == sorted(p.tag_id for p in points)


# ----------------------------------------------------------------------------- learning


class Device:
    """A register map with holes: reading any illegal address fails like exception 2."""

    def __init__(self, legal: set[int]):
        self.legal = legal
        self.requests = 0
        self.failures = 0

    def read(self, start: int, count: int) -> list[int] | None:
        self.requests += 1
        if all(a in self.legal for a in range(start, start + count)):
            return [a & 0xFFFF for a in range(start, start + count)]
        self.failures += 1
        return None


Result = dict[int, tuple[float, int]]  # tag id -> (value, quality) after one poll


def poll(plan: PollPlan, device: Device) -> tuple[Result, int]:
    """One poll as the poller does it: one batch per block that answers, split what is illegal.

    Every point of the plan gets a result: decoded, Bad_ConfigurationError for the unreadable ones,
    Bad_CommunicationError for a block refused in this poll."""
    result: Result = {p.tag_id: (float("nan"), int(Quality.BAD_CONFIG_ERROR)) for p in plan.unreadable}
    failed = 0
    for block in list(plan.blocks):
        regs = device.read(block.start, block.count)
        if regs is None:
            failed += 1
            plan.split(block)
            result |= {p.tag_id: (float("nan"), int(Quality.BAD_COMM_ERROR)) for p in block.points}
            continue
        batch = block.codec.decode_batch("dev", 1, regs)
        result |= dict(zip(batch.tag_ids.tolist(), zip(batch.values.tolist(), batch.quality.tolist(),
                                                         strict=True), strict=True))
    assert sorted(result) == sorted(plan.tag_ids.tolist())  # nothing lost, nothing twice
    return result, failed


def converge(plan: PollPlan, device: Device, max_polls: int = 64) -> int:
    for n in range(1, max_polls + 1):
        if poll(plan, device)[1] == 0:
            return n
    raise AssertionError("the plan did not converge")


def test_learning_a_hole_in_a_gap():
    points = [pt(a) for a in range(10)] + [pt(a) for a in range(12, 20)]
    device = Device(set(range(10)) | set(range(12, 20)))
    plan = PollPlan(points, PlanLimits(max_gap=8))
    assert layout(plan) == [("holding", 0, 20)]
    assert converge(plan, device) == 2
    assert layout(plan) == [("holding", 0, 10), ("holding", 12, 8)]
    assert plan.holes.ranges == {(Table.HOLDING, 10, 12)}
    assert device.failures == 1 and not plan.unreadable
    result, _ = poll(plan, device)
    assert result == {p.tag_id: (p.address, Quality.GOOD) for p in points}
    replanned = PollPlan(points, PlanLimits(max_gap=8), holes=plan.holes)
    assert layout(replanned) == layout(plan)
    assert poll(replanned, device)[1] == 0


def test_an_illegal_point_becomes_unreadable_and_is_not_retried():
    points = [pt(a, name=f"r{a}") for a in range(16)]
    device = Device(set(range(16)) - {5})
    plan = PollPlan(points)
    polls = converge(plan, device)
    assert polls <= 6 and device.failures <= 5  # halving: log2(16) + 1 failed requests at most
    assert [p.name for p in plan.unreadable] == ["r5"]
    result, failed = poll(plan, device)
    assert failed == 0
    by_name = {p.name: result[p.tag_id] for p in points}
    assert by_name["r5"][1] == Quality.BAD_CONFIG_ERROR and np.isnan(by_name["r5"][0])
    assert all(q == Quality.GOOD and v == int(n[1:]) for n, (v, q) in by_name.items() if n != "r5")
    requests = device.requests
    poll(plan, device)
    assert device.requests - requests == len(plan.blocks)
    assert all(not (b.start <= 5 < b.end) for b in plan.blocks)
    replanned = PollPlan(points, holes=plan.holes)
    assert [p.name for p in replanned.unreadable] == ["r5"] and layout(replanned) == layout(plan)


def test_split_of_a_block_that_is_not_in_the_plan():
    plan = PollPlan([pt(0), pt(3)])
    block = plan.blocks[0]
    plan.split(block)
    with pytest.raises(ValueError, match="not a block of this plan"):
        plan.split(block)


def test_overlapping_points_are_refused_together():
    word, bit = pt(3, name="w"), pt(3, "bool", bit=2, name="b")
    plan = PollPlan([pt(0, name="a"), word, bit])
    device = Device({0, 1, 2})
    converge(plan, device)
    assert sorted(p.name for p in plan.unreadable) == ["b", "w"]
    assert layout(plan) == [("holding", 0, 1)]


@st.composite
def maps(draw):
    n = draw(st.integers(1, 40))
    points, address = [], draw(st.integers(0, 5))
    for _ in range(n):
        dtype = draw(st.sampled_from(["uint16", "int32", "float64"]))
        points.append(pt(address, dtype))
        address += points[-1].count + draw(st.integers(0, 12))
    illegal = set(draw(st.lists(st.integers(0, address + 5), max_size=6)))
    limits = PlanLimits(max_registers=draw(st.integers(4, 125)), max_gap=draw(st.integers(0, 20)))
    return points, illegal, limits, address + 10


@settings(max_examples=150, deadline=None)
@given(maps())
def test_plans_keep_their_invariants_and_learning_converges(case):
    points, illegal, limits, size = case
    plan = PollPlan(points, limits)
    assert sorted(plan.tag_ids.tolist()) == sorted(p.tag_id for p in points)
    for b in plan.blocks:
        assert 1 <= b.count <= limits.max_registers
        assert all(b.start <= p.address and p.end <= b.end for p in b.points)
        ends = sorted(b.points, key=lambda p: p.address)
        assert all(q.address - max(x.end for x in ends[:i + 1]) <= limits.max_gap for i, q in enumerate(ends[1:]))
    device = Device(set(range(size)) - illegal)
    converge(plan, device, max_polls=2 + 2 * len(points))
    refused = {p.tag_id for p in points if any(a in illegal for a in range(p.address, p.end))}
    assert {p.tag_id for p in plan.unreadable} == refused
    for b in plan.blocks:
        assert not any(a in illegal for a in range(b.start, b.end))
    result, failed = poll(plan, device)
    assert failed == 0
    for p in points:
        v, q = result[p.tag_id]
        if p.tag_id in refused:
            assert q == Quality.BAD_CONFIG_ERROR
        else:
            regs = [a & 0xFFFF for a in range(p.address, p.end)]
            assert q == Quality.GOOD and v == pytest.approx(float(decode_point(p, regs)), nan_ok=True) or (
                q == Quality.BAD_OUT_OF_RANGE)


# ----------------------------------------------------------------------------- describe


def test_describe_lists_requests_and_bus_time():
    points = [pt(0, name="flow"), pt(1, "float32", name="temp"), pt(50, name="status"),
              pt(3, table=Table.COIL, name="pump")]
    plan = PollPlan(points)
    timing = BusTiming("modbus_rtu", SerialLine(9600))
    text = describe("pump1", "fast", 1000, plan, timing)
    lines = text.splitlines()
    cycle = plan.cycle_s(timing)
    assert lines[0] == (f"pump1 / fast every 1000 ms: 3 requests, 4 tags, 4 registers, 1 bits, "
                        f"bus time {cycle * 1000:.1f} ms/cycle ({cycle * 100:.1f} % of the interval)")
    assert lines[1].startswith("  FC1 coil") and "[pump]" in lines[1]
    assert "FC3 holding      0..2" in lines[2] and "[flow, temp]" in lines[2]
    assert "50..50" in lines[3] and "[status]" in lines[3]
    assert len(plan.split(plan.blocks[1])) == 2
    assert plan.split(plan.blocks[1]) == []
    assert plan.split(plan.blocks[1]) == []
    assert describe("pump1", "fast", 1000, plan).splitlines()[-1] == "  unreadable (illegal data address): flow, temp"
    assert Holes().blocks_span(Table.HOLDING, 0, 10) is False
