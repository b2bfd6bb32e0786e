"""Polling benchmark: the appliance against a plain pymodbus loop, same devices, same concurrency.

N simulated Modbus TCP devices x M tags are served from another process (drivers.modbus.sim). Run A is
the appliance's own path (config loader, request plan, line owner, lean transport, block
codec with quality, diagnostics, pipeline into the latest-value store), polling as fast as
the devices answer. Run B is the baseline: one pymodbus AsyncModbusTcpClient per device
reading the same blocks on the same schedule (every 10 ms per device), decoding nothing; run C
the same loop back to back, as fast as the servers answer (more requests per event-loop
wake-up, so a lower CPU per request than any paced loop). Both run in this process one after the
other; CPU is this process's user+system time, so the servers' CPU is not counted.

Prints requests/s, tags/s and CPU ms per 1,000 requests for both, their ratio, and a last
line ``RESULT {json}`` with ``cpu_ratio`` (appliance CPU per request / baseline's) and
``tags_per_s`` (appliance decoded tags per second).

``--paced``: the shape of bench/e2e.py instead (500 devices x 100 float32 at 1 s, each device on its
own connection, 2 requests per cycle), the appliance alone with no outputs: its Modbus side's CPU per
tag at 50,000 tags/s, where every request is a wake-up of its own unless the schedule shares them.
Run A is the appliance as it is, run B the same with the wake grid off (each device wakes at its own
phase, as before issue 21); RESULT has ``us_per_tag``, ``us_per_request``, ``loop_iterations_per_s``
for both and ``cpu_ratio`` (A / B).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from drivers.modbus.sim.plant import listening_socket  # noqa: E402
from drivers.modbus.sim.process import SimPlantProcess  # noqa: E402
from drivers.modbus.simulation import plant_specs  # noqa: E402
from edge.config.loader import load_config  # noqa: E402
from edge.runtime.app import Appliance  # noqa: E402

TYPES = ("float32", "int16", "uint32", "float32")  # a realistic mix; float32 twice (two orders)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def paced_yaml(ports: list[int], tags: int, data_dir: str) -> str:
    """bench/e2e.py's plant: one device per port, ``tags`` float32 each, polled every second."""
    lines = ["site: {name: bench}", "buses: [{name: net, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 500}]",
             f"runtime: {{data_dir: {data_dir}, log_level: warning}}", "devices:"]
    for d, port in enumerate(ports):
        lines.append(f"  - name: dev{d}\n    bus: net\n    port: {port}\n    interval_ms: 1000\n    points:")
        lines += [f"      - {{name: t{k}, address: {2 * k}, type: float32}}" for k in range(tags)]
    return "\n".join(lines) + "\n"


def site_yaml(ports: list[int], tags: int, data_dir: str, timeout_ms: int = 10) -> str:
    """One device per port (ports held for the simulator by listening sockets), polled every 10 ms
    with a 10 ms answer timeout (flat out); a longer ``timeout_ms`` (the smoke test on a loaded CI
    machine) polls at that interval (a timeout may not exceed the interval)."""
    lines = ["site: {name: bench}", f"buses: [{{name: net, type: modbus_tcp, host: 127.0.0.1, timeout_ms: {timeout_ms}}}]",
             f"runtime: {{data_dir: {data_dir}}}", "devices:"]
    for d, port in enumerate(ports):
        lines.append(f"  - name: dev{d}\n    bus: net\n    port: {port}\n    unit_id: 1\n"
                     f"    interval_ms: {max(10, timeout_ms)}\n    timeout_ms: {timeout_ms}\n    points:")
        address = 0
        for t in range(tags):
            dtype = TYPES[t % len(TYPES)]
            order = "CDAB" if t % len(TYPES) == 3 else "ABCD"
            extra = ", scale: 0.1, range: [-3000, 3000]" if dtype == "int16" else ""
            lines.append(f"      - {{name: t{t}, address: {address}, type: {dtype}, order: {order}{extra}}}")
            address += 1 if dtype == "int16" else 2
    return "\n".join(lines) + "\n"


async def run_appliance(loaded, seconds: float, warmup_s: float) -> dict:
    app = Appliance(loaded, audit=False, outputs=False)
    await app.start()
    await asyncio.sleep(warmup_s)
    loop = asyncio.get_running_loop()
    iterations = count_iterations(loop)
    req0 = sum(rt.diag.requests for rt in app.devices.values())
    tags0, c0, w0 = app.pipeline.samples, cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    req1 = sum(rt.diag.requests for rt in app.devices.values())
    tags1, c1, w1 = app.pipeline.samples, cpu_s(), time.perf_counter()
    del loop._run_once  # type: ignore[attr-defined]  # back to the class's method
    errors = sum(rt.diag.polls_failed + rt.diag.timeouts for rt in app.devices.values())
    await app.stop()
    return _figures(req1 - req0, tags1 - tags0, c1 - c0, w1 - w0) | {
        "errors": errors, "loop_iterations_per_s": iterations[0] / (w1 - w0)}


def count_iterations(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the event loop's iterations (wake-ups) from now on: [count], updated in place."""
    counter = [0]
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        counter[0] += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    return counter


async def run_pymodbus(loaded, seconds: float, warmup_s: float, paced: bool) -> dict:
    """One client per device, the same blocks, read in a loop; nothing decoded.

    ``paced``: every device reads all its blocks once per poll interval, like the appliance's
    schedule (the same request rate, so CPU per request compares like with like); otherwise
    back to back as fast as the server answers.
    """
    from drivers.modbus.resolve import device_plan

    counts = {"req": 0, "tags": 0}
    stop = asyncio.Event()
    measuring = asyncio.Event()

    async def device_loop(dev) -> None:
        plan = device_plan(dev)
        blocks = [(b.start, b.count, len(b.points)) for g in plan.groups() for b in plan.blocks(g)]
        client = AsyncModbusTcpClient(dev.config.host or dev.bus.host, port=dev.config.port, timeout=1, retries=0)
        await client.connect()
        interval = dev.interval_ms(dev.points[0].point.group) / 1e3
        deadline = time.monotonic()
        try:
            while not stop.is_set():
                if paced:
                    deadline += interval
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        deadline = time.monotonic()
                for start, count, ntags in blocks:
                    await client.read_holding_registers(start, count=count, device_id=dev.config.unit_id)
                    if measuring.is_set():
                        counts["req"] += 1
                        counts["tags"] += ntags
        finally:
            client.close()

    tasks = [asyncio.create_task(device_loop(d)) for d in loaded.devices]
    await asyncio.sleep(warmup_s)
    measuring.set()
    c0, w0 = cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    c1, w1 = cpu_s(), time.perf_counter()
    req, tags = counts["req"], counts["tags"]
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return _figures(req, tags, c1 - c0, w1 - w0)


def _figures(requests: int, tags: int, cpu: float, wall: float) -> dict:
    return {"requests": requests, "tags": tags, "cpu_s": cpu, "wall_s": wall,
            "requests_per_s": requests / wall, "tags_per_s": tags / wall,
            "cpu_ms_per_1000_requests": 1e6 * cpu / max(requests, 1), "cpu_share": cpu / wall}


async def paced(devices: int, tags: int, seconds: float) -> None:
    """bench/e2e.py's plant without outputs: the wake grid on (A) and off (B), same simulator."""
    from drivers.modbus import poller

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        held = {s.getsockname()[1]: s for s in (listening_socket() for _ in range(devices))}
        path.write_text(paced_yaml(list(held), tags, tmp))
        loaded = load_config(path)
        sim = SimPlantProcess(plant_specs(loaded), processes=1, sockets=held)
        await sim.start()
        for sock in held.values():
            sock.close()
        grid = poller.WAKE_GRID_MAX_S
        try:
            ours = await run_appliance(loaded, seconds, 4.0)
            poller.WAKE_GRID_MAX_S = 0.0  # every device wakes at its own phase
            base = await run_appliance(loaded, seconds, 4.0)
        finally:
            poller.WAKE_GRID_MAX_S = grid
            await sim.stop()
    print(f"{devices} devices x {tags} float32 at 1 s, one connection each, no outputs, {seconds:.0f} s per run")
    out: dict[str, object] = {"devices": devices, "tags": tags}
    for name, key, f in (("wake grid (as shipped)", "", ours), ("no wake grid (before)", "baseline_", base)):
        us_req = 1e6 * f["cpu_s"] / max(f["requests"], 1)
        us_tag = 1e6 * f["cpu_s"] / max(f["tags"], 1)
        print(f"  {name:<24} {f['tags_per_s']:>8.0f} tags/s {f['cpu_share']:.3f} cores {us_tag:6.2f} us/tag "
              f"{us_req:7.1f} us/request {f['loop_iterations_per_s']:6.0f} loop iterations/s, {f['errors']} errors")
        out.update({f"{key}us_per_tag": round(us_tag, 3), f"{key}us_per_request": round(us_req, 1),
                    f"{key}loop_iterations_per_s": round(f["loop_iterations_per_s"]),
                    f"{key}tags_per_s": round(f["tags_per_s"]), f"{key}errors": f["errors"]})
    out["cpu_ratio"] = round(out["us_per_tag"] / out["baseline_us_per_tag"], 3)  # type: ignore[operator]
    print(f"  CPU per tag, wake grid / none: {out['cpu_ratio']:.2f}x")
    print("RESULT " + json.dumps(out))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=None, help="10 (500 with --paced)")
    parser.add_argument("--tags", type=int, default=None, help="1000 (100 with --paced)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--long", action="store_true", help="30 s per run")
    parser.add_argument("--timeout-ms", type=int, default=10, help="answer timeout of the unpaced run's devices")
    parser.add_argument("--paced", action="store_true", help="bench/e2e.py's plant (500 x 100 at 1 s), no outputs")
    args = parser.parse_args()
    seconds = 30.0 if args.long else args.seconds
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if args.paced:
        await paced(args.devices or 500, args.tags or 100, seconds)
        return
    args.devices = args.devices or 10
    args.tags = args.tags or 1000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        held = {s.getsockname()[1]: s for s in (listening_socket() for _ in range(args.devices))}
        path.write_text(site_yaml(list(held), args.tags, tmp, args.timeout_ms))
        loaded = load_config(path)
        sim = SimPlantProcess(plant_specs(loaded), processes=1, sockets=held)
        await sim.start()
        for sock in held.values():
            sock.close()  # the simulator's child has its own copy
        try:
            ours = await run_appliance(loaded, seconds, 2.0)
            base = await run_pymodbus(loaded, seconds, 2.0, paced=True)
            flat = await run_pymodbus(loaded, seconds, 2.0, paced=False)
        finally:
            await sim.stop()
    ratio = ours["cpu_ms_per_1000_requests"] / base["cpu_ms_per_1000_requests"]
    ratio_flat = ours["cpu_ms_per_1000_requests"] / flat["cpu_ms_per_1000_requests"]
    print(f"{args.devices} devices x {args.tags} tags over Modbus TCP, {seconds:.0f} s per run")
    for name, f in (("appliance", ours), ("pymodbus loop, same schedule", base),
                    ("pymodbus loop, back to back", flat)):
        print(f"  {name:<28} {f['requests_per_s']:>9.0f} requests/s {f['tags_per_s']:>10.0f} tags/s "
              f"{f['cpu_ms_per_1000_requests']:>7.1f} ms CPU per 1,000 requests  (CPU {100 * f['cpu_share']:.0f} %)")
    print(f"  CPU per request, appliance / plain pymodbus loop on the same schedule: {ratio:.2f}x "
          "(target <= 1.0x, stretch 0.5x)")
    print(f"  CPU per request, appliance / pymodbus loop back to back (more requests per wake-up): {ratio_flat:.2f}x")
    print(f"  decoded tags/s: {ours['tags_per_s']:.0f} (target >= 200,000 with 10 x 1,000)")
    result = {"cpu_ratio": round(ratio, 3), "tags_per_s": round(ours["tags_per_s"]),
              "requests_per_s": round(ours["requests_per_s"]),
              "cpu_ms_per_1000_requests": round(ours["cpu_ms_per_1000_requests"], 2),
              "baseline_requests_per_s": round(base["requests_per_s"]),
              "baseline_cpu_ms_per_1000_requests": round(base["cpu_ms_per_1000_requests"], 2),
              "baseline_tags_per_s": round(base["tags_per_s"]), "cpu_ratio_back_to_back": round(ratio_flat, 3),
              "back_to_back_requests_per_s": round(flat["requests_per_s"]), "devices": args.devices, "tags": args.tags,
              "errors": ours["errors"]}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
