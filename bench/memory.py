"""Per-tag memory budget by component: what each part of the appliance costs per tag, in RSS.

Each stage runs in a fresh child process, which builds the appliance up to that stage for a
plant of N devices x 100 float32 tags (each with a unit and a range, so OPC UA AnalogItems with
EURange and EngineeringUnits, the heaviest common tag) and reports its resident memory after a
full collection and ``malloc_trim``. Stages, each including the previous ones:

  imports       the interpreter and every module the appliance loads
  config        the site configuration loaded and validated (pydantic models, plugin, Plant/TagInfo)
  appliance     the Appliance without outputs: driver runtimes (request plans, codecs), latest store,
                write service
  opcua         + the OPC UA server started (asyncua's standard address space + the plant's)
  subscribed    + one client subscribed to every tag, each tag updated twice (monitored items,
                their last values, the queued notifications sent)

A component's cost per tag is the slope between a small and a large plant (the fixed part
cancels out), so the figures hold for any size. The baseline is the same measurement of the
previous stage in the same run.

    .venv/bin/python bench/memory.py                 # 20 and 200 devices (2,000 / 20,000 tags), ~1 minute
    .venv/bin/python bench/memory.py --long          # 20 and 500 devices (50,000 tags)
Ends with one line ``RESULT {json}``: bytes per tag of each component, ``opcua_bytes_per_tag`` the
address space (target <= 2048).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STAGES = ("imports", "config", "appliance", "opcua", "subscribed")
TAGS = 100


def rss_bytes() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def site_yaml(tmp: Path, devices: int, opc_port: int) -> Path:
    plugin = tmp / "plugins" / "mem_device"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "manifest.yaml").write_text("id: mem_device\nname: Memory benchmark device\nversion: '1.0'\n"
                                          "vendor: edge\nmodel: 100 float32 registers\n")
    (plugin / "points.yaml").write_text("points:\n" + "".join(
        f"  - {{name: t{k}, address: {2 * k}, type: float32, unit: kW, range: [0, {1000 + k}]}}\n"
        for k in range(TAGS)))
    lines = [
        "site: {name: mem}",
        f"plugins_dir: {plugin.parent}",
        f"runtime: {{data_dir: {tmp / 'data'}, log_level: warning}}",
        "buses: [{name: net, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 500}]",
        "outputs:",
        f"  opcua: {{endpoint: 'opc.tcp://127.0.0.1:{opc_port}/edge', security_policies: ['None'], "
        "allow_security_none: true, anonymous: true, max_queue_size: 1}",
        "devices:",
    ]
    lines += [f"  - {{name: dev{d}, bus: net, port: {20000 + d}, plugin: mem_device}}" for d in range(devices)]
    path = tmp / "edge.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- one stage (child process)

async def stage_main(stage: str, devices: int) -> dict:
    import numpy as np

    from edge.config.loader import load_config
    from edge.core.model import SampleBatch
    from edge.outputs.opcua.server import OpcUaServer
    from edge.runtime.app import Appliance

    out: dict = {"imports": rss_bytes()}
    upto = STAGES.index(stage)
    tmp = Path(tempfile.mkdtemp(prefix="edge-mem-"))
    loaded = load_config(site_yaml(tmp, devices, 0))  # OPC UA on any free port (read back after the start)
    out["config"] = rss_bytes()
    if upto < 2:
        return out
    app = Appliance(loaded, audit=False, outputs=False)
    out["appliance"] = rss_bytes()
    if upto < 3:
        return out
    server = OpcUaServer(loaded.plant, loaded.config.outputs.opcua)
    await server.start()
    out["opcua"] = rss_bytes()
    out["build_s"] = round(server.build_s, 2)
    if upto < 4:
        await server.stop()
        return out
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", server.endpoint_url, str(devices),
        stdout=asyncio.subprocess.PIPE)
    assert client.stdout is not None
    await asyncio.wait_for(client.stdout.readline(), 300)  # subscribed
    plant = loaded.plant
    by_device: dict[str, list[int]] = {}
    for t in plant.tags:
        by_device.setdefault(t.device, []).append(t.id)
    for k in range(2):
        for dev, ids in by_device.items():
            arr = np.array(ids, dtype=np.int32)
            server.consume(SampleBatch(dev, time.time_ns(), arr, np.arange(len(ids), dtype=np.float64) + k,
                                       np.zeros(len(ids), dtype=np.uint8)))
        await asyncio.sleep(1.0)
    out["subscribed"] = rss_bytes()
    client.kill()
    await client.wait()
    await server.stop()
    del app
    return out


async def client_main(endpoint: str, devices: int) -> None:
    from asyncua import Client, ua

    client = Client(endpoint, timeout=120, watchdog_intervall=600.0)
    async with client:
        ns = await client.get_namespace_index("urn:edge:mem")
        sub = await client.create_subscription(100, None)
        nodes = [client.get_node(ua.NodeId(f"dev{d}.t{k}", ns)) for d in range(devices) for k in range(TAGS)]
        for i in range(0, len(nodes), 5000):
            await sub.subscribe_data_change(nodes[i:i + 5000], queuesize=1)
        print("subscribed", flush=True)
        await asyncio.sleep(3600)


# ----------------------------------------------------------------------------- orchestration

def run_stage(stage: str, devices: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--stage", stage, str(devices)], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"stage {stage} with {devices} devices failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        print(json.dumps(asyncio.run(stage_main(sys.argv[2], int(sys.argv[3])))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20, help="devices of the small plant")
    parser.add_argument("--large", type=int, default=200, help="devices of the large plant")
    parser.add_argument("--long", action="store_true", help="the large plant has 500 devices (50,000 tags)")
    args = parser.parse_args()
    if args.long:
        args.large = 500
    small = run_stage("subscribed", args.small)
    large = run_stage("subscribed", args.large)
    n = (args.large - args.small) * TAGS
    per_tag: dict[str, float] = {}
    for prev, stage in zip(STAGES, STAGES[1:], strict=False):
        grow_large = large[stage] - large[prev]
        grow_small = small[stage] - small[prev]
        per_tag[stage] = round((grow_large - grow_small) / n)
    fixed = {stage: round((small[stage] - small[prev] - per_tag[stage] * args.small * TAGS) / 2**20, 1)
             for prev, stage in zip(STAGES, STAGES[1:], strict=False)}
    total_large = large["subscribed"] / 2**20
    print(f"per-tag memory by component ({args.small} and {args.large} devices x {TAGS} tags, "
          f"slope over {n:,} tags; pid {os.getpid()})")
    names = {"config": "configuration, Plant, TagInfo", "appliance": "driver runtimes, latest store, writes",
             "opcua": "OPC UA address space (+ asyncua's standard nodes: fixed)",
             "subscribed": "OPC UA monitored items (one client, every tag)"}
    for stage in STAGES[1:]:
        print(f"  {names[stage]:<58} {per_tag[stage]:>7,} B/tag   fixed {fixed[stage]:>7} MB")
    print(f"  {'imports (interpreter and libraries)':<58} {'':>7}         fixed {large['imports'] / 2**20:>7.1f} MB")
    print(f"  RSS of the {args.large}-device plant: {total_large:.0f} MB; OPC UA build {large.get('build_s')} s")
    result = {f"{stage}_bytes_per_tag": per_tag[stage] for stage in STAGES[1:]}
    result.update({f"{stage}_fixed_mb": fixed[stage] for stage in STAGES[1:]},
                  imports_mb=round(large["imports"] / 2**20, 1), opcua_bytes_per_tag=per_tag["opcua"],
                  rss_large_mb=round(total_large, 1), tags_large=args.large * TAGS, build_s=large.get("build_s"))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
