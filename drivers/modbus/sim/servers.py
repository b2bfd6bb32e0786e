"""Modbus endpoints of the simulated plant: TCP, RTU over TCP and serial (socat pty) servers.

pymodbus does the framing (``FramerSocket``/``FramerRTU``: MBAP, CRC, frame sizes) and the
PDU handling (``DecodePDU`` and each request's ``datastore_update``); these small asyncio
servers add what pymodbus's own server cannot: several unit ids per endpoint on shared
numpy memory, fault injection per device, reply pacing at a serial line's character time,
and a port or line that can disappear and come back.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from .faults import Fault, FaultSet
from .image import FUNCTION_TABLES, DeviceImage
from .spec import RtuOverTcpTransport, SerialTransport, SimDeviceSpec, TcpTransport

log = logging.getLogger(__name__)
MAX_ADU = 260  # the largest Modbus frame (MBAP: 7 + 253)
SOCAT_START_TIMEOUT_S = 5.0
BROADCAST_FUNCTIONS = (5, 6, 15, 16)  # writes: the only requests a broadcast may carry
READ_LOG_SIZE = 20_000  # answered reads remembered per device (the ground truth of SimPlant.value_served)


class ServedRead(NamedTuple):
    """One read the device answered: when its registers were taken, which ones, and the simulated
    time of the signal values they held then."""

    ns: int  # wall clock (time.time_ns()) when the registers were read for the reply
    table: str  # Table value
    start: int
    end: int  # exclusive
    t: float  # simulated seconds of the device's last signal update


@dataclass(slots=True)
class DeviceStats:
    """What a simulated device saw and did; read by tests to check retries and faults."""

    requests: int = 0
    replies: int = 0
    exceptions: dict[int, int] = field(default_factory=dict)
    dropped: int = 0  # requests left unanswered (silence, offline)
    corrupted: int = 0  # replies sent as garbage or with a bad CRC
    writes: int = 0


class SimDevice:
    """One simulated device at run time: spec, register image, faults and counters."""

    def __init__(self, spec: SimDeviceSpec, image: DeviceImage, rng: random.Random) -> None:
        self.spec = spec
        self.image = image
        self.faults = FaultSet(rng)
        self.stats = DeviceStats()
        self.clock: Callable[[], float] = _no_signals  # simulated time of the signal registers (SimPlant sets it)
        self.reads: deque[ServedRead] = deque(maxlen=READ_LOG_SIZE)
        self.on_write: Callable[[str, int, int], None] | None = None  # (table, address, count) after a client write

    @property
    def name(self) -> str:
        return self.spec.name


def _no_signals() -> float:
    return 0.0


class _Datastore:
    """The two methods pymodbus PDUs call in ``datastore_update``, backed by one device image.

    Every answered read is remembered (:class:`ServedRead`) and every accepted write reported,
    so that the plant can say which value a client was given at any instant."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):  # noqa: N802
        table = FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        device = self.device
        values = device.image.read(table, address, count)
        if not isinstance(values, ExcCodes):
            device.reads.append(ServedRead(time.time_ns(), table.value, address, address + count, device.clock()))
        return values

    async def async_setValues(self, device_id: int, func_code: int, address: int, values):  # noqa: N802
        table = FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = list(values)
        rc = self.device.image.write(table, address, values)
        if rc is None:
            self.device.stats.writes += 1
            if self.device.on_write is not None:
                self.device.on_write(table.value, address, len(values))
        return rc


@dataclass(slots=True)
class Reply:
    frame: bytes
    delay_s: float


class Responder:
    """Turns one decoded request into the reply frame for the unit it addresses (or none)."""

    def __init__(self, devices: Sequence[SimDevice], framer: FramerBase, gateway_errors: bool) -> None:
        self.devices = {d.spec.unit_id: d for d in devices}
        self.stores = {d.spec.unit_id: _Datastore(d) for d in devices}
        self.framer = framer
        self.gateway_errors = gateway_errors  # TCP: unknown unit -> exception 11; RTU: silence
        self._rng = random.Random(1)

    async def respond(self, pdu: ModbusPDU | BadRequest) -> Reply | None:
        """The reply to one request, or None for no reply.

        Unit 0 on RTU is a broadcast: writes reach every device, nobody answers. On Modbus TCP a
        port with a single device also answers units 0 and 255 (as most TCP devices do).
        """
        fc = pdu.function_code
        if pdu.dev_id == 0 and not self.gateway_errors:
            if isinstance(pdu, ModbusPDU) and fc in BROADCAST_FUNCTIONS:
                for unit, store in self.stores.items():
                    if not self.devices[unit].faults.offline:
                        await pdu.datastore_update(store, unit)  # type: ignore[arg-type]
            return None
        device = self.devices.get(pdu.dev_id)
        if device is None and self.gateway_errors and pdu.dev_id in (0, 255) and len(self.devices) == 1:
            device = next(iter(self.devices.values()))
        if device is None:
            if not self.gateway_errors:
                return None
            return Reply(self._frame(ExceptionResponse(fc, ExcCodes.GATEWAY_NO_RESPONSE), pdu), 0.0)
        stats = device.stats
        stats.requests += 1
        table = FUNCTION_TABLES.get(fc)
        if isinstance(pdu, BadRequest):
            decision = device.faults.decide(None, 0, 0)
        else:
            decision = device.faults.decide(table, pdu.address, pdu.count or len(pdu.bits) or 1)
        if decision.drop:
            stats.dropped += 1
            return None
        if isinstance(pdu, BadRequest):
            response: ModbusPDU = ExceptionResponse(fc, pdu.exception)
        elif decision.exception:
            response = ExceptionResponse(fc, decision.exception)
        elif table is None:
            response = ExceptionResponse(fc, ExcCodes.ILLEGAL_FUNCTION)
        else:
            try:
                response = await pdu.datastore_update(self.stores[device.spec.unit_id], pdu.dev_id)  # type: ignore[arg-type]
            except (ModbusException, ValueError) as exc:
                log.debug("device %s: request failed: %s", device.name, exc)
                response = ExceptionResponse(fc, ExcCodes.ILLEGAL_VALUE)
        if response.function_code & 0x80:
            code = int(response.exception_code)
            stats.exceptions[code] = stats.exceptions.get(code, 0) + 1
        frame = self._frame(response, pdu)
        if decision.corrupt is Fault.BAD_CRC:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        elif decision.corrupt is Fault.GARBAGE:
            frame = bytes(self._rng.randrange(256) for _ in range(len(frame)))
        if decision.corrupt:
            stats.corrupted += 1
        stats.replies += 1
        return Reply(frame, decision.delay_s)

    def _frame(self, response: ModbusPDU, request: ModbusPDU | BadRequest) -> bytes:
        response.dev_id = request.dev_id
        response.transaction_id = request.transaction_id
        return self.framer.buildFrame(response)


@dataclass(slots=True)
class BadRequest:
    """A well-framed request whose PDU pymodbus cannot decode (unknown function, count out of limits)."""

    dev_id: int
    transaction_id: int
    function_code: int
    exception: int  # 1: illegal function; 3: illegal data value (a known function with bad fields)


def split_frames(framer: FramerBase, buf: bytes) -> tuple[list[tuple[ModbusPDU | BadRequest, int]], bytes]:
    """Decode every complete request in ``buf``: [(request, its frame length)] and the unconsumed rest.

    Frames are cut by pymodbus's framer (MBAP length, or RTU size and CRC: a frame with a bad
    CRC is dropped, as a device would) and decoded by its ``DecodePDU``.
    """
    out: list[tuple[ModbusPDU | BadRequest, int]] = []
    while buf:
        used, dev_id, tid, data = framer.decode(buf)
        if used == 0:
            if len(buf) > 2 * MAX_ADU:  # no frame can start here: drop what cannot be parsed
                buf = b""
            break
        buf = buf[used:]
        if not data:
            continue
        pdu = framer.decoder.decode(data)
        if pdu is None:
            known = data[0] in DecodePDU.pdu_table
            out.append((BadRequest(dev_id, tid, data[0], 3 if known else 1), used))
            continue
        pdu.dev_id, pdu.transaction_id = dev_id, tid
        out.append((pdu, used))
    return out, buf


class Endpoint:
    """Base of the three servers: the devices it answers for and their responder."""

    label = "endpoint"

    def __init__(self, devices: Sequence[SimDevice]) -> None:
        self.devices = list(devices)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def address(self) -> str | tuple[str, int]:
        raise NotImplementedError


class TcpEndpoint(Endpoint):
    """A TCP listener with MBAP framing (Modbus TCP) or RTU framing (RTU over TCP, a gateway).

    RTU over TCP answers one transaction at a time across all connections (the serial line
    behind a gateway), paced at the gateway's baud rate when one is given. When every device
    of the endpoint is offline the listener closes (connections refused, open ones dropped).
    """

    def __init__(self, devices: Sequence[SimDevice], transport: TcpTransport | RtuOverTcpTransport) -> None:
        super().__init__(devices)
        self.transport = transport
        self.rtu = isinstance(transport, RtuOverTcpTransport)
        self.label = f"{transport.kind}://{transport.host}:{transport.port}"
        self.host, self.port = transport.host, transport.port
        self._server: asyncio.Server | None = None
        self._sock: socket.socket | None = None
        self._reopen: asyncio.Task | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._conns: set[asyncio.Task] = set()
        self._line = asyncio.Lock()
        self._char_s = (
            _char_time(transport.baud, transport.parity, transport.data_bits, transport.stop_bits)
            if isinstance(transport, RtuOverTcpTransport) and transport.baud
            else 0.0
        )

    def _framer(self) -> FramerBase:
        decoder = DecodePDU(is_server=True)
        return FramerRTU(decoder) if self.rtu else FramerSocket(decoder)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``host:port`` (port 0: a free one), or serve on ``sock``, a listening socket held for it."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        else:
            # SO_REUSEPORT: a port reserved for this simulator by another process (plant.reserve_port)
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True,
                                                      reuse_port=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._reopen is not None:
            await self._reopen
            self._reopen = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        self._conns.clear()

    def refresh_now(self) -> None:
        """Close the listener when every device is offline, reopen it when one is back.

        Both happen synchronously (the socket is bound and listening before this returns;
        connections wait in the backlog until the server task picks them up).
        """
        gone = all(d.faults.offline for d in self.devices)
        if gone and self._server is not None:
            self._server.close()
            self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        elif not gone and self._server is None and self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as in start()
            sock.bind((self.host, self.port))
            sock.listen(100)
            self._sock = sock
            self._reopen = asyncio.get_running_loop().create_task(self._listen(sock))

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self._sock = None

    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        framer = self._framer()
        responder = Responder(self.devices, framer, gateway_errors=not self.rtu)
        buf = b""
        try:
            while data := await reader.read(4096):
                buf += data
                if not self.rtu and len(buf) >= 4 and buf[2:4] != b"\x00\x00":
                    break  # not Modbus TCP (protocol id must be 0): drop the connection like a device
                pdus, buf = split_frames(framer, buf)
                for pdu, frame_len in pdus:
                    await self._answer(responder, pdu, frame_len, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the endpoint stops: end quietly (asyncio's stream callback would log a cancel)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._conns.discard(task)
            writer.transport.abort()

    async def _answer(
        self, responder: Responder, pdu: ModbusPDU | BadRequest, request_len: int, writer: asyncio.StreamWriter
    ) -> None:
        if not self.rtu:
            reply = await responder.respond(pdu)
            if reply is not None:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                writer.write(reply.frame)
                await writer.drain()
            return
        async with self._line:  # one transaction at a time on the gateway's serial side
            t0 = time.monotonic()
            reply = await responder.respond(pdu)
            if reply is None:
                return
            wire_s = self._char_s * (request_len + len(reply.frame) + 3.5)
            await asyncio.sleep(max(0.0, t0 + wire_s + reply.delay_s - time.monotonic()))
            writer.write(reply.frame)
            await writer.drain()


def _char_time(baud: int, parity: str, data_bits: int, stop_bits: int) -> float:
    return (1 + data_bits + (0 if parity == "N" else 1) + stop_bits) / baud


class SerialEndpoint(Endpoint):
    """An RS-485 line: a socat pty pair; the appliance opens ``path``, this serves ``path.sim``.

    Replies are complete only after the line would have carried them: the request's and the
    reply's characters at the line's character time plus the 3.5-character gap and the
    device's turnaround. ``unplug()`` kills socat (the appliance's end vanishes and its open
    descriptor fails), ``plug()`` makes a fresh pair at the same paths.
    """

    def __init__(self, devices: Sequence[SimDevice], transport: SerialTransport) -> None:
        super().__init__(devices)
        self.transport = transport
        self.path = transport.path
        self.sim_path = transport.path + ".sim"
        self.label = f"serial://{self.path}"
        self._char_s = transport.char_time_s
        self._proc: asyncio.subprocess.Process | None = None
        self._fd: int | None = None
        self._task: asyncio.Task | None = None
        self._data = asyncio.Queue[bytes]()
        self.plugged = False

    def address(self) -> str:
        return self.path

    async def start(self) -> None:
        await self.plug()

    async def stop(self) -> None:
        await self.unplug()

    async def plug(self) -> None:
        """Create the pty pair and serve the simulator's end."""
        if self.plugged:
            return
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed: serial simulation needs it (apt-get install socat)")
        for p in (self.path, self.sim_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self._proc = await asyncio.create_subprocess_exec(
            socat, f"pty,raw,echo=0,link={self.path}", f"pty,raw,echo=0,link={self.sim_path}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + SOCAT_START_TIMEOUT_S
        while not (os.path.exists(self.path) and os.path.exists(self.sim_path)):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                err = (await self._proc.stderr.read()).decode(errors="replace") if self._proc.stderr else ""
                await self._kill()
                raise RuntimeError(f"socat did not create {self.path} and {self.sim_path}: {err.strip()}")
            await asyncio.sleep(0.01)
        self._fd = os.open(self.sim_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd, termios.TCSANOW)
        self._data = asyncio.Queue()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self._task = asyncio.create_task(self._serve(), name=f"sim-serial-{self.path}")
        self.plugged = True

    async def unplug(self) -> None:
        """Close our end and kill socat: the appliance's path disappears."""
        self.plugged = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        await self._kill()

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 2.0)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        for p in (self.path, self.sim_path):
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(p):
                    os.unlink(p)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096) if self._fd is not None else b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._data.put_nowait(data)

    async def _serve(self) -> None:
        framer = FramerRTU(DecodePDU(is_server=True))
        responder = Responder(self.devices, framer, gateway_errors=False)
        buf = b""
        while True:
            buf += await self._data.get()
            t0 = time.monotonic()
            pdus, buf = split_frames(framer, buf)
            for pdu, request_len in pdus:
                reply = await responder.respond(pdu)
                if reply is None:
                    continue
                wire_s = self._char_s * (request_len + len(reply.frame) + 3.5) + self.transport.turnaround_ms / 1000
                await asyncio.sleep(max(0.0, t0 + wire_s + reply.delay_s - time.monotonic()))
                self._write(reply.frame)
                t0 = time.monotonic()

    def _write(self, frame: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, frame)
        except BlockingIOError:
            log.warning("serial %s: output buffer full, reply dropped", self.path)
        except OSError as exc:
            log.warning("serial %s: write failed: %s", self.path, exc)
