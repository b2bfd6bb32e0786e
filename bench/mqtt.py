"""MQTT Sparkplug B output: metrics/s delivered to a subscriber through a local Mosquitto, and CPU.

Two phases in the same run, the same broker and subscriber (a separate process that parses every
payload and counts its metrics), the same offered load (default 100 devices x 100 tags, every
value changed at every poll, 10 polls/s per device = 100,000 metrics/s):

* **baseline**: a plain paho-mqtt loop (paho's network thread) that builds each device's DDATA
  with the generated Tahu protobuf code (alias, timestamp, double value per metric) and publishes
  it, the way a straightforward Sparkplug script does;
* **appliance**: the appliance's MQTT output as it runs in ``edge run`` - pipeline sink after the
  spool (seq per batch, store and forward on), change detection, DDATA encoding by alias, barriers,
  the echoes of its own DDATA (subscribed and counted), paho driven by the asyncio loop.

CPU is the bench process's CPU (all its threads, the spool's writer included) over the measuring
window; ``cpu_ratio`` is the appliance's CPU per metric over the baseline's. Targets: at least
100,000 metrics/s delivered at no more than 0.5 core, within 1.5x the baseline's CPU per metric.

    .venv/bin/python bench/mqtt.py             # 8 s windows (< 1 minute)
    .venv/bin/python bench/mqtt.py --long      # 30 s windows

Last line: ``RESULT {json}`` with ``metrics_per_s``, ``cpu_cores``, ``cpu_ratio``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge.config.mqtt import MqttConfig  # noqa: E402
from edge.config.storage import SpoolConfig  # noqa: E402
from edge.core.model import DeviceInfo, Plant, SampleBatch, TagInfo  # noqa: E402
from edge.core.pipeline import Pipeline  # noqa: E402
from edge.core.writes import WriteService  # noqa: E402
from edge.outputs.mqtt import sparkplug_b_pb2 as pb  # noqa: E402
from edge.outputs.mqtt.output import MqttOutput  # noqa: E402
from edge.storage.spool import Spool  # noqa: E402

GROUP, NODE = "bench", "edge1"
TARGET_METRICS_S, TARGET_CORES, TARGET_RATIO = 100_000, 0.5, 1.5


# ----------------------------------------------------------------------------- broker and subscriber


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    """Mosquitto on a free loopback port (retried if another process takes the port first)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    for _ in range(8):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
                        f"log_type error\nlog_type information\nmax_queued_messages 1000000\n"
                        + ("user root\n" if os.geteuid() == 0 else ""))
        log = workdir / "broker.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        for _ in range(500):
            text = log.read_text(errors="replace")
            if f"listen socket on port {port}" in text:
                return proc, port
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    raise RuntimeError("mosquitto did not start")


def subscriber(port: int, messages, metrics, ready) -> None:
    """Child process: subscribe to every DDATA, parse each payload, count messages and metrics."""
    payload = pb.Payload()

    def on_message(client, userdata, msg) -> None:
        payload.ParseFromString(msg.payload)
        with messages.get_lock():
            messages.value += 1
            metrics.value += len(payload.metrics)

    def on_connect(client, userdata, flags, rc, props) -> None:
        client.subscribe(f"spBv1.0/{GROUP}/DDATA/#", 0)
        ready.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
    c.on_message = on_message
    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_forever()


# ----------------------------------------------------------------------------- load


def make_plant(devices: int, tags: int) -> Plant:
    plant = Plant("bench")
    for d in range(devices):
        ids = []
        for t in range(tags):
            tag = TagInfo(len(plant.tags), f"dev{d:03d}", f"t{t:03d}", "net", "float64", unit="V")
            plant.tags.append(tag)
            ids.append(tag.id)
        plant.devices.append(DeviceInfo(f"dev{d:03d}", "net", 1, None, None, tuple(ids)))
    return plant


def batches(plant: Plant, rounds: int) -> list[list[SampleBatch]]:
    """``rounds`` polls of every device, every value different from the previous poll's."""
    rng = np.random.default_rng(1)
    out = []
    for r in range(rounds):
        polls = []
        for dev in plant.devices:
            ids = np.array(dev.tag_ids, dtype=np.int32)
            polls.append(SampleBatch(dev.name, 0, ids, rng.random(len(ids)) * 100 + r, np.zeros(len(ids), np.uint8)))
        out.append(polls)
    return out


async def paced(polls: list[list[SampleBatch]], seconds: float, rate_polls_s: float, handle) -> int:
    """Offer one device poll at a time at ``rate_polls_s`` for ``seconds``; the number of polls offered."""
    n_dev = len(polls[0])
    t0 = time.monotonic()
    sent = 0
    total = int(seconds * rate_polls_s)
    while True:
        now = time.monotonic()
        if sent >= total:
            return sent
        due = min(int((now - t0) * rate_polls_s) + 1, total)
        while sent < due:
            b = polls[(sent // n_dev) % len(polls)][sent % n_dev]
            b.ts_ns = time.time_ns()
            handle(b)
            sent += 1
        await asyncio.sleep(0.002)


# ----------------------------------------------------------------------------- phases


def baseline_payload(alias0: int, batch: SampleBatch, seq: int) -> bytes:
    """What a straightforward Sparkplug publisher builds for one poll: every metric, by alias."""
    p = pb.Payload(timestamp=time.time_ns() // 1_000_000, seq=seq)
    ts = batch.ts_ns // 1_000_000
    for tag_id, v in zip(batch.tag_ids.tolist(), batch.values.tolist(), strict=True):
        p.metrics.add(alias=alias0 + tag_id, timestamp=ts, double_value=v)
    return p.SerializeToString()


async def run_baseline(port: int, polls, seconds: float, rate: float) -> tuple[float, int]:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq = [0]

    def handle(b: SampleBatch) -> None:
        c.publish(f"spBv1.0/{GROUP}/DDATA/{NODE}/{b.device}", baseline_payload(1000, b, seq[0]), 0, False)
        seq[0] = (seq[0] + 1) % 256

    cpu0 = time.process_time()
    n = await paced(polls, seconds, rate, handle)
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.5)
    c.loop_stop()
    c.disconnect()
    return cpu, n


async def run_appliance(port: int, plant: Plant, polls, seconds: float, rate: float, tmp: Path) -> tuple[float, int, dict]:
    spool = Spool(tmp / "spool.db", plant, SpoolConfig(retention_s=60.0))
    spool.start()
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{port}", sparkplug={"group_id": GROUP, "edge_node_id": NODE,
                                                                  "node_metrics_interval_s": 5})
    out = MqttOutput(cfg, plant, spool, WriteService(plant, None, None), lambda: [], lambda: {}, tmp, tmp)
    pipeline = Pipeline()
    pipeline.add("spool", spool)
    pipeline.add("mqtt", out)
    await out.start()
    for _ in range(500):
        if out.live:
            break
        await asyncio.sleep(0.01)
    assert out.live, out.stats()
    await asyncio.sleep(0.5)  # the replay of the (empty) backlog and the births are done
    cpu0 = time.process_time()
    n = await paced(polls, seconds, rate, pipeline.publish)
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.5)
    stats = out.stats()
    await out.stop()
    await spool.stop()
    errors = sum(s.errors for s in pipeline.stats.values())
    return cpu, n, {**stats, "sink_errors": errors}


async def measure(phase: str, args, port, plant, polls, counters, tmp: Path) -> dict:
    messages, metrics = counters
    rate = args.devices * args.polls_per_s
    m0 = metrics.value
    t0 = time.monotonic()
    if phase == "baseline":
        cpu, n = await run_baseline(port, polls, args.seconds, rate)
        extra: dict = {}
    else:
        cpu, n, extra = await run_appliance(port, plant, polls, args.seconds, rate, tmp)
    offered = n * args.tags
    await asyncio.sleep(0.3)
    delivered = metrics.value - m0
    wall = args.seconds
    out = {"phase": phase, "offered_metrics": offered, "delivered_metrics": delivered,
           "metrics_per_s": delivered / wall, "cpu_s": cpu, "cpu_cores": cpu / wall,
           "cpu_ms_per_1000_metrics": cpu / max(delivered, 1) * 1e6, "wall_s": time.monotonic() - t0}
    if extra:
        out["appliance"] = {k: extra[k] for k in ("messages", "metrics", "births", "backlog_ranges", "stalls",
                                                  "disconnects", "sink_errors")}
    return out


async def main_async(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    broker, port = start_broker(tmp)
    messages, metrics, ready = mp.Value("q", 0), mp.Value("q", 0), mp.Event()
    sub = mp.Process(target=subscriber, args=(port, messages, metrics, ready), daemon=True)
    sub.start()
    try:
        assert ready.wait(10), "subscriber did not connect"
        plant = make_plant(args.devices, args.tags)
        polls = batches(plant, 8)
        results = {}
        for phase in ("baseline", "appliance"):
            results[phase] = await measure(phase, args, port, plant, polls, (messages, metrics), tmp / phase)
            r = results[phase]
            print(f"{phase:>9}: {r['metrics_per_s']:>10,.0f} metrics/s delivered of {r['offered_metrics'] / args.seconds:,.0f}"
                  f" offered; {r['cpu_cores']:.3f} cores; {r['cpu_ms_per_1000_metrics']:.2f} ms CPU per 1,000 metrics")
        return results
    finally:
        sub.terminate()
        sub.join(5)
        broker.kill()
        broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", action="store_true", help="30 s measuring windows instead of 8 s")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--polls-per-s", type=float, default=10.0, help="polls per second of each device")
    ap.add_argument("--seconds", type=float, default=None, help="measuring window per phase")
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 30.0 if args.long else 8.0
    res = asyncio.run(main_async(args))
    base, app = res["baseline"], res["appliance"]
    ratio = app["cpu_ms_per_1000_metrics"] / max(base["cpu_ms_per_1000_metrics"], 1e-9)
    ok = (app["metrics_per_s"] >= TARGET_METRICS_S and app["cpu_cores"] <= TARGET_CORES and ratio <= TARGET_RATIO)
    print(f"appliance / baseline CPU per metric: {ratio:.2f} (target <= {TARGET_RATIO}); "
          f"targets {'met' if ok else 'NOT met'} (>= {TARGET_METRICS_S:,} metrics/s at <= {TARGET_CORES} core)")
    out = {"metrics_per_s": round(app["metrics_per_s"]), "cpu_cores": round(app["cpu_cores"], 3),
           "cpu_ratio": round(ratio, 3), "cpu_ms_per_1000_metrics": round(app["cpu_ms_per_1000_metrics"], 1),
           "baseline_metrics_per_s": round(base["metrics_per_s"]), "baseline_cpu_cores": round(base["cpu_cores"], 3),
           "baseline_cpu_ms_per_1000_metrics": round(base["cpu_ms_per_1000_metrics"], 1),
           "offered_metrics_per_s": round(app["offered_metrics"] / args.seconds),
           "delivered_ratio": round(app["delivered_metrics"] / max(app["offered_metrics"], 1), 4),
           "devices": args.devices, "tags": args.tags, "seconds": args.seconds, "targets_met": ok,
           "appliance": app.get("appliance", {})}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
