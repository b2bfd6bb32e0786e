"""Fixtures shared by the whole suite: a site built from YAML text, served by the real simulator
(pymodbus servers on loopback TCP ports and socat serial pairs) and polled by the real appliance."""
from __future__ import annotations

import faulthandler
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncua
import hypothesis
import pytest

from drivers.modbus.sim.plant import SimPlant, listening_socket
from drivers.modbus.simulation import plant_specs
from edge.config.loader import LoadedConfig, load_config
from edge.runtime.app import Appliance

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # fault tests provoke errors on purpose

# Hypothesis' per-example deadline (200 ms) and its too_slow health check are timings, not behaviour: on
# the shared 2-core machines, with the suite's parallel workers, one example of a 20 ms round trip took
# 300 ms and failed test_registers_roundtrip. Speed is measured by the benchmarks under bench/.
# Examples are derived from each test's name (derandomize), so that a CI run is repeatable: a property
# that fails fails in every run. Known counterexample found by a random run (not in the fixed set):
# float32 -0.5 in order ABCD with 0.01 % noise reads as uint32 BADC 12,517,376 creeping up, and the
# probe ranks that "counter" first (drivers/modbus/probe.py checks a float's bit pattern only above
# 1e8; lowering it breaks the low-word-first counter trace). Open in the closing note of issue 16.
hypothesis.settings.register_profile(
    "edge", deadline=None, derandomize=True, suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("edge")
REPO = Path(__file__).resolve().parents[1]

# asyncua 2.1's client probes the server every ``watchdog_intervall`` (1 s) and gives the probe the same
# time to answer; a late answer disconnects the client for good (auto_reconnect is off). In these tests
# the client and the appliance share one process and one event loop, so a loaded CI machine (4 workers
# on 2 cores) stalled a probe past 1 s and a client read failed with "client is disconnected" (fresh-
# clone run 3 of stop 24, test_client_sees_poll_values_quality_and_writes_reach_the_device). That
# measures the test process, not the server: the tests' clients probe every 30 s unless they ask.
_asyncua_client_init = asyncua.Client.__init__


def _patient_client_init(self: asyncua.Client, url: str, timeout: float = 4, watchdog_intervall: float = 30.0,
                         **kw: object) -> None:
    _asyncua_client_init(self, url, timeout, watchdog_intervall, **kw)  # type: ignore[arg-type]


asyncua.Client.__init__ = _patient_client_init  # type: ignore[method-assign]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (tens of seconds to minutes each: soaks, fault campaigns, installs) run
    first. With parallel workers (pytest-xdist, provisioning/test.sh) they then start at once, spread
    over the workers, while the short tests fill the gaps; collected last, one of them would start
    when the others are done and the whole run would wait for it alone. A stable sort: the order is
    otherwise the collection order, the same in every worker (xdist requires it)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


#: how long past its pytest-timeout a test may run before every thread's stack is dumped
HUNG_AFTER_TIMEOUT_S = 30
_TERMINAL_FD = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    """A copy of the terminal's stderr for the hung-test dump (during a test, fd 2 is pytest's capture)."""
    config.stash[_TERMINAL_FD] = os.dup(2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A test still running ``HUNG_AFTER_TIMEOUT_S`` past its timeout gets every thread's stack dumped
    to the terminal, naming it and where it waits. pytest-timeout's signal raises inside the test, and
    once (a fresh-clone run, tests/outputs/opcua/test_opcua_item_store.py) asyncua's subscription
    cleanup swallowed it: the run then hung with no word of where. provisioning/test.sh ends such a run."""
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout + HUNG_AFTER_TIMEOUT_S, file=item.config.stash[_TERMINAL_FD])
    try:
        yield
    finally:
        if timeout > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _no_log_handlers_left_behind():
    """A command run in-process (``edge.cli.main.main``) sets up logging to the sys.stderr of its test;
    pytest closes that stream afterwards, and later tests' log records would hit it."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


class HeldPorts:
    """Free loopback ports for simulated devices, held (a listening socket each) from the moment a
    test names them until the simulator serves on them: never bind-and-close to find a port.

    ``{port:NAME}`` in a site's YAML text (``make_site``, :meth:`fill`) becomes NAME's port. Each
    site ``make_site`` builds gets ports of its own (its own simulator serves them); until the
    next one, the same name gives the same port (a test rewriting its site for a reload)."""

    REF = re.compile(r"\{port:([A-Za-z0-9_.-]+)\}")

    def __init__(self) -> None:
        self.sockets: dict[tuple[int, str], socket.socket] = {}
        self._adopted: set[int] = set()
        self._site = 0

    def next_site(self) -> None:
        self._site += 1

    def port(self, name: str) -> int:
        key = (self._site, name)
        sock = self.sockets.get(key)
        if sock is None:
            sock = self.sockets[key] = listening_socket()
        return int(sock.getsockname()[1])

    def fill(self, text: str) -> str:
        return self.REF.sub(lambda m: str(self.port(m.group(1))), text)

    def take(self, ports: set[int]) -> dict[int, socket.socket]:
        """The held sockets of ``ports`` not yet handed to a server (each is handed over once)."""
        out = {}
        for sock in self.sockets.values():
            port = sock.getsockname()[1]
            if port in ports and port not in self._adopted:
                out[port] = sock
                self._adopted.add(port)
        return out

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


@pytest.fixture(scope="session")
def fresh_clone_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appliance's wheel, built by pip from a fresh clone of this repository (its committed state):
    one build of the compiled extensions for every test that needs a wheel."""
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("wheel")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(base / "dist"), str(clone)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    [wheel] = (base / "dist").glob("*.whl")
    return wheel


@pytest.fixture
def held_ports() -> Iterator[HeldPorts]:
    held = HeldPorts()
    yield held
    held.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused for the whole test: bound but not listening,
    and held, so no other server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def tcp_ports(specs: list) -> set[int]:
    return {s.transport.port for s in specs if hasattr(s.transport, "port") and isinstance(s.transport.port, int)}


@dataclass
class Site:
    loaded: LoadedConfig
    sim: SimPlant
    app: Appliance

    def value(self, device: str, tag: str):
        tag_id = self.loaded.plant.tag_by_key()[f"{device}.{tag}"].id
        return self.app.store.get(tag_id)

    def diag(self, device: str):
        return self.app.devices[device].diag

    def tag_id(self, device: str, tag: str) -> int:
        return self.loaded.plant.tag_by_key()[f"{device}.{tag}"].id


@pytest.fixture
async def make_site(tmp_path: Path, held_ports: HeldPorts) -> AsyncIterator[Callable]:
    """``site = await make_site(yaml_text, start_app=True)``: simulator + appliance for a config.

    ``{tmp}`` in the text is replaced by a temporary folder (serial pty paths, data dir),
    ``{port:NAME}`` by a free loopback port held for the simulator (fixture ``held_ports``).
    The appliance's own servers (OPC UA, API) take port 0 and report the port they got.
    """
    started: list[tuple[SimPlant, Appliance]] = []

    async def make(text: str, start_app: bool = True) -> Site:
        path = tmp_path / "edge.yaml"
        held_ports.next_site()
        text = held_ports.fill(text.replace("{tmp}", str(tmp_path)))
        if "runtime:" not in text:
            text += f"\nruntime: {{data_dir: {tmp_path}/data, status_interval_s: 0.2}}\n"
        path.write_text(text)
        loaded = load_config(path)
        specs = plant_specs(loaded)
        sim = SimPlant(specs, sockets=held_ports.take(tcp_ports(specs)))
        await sim.start()
        app = Appliance(loaded)
        started.append((sim, app))
        if start_app:
            await app.start()
        return Site(loaded, sim, app)

    yield make
    for sim, app in started:
        await app.stop()
        await sim.stop()
