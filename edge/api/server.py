"""Runs the API with uvicorn as a task on the appliance's own event loop (no thread, no second loop).

With ``tls=(cert, key)`` (PEM files, ``edge provision certs`` makes them) it serves HTTPS only.
``max_connections`` is uvicorn's ``limit_concurrency``: beyond it new requests get 503 at once,
so a flood of connections cannot grow the appliance's memory.

uvicorn waits forever for the head of a request: a client that sends half a request line and
stops (slowloris) held its connection, and ``max_connections`` of them shut the API for
everybody. :class:`HeadTimeoutH11` (uvicorn's h11 protocol, the one used here) closes a
connection whose request head has not fully arrived ``HEAD_TIMEOUT_S`` after its first byte
or after the connection was made; idle keep-alive connections keep uvicorn's own timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("edge.api")
HEAD_TIMEOUT_S = 10.0


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head (see the module docstring)."""

    head_timeout_s = HEAD_TIMEOUT_S
    closed_slow = 0  # connections closed because their request head did not come in time (all servers)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting = self.conn.their_state is h11.IDLE  # the next request's head is not complete yet
        if waiting and self._head_timer is None and data:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)
        elif not waiting and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            HeadTimeoutH11.closed_slow += 1
            self.transport.close()


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int, *, tls: tuple[Path, Path] | None = None,
                 max_connections: int | None = None):
        self.app = app
        self.host = host
        self.port = port
        self.tls = tls
        self.max_connections = max_connections
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task | None = None
        self.url = ""

    async def start(self) -> None:
        """Bind (port 0 picks a free one), then serve in a task; raises OSError if the port is taken."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.url = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        ssl: dict[str, str] = {}
        if self.tls is not None:
            for path in self.tls:
                if not Path(path).is_file():
                    sock.close()
                    raise FileNotFoundError(f"api TLS file {path} is missing: create it with 'edge provision certs'")
            ssl = {"ssl_certfile": str(self.tls[0]), "ssl_keyfile": str(self.tls[1])}
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False, http=HeadTimeoutH11,
                                limit_concurrency=self.max_connections, **ssl)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        # the appliance owns the signals: uvicorn must not install its handlers
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]), name="api")
        for _ in range(200):  # bounded: at most ~2 s for uvicorn to start listening
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()  # raise what stopped it
        log.info("HTTP API on %s", self.url)

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except Exception:  # noqa: BLE001 - stopping must go on
            log.exception("API server stopped with an error")
        self.server = self.task = None
