"""sd_notify: a real unix datagram socket stands in for systemd; a real `edge run` of the demo plant
(served by `edge simulate`: TCP, RTU over TCP and a socat serial line) reports READY=1, pings the
watchdog at half WATCHDOG_USEC, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM,
and exits 0 within its bounded stop time."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import DemoEnv

from edge.runtime.systemd import Notifier

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"


class NotifySocket:
    """The service manager's end: a bound datagram socket that collects messages."""

    def __init__(self, path: Path | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"edge-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind(b"\0" + name.encode())
            self.env_value = "@" + name
        else:
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.messages: list[tuple[float, str]] = []

    def receive_until(self, predicate, timeout_s: float) -> bool:
        """Collect messages until ``predicate(messages)`` holds; bounded by ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))
        return True

    def states(self) -> list[str]:
        return [m.splitlines()[0] for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()


def test_notifier_is_a_no_op_without_notify_socket():
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.watchdog_interval_s is None and n.sent == 0


def test_notifier_sends_to_a_path_socket_and_honours_watchdog_pid(tmp_path):
    peer = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier({"NOTIFY_SOCKET": peer.env_value, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval_s == 1.5
        assert n.ready("polling 6 devices") and n.watchdog() and n.reloading() and n.stopping()
        assert peer.receive_until(lambda m: len(m) == 4, 5)
        assert peer.messages[0][1] == "READY=1\nSTATUS=polling 6 devices"
        assert peer.states() == ["READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1"]
        assert peer.messages[2][1].splitlines()[1].startswith("MONOTONIC_USEC=")
        other = Notifier({"NOTIFY_SOCKET": peer.env_value, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"})
        assert other.watchdog_interval_s is None  # the watchdog is meant for another process
    finally:
        peer.close()


def test_notifier_counts_failures_instead_of_raising(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled and not n.ready() and not n.watchdog()
    assert n.failures == 2 and n.sent == 0
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None


async def test_watchdog_loop_pings_at_half_the_timeout(tmp_path):
    peer = NotifySocket()
    try:
        n = Notifier({"NOTIFY_SOCKET": peer.env_value, "WATCHDOG_USEC": "200000"})
        task = asyncio.create_task(n.watchdog_loop())
        await asyncio.sleep(0.55)  # pings at 0, 0.1, 0.2, ... s
        task.cancel()
        assert 4 <= n.sent <= 7
        assert await asyncio.to_thread(peer.receive_until, lambda m: len(m) >= 4, 5)
        assert set(peer.states()) == {"WATCHDOG=1"}
        assert await Notifier({}).watchdog_loop() is None  # returns at once without a watchdog
    finally:
        peer.close()


@pytest.fixture
def demo_env(tmp_path):
    env = DemoEnv(tmp_path)
    yield env
    env.close()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, cwd=REPO)


def wait_reload(peer: NotifySocket, n_before: int) -> list[str]:
    """RELOADING=1 then READY=1 after message ``n_before``; returns the states without pings."""
    assert peer.receive_until(
        lambda m: "RELOADING=1" in [s.splitlines()[0] for _, s in m[n_before:]]
        and "READY=1" in [s for _, s in m[n_before:]], 30)
    states = [s.splitlines()[0] for _, s in peer.messages[n_before:] if not s.startswith("WATCHDOG")]
    assert states.index("RELOADING=1") < states.index("READY=1")
    return states


def test_edge_run_under_a_notify_socket(demo_env, tmp_path):
    config = tmp_path / "edge.yaml"  # a copy, so that the test can break it for a rejected reload
    config.write_text(DEMO.read_text().replace("plugins_dir: ../../../plugins", f"plugins_dir: {REPO / 'plugins'}"))
    sim = start(["simulate", str(config)], demo_env)
    peer = NotifySocket()
    app = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = sim.stdout.readline()
            if "simulator ready" in line or not line:
                break
        assert "simulator ready" in line, sim.stderr.read() if sim.poll() is not None else line
        env = {**demo_env, "NOTIFY_SOCKET": peer.env_value, "WATCHDOG_USEC": "600000"}
        app = start(["run", "--no-status", str(config)], env)
        assert peer.receive_until(lambda m: any(s == "READY=1" for _, s in m), 60), app.stderr.read()
        assert (Path(demo_env["EDGE_DATA_DIR"]) / "edge.pid").read_text().strip() == str(app.pid)
        ready_at = peer.messages[-1][0]
        # watchdog pings every 0.3 s once ready
        assert peer.receive_until(lambda m: sum(1 for t, s in m if s == "WATCHDOG=1" and t >= ready_at) >= 4, 10)
        pings = [t for t, s in peer.messages if s == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert 0.1 < sorted(gaps)[len(gaps) // 2] < 0.6, gaps  # median gap near 0.3 s
        n_before = len(peer.messages)
        app.send_signal(signal.SIGHUP)
        wait_reload(peer, n_before)
        # a reload of a broken file is rejected whole: READY=1 again, the appliance runs on and pings
        config.write_text(config.read_text().replace("unit_id: 2", "unit_id: 999"))
        n_before = len(peer.messages)
        app.send_signal(signal.SIGHUP)
        wait_reload(peer, n_before)
        after = len(peer.messages)
        assert peer.receive_until(lambda m: sum(1 for _, s in m[after:] if s == "WATCHDOG=1") >= 2, 10)
        assert app.poll() is None
        stop_sent = time.monotonic()
        app.send_signal(signal.SIGTERM)
        assert peer.receive_until(lambda m: any(s == "STOPPING=1" for _, s in m), 15)
        out, err = app.communicate(timeout=30)  # TimeoutStopSec of the unit is 30 s
        assert app.returncode == 0, err
        assert err.count("reload refused") == 1 and "unit_id" in err  # the broken file, and only it
        assert time.monotonic() - stop_sent < 30
        assert "appliance stopped" in out
        assert not (Path(demo_env["EDGE_DATA_DIR"]) / "edge.pid").exists()
        assert peer.states()[-1] == "STOPPING=1"  # no ping after STOPPING
    finally:
        for proc in (app, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        peer.close()
