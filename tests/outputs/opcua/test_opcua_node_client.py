"""A second, independent client stack (node-opcua, JavaScript) reads and subscribes.

The client is installed from tests/outputs/opcua/node/package-lock.json (``npm ci``); the fixture
installs it when node_modules is missing, so a clean checkout works.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from opcua_helpers import PASSWORDS, read_node_lines, tag_id

from edge.core.model import Quality, SampleBatch
from edge.outputs.opcua.server import OpcUaServer

pytestmark = pytest.mark.usefixtures("opcua_path")  # the fast path and the library's plain path

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the node-opcua client tests (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "node-opcua-client").is_dir():
        run = subprocess.run([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"npm ci failed:\n{run.stdout}\n{run.stderr}"
    return NODE_DIR / "read_subscribe.js"


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000 / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_node_opcua_reads_and_subscribes(running: OpcUaServer, node_client: Path, tmp_path: Path) -> None:
    plant = running.plant
    ids = [tag_id(plant, k) for k in ("meter1.voltage", "meter1.energy", "meter1.running")]
    t0 = time.time_ns()
    running.consume(SampleBatch("meter1", t0, np.array(ids, np.int32), np.array([231.5, 4711.0, 1.0]),
                                np.zeros(3, np.uint8)))
    node_ids = [f"ns={running.ns};s={k}" for k in ("meter1.voltage", "meter1.energy", "meter1.running")]
    proc = await asyncio.create_subprocess_exec(
        "node", str(node_client), running.endpoint_url, "olga", PASSWORDS["olga"], "5", "30000", *node_ids,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "NODE_OPCUA_PKI": str(tmp_path / "node-pki")},
    )
    lines: list[dict] = []
    try:
        await read_node_lines(proc, lines, lambda m: m.get("ready"))
        t1 = time.time_ns()
        running.consume(SampleBatch("meter1", t1, np.array(ids[:1], np.int32), np.array([232.25]), np.zeros(1, np.uint8)))
        await asyncio.sleep(0.3)
        t2 = time.time_ns()
        running.consume(SampleBatch.bad("meter1", t2, np.array(ids[:1]), Quality.BAD_NO_COMMUNICATION))
        await read_node_lines(proc, lines, lambda m: sum("changed" in x for x in lines) >= 5)  # 3 initial + 2
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    reads = {m["read"]: m for m in lines if "read" in m}
    assert reads[node_ids[0]]["value"] == 231.5 and reads[node_ids[0]]["statusName"] == "Good"
    assert reads[node_ids[0]]["source"] == _iso(t0)
    assert reads[node_ids[1]]["value"] == 4711 and reads[node_ids[2]]["value"] is True
    assert reads[node_ids[0]]["server"] is not None

    voltage = [m for m in lines if m.get("changed") == node_ids[0]]
    assert [m["value"] for m in voltage[:2]] == [231.5, 232.25]
    assert voltage[1]["source"] == _iso(t1) and voltage[1]["statusName"] == "Good"
    assert voltage[2]["statusName"] == "BadNoCommunication" and voltage[2]["value"] is None
    assert voltage[2]["source"] == _iso(t2) and voltage[2]["server"] is not None
