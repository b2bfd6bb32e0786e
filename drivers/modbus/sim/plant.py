"""The simulated plant, in process: devices, their servers, the signal update and the control API.

Usage (from an asyncio loop)::

    plant = SimPlant(specs, seed=1)
    await plant.start()
    host, port = plant.address("meter1")   # a TCP transport with port 0 gets a free port of its own
    plant.set_fault("meter1", "busy", probability=0.5)
    ...
    await plant.stop()
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from drivers.modbus.points import RegisterPoint, Table

from .encoding import held_text, held_value
from .faults import Fault, FaultSpec
from .image import DeviceImage, PlantMemory
from .physics import Drive, PlantPhysics
from .servers import DeviceStats, Endpoint, SerialEndpoint, SimDevice, TcpEndpoint
from .signals import BankEntry, SignalBank, default_signal, point_rng
from .spec import SerialTransport, SimDeviceSpec, TcpTransport

log = logging.getLogger(__name__)
_SPECS = TypeAdapter(list[SimDeviceSpec])


@dataclass(slots=True)
class UpdateStats:
    """Cost of the vectorised signal update (for benchmarks and the status line)."""

    ticks: int = 0
    points: int = 0
    busy_s: float = 0.0  # total CPU-ish wall time spent inside ticks
    last_tick_ms: float = 0.0
    late_ticks: int = 0  # ticks that started more than one interval late


def endpoint_key(spec: SimDeviceSpec) -> tuple:
    """Devices with the same key share one server: a serial path, or a TCP host and non-zero port."""
    t = spec.transport
    if isinstance(t, SerialTransport):
        return ("serial", t.path)
    if t.port == 0:  # a free port of its own, or shared by the devices naming the same share
        return (t.kind, t.host, 0, ("share", t.share) if t.share else spec.name)
    return ("tcp", t.host, t.port)


def group_endpoints(specs: Sequence[SimDeviceSpec]) -> dict[tuple, list[SimDeviceSpec]]:
    """Group devices by endpoint and check that each group can be one server."""
    groups: dict[tuple, list[SimDeviceSpec]] = {}
    for spec in specs:
        groups.setdefault(endpoint_key(spec), []).append(spec)
    for key, members in groups.items():
        first = members[0].transport
        for other in members[1:]:
            if other.transport != first:
                raise ValueError(
                    f"devices {members[0].name!r} and {other.name!r} share {key[0]} endpoint {key[1:]} but "
                    f"declare different transports ({first!r} vs {other.transport!r}); one line or port "
                    "has one set of parameters"
                )
        units: dict[int, str] = {}
        for m in members:
            if m.unit_id in units:
                raise ValueError(
                    f"devices {units[m.unit_id]!r} and {m.name!r} both use unit id {m.unit_id} on {key[0]} "
                    f"endpoint {key[1:]}; unit ids on one line or port must differ"
                )
            units[m.unit_id] = m.name
    return groups


class SimPlant:
    """Simulated Modbus devices served from this process's asyncio loop.

    ``specs`` are :class:`SimDeviceSpec` objects (or dicts validated into them). ``seed`` makes
    the default signals and the noise reproducible; ``start_s`` is the simulated time at which the
    plant starts (0: the line's first start comes after 20 s). Points with ``kind: model`` signals take
    their values from the devices' physical models (``self.physics``), which read the devices'
    writable points (setpoints, commands) as inputs. ``sockets`` maps TCP ports of the specs to
    listening sockets already bound to them (:func:`listening_socket`); ports held with
    :func:`hold_port` in this process are taken too. Those endpoints serve on the socket they are
    given instead of binding, so a port chosen before the configuration is written stays held
    from its choice to its use.
    """

    def __init__(self, specs: Iterable[SimDeviceSpec | dict[str, Any]], *, seed: int = 0, start_s: float = 0.0,
                 sockets: Mapping[int, socket.socket] | None = None) -> None:
        self.specs: list[SimDeviceSpec] = _SPECS.validate_python(list(specs))
        self._held = dict(sockets or {})
        self._check_names(self.specs)
        self.groups = group_endpoints(self.specs)
        self.seed = seed
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s must be a finite number of seconds >= 0, got {start_s!r}")
        self.start_s = float(start_s)  # simulated time at start(): a test can begin with the line running
        self.memory = PlantMemory([s.points for s in self.specs])
        self.devices: dict[str, SimDevice] = {}
        self._pins: dict[tuple[str, str], tuple[SignalBank, int]] = {}
        banks: dict[int, list[BankEntry]] = {}
        static: list[BankEntry] = []
        self._texts: list[tuple[DeviceImage, RegisterPoint, str | float]] = []  # set once at start
        self.physics = self._build_physics(self.specs, seed)
        for index, spec in enumerate(self.specs):
            image = DeviceImage(self.memory, index, spec.points)
            self.devices[spec.name] = SimDevice(spec, image, random.Random(f"{seed}/{spec.name}"))
            for point in spec.points:
                signal = (spec.signals or {}).get(point.name) or default_signal(
                    point, point_rng(seed, spec.name, point.name)
                )
                slot = -1
                if signal.kind == "model":
                    try:
                        slot = self.physics.slot(spec.name, signal.output or point.name)
                    except KeyError as exc:
                        raise ValueError(f"point {point.name!r}: {exc.args[0]}; give 'output' in its sim hint") from None
                entry = BankEntry(image, point, signal, slot)
                if point.dtype == "string":
                    self._texts.append((image, point, str(signal.value)))
                elif point.dtype == "bool" and point.count > 1:  # a bit of a 32/64-bit word: set once
                    value = signal.value if signal.kind == "constant" else 0.0
                    self._texts.append((image, point, value))
                elif point.writable or signal.kind == "constant":
                    static.append(entry)
                else:
                    banks.setdefault(spec.update_interval_ms, []).append(entry)
        self._static = SignalBank(static, seed)
        self.banks = {ms: SignalBank(entries, seed + ms, self.physics) for ms, entries in banks.items()}
        self._bind_inputs()
        self._index_pins()
        self._defaults = self._non_signal_values(static)
        self._changes: dict[tuple[str, str], list[tuple[int, float | str | None]]] = {}
        self._bind_clocks()
        self.endpoints: list[Endpoint] = []
        self._by_device: dict[str, Endpoint] = {}
        self._tasks: list[asyncio.Task] = []
        self._t0 = time.monotonic()
        self.update_stats = UpdateStats(points=sum(len(b.kind) for b in self.banks.values()))
        self._initialise_values()

    @staticmethod
    def _build_physics(specs: Sequence[SimDeviceSpec], seed: int) -> PlantPhysics:
        """One model per device whose points name one (``kind: model``); params merged over its points."""
        physics = PlantPhysics(seed)
        for spec in specs:
            hints = [(n, s) for n, s in (spec.signals or {}).items() if s.kind == "model"]
            kinds = sorted({s.model for _, s in hints})
            if len(kinds) > 1:
                raise ValueError(f"device {spec.name!r}: its points name several models {kinds}; one device, one model")
            if not kinds:
                continue
            params: dict[str, float | str] = {}
            for point, signal in hints:
                for key, value in signal.params.items():
                    if key in params and params[key] != value:
                        raise ValueError(f"device {spec.name!r}: model parameter {key!r} is {params[key]!r} on one "
                                         f"point and {value!r} on {point!r}; give it once")
                    params[key] = value
            model = physics.add_model(spec.name, kinds[0], params)
            for name in model.i:  # writable points of the device that the model reads: their start value
                start = (spec.signals or {}).get(name)
                if start is not None and start.kind == "constant" and isinstance(start.value, float | int):
                    physics.set_initial_input(spec.name, name, float(start.value))
        return physics

    def _bind_inputs(self) -> None:
        """Models read their device's points of an input's name (and a drive its run point) at each tick."""
        for name, model in self.physics.models.items():
            image = self.devices[name].image
            for input_name in model.i:
                if input_name in image.points:
                    self.physics.bind_input(name, input_name, self._reader(image, image.points[input_name]))
            if isinstance(model, Drive) and model.run_input:
                device, _, point = model.run_input.partition(".")
                if device not in self.devices or point not in self.devices[device].image.points:
                    raise ValueError(f"device {name!r}: model parameter run names {model.run_input!r}, which is not "
                                     "a simulated point (DEVICE.POINT)")
                other = self.devices[device].image
                self.physics.bind_input(name, "run", self._reader(other, other.points[point]))

    @staticmethod
    def _reader(image: DeviceImage, point: RegisterPoint) -> Callable[[], float]:
        """Read a point's engineering value, decoding only when its registers changed (cheap per tick)."""
        view = image.view(point.table)
        span = slice(point.address, point.address + 1 if point.table.is_bits or point.dtype == "bool" else point.end)
        last: list = [None, math.nan]

        def read() -> float:
            raw = view[span].tobytes()
            if raw != last[0]:
                value = image.get_point(point)
                last[0], last[1] = raw, float(value) if not isinstance(value, str) else math.nan
            return last[1]
        return read

    @staticmethod
    def _check_names(specs: Sequence[SimDeviceSpec]) -> None:
        names = [s.name for s in specs]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate device names: {dupes}; every simulated device needs its own name")

    def _index_pins(self) -> None:
        owner = {id(d.image): name for name, d in self.devices.items()}
        for bank in self.banks.values():
            for i, e in enumerate(bank.entries):
                self._pins[(owner[id(e.image)], e.point.name)] = (bank, i)

    def _non_signal_values(self, static: list[BankEntry]) -> dict[tuple[str, str], float | str]:
        """What the points without a regenerated signal hold from the start (until a write)."""
        owner = {id(d.image): name for name, d in self.devices.items()}
        out: dict[tuple[str, str], float | str] = {}
        for e, value in zip(static, self._static.values(self.start_s).tolist(), strict=True):
            out[(owner[id(e.image)], e.point.name)] = held_value(e.point, value)
        for image, point, value in self._texts:
            key = (owner[id(image)], point.name)
            out[key] = held_text(point, value) if point.dtype == "string" else (1.0 if float(value) else 0.0)
        return out

    def _bind_clocks(self) -> None:
        """Each device reports the simulated time of its signals with every answered read, and
        its accepted writes, so that :meth:`value_served` knows what a client was given."""
        for bank in self.banks.values():
            for e in bank.entries:
                device = next(d for d in self.devices.values() if d.image is e.image)
                device.clock = self._clock_of(bank)
        for name, device in self.devices.items():
            device.on_write = self._writer_log(name)

    @staticmethod
    def _clock_of(bank: SignalBank) -> Callable[[], float]:
        return lambda: bank.last_t

    def _writer_log(self, device: str) -> Callable[[str, int, int], None]:
        def written(table: str, address: int, count: int) -> None:
            image = self.devices[device].image
            now = time.time_ns()
            for p in image.points.values():
                if p.table.value == table and p.address < address + count and address < p.end:
                    self._changes.setdefault((device, p.name), []).append((now, image.held_point(p)))
        return written

    def _initialise_values(self) -> None:
        """Write every static value and one tick of every signal, so registers hold data at once."""
        self._static.tick(self.start_s, self.memory.regs, self.memory.bits)
        for image, point, text in self._texts:
            image.set_point(point, text)
        for bank in self.banks.values():
            bank.tick(self.start_s, self.memory.regs, self.memory.bits)

    # --- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every server and the signal updates; returns when all servers listen."""
        try:
            for specs in self.groups.values():
                devices = [self.devices[s.name] for s in specs]
                transport = specs[0].transport
                endpoint: Endpoint = (
                    SerialEndpoint(devices, transport)
                    if isinstance(transport, SerialTransport)
                    else TcpEndpoint(devices, transport)
                )
                self.endpoints.append(endpoint)
                for s in specs:
                    self._by_device[s.name] = endpoint
                if isinstance(endpoint, TcpEndpoint):
                    held = self._held.pop(endpoint.port, None) or _HELD.pop(endpoint.port, None)
                    await endpoint.start(sock=held)
                else:
                    await endpoint.start()
        except BaseException:
            await self.stop()
            raise
        self._t0 = time.monotonic()
        for interval_ms, bank in self.banks.items():
            self._tasks.append(asyncio.create_task(self._update(bank, interval_ms / 1000.0), name=f"sim-update-{interval_ms}"))

    async def stop(self) -> None:
        """Stop the updates and every server; serial lines' socat processes are killed."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for endpoint in self.endpoints:
            try:
                await endpoint.stop()
            except Exception:  # noqa: BLE001 - stopping the others matters more
                log.exception("stopping %s failed", endpoint.label)
        self.endpoints.clear()
        self._by_device.clear()

    async def __aenter__(self) -> SimPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _update(self, bank: SignalBank, interval_s: float) -> None:
        """Regenerate one interval group's signals on a fixed monotonic schedule."""
        stats = self.update_stats
        next_t = time.monotonic()
        while True:
            next_t += interval_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            now = time.monotonic()
            if now - next_t > interval_s:
                stats.late_ticks += 1
                next_t = now
            bank.tick(now - self._t0 + self.start_s, self.memory.regs, self.memory.bits)
            spent = time.monotonic() - now
            stats.ticks += 1
            stats.busy_s += spent
            stats.last_tick_ms = spent * 1000.0

    # --- control -----------------------------------------------------------------------------
    def device(self, name: str) -> SimDevice:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no simulated device {name!r}; devices are {sorted(self.devices)}") from None

    def address(self, device: str) -> tuple[str, int] | str:
        """Where the appliance reaches a device: (host, port) for TCP transports, the pty path for serial."""
        self.device(device)
        endpoint = self._by_device.get(device)
        if endpoint is None:
            raise RuntimeError("the plant is not started")
        return endpoint.address()

    def set_fault(self, device: str, fault: Fault | str, **params: Any) -> None:
        """Switch a fault on (replacing the same kind); params as in :class:`FaultSpec`."""
        dev = self.device(device)
        # validated by pydantic: an unknown fault name is a ValidationError that lists the allowed ones
        spec = FaultSpec.model_validate({"fault": fault, **params})
        if spec.fault is Fault.BAD_CRC and isinstance(dev.spec.transport, TcpTransport):
            raise ValueError(
                f"fault 'bad_crc' needs RTU framing (serial or rtu_over_tcp); device {device!r} speaks "
                "Modbus TCP, which has no CRC: use 'garbage'"
            )
        dev.faults.set(spec)
        self._refresh(device)

    def clear_fault(self, device: str, fault: Fault | str | None = None) -> None:
        """Switch one fault kind, or all of them, off."""
        self.device(device).faults.clear(Fault(fault) if fault is not None else None)
        self._refresh(device)

    def _refresh(self, device: str) -> None:
        endpoint = self._by_device.get(device)
        if isinstance(endpoint, TcpEndpoint):
            endpoint.refresh_now()

    def set_value(self, device: str, tag: str, value: float | str) -> None:
        """Write an engineering value into a point; a signal point is pinned there until release().

        The value is clipped to what the data type can hold but NOT to the point's range, so a
        test can provoke Bad_OutOfRange.
        """
        dev = self.device(device)
        point = dev.image.point(tag)
        if pin := self._pins.get((device, tag)):
            bank, i = pin
            bank.active[i] = False
        dev.image.set_point(point, value)
        self._changes.setdefault((device, tag), []).append((time.time_ns(), dev.image.held_point(point)))

    def release(self, device: str, tag: str) -> None:
        """Let a pinned signal point follow its signal again."""
        self.device(device).image.point(tag)
        if pin := self._pins.get((device, tag)):
            bank, i = pin
            bank.active[i] = True
            self._changes.setdefault((device, tag), []).append((time.time_ns(), None))

    # --- ground truth ------------------------------------------------------------------------
    def value_at(self, device: str, tag: str, t: float) -> float | str:
        """The engineering value a point's registers hold at simulated time ``t`` (seconds after
        the start) by its signal alone: the signal's value (a pure function of ``t`` and the seed;
        models read their inputs as :class:`PlantPhysics` logged them), stored as the tick stores
        it and read exactly (:func:`~.encoding.held_value`: 97 x 0.1 is 9.7). Points without a
        signal (constants, writable points, strings) give the value they started with; writes and
        pinned values are left out here (:meth:`value_served` applies them)."""
        dev = self.device(device)
        point = dev.image.point(tag)
        pin = self._pins.get((device, tag))
        if pin is None:
            return self._defaults[(device, tag)]
        bank, i = pin
        return held_value(point, float(bank.values(t)[i]))

    def value_served(self, device: str, tag: str, ts_ns: int) -> float | str:
        """The engineering value of a point in the last answer the device gave before ``ts_ns``
        (wall clock, ns): the instant a client stamps a response when it arrives is after the
        device read its registers, and a signal update may fall in between, so the device's own
        log of answered reads (when, which registers, at which simulated time) says which values
        went out. A client write or a pinned value in force then wins over the signal.

        Raises LookupError when no answer covering the point is remembered before ``ts_ns``."""
        dev = self.device(device)
        point = dev.image.point(tag)
        table = point.table.value
        read = next((r for r in reversed(dev.reads)
                     if r.ns <= ts_ns and r.table == table and r.start <= point.address and point.end <= r.end), None)
        if read is None:
            raise LookupError(f"{device}.{tag}: no answer covering {table} {point.address} is remembered before "
                              f"{ts_ns} ns")
        for ns, value in reversed(self._changes.get((device, tag), [])):
            if ns <= read.ns:
                if value is not None:
                    return value
                break
        return self.value_at(device, tag, read.t)

    def get_value(self, device: str, tag: str) -> float | str:
        """The point's current engineering value, decoded from its registers."""
        dev = self.device(device)
        return dev.image.get_point(dev.image.point(tag))

    def get_registers(self, device: str, table: Table | str, address: int, count: int) -> list[int]:
        """Raw registers (or bits as 0/1) of a device, as a client would read them."""
        view = self.device(device).image.view(Table(table))
        if address < 0 or count < 1 or address + count > len(view):
            raise IndexError(f"{table} {address}..{address + count - 1} is outside 0..{len(view) - 1}")
        return [int(v) for v in view[address : address + count]]

    def stats(self, device: str) -> DeviceStats:
        return self.device(device).stats

    def serial_line(self, path: str) -> SerialEndpoint:
        for endpoint in self.endpoints:
            if isinstance(endpoint, SerialEndpoint) and endpoint.path == path:
                return endpoint
        raise KeyError(f"no simulated serial line {path!r}")

    async def unplug_line(self, path: str) -> None:
        """Pull the cable: socat is killed and the appliance's pty end disappears."""
        await self.serial_line(path).unplug()

    async def plug_line(self, path: str) -> None:
        """Plug it back: a fresh pty pair at the same paths."""
        await self.serial_line(path).plug()


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on a free port of ``host``: its port is known at once and stays held
    until a server adopts the socket (``SimPlant(..., sockets={port: sock})``). Connections made
    before that wait in the backlog. Never bind-and-close to find a port: another process may
    take it before the server binds (a flaky test found exactly that)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # as asyncio's servers do: a device that goes offline and comes back rebinds the port while
        # its old connections are in TIME_WAIT, which Linux allows only if both sockets set it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(100)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A free port held for a simulator in another process (``edge simulate``, ``edge demo``): a
    socket bound to it with SO_REUSEPORT and never listening. The simulator's TCP servers bind with
    SO_REUSEPORT too, so they can take the port while this socket holds it; nothing else can (a
    bind without SO_REUSEPORT is refused, and the kernel never hands the port out for port 0).
    Connections are refused until the simulator listens. Keep it open while the port is in use."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


_HELD: dict[int, socket.socket] = {}  # port -> listening socket held for a SimPlant of this process


def hold_port(host: str = "127.0.0.1") -> int:
    """A free port of ``host`` for a simulated device, held (a listening socket) until a SimPlant of
    this process serves it: for code that writes a configuration before the simulator starts
    (``edge plugin check``'s one-device site)."""
    sock = listening_socket(host)
    port = int(sock.getsockname()[1])
    _HELD[port] = sock
    return port
