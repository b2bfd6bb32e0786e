"""Request body limit for the HTTP API: an ASGI middleware in front of FastAPI's routing.

FastAPI reads a request's whole body before it looks at the route's dependencies (the token
check included) and before it validates anything, and uvicorn sets no limit: a 200 MB POST
without a token was read whole (RSS +420 MB) and stalled polling on the shared event loop.
This middleware refuses a body larger than ``limit()`` bytes with 413 **before it is read**:

* a ``Content-Length`` above the limit is answered at once; the app never runs and uvicorn,
  whose flow control stops reading a socket whose body nobody consumes, closes the connection
  after the answer, so the rest of the body is never read;
* a body without a length (``Transfer-Encoding: chunked``) is counted as the app receives it;
  the chunk that crosses the limit is not handed on: the client gets 413, the app a
  disconnect, and whatever the app answers after that is dropped;
* a ``Content-Length`` that is not a number is answered 400.

``limit`` is a callable so a configuration reload takes effect for the next request;
``count(reason)`` is told of every refusal (``body_too_large``, ``bad_content_length``).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses request bodies above ``limit()`` bytes with 413, before the application reads them."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int], count: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.count = count or (lambda reason: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared == -1:
            self.count("bad_content_length")
            await _answer(send, 400, "Content-Length is not a non-negative integer")
            return
        if declared is not None and declared > limit:
            self.count("body_too_large")
            await _answer(send, 413, _too_large(limit, f"Content-Length {declared}"))
            return
        await self._streamed(scope, receive, send, limit)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Count the body as it arrives; refuse at the chunk that crosses the limit."""
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    self.count("body_too_large")
                    if not started:
                        await _answer(send, 413, _too_large(limit, f"more than {limit} bytes sent"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; the application's own answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise  # the application's own error: the server's error handling takes it


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None without one; -1 if it is not a non-negative integer."""
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return -1
    return int(values[0])


def _too_large(limit: int, what: str) -> str:
    return f"request body too large ({what}); at most {limit} bytes are accepted (api.max_body_bytes)"


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
