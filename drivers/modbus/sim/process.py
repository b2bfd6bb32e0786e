"""The simulated plant in one or more child processes, controlled with the same methods as SimPlant.

Benchmarks and end-to-end tests need the simulator's load outside the appliance's process.
:class:`SimPlantProcess` splits the devices by endpoint over ``processes`` children (spawned,
each running a :class:`SimPlant` in its own asyncio loop) and forwards every control call to
the child that owns the device, over a multiprocessing pipe. Calls are synchronous round
trips of well under a millisecond; ``start``/``stop`` and the line plugs are awaitable, as in
SimPlant. A child stops cleanly (socat killed) on ``stop()``, on SIGTERM/SIGINT, and when its
pipe closes because the parent died.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import signal
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from pydantic import TypeAdapter, ValidationError

from drivers.modbus.points import Table

from .faults import Fault
from .plant import SimPlant, UpdateStats, group_endpoints
from .servers import DeviceStats
from .spec import RtuOverTcpTransport, SimDeviceSpec, TcpTransport

_SPECS = TypeAdapter(list[SimDeviceSpec])
_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (KeyError, ValueError, IndexError, TypeError, RuntimeError, LookupError)
}
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0

# Control calls a child accepts: name -> is it a coroutine method of SimPlant.
_CALLS = {
    "set_fault": False, "clear_fault": False, "set_value": False, "release": False,
    "get_value": False, "get_registers": False, "stats": False, "update_stats": False,
    "value_at": False, "value_served": False,
    "unplug_line": True, "plug_line": True, "stop": True,
}


def partition(specs: Sequence[SimDeviceSpec], processes: int) -> list[list[SimDeviceSpec]]:
    """Split devices over processes by endpoint (a shared line stays together), balancing points."""
    groups = sorted(group_endpoints(specs).values(), key=lambda g: -sum(len(s.points) + 1 for s in g))
    parts: list[list[SimDeviceSpec]] = [[] for _ in range(max(1, min(processes, len(groups))))]
    loads = [0] * len(parts)
    for group in groups:
        i = loads.index(min(loads))
        parts[i].extend(group)
        loads[i] += sum(len(s.points) + 1 for s in group)
    return [p for p in parts if p]


def _child_main(conn: Connection, specs: list[SimDeviceSpec], seed: int,
                sockets: dict[int, socket.socket] | None = None) -> None:
    """Entry point of a child process: run a SimPlant until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal: the parent decides
    asyncio.run(_child_async(conn, specs, seed, sockets))


async def _child_async(conn: Connection, specs: list[SimDeviceSpec], seed: int,
                       sockets: dict[int, socket.socket] | None = None) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    plant = SimPlant(specs, seed=seed, sockets=sockets)
    try:
        await plant.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ok", {s.name: plant.address(s.name) for s in specs}))

    async def call(name: str, args: tuple, kwargs: dict) -> Any:
        if name == "stop":
            done.set()
            return None
        if name == "update_stats":
            return plant.update_stats
        method = getattr(plant, name)
        return (await method(*args, **kwargs)) if _CALLS[name] else method(*args, **kwargs)

    def serve_pipe() -> None:
        while True:
            try:
                name, args, kwargs = conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(done.set)  # the parent is gone
                return
            try:
                result = asyncio.run_coroutine_threadsafe(call(name, args, kwargs), loop).result(CALL_TIMEOUT_S)
                reply: tuple = ("ok", result)
            except ValidationError as exc:
                reply = ("error", "ValueError", str(exc))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
                reply = ("error", type(exc).__name__, str(exc.args[0]) if exc.args else str(exc))
            with contextlib.suppress(OSError):
                conn.send(reply)
            if name == "stop":
                return

    thread = threading.Thread(target=serve_pipe, name="sim-control", daemon=True)
    thread.start()
    await done.wait()
    await plant.stop()


class SimPlantProcess:
    """SimPlant's control API, with the servers running in ``processes`` child processes."""

    def __init__(self, specs: Iterable[SimDeviceSpec | dict[str, Any]], *, seed: int = 0, processes: int = 1,
                 sockets: Mapping[int, socket.socket] | None = None) -> None:
        """``sockets``: listening sockets held for TCP ports of the specs (see :class:`SimPlant`),
        handed to the child that serves that port (multiprocessing passes the descriptors)."""
        self.specs = _SPECS.validate_python(list(specs))
        self.sockets = dict(sockets or {})
        SimPlant._check_names(self.specs)
        self.parts = partition(self.specs, processes)
        self.seed = seed
        self._children: list[tuple[mp.process.BaseProcess, Connection, threading.Lock]] = []
        self._owner: dict[str, int] = {}
        self._addresses: dict[str, Any] = {}
        self._serial_owner: dict[str, int] = {}

    async def start(self) -> None:
        """Spawn the children and wait until every server listens."""
        ctx = mp.get_context("spawn")
        loop = asyncio.get_running_loop()
        try:
            for index, part in enumerate(self.parts):
                parent, child = ctx.Pipe()
                ports = {s.transport.port for s in part if isinstance(s.transport, TcpTransport | RtuOverTcpTransport)}
                held = {port: sock for port, sock in self.sockets.items() if port in ports}
                child_proc = ctx.Process(target=_child_main, args=(child, part, self.seed, held), name=f"sim-plant-{index}",
                                   daemon=True)
                child_proc.start()
                child.close()
                self._children.append((child_proc, parent, threading.Lock()))
                for spec in part:
                    self._owner[spec.name] = index
                    if spec.transport.kind == "serial":
                        self._serial_owner[spec.transport.path] = index
            for proc, conn, _ in self._children:
                ready = await loop.run_in_executor(None, conn.poll, START_TIMEOUT_S)
                if not ready:
                    raise RuntimeError(f"simulator process {proc.name} did not start in {START_TIMEOUT_S:.0f} s")
                self._addresses.update(self._unwrap(conn.recv()))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every child cleanly (servers closed, socat killed); kill what does not stop."""
        loop = asyncio.get_running_loop()
        for proc, conn, lock in self._children:
            if proc.is_alive():
                with contextlib.suppress(OSError, EOFError, RuntimeError), lock:
                    conn.send(("stop", (), {}))
                    if await loop.run_in_executor(None, conn.poll, STOP_TIMEOUT_S):
                        conn.recv()
        for proc, conn, _ in self._children:
            await loop.run_in_executor(None, proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self._children.clear()

    async def __aenter__(self) -> SimPlantProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    def _unwrap(reply: tuple) -> Any:
        if reply[0] == "ok":
            return reply[1]
        _, kind, message = reply
        raise _ERRORS.get(kind, RuntimeError)(message)

    def _call(self, index: int, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self._children:
            raise RuntimeError("the simulator processes are not started")
        proc, conn, lock = self._children[index]
        with lock:
            try:
                conn.send((name, args, kwargs))
                answered = conn.poll(CALL_TIMEOUT_S)
            except (OSError, EOFError) as exc:
                raise RuntimeError(f"simulator process {proc.name} is gone (exit code {proc.exitcode}): {exc}") from exc
            if not answered:
                raise RuntimeError(f"simulator process {proc.name} did not answer {name!r} in {CALL_TIMEOUT_S:.0f} s")
            return self._unwrap(conn.recv())

    def _device_call(self, name: str, device: str, *args: Any, **kwargs: Any) -> Any:
        if device not in self._owner:
            raise KeyError(f"no simulated device {device!r}; devices are {sorted(self._owner)}")
        return self._call(self._owner[device], name, device, *args, **kwargs)

    # --- the same control methods as SimPlant ---------------------------------------------------
    def address(self, device: str) -> tuple[str, int] | str:
        if device not in self._addresses:
            raise KeyError(f"no simulated device {device!r} (or not started); devices are {sorted(self._owner)}")
        address = self._addresses[device]
        return tuple(address) if isinstance(address, list) else address

    def set_fault(self, device: str, fault: Fault | str, **params: Any) -> None:
        self._device_call("set_fault", device, str(Fault(fault).value) if isinstance(fault, Fault) else fault, **params)

    def clear_fault(self, device: str, fault: Fault | str | None = None) -> None:
        self._device_call("clear_fault", device, fault)

    def set_value(self, device: str, tag: str, value: float | str) -> None:
        self._device_call("set_value", device, tag, value)

    def release(self, device: str, tag: str) -> None:
        self._device_call("release", device, tag)

    def get_value(self, device: str, tag: str) -> float | str:
        return self._device_call("get_value", device, tag)

    def value_at(self, device: str, tag: str, t: float) -> float | str:
        return self._device_call("value_at", device, tag, t)

    def value_served(self, device: str, tag: str, ts_ns: int) -> float | str:
        return self._device_call("value_served", device, tag, ts_ns)

    def get_registers(self, device: str, table: Table | str, address: int, count: int) -> list[int]:
        return self._device_call("get_registers", device, str(Table(table).value), address, count)

    def stats(self, device: str) -> DeviceStats:
        return self._device_call("stats", device)

    def update_stats(self) -> list[UpdateStats]:
        """The signal-update cost of each child."""
        return [self._call(i, "update_stats") for i in range(len(self._children))]

    def pids(self) -> list[int]:
        return [proc.pid for proc, _, _ in self._children if proc.pid is not None]

    async def unplug_line(self, path: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._call, self._line_owner(path), "unplug_line", path)

    async def plug_line(self, path: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._call, self._line_owner(path), "plug_line", path)

    def _line_owner(self, path: str) -> int:
        if path not in self._serial_owner:
            raise KeyError(f"no simulated serial line {path!r}")
        return self._serial_owner[path]
