"""Helpers for tests (import as ``from harness import wait_until``): kept out of conftest.py,
which several test folders have, so that the import is never ambiguous."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or the time is up (bounded in time and count)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / step_s) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(step_s)
    return condition()


def wait_until_blocking(condition: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    """:func:`wait_until` for tests without an event loop (threads do the work): sleeps between polls."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / step_s) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    return condition()


def server_pki(folder: Path) -> Path:
    """``folder/pki`` with an OPC UA server certificate (made once): sites that log users in on a
    None endpoint need one, so passwords travel encrypted with the server's key (issue 15)."""
    from edge.security.pki import PkiPaths, create_server_certificate

    pki = Path(folder) / "pki"
    if not PkiPaths(pki).cert.exists():
        create_server_certificate(pki, "urn:edge:opcua-server", "127.0.0.1")
    return pki


class DemoEnv(dict):
    """Environment for a child ``edge demo``/``simulate``/``run`` of the demo plant in a scratch folder.

    The simulated PLC and serial gateway get free ports reserved by this process for the test's
    duration (:func:`drivers.modbus.sim.plant.reserve_port`: bound with SO_REUSEPORT, never
    listening), which the child's simulator binds too; nothing else can take them meanwhile, and
    no descriptor has to reach the child (a tmux pane gets none). OPC UA and the API take port 0
    (any free port; ``edge run`` prints the ones it got). ``close()`` at the end."""

    def __init__(self, folder: Path) -> None:
        from drivers.modbus.sim.plant import reserve_port

        self.sockets = {"EDGE_DEMO_PLC_PORT": reserve_port(), "EDGE_DEMO_GATEWAY_PORT": reserve_port()}
        ports = {name: str(sock.getsockname()[1]) for name, sock in self.sockets.items()}
        super().__init__(EDGE_RUN_DIR=str(folder / "run"), EDGE_DATA_DIR=str(folder / "data"),
                         EDGE_DEMO_OPCUA_PORT="0", EDGE_DEMO_API_PORT="0", **ports)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


def edge_in_process(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """``edge ARGS`` run by ``edge.cli.main.main`` in this process: (exit code, stdout, stderr).

    Same parser and commands as the child process, without a Python start-up and the imports per
    call (seconds each on a loaded machine); argparse's exits (usage errors, --help) give their code."""
    import contextlib
    import io
    import sys

    from edge.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()
