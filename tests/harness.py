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
