"""Bytes the OPC UA server keeps per monitored item, fast path against the library's plain path.

A server of N float32 tags (devices of 100 tags, each an AnalogItem with unit and range) runs in
this process under ``tracemalloc``; an asyncua client in a child process subscribes to every tag
(one subscription, queue size 1, requests of 5,000 items), the tags change twice, and the server's
Python allocations still alive are compared with those before the client connected. The
difference divided by N is the server's cost per monitored item (with each watched tag's share
of its Value record); the largest allocation sites are printed. Each path runs in a fresh child
process; the baseline is the library's plain path in the same run.

    .venv/bin/python bench/item_memory.py              # 5,000 items, ~20 s
    .venv/bin/python bench/item_memory.py --long       # 20,000 items
Ends with ``RESULT {json}``: ``fast_bytes_per_item``, ``plain_bytes_per_item``, ``ratio`` (fast / plain).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAGS = 100


def make_plant(devices: int):  # noqa: ANN201 - edge.core.model.Plant
    from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo

    tags: list[TagInfo] = []
    devs: list[DeviceInfo] = []
    for d in range(devices):
        ids = []
        for k in range(TAGS):
            tags.append(TagInfo(id=len(tags), device=f"dev{d}", name=f"t{k}", bus="net", dtype="float32",
                                unit="kW", low=0.0, high=1000.0 + k))
            ids.append(len(tags) - 1)
        devs.append(DeviceInfo(name=f"dev{d}", bus="net", address=f"unit {d}", plugin=None,
                               plugin_version=None, tag_ids=tuple(ids)))
    return Plant(site="mem", buses=[BusInfo("net", "modbus_tcp", tuple(x.name for x in devs))], devices=devs, tags=tags)


async def measure(fast: bool, devices: int, top: int) -> dict:
    """One path in this process: the server's live allocations per monitored item."""
    import gc

    import numpy as np

    from edge.config.opcua import OpcUaConfig
    from edge.core.model import SampleBatch
    from edge.outputs.opcua.server import OpcUaServer

    plant = make_plant(devices)
    cfg = OpcUaConfig(endpoint="opc.tcp://127.0.0.1:0/edge", security_policies=["None"], allow_security_none=True,
                      anonymous=True, fast_path=fast, max_queue_size=1)
    server = OpcUaServer(plant, cfg)
    await server.start()

    def update(k: int) -> None:
        for dev in plant.devices:
            ids = np.array(dev.tag_ids, dtype=np.int32)
            server.consume(SampleBatch(dev.name, time.time_ns(), ids, np.arange(len(ids), dtype=np.float64) + k,
                                       np.zeros(len(ids), dtype=np.uint8)))

    update(0)
    assert server.server is not None
    table = server.server.iserver.aspace._nodes

    def forget() -> None:  # the built nodes' recently-used cache is bounded (4,096), not per item
        if hasattr(table, "forget"):
            table.forget()
    tracemalloc.start(1)
    forget()
    gc.collect()
    before = tracemalloc.take_snapshot()
    client = await asyncio.create_subprocess_exec(sys.executable, __file__, "--client", server.endpoint_url,
                                                  str(devices), str(server.ns), stdout=asyncio.subprocess.PIPE)
    assert client.stdout is not None
    line = await asyncio.wait_for(client.stdout.readline(), 300)
    created = int(line.split()[1])
    for k in (1, 2):
        update(k)
        await asyncio.sleep(0.5)
    forget()
    gc.collect()
    after = tracemalloc.take_snapshot()
    n_items = len(plant.tags)
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    sites = [(str(s.traceback[0]).replace(str(ROOT) + "/", "").split("site-packages/")[-1], s.size_diff,
              s.count_diff) for s in stats[:top]]
    packed = server.publisher.stats.packed_items
    client.kill()
    await client.wait()
    tracemalloc.stop()
    await server.stop()
    return {"fast": server.publisher.fast, "items": n_items, "created": created, "packed": packed,
            "bytes_per_item": round(total / n_items, 1), "sites": sites}


async def client_main(endpoint: str, devices: int, ns: int) -> None:
    from asyncua import Client, ua

    client = Client(endpoint, timeout=120, watchdog_intervall=600.0)
    async with client:
        sub = await client.create_subscription(100, None)
        nodes = [client.get_node(ua.NodeId(f"dev{d}.t{k}", ns)) for d in range(devices) for k in range(TAGS)]
        handles = []
        for i in range(0, len(nodes), 5000):
            handles += await sub.subscribe_data_change(nodes[i:i + 5000], queuesize=1)
        ok = sum(1 for h in handles if isinstance(h, int))
        print("subscribed", ok, flush=True)
        await asyncio.sleep(3600)


def run(path: str, devices: int, top: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--path", path, str(devices), str(top)], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{path} path failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--path":
        print(json.dumps(asyncio.run(measure(sys.argv[2] == "fast", int(sys.argv[3]), int(sys.argv[4])))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="20,000 items instead of 5,000")
    ap.add_argument("--top", type=int, default=12, help="allocation sites to print per path")
    args = ap.parse_args()
    devices = 200 if args.long else 50
    t0 = time.monotonic()
    out = {}
    for path in ("plain", "fast"):
        res = run(path, devices, args.top)
        out[path] = res
        print(f"{path:5s} path: {res['items']:,} items ({res['created']:,} created, {res['packed']:,} packed): "
              f"{res['bytes_per_item']:,.0f} B per item")
        for site, size, count in res["sites"]:
            print(f"    {size / res['items']:8.1f} B/item {count / res['items']:6.2f} blocks/item  {site}")
    ratio = out["fast"]["bytes_per_item"] / out["plain"]["bytes_per_item"]
    print(f"fast / plain: {ratio:.3f}  (whole run {time.monotonic() - t0:.1f} s)")
    print("RESULT " + json.dumps({"fast_bytes_per_item": out["fast"]["bytes_per_item"],
                                  "plain_bytes_per_item": out["plain"]["bytes_per_item"],
                                  "ratio": round(ratio, 3), "items": out["fast"]["items"]}))


if __name__ == "__main__":
    main()
