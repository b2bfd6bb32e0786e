"""Shared helpers of the OPC UA tests (a uniquely named module, importable from every test file)."""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.config.opcua import OpcUaConfig  # noqa: E402
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo  # noqa: E402
from edge.storage.history import HistoryArrays  # noqa: E402

PASSWORDS = {"olga": "operator-pass-1", "victor": "viewer-pass-1"}
FAST_PATH = True  # outputs.opcua.fast_path of the servers config() describes; the opcua_path fixture sets it


def make_plant(site: str = "plant1", devices: int = 2, analog_per_device: int = 3) -> Plant:
    """Bus ``line1`` with ``devices`` meters: analog tags plus a bool, an enum and a string each;
    ``setpoint`` (float32, 0..100, writable) and ``mode`` (enum, writable) accept writes."""
    tags: list[TagInfo] = []
    devs: list[DeviceInfo] = []

    def add(**kw: object) -> int:
        tags.append(TagInfo(id=len(tags), bus="line1", **kw))  # type: ignore[arg-type]
        return len(tags) - 1

    for d in range(devices):
        dev = f"meter{d + 1}"
        ids = [
            add(device=dev, name="voltage", dtype="float32", unit="V", low=0.0, high=400.0,
                description="phase voltage L1", deadband=0.5),
            add(device=dev, name="current", dtype="float32", unit="A", low=0.0, high=100.0),
            add(device=dev, name="energy", dtype="uint32", unit="kWh"),
            add(device=dev, name="setpoint", dtype="float32", unit="°C", low=0.0, high=100.0, writable=True),
            add(device=dev, name="counter", dtype="uint16", writable=True),
            add(device=dev, name="running", dtype="bool", enum={0: "stopped", 1: "running"}),
            add(device=dev, name="mode", dtype="uint16", enum={0: "off", 1: "auto", 3: "manual"}, writable=True),
            add(device=dev, name="serial", dtype="string"),
        ]
        for i in range(analog_per_device):
            ids.append(add(device=dev, name=f"ai{i}", dtype="float64", unit="bar", low=-1.0, high=10.0))
        devs.append(DeviceInfo(name=dev, bus="line1", address=f"unit {d + 1}", plugin="acme-meter", plugin_version="1.2.0",
                               tag_ids=tuple(ids)))
    return Plant(site=site, buses=[BusInfo("line1", "modbus_tcp", tuple(d.name for d in devs))],
                 devices=devs, tags=tags)


def tag_id(plant: Plant, key: str) -> int:
    return plant.tag_by_key()[key].id


def shared_pki() -> Path:
    """One server certificate for the tests' None-only servers (made once per test run): with it, their
    None endpoint asks clients to encrypt passwords with the server's key (issue 15)."""
    global _SHARED_PKI
    if _SHARED_PKI is None:
        from edge.security.pki import create_server_certificate

        _SHARED_PKI = Path(tempfile.mkdtemp(prefix="edge-test-pki-")) / "pki"
        create_server_certificate(_SHARED_PKI, "urn:edge:opcua-server", "127.0.0.1")
    return _SHARED_PKI


_SHARED_PKI: Path | None = None


def config(users_file: Path, pki_dir: Path | None = None, **kw: object) -> OpcUaConfig:
    """A None-only server (passwords encrypted with a shared test certificate), or with ``pki_dir``
    None plus both Basic256Sha256 policies."""
    base: dict[str, object] = {
        "endpoint": "opc.tcp://127.0.0.1:0/edge",  # any free port: the server's endpoint_url has the bound one
        "users_file": users_file,
        "security_policies": ["None"],
        "allow_security_none": True,
        "pki_dir": shared_pki(),
        "fast_path": FAST_PATH,
    }
    if pki_dir is not None:
        base.update(pki_dir=pki_dir, security_policies=["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"])
    base.update(kw)
    return OpcUaConfig(**base)  # type: ignore[arg-type]


class HistoryStandIn:
    """Holds (ts, value, quality[, texts]) per tag like the ring buffers and the spool, and answers
    ``history(tag_id, t0_ns, t1_ns, max_values, newest_first)`` with t0 <= ts < t1 (the contract of
    Outputs.history); records the calls it got."""

    def __init__(self) -> None:
        self.data: dict[int, tuple] = {}
        self.calls: list[tuple[int, int, int, int, bool]] = []

    def __call__(self, tag_id: int, t0_ns: int, t1_ns: int, max_values: int, newest_first: bool = False):  # noqa: ANN204
        import numpy as np

        self.calls.append((tag_id, t0_ns, t1_ns, max_values, newest_first))
        ts, v, q, *rest = self.data.get(tag_id, (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint8)))
        texts = rest[0] if rest else None
        idx = np.flatnonzero((ts >= t0_ns) & (ts < t1_ns))
        if newest_first:
            idx = idx[::-1]
        idx = idx[:max_values]
        return HistoryArrays(ts[idx], v[idx], q[idx], [texts[i] for i in idx] if texts is not None else None)


NODE_DIR = Path(__file__).resolve().parent / "node"


def ensure_node_client() -> Path:
    """node-opcua installed from node/package-lock.json (``npm ci`` when node_modules is missing)."""
    import shutil
    import subprocess

    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the node-opcua client tests (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "node-opcua-client").is_dir():
        run = subprocess.run([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"npm ci failed:\n{run.stdout}\n{run.stderr}"
    return NODE_DIR / "ua_tool.js"


async def node_ua(endpoint: str, user: str | None, password: str | None, ops: list[dict],
                  pki: Path, timeout_s: float = 60.0) -> list[dict]:
    """Run ``ops`` in one node-opcua session (node/ua_tool.js); one result dict per operation."""
    import asyncio
    import json

    script = ensure_node_client()
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), endpoint, user or "-", password or "-", str(int(timeout_s * 1000)), json.dumps(ops),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "NODE_OPCUA_PKI": str(pki)})
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s + 10)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    assert lines and lines[-1] == {"done": True}, f"node-opcua client failed: {lines} {err.decode()[-3000:]}"
    return lines[:-1]


# ---------------------------------------------------------------------- raw clients (issue 15)
# asyncua's UaClient layer: a client that ignores the endpoints the server advertises and sends
# whatever it likes, from a chosen loopback address (127.0.0.2 is another "machine").


def _source_bound(uac: object, source: str) -> None:
    """Make ``uac.connect_socket`` connect from ``source`` (UaClient's own code, plus local_addr)."""
    import asyncio
    import types

    from asyncua.client.ua_client import UaClientState

    async def connect_socket(self, host: str, port: int) -> None:  # noqa: ANN001
        self._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                self._make_protocol, host, port, local_addr=(source, 0)), self._timeout)
        except BaseException:
            self._set_state(UaClientState.DISCONNECTED)
            raise
        self._set_state(UaClientState.SOCKET_OPEN)

    uac.connect_socket = types.MethodType(connect_socket, uac)  # type: ignore[attr-defined]


def client_from(url: str, source: str, user: str | None = None, password: str | None = None,
                timeout: float = 5) -> object:
    """A plain asyncua Client whose TCP connection comes from ``source`` (e.g. 127.0.0.2)."""
    from asyncua import Client

    c = Client(url, timeout=timeout)
    _source_bound(c.uaclient, source)
    if user is not None:
        c.set_user(user)
    if password is not None:
        c.set_password(password)
    return c


def user_client(url: str, user: str = "victor", timeout: float = 10) -> Any:
    """An asyncua Client that logs in as one of the test users (PASSWORDS)."""
    from asyncua import Client

    c = Client(url, timeout=timeout)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def raw_channel(url: str, *, cert: Path | None = None, key: Path | None = None,
                      server_cert: Path | None = None, mode: int | None = None, source: str = "127.0.0.1"):
    """Hello and OpenSecureChannel, nothing else: a None channel, or Basic256Sha256 with ``cert``/``key``."""
    import os
    from urllib.parse import urlparse

    from asyncua import ua
    from asyncua.client.ua_client import UaClient
    from asyncua.crypto import uacrypto
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    parsed = urlparse(url)
    uac = UaClient(timeout=5)
    nonce = b""
    if cert is not None:
        assert key is not None and server_cert is not None
        policy = SecurityPolicyBasic256Sha256(
            await uacrypto.load_certificate(str(server_cert)), await uacrypto.load_certificate(str(cert)),
            await uacrypto.load_private_key(str(key)), mode or ua.MessageSecurityMode.SignAndEncrypt)
        uac.set_security(policy)
        nonce = os.urandom(32)
    _source_bound(uac, source)
    await uac.connect_socket(parsed.hostname, parsed.port)
    await uac.send_hello(url)
    await uac.open_secure_channel(ua.OpenSecureChannelParameters(
        ClientProtocolVersion=0, RequestType=ua.SecurityTokenRequestType.Issue,
        SecurityMode=mode or (ua.MessageSecurityMode.SignAndEncrypt if cert else ua.MessageSecurityMode.None_),
        RequestedLifetime=600_000, ClientNonce=nonce))
    return uac


async def raw_create_session(uac, url: str, application_uri: str = "urn:attacker", client_cert: bytes | None = None):
    """CreateSession with whatever ApplicationUri the caller likes; returns the result."""
    import os

    from asyncua import ua

    params = ua.CreateSessionParameters()
    params.ClientDescription = ua.ApplicationDescription(ApplicationUri=application_uri,
                                                         ApplicationType=ua.ApplicationType.Client)
    params.EndpointUrl = url
    params.SessionName = "raw"
    params.ClientNonce = os.urandom(32)
    params.ClientCertificate = client_cert
    params.RequestedSessionTimeout = 60_000
    params.MaxResponseMessageSize = 0
    return await uac.create_session(params)


def encrypted_password_token(server_cert_der: bytes, password: str, server_nonce: bytes,
                             user: str) -> object:
    """A UserName token with the password encrypted for the server (RSA-OAEP), as a client makes it."""
    from asyncua import ua
    from asyncua.crypto import uacrypto
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256, encrypt_asymmetric

    pubkey = uacrypto.x509_from_der(server_cert_der).public_key()
    blob = ua.ua_binary.Primitives.Bytes.pack(password.encode() + server_nonce)
    data, uri = encrypt_asymmetric(pubkey, blob, SecurityPolicyBasic256Sha256.URI)
    return ua.UserNameIdentityToken(PolicyId="username", UserName=user, Password=data, EncryptionAlgorithm=uri)


async def raw_activate(uac, token: object) -> object:
    from asyncua import ua

    act = ua.ActivateSessionParameters()
    act.UserIdentityToken = token
    act.ClientSignature = ua.SignatureData()
    return await uac.activate_session(act)


async def read_node_lines(proc: Any, lines: list[dict], pred: Callable[[dict], object], max_lines: int = 1000,
                          timeout_s: float = 40) -> None:
    """Read the JSON lines of a running node-opcua client script (read_subscribe.js) into ``lines`` until
    one satisfies ``pred``; node-opcua's own log lines are skipped, an error or timeout line fails."""
    import asyncio
    import json

    for _ in range(max_lines):
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        if not raw:
            raise AssertionError(f"node client ended early: {lines} {(await proc.stderr.read()).decode()[-2000:]}")
        try:
            msg = json.loads(raw)
        except ValueError:
            continue  # node-opcua's own log lines
        lines.append(msg)
        assert "error" not in msg and "timeout" not in msg, msg
        if pred(msg):
            return
    raise AssertionError(f"no matching line in {max_lines}: {lines[-20:]}")

