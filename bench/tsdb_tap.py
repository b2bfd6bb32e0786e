"""A measuring tap in front of a time-series server (benchmarks only).

:class:`TsdbTap` listens on a loopback port, passes every HTTP request through to the real
server (VictoriaMetrics here) and, for each write request, notes the wall time at which the
server *acknowledged* it. Every line-protocol line of a write carries its sample's timestamp,
so ``ack time - line timestamp`` is how long that sample took from its poll to the
time-series server, for every sample and for any writer (the appliance, Node-RED): no marker
values, no polling of the server's query API. It also counts the value fields per line
(fields whose key does not start with ``q_``), which gives tags/s as the server received them.

Lines are read after the server answered, off the request path; a gzip body is inflated.
Measurements named in ``ignore`` (``edge_health``...) are not counted.
"""
from __future__ import annotations

import asyncio
import gzip
import time
import urllib.parse

import numpy as np

PRECISION_NS = {"ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class TsdbTap:
    """HTTP pass-through to ``upstream`` (host, port) that measures poll -> server latency per line."""

    def __init__(self, upstream_url: str, ignore: tuple[bytes, ...] = (b"edge_health", b"edge_window", b"edge_alarms")):
        u = urllib.parse.urlparse(upstream_url)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.ignore = ignore
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._lat_ms: list[np.ndarray] = []  # per request: latency of each line in ms
        self._fields: list[tuple[float, int]] = []  # (ack wall time, value fields) per request
        self.requests = 0
        self.errors = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def reset(self) -> None:
        """Forget what was measured so far (start of a measurement window)."""
        self._lat_ms, self._fields = [], []

    def figures(self, t0: float, t1: float) -> dict:
        """Latency percentiles (s) over every line acknowledged so far and tags/s within [t0, t1]."""
        lat = np.concatenate(self._lat_ms) if self._lat_ms else np.zeros(0)
        inside = sum(n for t, n in self._fields if t0 <= t <= t1)
        out = {"tsdb_lines": int(lat.size), "tsdb_tags_per_s": round(inside / max(t1 - t0, 1e-9))}
        for q in (50, 90, 99, 100):
            out[f"tsdb_latency_p{q}_s"] = round(float(np.percentile(lat, q)) / 1e3, 3) if lat.size else None
        return out

    # ------------------------------------------------------------------ HTTP pass-through

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r = up_w = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = http_headers(head)
                body, payload = await read_body(reader, headers)
                if up_w is None:
                    up_r, up_w = await asyncio.open_connection(*self.upstream)
                up_w.write(head + body)
                await up_w.drain()
                rhead = await up_r.readuntil(b"\r\n\r\n")
                rbody, _ = await read_body(up_r, http_headers(rhead))
                acked = time.time()
                writer.write(rhead + rbody)
                await writer.drain()
                status = int(rhead.split(b" ", 2)[1])
                if head.startswith(b"POST") and b"write" in head.split(b"\r\n", 1)[0]:
                    self.requests += 1
                    if status < 300:
                        self._note(head, headers, payload, acked)
                    else:
                        self.errors += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if up_w is not None:
                up_w.close()

    def _note(self, head: bytes, headers: dict[bytes, bytes], body: bytes, acked: float) -> None:
        if headers.get(b"content-encoding", b"").strip().lower() == b"gzip":
            body = gzip.decompress(body)
        target = head.split(b" ", 2)[1].decode()
        precision = urllib.parse.parse_qs(urllib.parse.urlparse(target).query).get("precision", ["ns"])[0]
        scale = PRECISION_NS.get(precision, 1)
        stamps: list[int] = []
        fields = 0
        for line in body.split(b"\n"):
            if not line or line.startswith(self.ignore) or line.startswith(b"#"):
                continue
            key_fields, _, ts = line.rpartition(b" ")
            stamps.append(int(ts) * scale)
            fset = key_fields.split(b" ", 1)[1] if b" " in key_fields else b""
            n = fset.count(b",") + 1
            fields += n - fset.count(b",q_") - fset.startswith(b"q_")
        if stamps:
            ack_ns = acked * 1e9
            self._lat_ms.append((ack_ns - np.array(stamps, dtype=np.float64)) / 1e6)
            self._fields.append((acked, fields))


def http_headers(head: bytes) -> dict[bytes, bytes]:
    """The header fields of an HTTP request or response head, names lower-cased."""
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.strip().lower()] = v.strip()
    return out


async def read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> tuple[bytes, bytes]:
    """(the body as received, to pass on; its payload, de-chunked)."""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        raw, payload = [], []
        for _ in range(1_000_000):
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            raw.append(size_line + chunk)
            payload.append(chunk[:-2])
            if size == 0:
                break
        return b"".join(raw), b"".join(payload)
    n = int(headers.get(b"content-length", b"0") or 0)
    data = await reader.readexactly(n) if n else b""
    return data, data
