"""Bus-time model of Modbus transactions: frame sizes, character time, gaps, bus load.

Used by the configuration checker (reject poll rates a line cannot carry, print the load per
bus), by ``edge plan`` (estimated bus time per cycle) and by the bus scheduler (the
inter-frame gap it waits). Everything is in seconds unless a name says otherwise.

Serial (RTU) model of one transaction: request frame, inter-frame gap (the slave sees the end
of the request only after 3.5 silent characters), the device's turnaround, response frame,
inter-frame gap before the next request. Above 19200 baud the Modbus serial-line spec fixes
the gap at 1.75 ms. The turnaround is device-specific (typically 1-50 ms); it defaults to 0 so
that the estimate is a lower bound: a configuration the model rejects can never work.

TCP model: one round trip of fixed network cost (``TCP_NETWORK_MS``, a LAN round trip with
the protocol stacks on both ends) plus the device's turnaround plus the bytes on a 100 Mbit/s
link (with TCP/IP and Ethernet headers) — a few microseconds, kept for completeness.
RTU over TCP through a serial gateway: the gateway's serial line sets the pace (its serial
transaction time) plus one network round trip; without a known serial side (a device that
speaks RTU framing on TCP natively) it is the TCP model with RTU frame sizes.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from drivers.modbus.points import Table

#: Read function code of each table.
READ_FC: dict[Table, int] = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
READ_FCS = (1, 2, 3, 4)
WRITE_FCS = (5, 6, 15, 16)
#: Address + function code + exception code + CRC.
RTU_EXCEPTION_BYTES = 5
#: MBAP header (7 bytes, includes the unit id) replaces address (1) and CRC (2).
TCP_EXTRA_BYTES = 7 - 3
#: One network round trip on a LAN including both protocol stacks (measured on loopback
#: here: ~0.1 ms; a switched LAN and a small device's TCP stack: 0.3-1 ms).
TCP_NETWORK_MS = 0.5
TCP_LINK_BPS = 100e6
TCP_FRAME_OVERHEAD_BYTES = 54  # Ethernet 14 + IPv4 20 + TCP 20 per segment
FIXED_GAP_ABOVE_BAUD = 19200
FIXED_GAP_S = 1.75e-3


def _bit_bytes(count: int) -> int:
    return (count + 7) // 8


def _check(fc: int, count: int) -> None:
    if fc not in READ_FCS + WRITE_FCS:
        raise ValueError(f"function code {fc} is not modelled; allowed: {READ_FCS + WRITE_FCS}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")


def rtu_request_bytes(fc: int, count: int) -> int:
    """Bytes of an RTU request frame (address, PDU, CRC) for ``count`` registers or bits."""
    _check(fc, count)
    if fc in (1, 2, 3, 4, 5, 6):
        return 8  # address, fc, start (2), count or value (2), CRC (2)
    data = _bit_bytes(count) if fc == 15 else 2 * count
    return 9 + data  # address, fc, start, count, byte count, data, CRC


def rtu_response_bytes(fc: int, count: int) -> int:
    """Bytes of a normal RTU response frame."""
    _check(fc, count)
    if fc in (1, 2):
        return 5 + _bit_bytes(count)  # address, fc, byte count, data, CRC
    if fc in (3, 4):
        return 5 + 2 * count
    return 8  # writes echo address and value/count


def tcp_request_bytes(fc: int, count: int) -> int:
    """Bytes of a Modbus TCP request ADU (MBAP header + PDU)."""
    return rtu_request_bytes(fc, count) + TCP_EXTRA_BYTES


def tcp_response_bytes(fc: int, count: int) -> int:
    return rtu_response_bytes(fc, count) + TCP_EXTRA_BYTES


def char_time_s(baud: int, parity: str = "N", data_bits: int = 8, stop_bits: int = 1) -> float:
    """Time of one character on the wire: start bit, data bits, parity bit if any, stop bits."""
    if baud <= 0:
        raise ValueError(f"baud must be positive, got {baud}")
    if parity not in ("N", "E", "O"):
        raise ValueError(f"parity must be N, E or O, got {parity!r}")
    bits = 1 + data_bits + (0 if parity == "N" else 1) + stop_bits
    return bits / baud


def inter_frame_gap_s(baud: int, parity: str = "N", data_bits: int = 8, stop_bits: int = 1,
                      override_ms: float | None = None) -> float:
    """Silence between frames: 3.5 characters, fixed at 1.75 ms above 19200 baud, or the override."""
    if override_ms is not None:
        return override_ms / 1000.0
    if baud > FIXED_GAP_ABOVE_BAUD:
        return FIXED_GAP_S
    return 3.5 * char_time_s(baud, parity, data_bits, stop_bits)



@runtime_checkable
class _SerialSettings(Protocol):
    """A serial line's settings as the config models carry them (``parity``, ``data_bits``,
    ``stop_bits`` and ``inter_frame_gap_ms`` are read where present)."""

    @property
    def baud(self) -> int: ...


class _BusKind(Protocol):
    @property
    def type(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SerialLine:
    """Character framing and timing of one RS-485 line (or a gateway's serial side)."""

    baud: int
    parity: str = "N"
    data_bits: int = 8
    stop_bits: int = 1
    inter_frame_gap_ms: float | None = None  # None: 3.5 characters / 1.75 ms above 19200 baud

    def __post_init__(self) -> None:
        char_time_s(self.baud, self.parity, self.data_bits, self.stop_bits)  # validates

    @classmethod
    def from_config(cls, cfg: _SerialSettings) -> SerialLine:
        """From any object with ``baud``, ``parity``, ``data_bits``, ``stop_bits``, ``inter_frame_gap_ms``."""
        return cls(baud=cfg.baud, parity=getattr(cfg, "parity", "N"), data_bits=getattr(cfg, "data_bits", 8),
                   stop_bits=getattr(cfg, "stop_bits", 1),
                   inter_frame_gap_ms=getattr(cfg, "inter_frame_gap_ms", None))

    @property
    def char_s(self) -> float:
        return char_time_s(self.baud, self.parity, self.data_bits, self.stop_bits)

    @property
    def gap_s(self) -> float:
        return inter_frame_gap_s(self.baud, self.parity, self.data_bits, self.stop_bits, self.inter_frame_gap_ms)

    def transaction_s(self, fc: int, count: int, turnaround_ms: float = 0.0) -> float:
        """Request, gap, turnaround, response, gap: the line time one transaction holds."""
        chars = rtu_request_bytes(fc, count) + rtu_response_bytes(fc, count)
        return chars * self.char_s + 2 * self.gap_s + turnaround_ms / 1000.0

    def exception_transaction_s(self, fc: int, count: int, turnaround_ms: float = 0.0) -> float:
        """A transaction answered by an exception response (5 bytes)."""
        chars = rtu_request_bytes(fc, count) + RTU_EXCEPTION_BYTES
        return chars * self.char_s + 2 * self.gap_s + turnaround_ms / 1000.0

    def timeout_cost_s(self, fc: int, count: int, timeout_ms: float) -> float:
        """Line time lost to one unanswered request: the request, then the wait, then a gap."""
        return rtu_request_bytes(fc, count) * self.char_s + timeout_ms / 1000.0 + self.gap_s


def tcp_transaction_s(fc: int, count: int, network_ms: float = TCP_NETWORK_MS, turnaround_ms: float = 0.0,
                      rtu_framing: bool = False) -> float:
    """One Modbus TCP (or native RTU-over-TCP) transaction: a round trip plus the bytes on the link."""
    if rtu_framing:
        payload = rtu_request_bytes(fc, count) + rtu_response_bytes(fc, count)
    else:
        payload = tcp_request_bytes(fc, count) + tcp_response_bytes(fc, count)
    wire_s = (payload + 2 * TCP_FRAME_OVERHEAD_BYTES) * 8 / TCP_LINK_BPS
    return (network_ms + turnaround_ms) / 1000.0 + wire_s


@dataclass(frozen=True, slots=True)
class BusTiming:
    """Time model of one physical line: ``kind`` is modbus_tcp, modbus_rtu or rtu_over_tcp.

    ``line`` is the serial framing (required for modbus_rtu; for rtu_over_tcp the gateway's
    serial side, or None for a device speaking RTU framing on TCP natively).
    """

    kind: str
    line: SerialLine | None = None
    network_ms: float = TCP_NETWORK_MS
    turnaround_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("modbus_tcp", "modbus_rtu", "rtu_over_tcp"):
            raise ValueError(f"bus kind {self.kind!r} is unknown; allowed: modbus_tcp, modbus_rtu, rtu_over_tcp")
        if self.kind == "modbus_rtu" and self.line is None:
            raise ValueError("a modbus_rtu bus needs its serial line (baud, parity, data and stop bits)")

    @classmethod
    def from_bus_config(cls, bus: _BusKind, turnaround_ms: float = 0.0) -> BusTiming:
        """From the site config's bus model (``type`` plus the serial fields where it has them)."""
        kind = bus.type
        line = SerialLine.from_config(bus) if isinstance(bus, _SerialSettings) else None
        return cls(kind=kind, line=line, turnaround_ms=turnaround_ms)

    def transaction_s(self, fc: int, count: int, pause_ms: float = 0.0) -> float:
        """Bus time of one transaction, plus the device's configured pause after it."""
        pause = pause_ms / 1000.0
        if self.kind == "modbus_tcp":
            return tcp_transaction_s(fc, count, self.network_ms, self.turnaround_ms) + pause
        if self.kind == "modbus_rtu":
            assert self.line is not None  # __post_init__ requires it
            return self.line.transaction_s(fc, count, self.turnaround_ms) + pause
        if self.line is None:
            return tcp_transaction_s(fc, count, self.network_ms, self.turnaround_ms, rtu_framing=True) + pause
        return self.line.transaction_s(fc, count, self.turnaround_ms) + self.network_ms / 1000.0 + pause

    def read_s(self, table: Table, count: int, pause_ms: float = 0.0) -> float:
        """Bus time of reading ``count`` registers or bits of ``table``."""
        return self.transaction_s(READ_FC[Table(table)], count, pause_ms)

    def cycle_s(self, reads: Iterable[tuple[Table, int]], pause_ms: float = 0.0) -> float:
        """Bus time of one poll cycle: the sum of its reads, each (table, count)."""
        return sum(self.read_s(table, count, pause_ms) for table, count in reads)

    def break_even_gap(self, table: Table = Table.HOLDING) -> int:
        """The widest gap of unused registers (or bits) for which one merged read of two
        one-item points costs no more bus time than two separate reads: a useful ``max_gap``
        for this line (capped by the request limit)."""
        table = Table(table)
        limit = 2000 if table.is_bits else 125
        two_reads = 2 * self.read_s(table, 1)
        gap = 0
        while gap + 3 <= limit and self.read_s(table, gap + 3) <= two_reads:
            gap += 1
        return gap


def load_percent(cycles: Iterable[tuple[float, float]]) -> float:
    """Bus load of poll groups sharing one line: each (cycle_s, interval_ms); 100 = saturated."""
    total = 0.0
    for cycle_s, interval_ms in cycles:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        total += cycle_s / (interval_ms / 1000.0)
    return 100.0 * total
