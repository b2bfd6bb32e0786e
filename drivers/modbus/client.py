"""Modbus transports for one physical line: TCP, RTU on a serial port, RTU over TCP.

This is the only module that imports pymodbus. pymodbus builds every request PDU and
frames and unframes every ADU (MBAP header, RTU address and CRC); the transport around it
is a lean asyncio protocol with one transaction in flight, because the library's own client
spends more CPU per request than the whole rest of our poll path (see docs/decisions.md).
Read responses are turned into numpy arrays straight from the frame bytes.

One answer per request: on RTU framing (serial lines and RTU-over-TCP gateways) an answer is
taken only if its unit, function code and length match the request in flight and its CRC is
right; anything else (a slow slave's late answer, another device's frame) is discarded and
counted on the line, never decoded for, nor counted against, the device being asked. After a
timeout the line listens for up to ``drain_s`` so that a late answer arrives while nobody
is waiting for it, before the next request goes out.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymodbus.framer.rtu import FramerRTU
from pymodbus.framer.socket import FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from pymodbus.transport.serialtransport import create_serial_connection

from drivers.modbus.points import Table
from edge.core.wakeups import wake_grid

#: Answer timeouts are checked on this grid (shared loop timers): a timeout ends up to this much late.
TIMEOUT_GRID_S = 0.005

READ_FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_READ_PDU = {1: ReadCoilsRequest, 2: ReadDiscreteInputsRequest, 3: ReadHoldingRegistersRequest,
             4: ReadInputRegistersRequest}
EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target device failed to respond"}


class ModbusError(Exception):
    """Base of every error a transaction can end with."""


class ModbusTimeout(ModbusError):
    """No complete answer within the timeout."""


class ModbusConnectionError(ModbusError):
    """The line is not open (TCP refused or lost, serial port missing)."""


class ModbusFrameError(ModbusError):
    """Bytes that are not a valid answer: bad CRC, garbage, wrong unit, function or length."""


class ModbusExceptionResponse(ModbusError):
    """The device answered with a Modbus exception code."""

    def __init__(self, function_code: int, code: int):
        self.function_code = function_code
        self.code = code
        super().__init__(f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) to function {function_code}")


@dataclass(frozen=True, slots=True)
class SerialParams:
    port: str
    baud: int = 9600
    parity: str = "N"
    data_bits: int = 8
    stop_bits: int = 1


class _Protocol(asyncio.Protocol):
    """Collects bytes and hands complete frames to the waiting transaction."""

    def __init__(self, owner: Transport):
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.BaseTransport | None = None
        # made by the loop's connection factory: its loop and wake grid, looked up once per connection
        # (asyncio.get_running_loop() makes a getpid() system call on Linux, twice per request before)
        self.loop = asyncio.get_running_loop()
        self.grid = wake_grid()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.owner._on_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_lost(exc)


class Transport:
    """One Modbus line; callers must serialise transactions (the bus scheduler does)."""

    kind = "base"

    def __init__(self, name: str):
        self.name = name
        self._protocol: _Protocol | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._expect: tuple[int, int, int] = (0, 0, 0)  # unit, function code, transaction id
        self._expect_len = 0  # PDU length of a normal answer (0: not checked)
        self.drain_s = 0.0  # after a timeout (RTU framing): listen this long for the late answer
        self.discarded_frames = 0  # answers that did not match the request in flight (late or foreign)
        self.drains = 0  # timeouts after which the line was drained
        self._late: asyncio.Event | None = None
        self._bad_in_flight = 0  # frames with a bad CRC discarded while the current request waited
        self._tid = 0
        self._pdu_cache: dict[tuple[int, int, int], bytes] = {}
        self.frame_errors = 0  # bad CRC, garbage, mismatched answers
        self.late_frames = 0  # answers that arrived after their transaction timed out
        self.connects = 0
        self.last_rx = 0.0
        self._deadline = 0.0  # monotonic time by which the pending transaction must be answered
        self._timer_at = 0.0  # the grid instant of the pending timeout check (0: none)
        self._timer_gen = 0  # bumped when a pending check is superseded (re-armed earlier, closed)

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

    async def connect(self, timeout_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._timer_gen += 1
        self._timer_at = 0.0
        if self._protocol and self._protocol.transport:
            self._protocol.transport.close()
        self._protocol = None

    def _on_lost(self, exc: Exception | None) -> None:
        self._protocol = None
        if self._waiter and not self._waiter.done():
            self._waiter.set_exception(ModbusConnectionError(f"{self.name}: connection lost: {exc or 'closed'}"))

    # ------------------------------------------------------------------ framing

    framer: FramerSocket | FramerRTU

    def _frame(self, unit: int, pdu: bytes) -> bytes:
        self._tid = (self._tid + 1) & 0xFFFF or 1
        return self.framer.encode(pdu, unit, self._tid)

    def _on_data(self) -> None:
        raise NotImplementedError

    def _deliver(self, unit: int, tid: int, pdu: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.late_frames += 1
            if self._late is not None:
                self._late.set()
            return
        exp_unit, exp_fc, exp_tid = self._expect
        if not exp_tid and not self._matches(unit, pdu):
            self.discarded_frames += 1  # a late or foreign answer on an RTU line: not ours, keep waiting
            self.late_frames += 1
            return
        if (exp_tid and tid and tid != exp_tid) or unit != exp_unit or not pdu or (pdu[0] & 0x7F) != exp_fc:
            self.frame_errors += 1
            if tid and exp_tid and tid != exp_tid:
                self.late_frames += 1
                return  # an old answer on TCP: keep waiting for ours
            waiter.set_exception(ModbusFrameError(
                f"unexpected answer: unit {unit}, function {pdu[0] if pdu else '-'} "
                f"(expected unit {exp_unit}, function {exp_fc})"))
            return
        self.last_rx = time.monotonic()
        waiter.set_result(pdu)

    def _matches(self, unit: int, pdu: bytes) -> bool:
        """Is this RTU answer the one to the request in flight (unit, function, length)?"""
        exp_unit, exp_fc, _ = self._expect
        if unit != exp_unit or not pdu or (pdu[0] & 0x7F) != exp_fc:
            return False
        if pdu[0] & 0x80:
            return len(pdu) == 2  # an exception answer: function | 0x80, code
        return not self._expect_len or len(pdu) == self._expect_len

    # ------------------------------------------------------------------ transactions

    async def transact(self, unit: int, pdu: bytes, timeout_s: float, expect_len: int = 0) -> bytes:
        """Send one request PDU and return the answer's PDU (function code first).

        ``expect_len``: the PDU length of a normal answer, when the request fixes it (reads):
        on RTU framing an answer of another length is not ours and is discarded.
        """
        if not self.connected:
            raise ModbusConnectionError(f"{self.name}: not connected")
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        self._before_send()
        waiter = protocol.loop.create_future()
        self._waiter = waiter
        frame = self._frame(unit, pdu)
        self._expect = (unit, pdu[0], self._tid if self.kind == "tcp" else 0)
        self._expect_len = expect_len
        self._bad_in_flight = 0
        protocol.transport.write(frame)  # type: ignore[attr-defined]
        self._arm_timer(time.monotonic() + timeout_s)
        try:
            answer = await waiter
        except ModbusTimeout:
            self._waiter = None
            await self._drain()
            if self._bad_in_flight:  # no valid answer, but damaged bytes came: a bad line or device
                raise ModbusFrameError(f"no valid answer: {self._bad_in_flight} damaged frame(s) "
                                       "(bad CRC or garbage)") from None
            raise
        finally:
            self._waiter = None
        if answer[0] & 0x80:
            raise ModbusExceptionResponse(pdu[0], answer[1] if len(answer) > 1 else 0)
        return answer

    def _arm_timer(self, deadline: float) -> None:
        """One pending timeout check per line, re-armed lazily, on the shared wake grid (a loop timer
        per request cost more than the request; lines due in the same few ms share one timer)."""
        self._deadline = deadline
        if self._timer_at and self._timer_at <= deadline:
            return  # it fires before our deadline and re-arms itself for it
        at = math.ceil(deadline / TIMEOUT_GRID_S) * TIMEOUT_GRID_S
        self._timer_gen += 1
        self._timer_at = at
        grid = self._protocol.grid if self._protocol is not None else wake_grid()
        grid.call_at(at, self._on_timer, self._timer_gen)

    def _on_timer(self, gen: int) -> None:
        if gen != self._timer_gen:
            return  # superseded by an earlier check, or the line was closed
        self._timer_at = 0.0
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if time.monotonic() >= self._deadline:
            waiter.set_exception(ModbusTimeout("no answer"))
        else:
            self._arm_timer(self._deadline)

    async def _drain(self) -> None:
        """After a timeout: give a slow device's late answer up to ``drain_s`` to arrive (and be
        discarded) while the line is still ours, so it cannot land in the next transaction."""
        if self.drain_s <= 0 or not self.connected:
            return
        self.drains += 1
        self._late = asyncio.Event()
        try:
            await asyncio.wait_for(self._late.wait(), self.drain_s)
        except TimeoutError:
            pass
        finally:
            self._late = None
        if self._protocol and self._protocol.buffer:  # a partial late frame: drop it with the rest
            self.late_frames += 1
            self._protocol.buffer.clear()

    def _before_send(self) -> None:
        """Drop stale bytes left by a timed-out transaction so they cannot pass for our answer."""
        if self._protocol and self._protocol.buffer:
            self.late_frames += 1
            self._protocol.buffer.clear()

    def read_pdu(self, table: Table, address: int, count: int) -> bytes:
        fc = READ_FC[table]
        key = (fc, address, count)
        pdu = self._pdu_cache.get(key)
        if pdu is None:
            request = _READ_PDU[fc](address=address, count=count)
            pdu = bytes([fc]) + request.encode()
            if len(self._pdu_cache) < 4096:
                self._pdu_cache[key] = pdu
        return pdu

    async def read(self, unit: int, table: Table, address: int, count: int, timeout_s: float) -> np.ndarray:
        """Read a block: big-endian 16-bit registers (a view of the answer), or bools for bit tables."""
        size = (count + 7) // 8 if table.is_bits else 2 * count
        answer = await self.transact(unit, self.read_pdu(table, address, count), timeout_s, 2 + size)
        byte_count = answer[1] if len(answer) > 1 else -1
        data = answer[2:]
        if table.is_bits:
            if byte_count != (count + 7) // 8 or len(data) != byte_count:
                raise ModbusFrameError(f"answer has {len(data)} data bytes for {count} bits")
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:count]
            return bits.astype(bool)
        if byte_count != 2 * count or len(data) != byte_count:
            self.frame_errors += 1
            raise ModbusFrameError(f"answer has {len(data)} data bytes for {count} registers")
        return np.frombuffer(data, dtype=">u2")  # a view of the frame: the codec gathers bytes from it

    async def write_registers(self, unit: int, address: int, values: Sequence[int], timeout_s: float) -> None:
        request: ModbusPDU
        if len(values) == 1:
            request = WriteSingleRegisterRequest(address=address, registers=[int(values[0])])
        else:
            request = WriteMultipleRegistersRequest(address=address, registers=[int(v) for v in values])
        await self._write(unit, request, timeout_s)

    async def write_coils(self, unit: int, address: int, values: Sequence[bool], timeout_s: float) -> None:
        request: ModbusPDU
        if len(values) == 1:
            request = WriteSingleCoilRequest(address=address, bits=[bool(values[0])])
        else:
            request = WriteMultipleCoilsRequest(address=address, bits=[bool(v) for v in values])
        await self._write(unit, request, timeout_s)

    async def _write(self, unit: int, request: ModbusPDU, timeout_s: float) -> None:
        pdu = bytes([request.function_code]) + request.encode()
        answer = await self.transact(unit, pdu, timeout_s)
        if answer[1:5] != pdu[1:5]:  # FC5/6 echo address+value, FC15/16 echo address+count
            raise ModbusFrameError("write answer does not echo the request")


class TcpTransport(Transport):
    """Modbus TCP (MBAP framing)."""

    kind = "tcp"

    def __init__(self, name: str, host: str, port: int):
        super().__init__(name)
        self.host, self.port = host, port
        self.framer = FramerSocket(DecodePDU(is_server=False))

    async def connect(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port), timeout_s)
        except OSError as exc:  # includes TimeoutError
            raise ModbusConnectionError(f"{self.name}: cannot connect to {self.host}:{self.port}: "
                                        f"{exc.strerror or 'timeout'}") from None
        self._protocol = protocol
        self.connects += 1

    def _on_data(self) -> None:
        buf = self._protocol.buffer  # type: ignore[union-attr]
        while len(buf) >= 8:
            used, unit, tid, pdu = self.framer.decode(bytes(buf))
            if not used:
                if int.from_bytes(buf[2:4], "big") != 0:  # not MBAP: the stream is lost
                    self.frame_errors += 1
                    buf.clear()
                    waiter = self._waiter
                    if waiter and not waiter.done():
                        waiter.set_exception(ModbusFrameError("invalid MBAP header"))
                return
            del buf[:used]
            self._deliver(unit, tid, pdu)


class _RtuFraming:
    """RTU framing shared by serial lines and RTU-over-TCP gateways."""

    framer: FramerSocket | FramerRTU  # an FramerRTU (set by the subclasses); declared as Transport declares it
    _protocol: _Protocol | None

    def _on_data(self) -> None:
        buf = self._protocol.buffer  # type: ignore[union-attr]
        while len(buf) >= 4:
            used, unit, pdu, crc_ok = self._split(bytes(buf))
            if not used:
                return
            del buf[:used]
            if not crc_ok:
                self.frame_errors += 1  # type: ignore[attr-defined]
                waiter = self._waiter  # type: ignore[attr-defined]
                if unit != self._expect[0]:  # type: ignore[attr-defined]
                    self.discarded_frames += 1  # type: ignore[attr-defined]
                    self._bad_in_flight += 1  # type: ignore[attr-defined]
                    continue  # not even addressed as ours: a foreign or late frame; keep waiting
                if waiter and not waiter.done():
                    waiter.set_exception(ModbusFrameError("bad CRC or garbage bytes"))
                return
            self._deliver(unit, 0, pdu)  # type: ignore[attr-defined]

    def _split(self, data: bytes) -> tuple[int, int, bytes, bool]:
        """The first RTU frame in ``data``: (bytes used, unit, PDU, CRC right); used 0: wait for more.

        Like pymodbus' ``FramerRTU.decode`` (whose frame sizes and CRC it uses), but it consumes
        only that frame: the library's decoder takes the whole buffer, so an answer that follows
        a late one in the same read would be lost.
        """
        decoder = self.framer.decoder
        n = len(data)
        for skip in range(n):
            if n - skip < FramerRTU.MIN_SIZE:
                return 0, 0, b"", False
            if not (pdu_class := decoder.lookupPduClass(data[skip:])):
                continue
            if not (size := pdu_class.calculateRtuFrameSize(data[skip:])):
                return 0, 0, b"", False
            if n < skip + size:
                return 0, 0, b"", False
            frame = data[skip:skip + size]
            crc_ok = FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))
            return skip + size, frame[0], frame[1:-2], crc_ok
        return 0, 0, b"", False


class RtuOverTcpTransport(_RtuFraming, TcpTransport):
    """RTU frames through a serial-to-Ethernet gateway: one transaction at a time, no MBAP."""

    kind = "rtu_over_tcp"

    def __init__(self, name: str, host: str, port: int):
        super().__init__(name, host, port)
        self.framer = FramerRTU(DecodePDU(is_server=False))


class SerialTransport(_RtuFraming, Transport):
    """Modbus RTU on a serial port (RS-485)."""

    kind = "rtu"

    def __init__(self, name: str, params: SerialParams):
        super().__init__(name)
        self.params = params
        self.framer = FramerRTU(DecodePDU(is_server=False))

    async def connect(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        p = self.params
        try:
            transport, protocol = await create_serial_connection(
                loop, lambda: _Protocol(self), p.port, baudrate=p.baud, bytesize=p.data_bits,
                parity=p.parity, stopbits=p.stop_bits, timeout=0)
            assert isinstance(protocol, _Protocol)
            for _ in range(10):  # the transport announces itself through two call_soon hops
                if protocol.transport is not None:
                    break
                await asyncio.sleep(0)
        except OSError as exc:
            raise ModbusConnectionError(f"{self.name}: cannot open {p.port}: {exc.strerror}") from None
        serial_port = getattr(transport, "sync_serial", None)  # pymodbus's SerialTransport: the pyserial port
        if serial_port is None:
            raise ModbusConnectionError(f"{self.name}: cannot open serial port {p.port}")
        serial_port.reset_input_buffer()  # bytes left on the line while it was closed
        self._protocol = protocol
        self.connects += 1
