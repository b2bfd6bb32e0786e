"""Fuzz: the real Modbus transports (TCP, RTU over TCP, and RTU on a serial line made by socat) read
from a tiny server (loopback TCP, or the other end of the pty pair) that answers
each request with hypothesis-chosen bytes: valid frames, mutated frames (flipped bytes, truncations,
wrong unit, function, byte count, transaction id, MBAP length, bad or recomputed CRC), exception
responses, garbage, silence, slow trickles, duplicates and dropped connections.

Every read must end in a decoded array (the block codec decodes it) or a ModbusError subclass: never
another exception, never a hang (the read's own timeout holds; a guard 20x longer catches a hang).
An unmutated answer must decode to exactly the registers or bits the server sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from drivers.modbus.client import (
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeout,
    RtuOverTcpTransport,
    SerialParams,
    SerialTransport,
    TcpTransport,
    Transport,
)
from drivers.modbus.codec import BlockCodec
from drivers.modbus.points import RegisterPoint, Table

TIMEOUT_S = 0.1
HANG_GUARD_S = 2.0
FUZZ = settings(max_examples=250, deadline=None, derandomize=False, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TABLES = [Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT]
FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


# ----------------------------------------------------------------------------- what the server does


@dataclass(frozen=True)
class Plan:
    """How the server answers one request; ``mutations`` apply to the valid answer of that request."""

    kind: str  # valid, exception, garbage, silence, close, double
    payload_seed: bytes = b""
    mutations: tuple[tuple, ...] = ()
    fix_checksum: bool = True  # RTU: recompute the CRC after mutating (reaches the parser's deeper checks)
    chunks: tuple[tuple[int, float], ...] = ()  # split points and pauses (s) for a slow trickle
    exception_code: int = 2
    garbage: bytes = b""

    def pristine(self, rtu: bool) -> bool:
        """An unmutated answer that arrives in time: it must be accepted and decode exactly."""
        return (self.kind == "valid" and not self.mutations and (self.fix_checksum or not rtu)
                and sum(d for _, d in self.chunks) < TIMEOUT_S / 2)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 300), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 300)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("unit"), st.integers(0, 255)),
    st.tuples(st.just("function"), st.integers(0, 255)),
    st.tuples(st.just("byte_count"), st.integers(0, 255)),
    st.tuples(st.just("tid"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("mbap_length"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("protocol"), st.integers(1, 0xFFFF)),
)
plans = st.one_of(
    st.builds(Plan, kind=st.just("valid"), payload_seed=st.binary(min_size=0, max_size=8),
              mutations=st.lists(mutation, max_size=3).map(tuple), fix_checksum=st.booleans(),
              chunks=st.lists(st.tuples(st.integers(1, 260), st.sampled_from([0.0, 0.005, 0.03, 0.08])),
                              max_size=3).map(tuple)),
    st.builds(Plan, kind=st.just("exception"), exception_code=st.integers(0, 255), fix_checksum=st.booleans()),
    st.builds(Plan, kind=st.just("garbage"), garbage=st.binary(min_size=1, max_size=300)),
    st.builds(Plan, kind=st.sampled_from(["silence", "close", "double"])),
)


def crc(frame: bytes) -> bytes:
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def payload_for(table: Table, count: int, seed: bytes) -> bytes:
    """Deterministic data bytes for a read of ``count`` registers or bits."""
    size = (count + 7) // 8 if table.is_bits else 2 * count
    seed = seed or b"\x5a"
    data = (seed * (size // len(seed) + 1))[:size]
    if table.is_bits and count % 8:
        data = data[:-1] + bytes([data[-1] & ((1 << (count % 8)) - 1)])  # unused high bits are zero
    return data


def render(plan: Plan, request: bytes, rtu: bool) -> list[tuple[bytes, float]]:
    """The bytes (and pauses after them) answering ``request`` (a whole request frame)."""
    if rtu:
        unit, pdu_req, tid = request[0], request[1:-2], 0
    else:
        tid, unit, pdu_req = struct.unpack(">H", request[:2])[0], request[6], request[7:]
    fc = pdu_req[0]
    count = struct.unpack(">H", pdu_req[3:5])[0]
    table = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}[fc]
    if plan.kind == "garbage":
        return [(plan.garbage, 0.0)]
    if plan.kind == "exception":
        pdu = bytes([fc | 0x80, plan.exception_code])
    else:
        data = payload_for(table, count, plan.payload_seed)
        pdu = bytes([fc, len(data)]) + data
    protocol, mbap_length = 0, None
    pdu = bytearray(pdu)
    for m in plan.mutations:
        if m[0] == "flip" and pdu:
            pdu[m[1] % len(pdu)] ^= m[2]
        elif m[0] == "truncate":
            del pdu[m[1] % (len(pdu) + 1):]
        elif m[0] == "append":
            pdu += m[1]
        elif m[0] == "unit":
            unit = m[1]
        elif m[0] == "function" and pdu:
            pdu[0] = m[1]
        elif m[0] == "byte_count" and len(pdu) > 1:
            pdu[1] = m[1]
        elif m[0] == "tid":
            tid = m[1]
        elif m[0] == "mbap_length":
            mbap_length = m[1]
        elif m[0] == "protocol":
            protocol = m[1]
    if rtu:
        body = bytes([unit]) + bytes(pdu)
        frame = body + (crc(body) if plan.fix_checksum else bytes([crc(body)[0] ^ 0xFF, crc(body)[1]]))
    else:
        length = len(pdu) + 1 if mbap_length is None else mbap_length
        frame = struct.pack(">HHHB", tid, protocol, length, unit) + bytes(pdu)
    if plan.kind == "double":
        return [(frame + frame, 0.0)]
    out, start = [], 0
    for cut, pause in sorted(plan.chunks):
        if start < cut < len(frame):
            out.append((frame[start:cut], pause))
            start = cut
    out.append((frame[start:], 0.0))
    return out


@dataclass
class FuzzServer:
    """A loopback server speaking MBAP or RTU framing that answers each request as ``plan`` says."""

    rtu: bool
    plan: Plan = field(default_factory=lambda: Plan("silence"))
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    served: int = 0
    server: asyncio.Server | None = None
    serial: bool = False
    serial_task: asyncio.Task | None = None

    async def start(self) -> int:
        self.idle.set()
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def start_serial(self, path: str) -> None:
        """Serve the device end of a pty pair: requests are read from it, answers written to it."""
        self.idle.set()
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        wfd = os.dup(fd)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            os.fdopen(wfd, "wb", 0))
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.serial_task = asyncio.create_task(self._client(reader, writer))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if self.rtu:
                    request = await reader.readexactly(8)  # read requests: unit, fc, address, count, crc
                else:
                    head = await reader.readexactly(7)
                    request = head + await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
                self.idle.clear()
                self.served += 1
                try:
                    if self.plan.kind == "close" and not self.serial:
                        writer.close()
                        return  # a serial line cannot be closed from the device end: it stays silent
                    if self.plan.kind not in ("silence", "close"):
                        for chunk, pause in render(self.plan, request, self.rtu):
                            writer.write(chunk)
                            await writer.drain()
                            if pause:
                                await asyncio.sleep(pause)
                finally:
                    self.idle.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.idle.set()
            writer.close()


# ----------------------------------------------------------------------------- the harness


class Harness:
    """One event loop in a thread with the server and the transport, shared by every example."""

    def __init__(self, rtu: bool, serial_dir: str | None = None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = FuzzServer(rtu, serial=serial_dir is not None)
        self.socat: subprocess.Popen | None = None
        self.transport: Transport
        if serial_dir is None:
            port = self.call(self.server.start())
            cls = RtuOverTcpTransport if rtu else TcpTransport
            self.transport = cls("fuzz", "127.0.0.1", port)
        else:
            app_end, dev_end = f"{serial_dir}/ttyAPP", f"{serial_dir}/ttyDEV"
            self.socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={app_end}", f"pty,raw,echo=0,link={dev_end}"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):  # at most 5 s for socat to make the pair
                if os.path.exists(app_end) and os.path.exists(dev_end):
                    break
                time.sleep(0.05)
            self.call(self.server.start_serial(dev_end))
            self.transport = SerialTransport("fuzz", SerialParams(port=app_end, baud=115200))
        self.outcomes: dict[str, int] = {}

    def call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def read_once(self, plan: Plan, unit: int, table: Table, address: int, count: int):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.idle.wait(), HANG_GUARD_S)  # the previous answer is out
        await asyncio.sleep(0.002)  # and delivered, so it cannot pass for this one
        if not self.transport.connected:
            await self.transport.connect(1.0)
        self.server.plan = plan
        return await asyncio.wait_for(self.transport.read(unit, table, address, count, TIMEOUT_S), HANG_GUARD_S)

    async def _shutdown(self) -> None:
        self.transport.close()
        if self.server.server is not None:
            self.server.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def close(self) -> None:
        self.call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        if self.socat is not None:
            self.socat.terminate()
            self.socat.wait(5)


@pytest.fixture(scope="module")
def tcp() -> Iterator[Harness]:
    h = Harness(rtu=False)
    yield h
    h.close()


@pytest.fixture(scope="module")
def rtu_over_tcp() -> Iterator[Harness]:
    h = Harness(rtu=True)
    yield h
    h.close()


@pytest.fixture(scope="module")
def serial_line(tmp_path_factory) -> Iterator[Harness]:
    assert shutil.which("socat"), "socat is missing: provisioning/setup.sh installs it"
    h = Harness(rtu=True, serial_dir=str(tmp_path_factory.mktemp("pty")))
    yield h
    h.close()


def codec_for(table: Table, address: int, count: int) -> BlockCodec:
    """Points spread over the block (first and last positions, several types) for decoding."""
    if table.is_bits:
        points = [RegisterPoint(0, "b0", table, address, "bool"), RegisterPoint(1, "bn", table, address + count - 1,
                                                                                 "bool")]
    else:
        points = [RegisterPoint(0, "u16", table, address, "uint16", scale=0.1)]
        if count >= 3:
            points.append(RegisterPoint(1, "f32", table, address + count - 2, "float32", order="CDAB",
                                        low=-1e6, high=1e6))
        if count >= 7:
            points.append(RegisterPoint(2, "i64", table, address + 1, "int64", order="DCBA"))
    return BlockCodec(table, address, count, points)


def check_read(h: Harness, plan: Plan, unit: int, table: Table, address: int, count: int) -> None:
    count = min(count, 2000 if table.is_bits else 125)
    try:
        result = h.call(h.read_once(plan, unit, table, address, count))
    except TimeoutError as exc:  # the guard fired: the transport's own timeout did not hold
        raise AssertionError(f"read hung beyond {HANG_GUARD_S} s with plan {plan}") from exc
    except ModbusError as exc:
        assert str(exc), "a ModbusError must say what went wrong"
        h.outcomes[type(exc).__name__] = h.outcomes.get(type(exc).__name__, 0) + 1
        assert not plan.pristine(h.server.rtu), f"an unmutated answer was refused: {exc!r}"
        if plan.kind == "silence":
            assert isinstance(exc, ModbusTimeout)
        if plan.kind == "exception" and plan.exception_code != 0 and isinstance(exc, ModbusExceptionResponse):
            assert exc.code == plan.exception_code
        return
    h.outcomes["array"] = h.outcomes.get("array", 0) + 1
    assert isinstance(result, np.ndarray) and len(result) == count
    values, quality = codec_for(table, address, count).decode(result)
    assert values.dtype == np.float64 and quality.dtype == np.uint8 and len(values) == len(quality)
    if plan.pristine(h.server.rtu):
        sent = payload_for(table, count, plan.payload_seed)
        if table.is_bits:
            expected = np.unpackbits(np.frombuffer(sent, np.uint8), bitorder="little")[:count].astype(bool)
            assert np.array_equal(result, expected)
        else:
            assert result.tobytes() == sent


reads = dict(unit=st.integers(1, 247), table=st.sampled_from(TABLES), address=st.integers(0, 60000),
             count=st.integers(1, 130))


@FUZZ
@given(plan=plans, **reads)
def test_tcp_transport_survives_any_answer(tcp, plan, unit, table, address, count):
    check_read(tcp, plan, unit, table, address, count)


@FUZZ
@given(plan=plans, **reads)
def test_rtu_over_tcp_transport_survives_any_answer(rtu_over_tcp, plan, unit, table, address, count):
    check_read(rtu_over_tcp, plan, unit, table, address, count)


@FUZZ
@given(plan=plans, **reads)
def test_serial_transport_survives_any_answer(serial_line, plan, unit, table, address, count):
    check_read(serial_line, plan, unit, table, address, count)


def known_plans(rtu: bool) -> list[Plan]:
    """One answer of each kind the transports must tell apart: data, silence, an exception, a broken frame."""
    broken = Plan("valid", mutations=(("flip", 3, 1),), fix_checksum=False) if rtu else \
        Plan("valid", mutations=(("protocol", 7),))
    return [Plan("valid"), Plan("silence"), Plan("exception", exception_code=2), broken]


def test_the_fuzz_reached_every_outcome(tcp, rtu_over_tcp, serial_line):
    """Every outcome is reached: by the fuzz tests above when they ran first, and by one known answer
    of each kind in any case, so this test stands on its own."""
    for h in (tcp, rtu_over_tcp, serial_line):
        for plan in known_plans(h.server.rtu):
            check_read(h, plan, 1, Table.HOLDING, 0, 4)
        assert h.outcomes.get("array", 0) > 0 and h.outcomes.get("ModbusTimeout", 0) > 0, h.outcomes
        assert h.outcomes.get("ModbusFrameError", 0) > 0, h.outcomes
        assert h.outcomes.get("ModbusExceptionResponse", 0) > 0, h.outcomes
        assert h.server.served >= 4
        print(f"{h.transport.kind}: {h.server.served} requests served, outcomes {h.outcomes}")
