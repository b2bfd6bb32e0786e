"""End-to-end benchmark: simulated devices -> the whole appliance -> OPC UA client and time-series server.

Processes: simulated Modbus TCP devices (drivers.modbus.sim, one child process), the appliance as it runs
on site (`edge run`: polling, decoding, aggregator, OPC UA server, spool and forwarder to a
VictoriaMetrics server speaking the InfluxDB write protocol), a lean OPC UA client subscribed
to every tag, and this orchestrator. Every simulated value changes every second.

Measured on the appliance's process only (from /proc): CPU share (cores) and resident memory.
From the appliance's own telemetry (edge_health in the time-series server): samples/s and
poll-interval jitter. Latency: a marker value is written into a simulated device's register
at a known wall time; the OPC UA client reports when the notification carrying it arrives,
and the orchestrator polls the time-series server until the point is queryable.

Measured too: poll -> time-series server latency of every line (bench/tsdb_tap.py in front of the
server), poll -> OPC UA client latency of every notification (SourceTimestamp to arrival), and the
appliance's memory by component (its own RSS ledger, edge.runtime.memory, read from edge_health).

Targets (issue 21): 50,000 tags/s at <= 3.2 us CPU per tag and <= 350 MB; 100,000 tags/s (--long)
at <= 0.5 core and <= 600 MB; poll -> TSDB p50 <= 0.3 s, p99 <= 1 s; poll -> OPC UA client
p99 <= publishing interval (100 ms here) + 100 ms. Reference: EMQ Neuron 15,000 tags/s at ~1.24 cores.

    .venv/bin/python bench/e2e.py                 # 500 devices x 100 tags at 1 s: 15 s window, under a minute
    .venv/bin/python bench/e2e.py --long          # 1000 devices x 100 tags (100,000 tags/s), 3-minute measurement
Ends with one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

MARKER_BASE = 1_000_000.0
LAT_BINS = 10_000  # client latency histogram: 1 ms bins up to 10 s
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- OPC UA client process

async def client_main(endpoint: str, ns: int, devices: int, tags: int, seconds: float) -> None:
    """Subscribe to every tag; print counters every 0.5 s and each marker value when it arrives."""
    from asyncua import Client, ua
    from asyncua.common.subscription import Subscription
    from opcua import install_lean_decoder  # bench/opcua.py: the same lean client decoder

    install_lean_decoder()
    state = {"n": 0, "checked": 0, "errors": 0}
    epoch = 116444736000000000  # 1601 -> 1970 in 100 ns
    hist = np.zeros(LAT_BINS + 1, dtype=np.int64)  # poll (SourceTimestamp) -> received, 1 ms bins

    async def on_publish(self: Subscription, result: ua.PublishResult) -> None:
        now = time.time()
        for notif in result.NotificationMessage.NotificationData or ():
            if not isinstance(notif, ua.DataChangeNotification):
                continue
            items = notif.MonitoredItems
            state["n"] += len(items)
            srcs = np.fromiter((it[3] for it in items if isinstance(it, tuple)), dtype=np.float64)
            if srcs.size:
                lat_ms = (now - (srcs - epoch) / 1e7) * 1e3
                np.add(hist, np.bincount(np.clip(lat_ms, 0, LAT_BINS).astype(np.int64), minlength=LAT_BINS + 1),
                       out=hist)
            for k, item in enumerate(items):
                if not isinstance(item, tuple):
                    continue
                handle, value, status, src, srv = item
                if k % 97 == 0:  # a full check of a sample: value, status, both timestamps
                    state["checked"] += 1
                    ok = status == 0 and src > epoch and srv >= src and abs((src - epoch) / 1e7 - now) < 60
                    state["errors"] += not ok
                if value >= MARKER_BASE:
                    print(json.dumps({"marker": value, "recv": now}), flush=True)

    Subscription.publish_callback = on_publish  # type: ignore[method-assign]
    client = Client(endpoint, timeout=120, watchdog_intervall=600.0)
    async with client:
        sub = await client.create_subscription(100, None)
        nodes = [client.get_node(ua.NodeId(f"dev{d}.t{k}", ns)) for d in range(devices) for k in range(tags)]
        # Two requests in flight: the server always has the next batch of items to create while the
        # client decodes the last answer (one at a time, the server waited on each round trip).
        gate = asyncio.Semaphore(2)

        async def create(batch: list) -> None:
            async with gate:
                await sub.subscribe_data_change(batch, queuesize=1)

        await asyncio.gather(*(create(nodes[i:i + 5000]) for i in range(0, len(nodes), 5000)))
        print(json.dumps({"ready": True, "subscribed": len(nodes)}), flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            nz = np.flatnonzero(hist)
            print(json.dumps({"t": time.time(), **state, "hist": [nz.tolist(), hist[nz].tolist()]}), flush=True)


# ----------------------------------------------------------------------------- orchestration


def site_yaml(ports: list[int], tags: int, interval_ms: int, vm_url: str, data_dir: Path,
              stats_window_s: float = 60.0, health_interval_s: float | None = 1.0) -> str:
    """One device per port (held for the simulator by listening sockets); OPC UA on any free port.

    ``health_interval_s``: this benchmark reads samples/s from the appliance's own health records,
    so it writes them every second by default (a health row per device and one for the appliance);
    None leaves the product's default (10 s), as bench/peers.py does."""

    plugin = data_dir.parent / "plugins" / "bench_device"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "manifest.yaml").write_text("id: bench_device\nname: Benchmark device\nversion: '1.0'\n"
                                          "vendor: edge\nmodel: 100 float32 registers\n")
    (plugin / "points.yaml").write_text("points:\n" + "".join(
        f"  - {{name: t{k}, address: {2 * k}, type: float32, "
        f"sim: {{kind: sine, mean: {10 + k}, amplitude: 5, noise: 0.5, period_s: 60}}}}\n" for k in range(tags)))
    lines = [
        "site: {name: e2e}",
        f"plugins_dir: {plugin.parent}",
        f"runtime: {{data_dir: {data_dir}, status_interval_s: 1, stats_window_s: {stats_window_s}, log_level: warning"
        + (f", health_interval_s: {health_interval_s}}}" if health_interval_s is not None else "}"),
        "buses: [{name: net, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 500}]",
        "outputs:",
        "  opcua: {endpoint: 'opc.tcp://127.0.0.1:0/edge', security_policies: ['None'], "
        "allow_security_none: true, anonymous: true, max_queue_size: 1}",
        f"  influxdb: {{url: '{vm_url}', token: bench, org: edge, bucket: edge}}",
        "devices:",
    ]
    for d, port in enumerate(ports):
        lines.append(f"  - {{name: dev{d}, bus: net, port: {port}, interval_ms: {interval_ms}, "
                     "plugin: bench_device}")
    return "\n".join(lines) + "\n"


def proc_cpu_s(pid: int, system: bool = False) -> float:
    """CPU seconds of a process (utime + stime; only stime with ``system``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    if system:
        return int(fields[12]) / CLK_TCK
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _hist(latest: dict) -> np.ndarray:
    """The OPC UA client's latency histogram (1 ms bins) as last reported."""
    out = np.zeros(LAT_BINS + 1, dtype=np.int64)
    if "hist" in latest:
        idx, counts = latest["hist"]
        out[np.asarray(idx, dtype=np.int64)] = counts
    return out


def _hist_pct(hist: np.ndarray, q: float) -> float | None:
    total = int(hist.sum())
    if total <= 0:
        return None
    return float(np.searchsorted(np.cumsum(hist), total * q / 100.0))


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def vm_query(url: str, query: str) -> list:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        return json.loads(r.read())["data"]["result"]


def vm_has_value(url: str, metric: str, value: float, since_s: float) -> bool:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    q = urllib.parse.urlencode({"match[]": metric, "start": f"{since_s:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=10) as r:
        for line in r.read().splitlines():
            if any(abs(v - value) < 1e-3 for v in json.loads(line)["values"]):
                return True
    return False


async def read_lines(stream: asyncio.StreamReader, sink: list, latest: dict) -> None:
    while line := await stream.readline():
        msg = json.loads(line)
        if "marker" in msg:
            sink.append(msg)
        else:
            latest.update(msg)


async def run(args: argparse.Namespace) -> dict:
    from tsdb import VictoriaMetrics
    from tsdb_tap import TsdbTap

    tmp = Path(tempfile.mkdtemp(prefix="edge-e2e-"))
    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    tap = TsdbTap(vm.url)
    await tap.start()
    try:
        return await _run_with(args, tmp, vm, tap)
    finally:
        await tap.stop()
        vm.stop()


async def _run_with(args: argparse.Namespace, tmp: Path, vm, tap) -> dict:
    from drivers.modbus.sim.plant import listening_socket
    from drivers.modbus.sim.process import SimPlantProcess
    from drivers.modbus.simulation import plant_specs
    from edge.config.loader import load_config

    held = {s.getsockname()[1]: s for s in (listening_socket() for _ in range(args.devices))}
    config = tmp / "edge.yaml"
    config.write_text(site_yaml(list(held), args.tags, args.interval_ms, tap.url, tmp / "data",
                                stats_window_s=args.seconds, health_interval_s=args.health_interval_s))
    loaded = load_config(config)
    sim = SimPlantProcess(plant_specs(loaded), processes=1, sockets=held)
    t_start = time.monotonic()
    # The appliance boots (imports, configuration, address space: ~8 s) while the simulator starts
    # (~4 s): its pollers start last, and the devices' ports already listen (held here until then).
    app = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", "run", str(config), "--no-status",
                                               cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    client = None
    try:
        await sim.start()
        for sock in held.values():
            sock.close()  # the simulator's child has its own copy
        url = await opcua_url(app)
        ns = await wait_for_server(url, app)
        startup_s = time.monotonic() - t_start
        client = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", url, str(ns),
            str(args.devices), str(args.tags), str(args.seconds + args.warmup + 60),
            stdout=asyncio.subprocess.PIPE)
        markers: list[dict] = []
        latest: dict = {}
        reader = asyncio.create_task(read_lines(client.stdout, markers, latest))
        rss_before_client = proc_rss_mb(app.pid)
        while not latest.get("ready"):
            if client.returncode is not None:
                raise RuntimeError("the OPC UA client failed")
            await asyncio.sleep(0.1)
        subscribe_s = time.monotonic() - t_start - startup_s
        await asyncio.sleep(args.warmup)
        tap.reset()
        profiler = start_profiler(args.profile, app.pid, args.seconds) if args.profile else None
        figures = await measure(args, app.pid, sim, vm, markers, latest, tap)
        if profiler is not None:
            await finish_profiler(profiler, args.profile)
        figures.update(startup_s=round(startup_s, 1), subscribe_s=round(subscribe_s, 1),
                       rss_before_client_mb=round(rss_before_client, 1))
        reader.cancel()
        return figures
    finally:
        if client is not None and client.returncode is None:
            client.kill()
            await client.wait()
        await asyncio.gather(stop_app(app), sim.stop())  # the appliance takes seconds to exit: not in turn


async def stop_app(app: asyncio.subprocess.Process) -> None:
    if app.returncode is None:
        app.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(app.wait(), 30)
        except TimeoutError:
            app.kill()


async def opcua_url(app: asyncio.subprocess.Process, timeout_s: float = 300) -> str:
    """The OPC UA endpoint the appliance got (it listens on port 0): from its "appliance started" line."""
    line = await asyncio.wait_for(app.stdout.readline(), timeout_s)
    found = re.search(r"OPC UA at (opc\.tcp://\S+?)(,|$)", line.decode().strip())
    if not found:
        err = (await app.stderr.read()).decode()[-2000:] if app.returncode is not None else ""
        raise RuntimeError(f"the appliance did not start: {line.decode().strip()!r} {err}")
    return found.group(1)


async def wait_for_server(url: str, app: asyncio.subprocess.Process) -> int:
    """Wait for the OPC UA endpoint; return the site namespace index."""
    from asyncua import Client

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if app.returncode is not None:
            err = await app.stderr.read()
            raise RuntimeError(f"the appliance exited: {err.decode()[-2000:]}")
        try:
            async with Client(url, timeout=5) as c:
                return await c.get_namespace_index("urn:edge:e2e")
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.5)
    raise RuntimeError("the appliance's OPC UA server did not come up in 120 s")


async def measure(args, pid: int, sim, vm, markers: list[dict], latest: dict, tap) -> dict:
    interval_s = args.interval_ms / 1e3
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    sys0 = proc_cpu_s(pid, system=True)
    sim_pids = sim.pids()
    sim0 = sum(proc_cpu_s(p) for p in sim_pids)
    n0 = latest.get("n", 0)
    hist0 = _hist(latest)
    wall0 = time.time()
    sent: dict[float, float] = {}
    tsdb_latency: list[float] = []
    rss_max = 0.0
    rng = np.random.default_rng(1)
    seq = 0
    tsdb_checks: list[asyncio.Task] = []
    end = t0 + args.seconds
    while time.monotonic() < end:
        seq += 1
        dev = int(rng.integers(args.devices))
        value = MARKER_BASE + seq
        sent[value] = time.time()
        sim.set_value(f"dev{dev}", "t0", value)
        if seq % 3 == 0:
            tsdb_checks.append(asyncio.create_task(
                tsdb_latency_of(vm.url, f"dev{dev}_t0", value, sent[value], tsdb_latency)))
        rss_max = max(rss_max, proc_rss_mb(pid))
        await asyncio.sleep(0.5 + float(rng.uniform(0, 0.2)))
    cpu1, t1 = proc_cpu_s(pid), time.monotonic()
    sys1 = proc_cpu_s(pid, system=True)
    sim1 = sum(proc_cpu_s(p) for p in sim_pids)
    n1 = latest.get("n", 0)
    hist1 = _hist(latest)
    wall1 = time.time()
    tap_figures = tap.figures(wall0, wall1)
    await asyncio.gather(*tsdb_checks)
    last_markers = asyncio.ensure_future(asyncio.sleep(interval_s + 1.0))  # the last markers' notifications
    jitter = await asyncio.to_thread(health_values, vm.url, "jitter_p99_ms")
    memory = await asyncio.to_thread(health_memory, vm.url)
    wall = t1 - t0
    tags_per_s = await asyncio.to_thread(health_rate, vm.url, "samples", wall0, wall1)
    await last_markers
    opc_latency = [m["recv"] - sent[m["marker"]] for m in markers if m["marker"] in sent]
    first = {}
    for m in markers:
        first.setdefault(m["marker"], m["recv"])
    opc_latency = [first[v] - sent[v] for v in first if v in sent]
    opc_hist = hist1 - hist0
    return {
        **tap_figures,
        "opcua_poll_latency_p50_ms": _hist_pct(opc_hist, 50), "opcua_poll_latency_p99_ms": _hist_pct(opc_hist, 99),
        "opcua_poll_latency_max_ms": _hist_pct(opc_hist, 100),
        "cpu_user_cores": round((cpu1 - cpu0 - (sys1 - sys0)) / wall, 3),
        "cpu_system_cores": round((sys1 - sys0) / wall, 3),
        "us_per_tag": round((cpu1 - cpu0) / wall / max(tags_per_s, 1) * 1e6, 2) if tags_per_s == tags_per_s else None,
        "sim_cpu_cores": round((sim1 - sim0) / wall, 3),
        "memory_mb": memory,
        "tags_per_s": round(tags_per_s) if tags_per_s == tags_per_s else None,
        "offered_tags_per_s": round(args.devices * args.tags * 1000 / args.interval_ms),
        "opcua_changes_per_s": round((n1 - n0) / wall),
        "cpu_cores": round((cpu1 - cpu0) / wall, 3),
        "rss_mb": round(rss_max, 1),
        "jitter_p99_ms": round(float(np.max(jitter)), 1) if len(jitter) else None,
        "jitter_p99_ms_median_device": round(float(np.median(jitter)), 1) if len(jitter) else None,
        "field_opcua_latency_p50_ms": pct(opc_latency, 50, 1e3), "field_opcua_latency_p99_ms": pct(opc_latency, 99, 1e3),
        "field_tsdb_latency_p50_s": pct(tsdb_latency, 50, 1.0), "field_tsdb_latency_p99_s": pct(tsdb_latency, 99, 1.0),
        "markers_sent": len(sent), "markers_seen_opcua": len(opc_latency), "markers_checked_tsdb": len(tsdb_latency),
        "checked_errors": latest.get("errors", 0), "checked": latest.get("checked", 0),
        "poll_interval_ms": args.interval_ms, "devices": args.devices, "tags": args.tags,
        "seconds": round(wall, 1),
    }


def start_profiler(path: str, pid: int, seconds: float) -> asyncio.Future:
    """py-spy (optional, not a dependency) samples the appliance during the measurement window."""
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return asyncio.ensure_future(asyncio.create_subprocess_exec(
        exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", path, "--gil",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))


async def finish_profiler(fut: asyncio.Future, path: str) -> None:
    proc = await fut
    await proc.wait()
    print(f"profile (py-spy raw, collapsed stacks) in {path}")


def pct(values: list[float], q: float, scale: float) -> float | None:
    return round(float(np.percentile(values, q)) * scale, 3) if values else None


def health_rate(url: str, field: str, t0: float, t1: float) -> float:
    """Rate of the appliance's own counter (edge_health, source=appliance) between its first and
    last record inside [t0, t1], using the records' own timestamps."""
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    q = urllib.parse.urlencode({"match[]": f'edge_health_{field}{{source="appliance"}}',
                                "start": f"{t0:.3f}", "end": f"{t1:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=10) as r:
        series = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    if not series or len(series[0]["values"]) < 2:
        return float("nan")
    ts, values = series[0]["timestamps"], series[0]["values"]
    return (values[-1] - values[0]) / ((ts[-1] - ts[0]) / 1e3)


def health_memory(url: str) -> dict[str, float]:
    """The appliance's own RSS ledger (edge.runtime.memory: mem_<stage>_mb, rss_mb), latest values."""
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    result = vm_query(url, 'last_over_time({__name__=~"edge_health_(mem_.*_mb|rss_mb)", source="appliance"}[1m])')
    out = {r["metric"]["__name__"].removeprefix("edge_health_").removeprefix("mem_").removesuffix("_mb"):
           round(float(r["value"][1]), 1) for r in result}
    return dict(sorted(out.items()))


def health_values(url: str, field: str) -> np.ndarray:
    """The latest per-device value of an edge_health field."""
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    result = vm_query(url, f'last_over_time(edge_health_{field}{{source!="appliance"}}[1m])')
    return np.array([float(r["value"][1]) for r in result])


async def tsdb_latency_of(url: str, metric: str, value: float, sent_at: float, out: list[float]) -> None:
    deadline = sent_at + 30
    while time.time() < deadline:
        if await asyncio.to_thread(vm_has_value, url, metric, value, sent_at - 5):
            out.append(time.time() - sent_at)
            return
        await asyncio.sleep(0.2)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        endpoint, ns, devices, tags, seconds = sys.argv[2:7]
        asyncio.run(client_main(endpoint, int(ns), int(devices), int(tags), float(seconds)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--health-interval-s", type=float, default=1.0,
                        help="the appliance's health records (samples/s is read from them: at least 2 per window)")
    parser.add_argument("--long", action="store_true", help="1000 devices (100,000 tags/s), a 3-minute window")
    parser.add_argument("--profile", metavar="FILE", help="record the appliance with py-spy (collapsed stacks)")
    args = parser.parse_args()
    if args.long:  # 100,000 tags/s for 3 minutes
        args.seconds = 180.0
        args.warmup = max(args.warmup, 5.0)
        args.devices = max(args.devices, 1000)
    t0 = time.monotonic()
    r = asyncio.run(run(args))
    r["bench_s"] = round(time.monotonic() - t0, 1)
    interval = args.interval_ms
    print(f"{args.devices} devices x {args.tags} tags at {interval} ms, {r['seconds']} s measured "
          f"(appliance up in {r['startup_s']} s, client subscribed in {r['subscribe_s']} s, whole run {r['bench_s']} s)")
    print(f"  tags/s sustained          {r['tags_per_s']!s:>10}   (the appliance's count; {r['tsdb_tags_per_s']} at the TSDB)")
    print(f"  OPC UA changes/s (client) {r['opcua_changes_per_s']:>10}")
    print(f"  appliance CPU             {r['cpu_cores']:>10} cores ({r['cpu_user_cores']} user, {r['cpu_system_cores']} "
          f"system), {r['us_per_tag']} us per tag; simulator {r['sim_cpu_cores']} cores")
    print(f"  appliance RSS             {r['rss_mb']:>10} MB ({r['rss_before_client_mb']} MB before the client subscribed)")
    mem = r["memory_mb"]
    if mem:
        print("  memory by component (MB)  " + ", ".join(f"{k} {v}" for k, v in mem.items() if k != "rss")
              + f"; OPC UA client's subscriptions {round(r['rss_mb'] - r['rss_before_client_mb'], 1)} of the runtime share")
    print(f"  poll jitter p99           {r['jitter_p99_ms']} ms worst device, {r['jitter_p99_ms_median_device']} ms "
          "median device")
    print(f"  poll -> TSDB (every line) p50 {r['tsdb_latency_p50_s']} s, p99 {r['tsdb_latency_p99_s']} s "
          f"(target 0.3 / 1.0) over {r['tsdb_lines']} lines")
    print(f"  poll -> OPC UA client     p50 {r['opcua_poll_latency_p50_ms']} ms, p99 {r['opcua_poll_latency_p99_ms']} ms "
          "(every notification; target p99 <= publishing interval + 100)")
    print(f"  field -> OPC UA (markers) p50 {r['field_opcua_latency_p50_ms']} ms, p99 {r['field_opcua_latency_p99_ms']} ms "
          f"over {r['markers_seen_opcua']}/{r['markers_sent']} (includes the wait for the next poll)")
    print(f"  field -> queryable TSDB   p50 {r['field_tsdb_latency_p50_s']} s, p99 {r['field_tsdb_latency_p99_s']} s "
          f"over {r['markers_checked_tsdb']} markers (includes the poll wait and the server's indexing)")
    print(f"  client checks             {r['checked']} notifications checked, {r['checked_errors']} failed")
    print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
