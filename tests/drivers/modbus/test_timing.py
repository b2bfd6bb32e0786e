"""Timing model: character time, inter-frame gap, frame sizes, transaction and bus-load estimates."""
from __future__ import annotations

import pytest

from drivers.modbus.points import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    MAX_WRITE_BITS,
    MAX_WRITE_REGISTERS,
    Table,
)
from drivers.modbus.timing import (
    BusTiming,
    SerialLine,
    char_time_s,
    inter_frame_gap_s,
    load_percent,
    rtu_request_bytes,
    rtu_response_bytes,
    tcp_request_bytes,
    tcp_response_bytes,
    tcp_transaction_s,
)


@pytest.mark.parametrize(("baud", "parity", "data", "stop", "bits"), [
    (9600, "N", 8, 1, 10), (9600, "E", 8, 1, 11), (19200, "O", 8, 2, 12), (1200, "E", 7, 1, 10),
])
def test_char_time(baud, parity, data, stop, bits):
    assert char_time_s(baud, parity, data, stop) == pytest.approx(bits / baud)


def test_inter_frame_gap_is_3_5_chars_then_fixed_above_19200():
    assert inter_frame_gap_s(9600) == pytest.approx(3.5 * 10 / 9600)
    assert inter_frame_gap_s(19200, "E") == pytest.approx(3.5 * 11 / 19200)
    assert inter_frame_gap_s(38400) == pytest.approx(1.75e-3)
    assert inter_frame_gap_s(115200) == pytest.approx(1.75e-3)
    assert inter_frame_gap_s(9600, override_ms=10) == pytest.approx(0.010)


@pytest.mark.parametrize(("fc", "count", "req", "resp"), [
    (1, 10, 8, 7), (2, 2000, 8, 255), (3, 1, 8, 7), (4, 125, 8, 255),
    (5, 1, 8, 8), (6, 1, 8, 8), (15, 10, 11, 8), (16, 2, 13, 8),
])
def test_rtu_frame_sizes(fc, count, req, resp):
    assert rtu_request_bytes(fc, count) == req
    assert rtu_response_bytes(fc, count) == resp
    assert tcp_request_bytes(fc, count) == req + 4 and tcp_response_bytes(fc, count) == resp + 4


def test_largest_requests_fit_the_protocol_frames():
    """The spec's maximum ADU is 256 bytes on RTU and 260 on TCP: the limits fill them exactly."""
    assert rtu_response_bytes(3, MAX_READ_REGISTERS) == 255
    assert rtu_response_bytes(1, MAX_READ_BITS) == 255
    assert rtu_request_bytes(16, MAX_WRITE_REGISTERS) == 255
    assert rtu_request_bytes(15, MAX_WRITE_BITS) == 255
    assert tcp_response_bytes(3, MAX_READ_REGISTERS) <= 260


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"function code 7 is not modelled; allowed: \(1, 2, 3, 4, 5, 6, 15, 16\)"):
        rtu_request_bytes(7, 1)
    with pytest.raises(ValueError, match="count must be at least 1"):
        rtu_response_bytes(3, 0)
    with pytest.raises(ValueError, match="parity must be N, E or O"):
        SerialLine(9600, parity="X")
    with pytest.raises(ValueError, match="needs its serial line"):
        BusTiming("modbus_rtu")
    with pytest.raises(ValueError, match="allowed: modbus_tcp, modbus_rtu, rtu_over_tcp"):
        BusTiming("profibus")
    with pytest.raises(ValueError, match="interval_ms must be positive"):
        load_percent([(0.1, 0)])


def test_rtu_transaction_time():
    line = SerialLine(9600)
    char = 10 / 9600
    expected = (8 + 25) * char + 2 * 3.5 * char
    assert line.transaction_s(3, 10) == pytest.approx(expected)
    assert line.transaction_s(3, 10, turnaround_ms=5) == pytest.approx(expected + 0.005)
    assert line.exception_transaction_s(3, 10) == pytest.approx((8 + 5 + 7) * char)
    assert line.timeout_cost_s(3, 10, timeout_ms=200) == pytest.approx(8 * char + 0.2 + 3.5 * char)
    fast = SerialLine(115200)
    assert fast.transaction_s(3, 125) == pytest.approx((8 + 255) * 10 / 115200 + 2 * 1.75e-3)


def test_bus_kinds():
    rtu = BusTiming("modbus_rtu", SerialLine(19200), turnaround_ms=2)
    assert rtu.read_s(Table.HOLDING, 10) == pytest.approx(SerialLine(19200).transaction_s(3, 10, 2))
    assert rtu.read_s(Table.COIL, 16, pause_ms=1) == pytest.approx(SerialLine(19200).transaction_s(1, 16, 2) + 0.001)
    tcp = BusTiming("modbus_tcp")
    assert tcp.read_s(Table.INPUT, 125) == pytest.approx(tcp_transaction_s(4, 125))
    assert 0.0005 < tcp.read_s(Table.INPUT, 125) < 0.0006
    gateway = BusTiming("rtu_over_tcp", SerialLine(9600))
    assert gateway.read_s(Table.HOLDING, 10) == pytest.approx(SerialLine(9600).transaction_s(3, 10) + 0.0005)
    native = BusTiming("rtu_over_tcp")
    assert native.read_s(Table.HOLDING, 10) == pytest.approx(tcp_transaction_s(3, 10, rtu_framing=True))
    assert native.read_s(Table.HOLDING, 10) < tcp.read_s(Table.HOLDING, 10)


def test_from_config_objects():
    class Cfg:
        type = "modbus_rtu"
        baud, parity, data_bits, stop_bits, inter_frame_gap_ms = 19200, "E", 8, 1, None

    timing = BusTiming.from_bus_config(Cfg(), turnaround_ms=3)
    assert timing.line == SerialLine(19200, "E") and timing.turnaround_ms == 3

    class Tcp:
        type = "modbus_tcp"

    assert BusTiming.from_bus_config(Tcp()).line is None


def test_cycle_and_load():
    timing = BusTiming("modbus_rtu", SerialLine(9600))
    reads = [(Table.HOLDING, 125), (Table.COIL, 16)]
    cycle = timing.cycle_s(reads)
    assert cycle == pytest.approx(timing.read_s(Table.HOLDING, 125) + timing.read_s(Table.COIL, 16))
    # One 125-register read at 9600 baud takes ~281 ms: four of them a second saturate the line.
    assert load_percent([(timing.read_s(Table.HOLDING, 125), 250)]) > 100
    assert load_percent([(cycle, 1000), (cycle, 2000)]) == pytest.approx(150 * cycle)


def test_break_even_gap():
    """Bridging fewer unused registers than this is cheaper than one more request."""
    slow = BusTiming("modbus_rtu", SerialLine(9600))
    gap = slow.break_even_gap()
    assert gap == 10  # 22 chars per 1-register read; a merged read costs 24 + 2 x gap chars
    assert slow.read_s(Table.HOLDING, gap + 2) <= 2 * slow.read_s(Table.HOLDING, 1)
    assert slow.read_s(Table.HOLDING, gap + 3) > 2 * slow.read_s(Table.HOLDING, 1)
    bits = slow.break_even_gap(Table.COIL)
    assert 160 <= bits <= 175  # 21 chars per 1-bit read; a merged read costs 20 + bits / 8 chars
    assert slow.read_s(Table.COIL, bits + 2) <= 2 * slow.read_s(Table.COIL, 1) < slow.read_s(Table.COIL, bits + 3)
    assert BusTiming("modbus_tcp").break_even_gap() == 123
