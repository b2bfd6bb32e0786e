"""Fuzzing a running appliance (issue 15): the OPC UA binary protocol and the HTTP API.

The appliance runs as its own process (``edge demo CONFIG --no-status``: the appliance, with its
simulated plant in a child process), once with the demo site (SecurityPolicy None, anonymous,
plain HTTP) and once with a secure site (Basic256Sha256 only, users, HTTPS with tokens, /metrics
behind a token). While it polls, this script sends, for ``--seconds`` per site:

* OPC UA, one TCP connection per case, seeded: valid Hello / OpenSecureChannel / service
  requests (GetEndpoints, CreateSession, ActivateSession with a clear-text password, Read,
  Write, Browse, CreateSubscription, CloseSession) built with asyncua's own encoders, then
  mutated (bit flips, random spans, lying chunk sizes, huge string/array lengths, wrong message
  and chunk types, truncation, duplication), pure garbage, oversized chunks (a header claiming
  50 MB, then 1 MB streamed), floods of intermediate chunks, and bursts of idle connections;
* HTTP: schemathesis cases generated from /openapi.json for every operation (valid and
  invalid input, with and without a token) and raw malformed requests (60 MB bodies declared
  and chunked, bad Content-Length, a 200 KB header, 2,000 headers, garbage request lines,
  half-sent requests).

It samples the appliance's RSS (``/proc/PID/status``) and its poll counters (``/metrics``)
before and during the fuzz, and checks after each batch that a well-behaved client still gets
the endpoints. Figures per site and in all; last line ``RESULT {json}``:
``opcua_cases``, ``http_requests``, ``http_5xx``, ``crashes`` (the appliance died),
``rss_growth_mb`` (peak during the fuzz minus before), ``poll_rate_ratio`` (polls/s during over
the mean of before and after; the baselines measured in the same run), ``poll_kept_ratio`` (the
share of the poll cycles scheduled during the fuzz that read their device: :func:`polls_kept`),
``probe_failures``.

    .venv/bin/python bench/fuzz.py               # ~1 minute: 12 s per site
    .venv/bin/python bench/fuzz.py --long        # 300 s per site
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.modbus.sim.plant import reserve_port  # noqa: E402 - after the repository is on the path

DEMO = ROOT / "provisioning" / "sites" / "demo" / "edge.yaml"
PROBE_SOURCE = "127.0.0.2"  # the well-behaved client is another machine than the fuzzer (127.0.0.1)
PASSWORD = "fuzz-operator-pass"


# ---------------------------------------------------------------------- the appliance under test


@dataclass
class Appliance:
    """``edge demo CONFIG`` in its own process, with the ports and files of one site."""

    name: str
    folder: Path
    secure: bool
    tokens: bool = False  # the demo with an API tokens file and one operator token
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    token: str = ""
    opc_url: str = ""
    api_url: str = ""
    log: Path | None = None
    held: dict[str, socket.socket] = field(default_factory=dict)  # the simulator's ports, for the run

    @property
    def config(self) -> Path:
        return self.folder / "edge.yaml"

    def write_site(self) -> None:
        text = DEMO.read_text().replace("plugins_dir: ../../../plugins", f"plugins_dir: {ROOT / 'plugins'}")
        # the simulator's ports are held by this process (SO_REUSEPORT, never listening: the child's
        # simulator binds them too); OPC UA and the API take port 0 and are read from the started line
        self.held = {k: reserve_port() for k in ("EDGE_DEMO_PLC_PORT", "EDGE_DEMO_GATEWAY_PORT")}
        ports = {k: str(sock.getsockname()[1]) for k, sock in self.held.items()}
        ports |= {"EDGE_DEMO_OPCUA_PORT": "0", "EDGE_DEMO_API_PORT": "0"}
        self.env = {**os.environ, **ports, "EDGE_RUN_DIR": str(self.folder / "run"),
                    "EDGE_DATA_DIR": str(self.folder / "data")}
        if self.secure:
            text = re.sub(r"(?ms)^  opcua:\n.*?(?=^\S)", (
                "  opcua:\n"
                "    endpoint: opc.tcp://127.0.0.1:${EDGE_DEMO_OPCUA_PORT}/edge\n"
                "    security_policies: [Basic256Sha256_SignAndEncrypt, Basic256Sha256_Sign]\n"
                "    users_file: users\n    pki_dir: pki\n\n"), text)
            text = re.sub(r"(?ms)^api:.*?(?=^\S)", (
                "api:\n  port: ${EDGE_DEMO_API_PORT}\n  tokens_file: tokens\n  metrics_public: false\n"
                "  tls_cert_file: pki/own/api-cert.pem\n  tls_key_file: pki/own/private/api-key.pem\n\n"), text)
        elif self.tokens:
            text = re.sub(r"(?m)^(api:.*\n)", r"\1  tokens_file: tokens\n", text, count=1)
        self.config.write_text(text)

    def provision(self) -> None:
        if not (self.secure or self.tokens):
            return
        edge = [sys.executable, "-m", "edge.cli.main"]
        steps = [([*edge, "provision", str(self.config), "--hostname", "127.0.0.1"], None)]
        if self.secure:
            steps.append(([*edge, "provision", "user", str(self.config), "olga", "--role", "operator"], PASSWORD))
        for args, stdin in steps:
            out = subprocess.run(args, input=stdin, capture_output=True, text=True, env=self.env, timeout=120)
            if out.returncode != 0:
                raise RuntimeError(f"{' '.join(args[3:])}: {out.stderr.strip()}")
        out = subprocess.run([*edge, "provision", "token", str(self.config), "fuzz", "--role", "operator"],
                             capture_output=True, text=True, env=self.env, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"provision token: {out.stderr.strip()}")
        self.token = out.stdout.strip().splitlines()[-1]

    def start(self, timeout_s: float = 60.0) -> None:
        self.log = self.folder / "appliance.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "demo", str(self.config), "--no-status"],
                                     cwd=ROOT, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the appliance exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            if not self.read_urls():
                time.sleep(0.3)
                continue
            polls = self.polls()
            if polls is not None and polls > 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the appliance did not start polling:\n{self.log.read_text()[-3000:]}")

    def read_urls(self) -> bool:
        """The OPC UA and API addresses from the appliance's "appliance started" line (both listen on port 0)."""
        assert self.log is not None
        found = re.search(r"^appliance started: OPC UA at (opc\.tcp://\S+?), API at (https?://\S+?)$",
                          self.log.read_text(errors="replace"), re.M)
        if found is None:
            return False
        self.opc_url, self.api_url = found.group(1), found.group(2)
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except FileNotFoundError:
            return 0.0
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]

    def _get(self, path: str):  # noqa: ANN202 - an httpx.Response, or None if it did not answer 200
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.get(f"{self.api_url}{path}", headers=headers, timeout=5, verify=False)
        except httpx.HTTPError:
            return None
        return r if r.status_code == 200 else None

    def polls(self) -> int | None:
        """Successful polls of every device so far (the appliance's own /metrics), None if it did not answer."""
        r = self._get("/metrics")
        if r is None:
            return None
        return int(sum(float(m.group(1)) for m in re.finditer(
            r'^edge_device_polls_total\{[^}]*result="ok"[^}]*\} (\S+)$', r.text, re.M)))

    def poll_counters(self) -> dict[str, dict] | None:
        """Per device: state and the poll counters (ok, failed, overruns, timeouts) of /api/devices."""
        r = self._get("/api/devices")
        if r is None:
            return None
        return {d["name"]: {k: d[k] for k in ("state", *POLL_COUNTERS)} for d in r.json()}


POLL_COUNTERS = ("polls_ok", "polls_failed", "overruns", "timeouts")


def polls_kept(start: dict[str, dict] | None, end: dict[str, dict] | None) -> dict:
    """What the appliance made of its poll schedule between two :meth:`Appliance.poll_counters`:
    ``poll_kept_ratio`` is the share of its scheduled poll cycles that read their device (ok over ok,
    failed and skipped for overrunning). Unlike a rate over a short window it does not depend on where
    the window falls in each device's interval (a dozen poll groups made that +-5 % over 4 s), nor on
    how loaded the machine was before or after. ``devices_left_online``: online at the start, not at
    the end (an offline device's back-off is not a scheduled cycle, so it is named here instead)."""
    if not start or not end:
        return {"poll_kept_ratio": 0.0, "poll_deltas": {}, "devices_left_online": ["(no answer)"]}
    deltas = {k: sum(end[d][k] - start[d][k] for d in end if d in start) for k in POLL_COUNTERS}
    slots = deltas["polls_ok"] + deltas["polls_failed"] + deltas["overruns"]
    left = sorted(d for d in start if start[d]["state"] == "ONLINE" and end.get(d, {}).get("state") != "ONLINE")
    return {"poll_kept_ratio": round(deltas["polls_ok"] / slots, 3) if slots else 0.0, "poll_deltas": deltas,
            "devices_left_online": left}


class Sampler:
    """RSS of the appliance every 0.1 s, in a thread, between start() and stop()."""

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.app.rss_mb())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(2)
        return self.peak


# ---------------------------------------------------------------------- OPC UA cases


def _hello(url: str) -> bytes:
    from asyncua import ua
    from asyncua.ua.ua_binary import uatcp_to_binary

    return uatcp_to_binary(ua.MessageType.Hello, ua.Hello(ProtocolVersion=0, ReceiveBufferSize=65535,
                                                          SendBufferSize=65535, MaxMessageSize=0, MaxChunkCount=0,
                                                          EndpointUrl=url))


class Channel:
    """A client-side SecurityPolicy None channel made with asyncua's own SecureConnection."""

    def __init__(self) -> None:
        from asyncua.common.connection import SecureConnection, TransportLimits
        from asyncua.crypto.security_policies import SecurityPolicyNone

        self.conn = SecureConnection(SecurityPolicyNone(), TransportLimits(65535, 65535, 0, 0))
        self.request_id = 0

    def open_request(self) -> bytes:
        from asyncua import ua
        from asyncua.ua.ua_binary import struct_to_binary

        req = ua.OpenSecureChannelRequest()
        req.Parameters = ua.OpenSecureChannelParameters(
            ClientProtocolVersion=0, RequestType=ua.SecurityTokenRequestType.Issue,
            SecurityMode=ua.MessageSecurityMode.None_, RequestedLifetime=600_000, ClientNonce=b"")
        self.request_id += 1
        return self.conn.message_to_binary(struct_to_binary(req), message_type=ua.MessageType.SecureOpen,
                                           request_id=self.request_id)

    def accept(self, data: bytes) -> bool:
        """Take the server's OpenSecureChannel response; False if it is not one."""
        from asyncua import ua
        from asyncua.common.utils import Buffer
        from asyncua.ua.ua_binary import header_from_binary, struct_from_binary

        try:
            buf = Buffer(data)
            header = header_from_binary(buf)
            if header.MessageType != ua.MessageType.SecureOpen:
                return False
            msg = self.conn.receive_from_header_and_body(header, buf)
            response = struct_from_binary(ua.OpenSecureChannelResponse, msg.body())
            self.conn.set_channel(response.Parameters, ua.SecurityTokenRequestType.Issue, b"")
        except Exception:  # noqa: BLE001 - whatever the server sent, it is not a channel for us
            return False
        return True

    def request(self, request: object) -> bytes:
        from asyncua.ua.ua_binary import struct_to_binary

        self.request_id += 1
        return self.conn.message_to_binary(struct_to_binary(request), request_id=self.request_id)


def service_requests(url: str, rng: random.Random) -> list[object]:
    """Valid requests of the services a client uses, to be mutated."""
    from asyncua import ua

    create = ua.CreateSessionRequest()
    create.Parameters = ua.CreateSessionParameters(
        ClientDescription=ua.ApplicationDescription(ApplicationUri="urn:fuzz", ApplicationType=ua.ApplicationType.Client),
        EndpointUrl=url, SessionName="fuzz", ClientNonce=rng.randbytes(32), RequestedSessionTimeout=10_000)
    activate = ua.ActivateSessionRequest()
    activate.Parameters.UserIdentityToken = ua.UserNameIdentityToken(PolicyId="username", UserName="olga",
                                                                     Password=PASSWORD.encode())
    endpoints = ua.GetEndpointsRequest()
    endpoints.Parameters.EndpointUrl = url
    read = ua.ReadRequest()
    read.Parameters.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(rng.randint(1, 3000)), AttributeId=13)]
    write = ua.WriteRequest()
    write.Parameters.NodesToWrite = [ua.WriteValue(NodeId=ua.NodeId("plc_line1.speed_setpoint", 2), AttributeId=13,
                                                   Value=ua.DataValue(ua.Variant(rng.random() * 100)))]
    browse = ua.BrowseRequest()
    browse.Parameters.NodesToBrowse = [ua.BrowseDescription(NodeId=ua.NodeId(85), ResultMask=63)]
    sub = ua.CreateSubscriptionRequest()
    sub.Parameters = ua.CreateSubscriptionParameters(RequestedPublishingInterval=100, RequestedLifetimeCount=100,
                                                     RequestedMaxKeepAliveCount=10)
    close = ua.CloseSessionRequest()
    return [endpoints, create, activate, read, write, browse, sub, close]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a message; its name and the bytes."""
    b = bytearray(data)
    kind = rng.choice(["flip", "span", "size", "length", "type", "chunk", "truncate", "insert", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "span":
        i = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[i:i + n] = rng.randbytes(min(n, len(b) - i))
    elif kind == "size" and len(b) >= 8:
        struct.pack_into("<I", b, 4, rng.choice([0, 1, 8, 12, len(b) - 1, len(b) + 1, 65536, 2**31 - 1, 2**32 - 1,
                                                rng.getrandbits(32)]))
    elif kind == "length" and len(b) > 16:
        i = rng.randrange(8, len(b) - 4)
        struct.pack_into("<I", b, i, rng.choice([2**31 - 1, 2**32 - 1, 2**30, 65535, 10**8]))
    elif kind == "type":
        b[0:3] = rng.choice([b"HEL", b"ACK", b"ERR", b"OPN", b"MSG", b"CLO", b"RHE", b"XYZ", b"\x00\x00\x00"])
    elif kind == "chunk" and len(b) > 3:
        b[3:4] = rng.choice([b"C", b"A", b"F", b"X", b"\x00"])
    elif kind == "truncate":
        b = b[:rng.randrange(1, len(b))]
    elif kind == "insert":
        i = rng.randrange(len(b))
        b[i:i] = rng.randbytes(rng.randint(1, 256))
    else:
        i = rng.randrange(len(b))
        b[i:i + 16] = bytes(min(16, len(b) - i))
    return kind, bytes(b)


@dataclass
class OpcUaStats:
    cases: int = 0
    bytes_sent: int = 0
    closed_by_server: int = 0
    answered: int = 0
    refused_connect: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.cases += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


async def _exchange(host: str, port: int, parts: list[bytes], stats: OpcUaStats, wait_s: float = 0.05,
                    channel: Channel | None = None, url: str = "") -> None:
    """Connect, optionally do a valid Hello + OpenSecureChannel, send ``parts``, read what comes back."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        stats.refused_connect += 1
        return
    try:
        if channel is not None:
            writer.write(_hello(url))
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 5)
            writer.write(channel.open_request())
            await writer.drain()
            if not channel.accept(await asyncio.wait_for(reader.read(65536), 5)):
                return
        for part in parts:
            writer.write(part)
            stats.bytes_sent += len(part)
            await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(65536), wait_s)
            if data:
                stats.answered += 1
            else:
                stats.closed_by_server += 1
        except TimeoutError:
            pass
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        stats.closed_by_server += 1
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            pass


async def _oversized(host: str, port: int, stats: OpcUaStats, url: str, rng: random.Random) -> None:
    """A header claiming 50 MB, then up to 1 MB streamed: the server should hang up early."""
    header = b"MSG" + b"F" + struct.pack("<I", 50 * 1024 * 1024) + struct.pack("<I", rng.getrandbits(32))
    await _exchange(host, port, [_hello(url), header, *(rng.randbytes(65536) for _ in range(16))], stats, 0.3)


async def _chunk_flood(host: str, port: int, stats: OpcUaStats, url: str, rng: random.Random) -> None:
    """Intermediate chunks of one request on an open None channel, never a final one."""
    channel = Channel()
    parts = []
    for _ in range(40):
        body = rng.randbytes(60_000)
        chunk = bytearray(channel.request(_raw_request(body)))
        chunk[3:4] = b"C"
        parts.append(bytes(chunk))
    await _exchange(host, port, parts, stats, 0.3, channel=channel, url=url)


def _raw_request(body: bytes) -> object:
    from asyncua import ua

    req = ua.GetEndpointsRequest()
    req.Parameters.EndpointUrl = body.hex()[:60_000]
    return req


async def _idle_burst(host: str, port: int, stats: OpcUaStats, n: int = 60) -> None:
    """Many connections that send nothing, held for a second."""
    conns = []
    for _ in range(n):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection(host, port), 2))
        except (OSError, TimeoutError):
            stats.refused_connect += 1
    await asyncio.sleep(1.0)
    for _, w in conns:
        w.close()


class Until:
    """Go on until ``seconds`` have passed and ``count()`` has reached ``minimum``, never past ``cap_s``.

    A loaded machine (CI running tests in parallel) sends fewer cases per second: a test's minimum
    number of cases is then waited for rather than hoped for in a fixed time."""

    def __init__(self, seconds: float, count: Callable[[], int], minimum: int = 0, cap_s: float = 120.0) -> None:
        now = time.monotonic()
        self.end, self.hard_end = now + seconds, now + max(seconds, cap_s)
        self.count, self.minimum = count, minimum

    def more(self) -> bool:
        now = time.monotonic()
        return now < self.end or (self.count() < self.minimum and now < self.hard_end)


async def opcua_fuzz(url: str, seconds: float, seed: int, stats: OpcUaStats, probe, workers: int = 4,  # noqa: ANN001
                     minimum: int = 0) -> int:
    """``workers`` concurrent senders of cases until ``seconds`` have passed and at least ``minimum``
    cases were sent (:class:`Until`); a well-behaved client probes the server every 50 cases; returns
    the number of failed probes."""
    until = Until(seconds, lambda: stats.cases, minimum)
    failures = [0]

    async def prober() -> None:
        done = 0
        while until.more():
            await asyncio.sleep(0.05)
            if stats.cases >= done + 50:
                done = stats.cases
                if not await probe():
                    failures[0] += 1

    await asyncio.gather(prober(), *(_opcua_worker(url, until, seed * 1000 + i, stats) for i in range(workers)))
    return failures[0]


async def _opcua_worker(url: str, until: Until, seed: int, stats: OpcUaStats) -> None:
    from urllib.parse import urlparse

    host, port = urlparse(url).hostname or "127.0.0.1", urlparse(url).port or 4840
    rng = random.Random(seed)
    while until.more():
        roll = rng.random()
        if roll < 0.25:
            kind, data = mutate(_hello(url), rng)
            stats.count(f"hello/{kind}")
            await _exchange(host, port, [data], stats)
        elif roll < 0.45:
            kind, data = mutate(Channel().open_request(), rng)
            stats.count(f"open/{kind}")
            await _exchange(host, port, [_hello(url), data], stats)
        elif roll < 0.85:
            channel = Channel()
            request = rng.choice(service_requests(url, rng))
            valid = channel.request(request)
            kind, data = mutate(valid, rng) if rng.random() < 0.8 else ("valid", valid)
            if rng.random() < 0.1:
                data, kind = data + data, kind + "+dup"
            stats.count(f"service/{kind}")
            await _exchange(host, port, [data], stats, channel=channel, url=url)
        elif roll < 0.92:
            stats.count("garbage")
            await _exchange(host, port, [rng.randbytes(rng.randint(1, 4096))], stats)
        elif roll < 0.96:
            stats.count("oversized")
            await _oversized(host, port, stats, url, rng)
        elif roll < 0.99:
            stats.count("chunk_flood")
            await _chunk_flood(host, port, stats, url, rng)
        else:
            stats.count("idle_burst")
            await _idle_burst(host, port, stats)


async def endpoints_probe(url: str, source: str = PROBE_SOURCE) -> bool:
    """A well-behaved client on another machine (``source``) still gets the endpoints."""
    import types

    from asyncua import Client
    from asyncua.client.ua_client import UaClientState

    client = Client(url, timeout=5)

    async def connect_socket(self, host: str, port: int) -> None:  # noqa: ANN001 - UaClient's, plus local_addr
        self._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                self._make_protocol, host, port, local_addr=(source, 0)), self._timeout)
        except BaseException:
            self._set_state(UaClientState.DISCONNECTED)
            raise
        self._set_state(UaClientState.SOCKET_OPEN)

    client.uaclient.connect_socket = types.MethodType(connect_socket, client.uaclient)  # type: ignore[method-assign]
    try:
        return bool(await asyncio.wait_for(client.connect_and_get_server_endpoints(), 10))
    except Exception:  # noqa: BLE001 - any failure is a failed probe
        return False


# ---------------------------------------------------------------------- HTTP cases


@dataclass
class HttpStats:
    requests: int = 0
    status: dict[int, int] = field(default_factory=dict)
    errors_5xx: list[str] = field(default_factory=list)
    transport_errors: int = 0
    raw: dict[str, str] = field(default_factory=dict)
    generator_errors: dict[str, int] = field(default_factory=dict)
    thread_error: str = ""

    def seen(self, code: int, what: str) -> None:
        self.requests += 1
        self.status[code] = self.status.get(code, 0) + 1
        if code >= 500 and code != 503:  # 503: max_connections reached, by design
            self.errors_5xx.append(f"{what} -> {code}")


def _raw_http(url: str, request: bytes, body_chunks: int = 0, chunk: bytes = b"", hold_s: float = 0.0) -> str:
    """Send a raw request (and maybe body chunks), return the status line or what happened."""
    from urllib.parse import urlparse

    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
    try:
        sock.sendall(request)
        sock.settimeout(0.01)
        answer = b""
        for _ in range(body_chunks):
            try:
                answer += sock.recv(4096)
            except (TimeoutError, ssl.SSLWantReadError):
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
        if hold_s:
            time.sleep(hold_s)
        sock.settimeout(5)
        try:
            while b"\r\n" not in answer:
                got = sock.recv(4096)
                if not got:
                    break
                answer += got
        except (TimeoutError, OSError):
            pass
        return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    except OSError as exc:
        return f"error {type(exc).__name__}"
    finally:
        sock.close()


def raw_http_cases(url: str, token: str, rng: random.Random) -> dict[str, bytes | tuple]:
    host = url.split("://", 1)[1]
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    write = f"POST /api/tags/plc_line1.speed_setpoint/write HTTP/1.1\r\nHost: {host}\r\n".encode() + auth
    mb = 1024 * 1024
    return {
        "60MB declared": (write + f"Content-Type: application/json\r\nContent-Length: {60 * mb}\r\n\r\n".encode(),
                          16, rng.randbytes(65536)),
        "60MB chunked": (write + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                         1000, b"10000\r\n" + bytes(65536) + b"\r\n"),
        "bad Content-Length": write + b"Content-Length: -5\r\n\r\n",
        "two Content-Lengths": write + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "200 KB header": b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        "2000 headers": b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(
            f"X-{i}: {i}\r\n".encode() for i in range(2000)) + b"\r\n",
        "garbage line": rng.randbytes(300) + b"\r\n\r\n",
        "bad method": b"FROB /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
        "half request": (b"GET /api/health HTTP/1.1\r\nHost: x\r\n", 0, b"", 0.5),
        "json bomb": write + b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n" + b"[" * 30000
        + b"]" * 30000,
        "path traversal": b"GET /static/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "swagger traversal": b"GET /static/swagger-ui/..%2f..%2fapp.py HTTP/1.1\r\nHost: x\r\n\r\n",
    }


def http_fuzz(url: str, token: str, seconds: float, seed: int, stats: HttpStats, minimum: int = 0) -> None:
    """Schemathesis cases for every operation, interleaved with the raw cases, until time is up and
    at least ``minimum`` requests were sent (:class:`Until`)."""
    import httpx
    import schemathesis
    from schemathesis import GenerationMode

    rng = random.Random(seed)
    until = Until(seconds, lambda: stats.requests, minimum)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=10, verify=False) as client:
        doc = client.get(f"{url}/openapi.json", headers=headers).json()
        schema = schemathesis.openapi.from_dict(doc)
        ops = [r.ok() for r in schema.get_all_operations()]
        raw = threading.Thread(target=_raw_rounds, args=(url, token, until, rng.random(), stats), daemon=True)
        raw.start()
        while until.more():
            for op in rng.sample(ops, len(ops)):
                if not until.more():
                    break
                mode = rng.choice([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
                _schema_cases(client, op, mode, url, headers if rng.random() < 0.8 else {}, stats)
        raw.join(until.hard_end - time.monotonic() + 60)  # its answers are in the report


def _http_thread(url: str, token: str, seconds: float, seed: int, stats: HttpStats, minimum: int = 0) -> None:
    try:
        http_fuzz(url, token, seconds, seed, stats, minimum)
    except Exception as exc:  # noqa: BLE001 - reported in the result, not lost in a thread
        import traceback

        stats.thread_error = "".join(traceback.format_exception(exc))[-1500:]


def _raw_rounds(url: str, token: str, until: Until, seed: float, stats: HttpStats) -> None:
    """The raw malformed requests, round after round while ``until`` says so (in their own thread: some
    wait); the first round is always whole, so that every raw case has an answer in the report."""
    rng = random.Random(seed)
    first = True
    while first or until.more():
        for name, case in raw_http_cases(url, token, rng).items():
            args = case if isinstance(case, tuple) else (case,)
            status = _raw_http(url, *args)
            stats.raw[name] = status
            code = int(status.split()[1]) if status.startswith("HTTP/") else 0
            stats.seen(code, f"raw {name}: {status}")
            if not first and not until.more():
                return
        first = False


def _schema_cases(client, op, mode, url: str, headers: dict[str, str], stats: HttpStats) -> None:  # noqa: ANN001
    """A few schemathesis cases of one operation, sent with httpx (see tests/intelligence/test_api_schemathesis.py
    for why not schemathesis' own sender)."""
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def send(case) -> None:  # noqa: ANN001
        kw = case.as_transport_kwargs(base_url=url, headers=headers or None)
        try:
            with client.stream(kw["method"], kw["url"], params=kw.get("params"), headers=kw["headers"],
                               json=kw.get("json"), content=kw.get("data")) as resp:
                # the status stream (server-sent events) never ends: its status line is its answer; reading
                # it held this thread until the appliance stopped, and no further case was sent
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    resp.read()
        except httpx.LocalProtocolError:
            return
        except httpx.HTTPError:
            stats.transport_errors += 1
            return
        stats.seen(resp.status_code, f"{op.label} [{mode.value}]")

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # hypothesis reports the seed of an Unsatisfiable run
            send()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters)
    except Exception as exc:  # noqa: BLE001 - a case the generator or httpx could not make is not the server's fault
        stats.generator_errors[type(exc).__name__] = stats.generator_errors.get(type(exc).__name__, 0) + 1


# ---------------------------------------------------------------------- one site


def fuzz_site(name: str, seconds: float, seed: int = 1, baseline_s: float = 4.0, minimum: int = 0) -> dict:
    """Start the site, measure its poll rate, fuzz OPC UA and HTTP at once for ``seconds`` (and until
    each side sent at least ``minimum`` cases, :class:`Until`), report."""
    import warnings

    warnings.filterwarnings("ignore")  # certificate warnings of the self-signed test HTTPS
    with tempfile.TemporaryDirectory(prefix=f"edge-fuzz-{name}-") as tmp:
        app = Appliance(name, Path(tmp), secure=(name == "secure"))
        app.write_site()
        app.provision()
        app.start()
        try:
            time.sleep(1.0)
            p0, t0, rss0 = app.polls(), time.monotonic(), app.rss_mb()
            time.sleep(baseline_s)
            p1, t1 = app.polls(), time.monotonic()
            before = (p1 - p0) / (t1 - t0) if p0 is not None and p1 is not None else 0.0
            sampler = Sampler(app)
            sampler.start()
            ostats, hstats = OpcUaStats(), HttpStats()
            http = threading.Thread(target=_http_thread, args=(app.api_url, app.token, seconds, seed, hstats, minimum),
                                    daemon=True)
            p2, t2, c2 = app.polls(), time.monotonic(), app.poll_counters()
            http.start()
            probe_failures = asyncio.run(opcua_fuzz(app.opc_url, seconds, seed, ostats,
                                                    lambda: endpoints_probe(app.opc_url), minimum=minimum))
            http.join(max(seconds, 120.0) + 120)  # Until's cap, and the raw round that may finish after it
            p3, t3, c3 = app.polls(), time.monotonic(), app.poll_counters()
            peak = sampler.stop()
            during = (p3 - p2) / (t3 - t2) if p2 is not None and p3 is not None else 0.0
            alive = app.alive() and asyncio.run(endpoints_probe(app.opc_url))
            rss_end = app.rss_mb()
            time.sleep(baseline_s)  # the rate after the fuzz too: the baseline is the mean of both sides, so a
            p4, t4 = app.polls(), time.monotonic()  # machine whose load drifts (a parallel suite) is not blamed on it
            after = (p4 - p3) / (t4 - t3) if p3 is not None and p4 is not None else 0.0
        finally:
            app.stop()
    return {"site": name, "seconds": seconds, "opcua_cases": ostats.cases, "opcua_bytes": ostats.bytes_sent,
            "opcua_closed_by_server": ostats.closed_by_server, "opcua_refused_connect": ostats.refused_connect,
            "opcua_kinds": ostats.kinds, "http_requests": hstats.requests, "http_status": hstats.status,
            "http_5xx": len(hstats.errors_5xx), "http_5xx_examples": hstats.errors_5xx[:5],
            "http_transport_errors": hstats.transport_errors, "http_raw": hstats.raw,
            "http_generator_errors": hstats.generator_errors, "http_thread_error": hstats.thread_error,
            "crashes": 0 if alive else 1, "probe_failures": probe_failures,
            "rss_before_mb": round(rss0, 1), "rss_peak_mb": round(peak, 1), "rss_end_mb": round(rss_end, 1),
            "rss_growth_mb": round(max(peak, rss_end) - rss0, 1), "polls_per_s_before": round(before, 2),
            "polls_per_s_during": round(during, 2), "polls_per_s_after": round(after, 2),
            "poll_rate_ratio": round(2 * during / (before + after), 3) if before + after else 0.0,
            **polls_kept(c2, c3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="fuzz time per site (default 12)")
    parser.add_argument("--long", action="store_true", help="300 s per site")
    parser.add_argument("--sites", default="demo,secure", help="demo, secure or both (comma-separated)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    seconds = 300.0 if args.long else args.seconds
    results = []
    for name in args.sites.split(","):
        r = fuzz_site(name, seconds, args.seed)
        results.append(r)
        print(f"{name:7s} OPC UA {r['opcua_cases']:6d} cases ({r['opcua_bytes'] / 1e6:.1f} MB, server closed "
              f"{r['opcua_closed_by_server']}), HTTP {r['http_requests']:5d} requests ({r['http_5xx']} 5xx), "
              f"RSS {r['rss_before_mb']:.0f} -> peak {r['rss_peak_mb']:.0f} -> end {r['rss_end_mb']:.0f} MB, "
              f"polls/s {r['polls_per_s_before']:.1f} -> {r['polls_per_s_during']:.1f} -> {r['polls_per_s_after']:.1f} "
              f"(ratio {r['poll_rate_ratio']:.2f}, kept {r['poll_kept_ratio']:.3f} of the scheduled cycles "
              f"{r['poll_deltas']}, left online {r['devices_left_online']}), alive {not r['crashes']}, probes failed {r['probe_failures']}")
        print("        raw HTTP: " + "; ".join(f"{k}: {v}" for k, v in r["http_raw"].items()))
    summary = {
        "opcua_cases": sum(r["opcua_cases"] for r in results), "http_requests": sum(r["http_requests"] for r in results),
        "http_5xx": sum(r["http_5xx"] for r in results), "crashes": sum(r["crashes"] for r in results),
        "probe_failures": sum(r["probe_failures"] for r in results),
        "rss_growth_mb": max(r["rss_growth_mb"] for r in results),
        "poll_rate_ratio": min(r["poll_rate_ratio"] for r in results),
        "poll_kept_ratio": min(r["poll_kept_ratio"] for r in results), "seconds_per_site": seconds,
        "sites": {r["site"]: {k: r[k] for k in ("opcua_cases", "http_requests", "http_5xx", "crashes",
                                                 "rss_growth_mb", "poll_rate_ratio", "poll_kept_ratio",
                                                 "devices_left_online", "probe_failures")}
                  for r in results},
    }
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
