"""Runs the API with uvicorn as a task on the appliance's own event loop (no thread, no second loop)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("edge.api")


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int):
        self.app = app
        self.host = host
        self.port = port
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
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
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
