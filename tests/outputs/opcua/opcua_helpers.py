"""Shared helpers of the OPC UA tests (a uniquely named module, importable from every test file)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.config.opcua import OpcUaConfig  # noqa: E402
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo  # noqa: E402
from edge.storage.history import HistoryArrays  # noqa: E402

PASSWORDS = {"olga": "operator-pass-1", "victor": "viewer-pass-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def config(users_file: Path, pki_dir: Path | None = None, **kw: object) -> OpcUaConfig:
    base: dict[str, object] = {
        "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/edge",
        "users_file": users_file,
        "security_policies": ["None"],
        "allow_security_none": True,
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
