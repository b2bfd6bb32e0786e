"""Soak and fault suite: the demo plant runs for a bounded time while faults are injected on a schedule.

The appliance runs as on site (`edge run`, a child process) against the simulated demo plant
(drivers.modbus.sim, another process) and forwards to a VictoriaMetrics server (InfluxDB write protocol).
Faults, each at a fixed share of the run: a silent RS-485 device, a busy PLC, garbage bytes
from a drive behind the gateway, the RS-485 line unplugged (pty closed and reopened), the
time-series server stopped and restarted, the appliance killed with SIGKILL and restarted,
and a reload with a broken configuration. At the end it checks:

* no crash: the appliance never exits by itself, and stops with exit code 0;
* every sample delivered or counted: the spool's ledger (every poll batch it committed) is
  fully acknowledged, the server holds exactly those points (no loss, no re-sent copy), and
  no point was dropped (the appliance's own drop counters). Samples polled in the last
  ``commit_interval_ms`` (50 ms here) before a SIGKILL never reach the ledger: that is the
  documented power-cut window of the spool;
* memory flat: the resident memory of the longest-running appliance process grows less than
  the stated bound between an early window after its warm-up and the last fifth of its life
  (see ``memory_check``);
* every fault visible in the diagnostics while it lasted (the appliance's edge_health records
  and its log).

    .venv/bin/python bench/soak.py                      # 90 s (the short version runs in CI)
    .venv/bin/python bench/soak.py --duration 1200 --report docs/soak-report.md
Exit code 0 when every check holds. Ends with one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

DEMO = ROOT / "provisioning" / "sites" / "demo" / "edge.yaml"
MEMORY_BOUND_MB = 25.0  # allowed growth of resident memory over one process's life
# The demo appliance's RSS ramps by ~17 MB over its first ~170 s: young objects pile up until the
# first generation-0 collection of the settled collector (edge/runtime/app.py GC_THRESHOLDS, 100,000
# allocations), then memory is reused and RSS stays flat (bench/soak_memory.py, control run).
# The early window starts after that, so that like is compared with like.
WARMUP_S = 180.0
SCHEDULE = [  # (name, start share, end share)
    ("meter_silent", 0.08, 0.22),  # long enough for 3 failed polls and a health record on a loaded machine
    ("plc_busy", 0.22, 0.28),
    ("drive_garbage", 0.28, 0.36),
    ("rs485_unplugged", 0.38, 0.46),
    ("tsdb_down", 0.48, 0.60),
    ("appliance_killed", 0.64, 0.66),
    ("bad_reload", 0.72, 0.78),
]


def soak_config(tmp: Path, vm_url: str) -> Path:
    """The demo plant, forwarding to the test server, with quick health records."""
    data = yaml.safe_load(DEMO.read_text())
    data["plugins_dir"] = str(ROOT / "plugins")
    data["runtime"].update(status_interval_s=1, health_interval_s=1, log_level="info", log_format="json")
    data["outputs"]["influxdb"] = {"url": vm_url, "token": "soak", "org": "edge", "bucket": "edge",
                                   "batch_max_age_ms": 500, "retry_max_ms": 2000}
    data["outputs"]["spool"] = {"retention_s": 86400, "commit_interval_ms": 50}
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Appliance:
    """`edge run` as a child process, restarted after a kill; remembers every process it ran."""

    def __init__(self, config: Path, env: dict, log: Path):
        self.config, self.env, self.log = config, env, log
        self.proc: asyncio.subprocess.Process | None = None
        self.runs: list[dict] = []  # pid, start, end, rss samples, exit code, killed

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start `edge run` and wait (bounded) for its "appliance started" line: until then it has no
        SIGHUP handler (a reload signal would end it) and polls nothing (a fault would go unseen)."""
        before = self.starts()
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.cli.main", "run", str(self.config), "--no-status", cwd=ROOT, env=self.env,
            stdout=logf, stderr=logf)  # stdout: "appliance started: ... API at URL" (ports chosen at start)
        logf.close()
        self.runs.append({"pid": self.proc.pid, "start": time.time(), "rss": [], "killed": False})
        end = time.monotonic() + timeout_s
        while self.starts() == before and self.alive() and time.monotonic() < end:
            await asyncio.sleep(0.1)

    def starts(self) -> int:
        """How many "appliance started" lines the log holds (one per successful start)."""
        try:
            return len(re.findall(r"^appliance started: ", self.log.read_text(errors="replace"), re.M))
        except OSError:
            return 0

    def api_url(self) -> str | None:
        """The HTTP API of the running appliance (it takes any free port at each start), from its log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return None
        found = re.findall(r"^appliance started: .*API at (http://\S+?)(?:,|$)", text, re.M)
        return found[-1] if found else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def died_by_itself(self) -> bool:
        return not self.alive() and not self.runs[-1]["killed"]

    def sample_rss(self) -> None:
        if self.alive():
            try:
                for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.runs[-1]["rss"].append((time.time(), int(line.split()[1]) / 1024))
            except OSError:
                pass

    async def kill9(self) -> None:
        """SIGKILL: the appliance stays down (on purpose) until start() is called again."""
        self.runs[-1]["killed"] = True
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.runs[-1].update(end=time.time(), exit=self.proc.returncode)

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        self.runs[-1].update(end=time.time(), exit=code)
        return code


# ----------------------------------------------------------------------------- the time-series server


def vm_get(url: str, path: str, params: dict) -> bytes:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=60) as r:
        return r.read()


def vm_series(url: str, match: str, start: float, end: float) -> list[dict]:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    body = vm_get(url, "/api/v1/export", {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def health(url: str, source: str, field: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps in s, values) of one edge_health field of one source."""
    series = vm_series(url, f'edge_health_{field}{{source="{source}"}}', start, end)
    if not series:
        return np.zeros(0), np.zeros(0)
    ts = np.array(series[0]["timestamps"], dtype=float) / 1e3
    order = np.argsort(ts)
    return ts[order], np.array(series[0]["values"], dtype=float)[order]


# ----------------------------------------------------------------------------- the run


async def run_soak(duration: float, tmp: Path) -> dict:
    from tsdb import VictoriaMetrics

    from drivers.modbus.sim.plant import listening_socket
    from drivers.modbus.sim.process import SimPlantProcess
    from drivers.modbus.simulation import plant_specs
    from edge.config.loader import load_config

    vm = VictoriaMetrics(tmp / "vm", dedup=True)  # as deployed: a sample re-sent after a kill is stored once
    vm.start()
    plc, gateway = listening_socket(), listening_socket()  # held until the simulator serves on them
    env = {**os.environ, "EDGE_RUN_DIR": str(tmp / "run"), "EDGE_DATA_DIR": str(tmp / "data"),
           "EDGE_DEMO_PLC_PORT": str(plc.getsockname()[1]), "EDGE_DEMO_GATEWAY_PORT": str(gateway.getsockname()[1]),
           "EDGE_DEMO_OPCUA_PORT": "0", "EDGE_DEMO_API_PORT": "0"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("EDGE_")})
    config = soak_config(tmp, vm.url)
    good_config = config.read_text()
    loaded = load_config(config)
    (tmp / "run").mkdir(parents=True, exist_ok=True)
    serial = next(b.port for b in loaded.config.buses if b.type == "modbus_rtu")
    sim = SimPlantProcess(plant_specs(loaded), sockets={s.getsockname()[1]: s for s in (plc, gateway)})
    await sim.start()
    plc.close()  # the simulator's child has its own copies
    gateway.close()
    app = Appliance(config, env, tmp / "appliance.log")
    events: list[dict] = []
    crashed: list[str] = []
    t0 = time.time()
    await app.start()
    try:
        actions = build_actions(sim, vm, app, config, good_config, serial, events)
        t_ready = time.time()  # the schedule counts from the appliance's start (a loaded machine starts it slower)
        pending = sorted(((t_ready + share * duration, name, edge) for name, start, end in SCHEDULE
                          for share, edge in ((start, "start"), (end, "end"))), key=lambda a: a[0])
        end_at = t_ready + duration
        while time.time() < end_at:
            while pending and time.time() >= pending[0][0]:
                planned, name, edge = pending.pop(0)
                await actions[name][edge]()
                # an action that overran (a restart on a loaded machine) shifts what follows, so
                # that every later fault keeps its planned length (bounded: at most half the duration)
                late = min(time.time() - planned, t_ready + 1.5 * duration - end_at)
                if late > 0.5:
                    pending = [(t + late, n, e) for t, n, e in pending]
                    end_at += late
            if app.died_by_itself():
                crashed.append(f"appliance exited with {app.proc.returncode} at {time.time() - t0:.0f} s")
                await app.start()
            app.sample_rss()
            await asyncio.sleep(0.5)
        drained = await drain(vm.url, t0, timeout_s=60)
        exit_code = await app.stop()
    finally:
        await sim.stop()
    t_end = time.time()
    try:
        checks = evaluate(vm.url, tmp, t0, t_end, events, app, crashed, exit_code, drained)
    finally:
        vm.stop()
    return checks


def build_actions(sim, vm, app: Appliance, config: Path, good: str, serial: str, events: list[dict]) -> dict:
    def mark(name: str, edge: str) -> None:
        if edge == "start":
            events.append({"fault": name, "start": time.time()})
        else:
            next(e for e in reversed(events) if e["fault"] == name)["end"] = time.time()

    def fault(name: str, device: str, kind: str, **params):
        async def start():
            sim.set_fault(device, kind, **params)
            mark(name, "start")

        async def end():
            sim.clear_fault(device)
            mark(name, "end")

        return {"start": start, "end": end}

    async def unplug():
        await sim.unplug_line(serial)
        mark("rs485_unplugged", "start")

    async def plug():
        await sim.plug_line(serial)
        mark("rs485_unplugged", "end")

    async def tsdb_stop():
        await asyncio.to_thread(vm.stop)
        mark("tsdb_down", "start")

    async def tsdb_start():
        await asyncio.to_thread(vm.start)
        mark("tsdb_down", "end")

    async def kill():
        await app.kill9()
        mark("appliance_killed", "start")

    async def restart():
        await app.start()
        mark("appliance_killed", "end")

    async def bad_reload():
        config.write_text(good.replace("type: modbus_tcp", "type: modbus_tcpx", 1))
        app.proc.send_signal(signal.SIGHUP)
        mark("bad_reload", "start")

    async def good_reload():
        config.write_text(good)
        app.proc.send_signal(signal.SIGHUP)
        mark("bad_reload", "end")

    return {
        "meter_silent": fault("meter_silent", "meter_main", "silence"),
        "plc_busy": fault("plc_busy", "plc_line1", "busy"),
        "drive_garbage": fault("drive_garbage", "vfd_pump1", "garbage", probability=0.5),
        "rs485_unplugged": {"start": unplug, "end": plug},
        "tsdb_down": {"start": tsdb_stop, "end": tsdb_start},
        "appliance_killed": {"start": kill, "end": restart},
        "bad_reload": {"start": bad_reload, "end": good_reload},
    }


async def drain(url: str, t0: float, timeout_s: float) -> bool:
    """Wait until the backlog is gone: only live data (younger than 2 s) waits to be sent."""
    end = time.time() + timeout_s
    while time.time() < end:
        await asyncio.sleep(1.0)
        ts, age = await asyncio.to_thread(health, url, "appliance", "spool_oldest_unsent_age_s", t0, time.time() + 1)
        if len(ts) and age[-1] < 2.0 and ts[-1] > time.time() - 3:
            return True
    return False


# ----------------------------------------------------------------------------- checks


def evaluate(url: str, tmp: Path, t0: float, t1: float, events: list[dict], app: Appliance, crashed: list[str],
             exit_code: int, drained: bool) -> dict:
    checks: dict[str, dict] = {}
    checks["no_crash"] = {"ok": not crashed and exit_code == 0, "detail": crashed or f"final exit code {exit_code}"}
    checks["ledger"] = ledger_check(url, tmp, t0, t1, drained)
    checks["memory"] = memory_check(app)
    for e in events:
        checks[f"visible:{e['fault']}"] = visibility_check(url, tmp, e, t0)
    ok = all(c["ok"] for c in checks.values())
    return {"ok": ok, "duration_s": round(t1 - t0, 1), "checks": checks, "events": events,
            "appliance_runs": [{k: v for k, v in r.items() if k != "rss"} for r in app.runs],
            "rss": [{"pid": r["pid"], "start": r["start"], "samples": r["rss"]} for r in app.runs]}


def spool_keys(db: sqlite3.Connection) -> tuple[dict[tuple[str, str, int], int], int, int]:
    """Every committed poll point of the spool as (device, tag, ms) -> 1; spooled and acknowledged points."""
    from edge.storage.spool import KIND_SAMPLES, _plant_tags, decode_samples

    plants = {pid: _plant_tags(pid, site, tags) for pid, site, tags in db.execute("SELECT id, site, tags FROM plants")}
    keys: dict[tuple[str, str, int], int] = {}
    spooled = acked = 0
    for ts, plant, sent, n, blob in db.execute(
            "SELECT ts_ns, plant, sent, n, blob FROM batches WHERE kind = ?", (KIND_SAMPLES,)):
        spooled += n
        acked += n if sent == 1 else 0
        pt = plants[plant]
        for tag_id in decode_samples(blob).tag_ids.tolist():
            key = (pt.device[tag_id], pt.name[tag_id], ts // 1_000_000)
            keys[key] = keys.get(key, 0) + 1
    return keys, spooled, acked


def ledger_check(url: str, tmp: Path, t0: float, t1: float, drained: bool) -> dict:
    """The spool's ledger against what the server's query API returns (VictoriaMetrics as deployed,
    ``-dedup.minScrapeInterval=1ms``: what a user's query sees), key by key: (device, tag, ms).

    Every committed poll point must be acknowledged and on the server: ``lost`` (a spool key the
    server lacks), ``duplicated`` (a key the server returns more often than the spool has it: a
    re-sent sample stored twice) and ``unexpected`` (on the server, never committed) are all 0,
    nothing dropped or rejected. ``same_ms_points``: spool points that share their series and
    millisecond with another one (a device going offline publishes its failed poll's batch and the
    Bad_NoCommunication batch within a millisecond); VictoriaMetrics stores milliseconds, so as
    deployed it keeps the later of them, and ``server_points`` = ``spooled_points`` - ``same_ms_points``.
    """
    db = sqlite3.connect(f"file:{tmp / 'data' / 'spool.db'}?mode=ro", uri=True)
    try:
        want, spooled, acked = spool_keys(db)
    finally:
        db.close()
    series = vm_series(url, '{__name__=~".+_q_.+",__name__!~"edge_.+"}', t0 - 60, t1 + 60)
    # every tag of every committed poll has its q_<tag> field on the server: one point each
    got: dict[tuple[str, str, int], int] = {}
    for s in series:
        tag = s["metric"]["__name__"].split("_q_", 1)[1]
        for ms in s["timestamps"]:
            key = (s["metric"].get("device", ""), tag, int(ms))
            got[key] = got.get(key, 0) + 1
    raw = sum(got.values())
    lost = sum(n for k, n in want.items() if k not in got)
    duplicated = sum(n - want.get(k, 1) for k, n in got.items() if n > want.get(k, 1))
    unexpected = sum(n for k, n in got.items() if k not in want)
    same_ms = sum(n - 1 for n in want.values())
    _, dropped = health(url, "appliance", "spool_dropped_points_total", t0, t1 + 60)
    _, rejected = health(url, "appliance", "spool_rejected_points", t0, t1 + 60)
    ok = (drained and acked == spooled and not lost and not duplicated and not unexpected
          and not dropped.any() and not rejected.any())
    return {"ok": bool(ok), "spooled_points": int(spooled), "acknowledged_points": int(acked),
            "server_points": raw, "lost": lost, "duplicated": duplicated, "unexpected": unexpected,
            "same_ms_points": same_ms, "resent_or_missing": raw - int(spooled) + same_ms,
            "dropped_points": float(dropped.max()) if len(dropped) else 0.0, "drained": drained,
            "detail": "every committed poll point acknowledged and present once on the server" if ok else
            "mismatch between the spool's ledger and the server"}


def memory_check(app: Appliance) -> dict:
    """Mean RSS of an early window after the warm-up against the last fifth of the longest process's life.

    Windows are a fifth of that life each. The early one starts after ``WARMUP_S`` when the
    process lived long enough, else at the end of the first fifth (the 90 s run: it then sees
    part of the warm-up ramp, which only makes the check stricter).
    """
    runs = [r for r in app.runs if len(r["rss"]) >= 10]
    if not runs:
        return {"ok": False, "detail": "no process ran long enough to measure"}
    longest = max(runs, key=lambda r: len(r["rss"]))
    t = np.array([ts for ts, _ in longest["rss"]]) - longest["start"]
    rss = np.array([m for _, m in longest["rss"]])
    life = float(t[-1])
    fifth = life / 5
    start = WARMUP_S if WARMUP_S + fifth <= life - fifth else fifth
    early_w, late_w = (start, start + fifth), (life - fifth, life)
    early = float(np.mean(rss[(t >= early_w[0]) & (t <= early_w[1])]))
    late = float(np.mean(rss[t >= late_w[0]]))
    growth = late - early
    return {"ok": growth <= MEMORY_BOUND_MB, "rss_early_mb": round(early, 1), "rss_late_mb": round(late, 1),
            "growth_mb": round(growth, 1), "bound_mb": MEMORY_BOUND_MB, "rss_max_mb": round(float(rss.max()), 1),
            "early_window_s": [round(x) for x in early_w], "late_window_s": [round(x) for x in late_w],
            "samples": len(rss)}


def visibility_check(url: str, tmp: Path, e: dict, t0: float) -> dict:
    start, end = e["start"], e.get("end", time.time())
    name = e["fault"]

    def states(source: str) -> np.ndarray:
        ts, v = health(url, source, "state", start, end + 1)
        return v

    def rises(source: str, field: str) -> float:
        ts, v = health(url, source, field, start - 5, end + 1)
        inside = v[(ts >= start) & (ts <= end + 1)]
        before = v[ts < start]
        return float(inside.max() - (before[-1] if len(before) else inside.min())) if len(inside) else 0.0

    if name == "meter_silent":
        s = states("meter_main")
        return {"ok": bool((s == 2).any()), "detail": f"meter_main states during the fault: {sorted(set(s.tolist()))}"}
    if name == "plc_busy":
        n = rises("plc_line1", "exception_6")
        s = states("plc_line1")
        return {"ok": n > 0 and bool((s == 1).all()), "detail": f"{n:.0f} busy answers counted; states {set(s)}"}
    if name == "drive_garbage":
        n = rises("vfd_pump1", "crc_errors")
        return {"ok": n > 0, "detail": f"{n:.0f} bad frames counted"}
    if name == "rs485_unplugged":
        counts = {d: rises(d, "timeouts") + rises(d, "polls_failed") for d in ("meter_main", "th_room1", "th_room2")}
        return {"ok": all(v > 0 for v in counts.values()), "detail": f"timeouts+failed polls: {counts}"}
    if name == "tsdb_down":
        n = rises("appliance", "influx_server_down")
        return {"ok": n > 0, "detail": f"forwarder counted {n:.0f} failed attempts (records sent after the outage)"}
    if name == "appliance_killed":
        ts, up = health(url, "appliance", "uptime_s", start - 10, end + 30)
        restarted = bool((np.diff(up) < 0).any()) if len(up) > 1 else False
        return {"ok": restarted, "detail": "uptime restarts after the kill" if restarted else "no restart seen"}
    if name == "bad_reload":
        log = (tmp / "appliance.log").read_text(errors="replace").splitlines()
        rejected = [ln for ln in log if "reload refused" in ln]
        ts, _ = health(url, "appliance", "samples", start, end)
        return {"ok": bool(rejected) and len(ts) >= 2,
                "detail": f"{len(rejected)} rejection(s) logged; {len(ts)} health records while it lasted"}
    return {"ok": False, "detail": "unknown fault"}


def report_text(r: dict, duration: float) -> str:
    lines = [f"# Soak report ({duration:.0f} s)", "", f"Result: {'PASS' if r['ok'] else 'FAIL'}", "",
             "| check | ok | details |", "|---|---|---|"]
    for name, c in r["checks"].items():
        details = {k: v for k, v in c.items() if k != "ok"}
        lines.append(f"| {name} | {'yes' if c['ok'] else 'NO'} | {json.dumps(details, default=str)} |")
    lines += ["", "Faults (seconds from the start):", ""]
    t0 = r["appliance_runs"][0]["start"] if r["appliance_runs"] else 0
    for e in r["events"]:
        lines.append(f"- {e['fault']}: {e['start'] - t0:.1f} to {e.get('end', e['start']) - t0:.1f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of the run (default 90)")
    parser.add_argument("--long", action="store_true", help="a 20-minute run")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    parser.add_argument("--rss-out", type=Path, help="write every process's RSS samples and the fault times (JSON)")
    args = parser.parse_args()
    duration = 1200.0 if args.long else args.duration
    tmp = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    r = asyncio.run(run_soak(duration, tmp))
    text = report_text(r, duration)
    print(text)
    if args.report:
        args.report.write_text(text)
    if args.rss_out:
        args.rss_out.write_text(json.dumps({"t0": r["appliance_runs"][0]["start"], "events": r["events"],
                                            "runs": r["rss"]}))
    figures = {"ok": r["ok"], "duration_s": r["duration_s"],
               **{f"{k}_ok": v["ok"] for k, v in r["checks"].items()},
               "spooled_points": r["checks"]["ledger"].get("spooled_points"),
               "server_points": r["checks"]["ledger"].get("server_points"),
               "same_ms_points": r["checks"]["ledger"].get("same_ms_points"),
               "lost_points": r["checks"]["ledger"].get("lost"),
               "duplicated_points": r["checks"]["ledger"].get("duplicated"),
               "rss_growth_mb": r["checks"]["memory"].get("growth_mb")}
    print("RESULT " + json.dumps(figures))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
