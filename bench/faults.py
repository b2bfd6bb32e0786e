"""Fault campaign: every simulator fault on a shared RS-485 line and behind an RTU gateway, an
upstream outage and a kill -9, on a schedule, against the demo plant (issue 17 point 9).

The appliance runs as on site (`edge run`, a child process), the simulated demo plant in another
process, the time-series server is VictoriaMetrics. One device on the serial line (``th_room2``,
its neighbours ``meter_main`` and ``th_room1``) and one behind the gateway (``vfd_fan1``, its
neighbour ``vfd_pump1``) go through every fault of ``drivers.modbus.sim.faults`` in turn
(silence, busy, illegal_address, garbage, bad_crc, slow, offline), each for part of a slot and
then healthy again; then the time-series server is stopped and started, then the appliance is
killed with SIGKILL and restarted. The appliance is watched from outside, through its HTTP API
(``/api/status`` every 0.25 s). Checks:

* no false offline: a device that is not under a fault (nor recovering from one) is never OFFLINE;
* availability: the share of samples in which each neighbour is ONLINE with every tag Good
  (while the appliance runs) is at least ``AVAILABILITY_MIN``;
* recovery: after each fault ends, the faulted device is back (ONLINE, every tag that was Good
  before the fault Good again) within ``RECOVERY_MAX_S`` (the re-probe of learned holes is set
  to 3 s first, 6 s at most for the faulted devices; the defaults are 30 s and 10 min);
* the ledger (bench/soak.py ``ledger_check``): every committed poll point acknowledged and on
  the server exactly once, nothing dropped.

    .venv/bin/python bench/faults.py                  # 150 s, one round (tests/test_fault_campaign.py)
    .venv/bin/python bench/faults.py --long --report docs/fault-campaign.md   # 20 minutes

Exit code 0 when every check holds; the last line is ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import yaml  # noqa: E402
from soak import Appliance, drain, ledger_check, soak_config  # noqa: E402

SERIAL, SERIAL_NEIGHBOURS = "th_room2", ("meter_main", "th_room1")
GATEWAY, GATEWAY_NEIGHBOURS = "vfd_fan1", ("vfd_pump1",)
OTHERS = ("plc_line1",)
NEIGHBOURS = SERIAL_NEIGHBOURS + GATEWAY_NEIGHBOURS + OTHERS
FAULTS = ("silence", "busy", "illegal_address", "garbage", "bad_crc", "slow", "offline")
SLOT_S = 15.0  # each fault's slot: active for ACTIVE_S, then RECOVERY_MAX_S to come back
ACTIVE_S = 5.0
RECOVERY_MAX_S = 10.0
AVAILABILITY_MIN = 0.99
RESTART_GRACE_S = 15.0  # after the appliance (re)starts, devices are given this long to come up (a loaded 2-core machine takes several seconds to start it)
SAMPLE_S = 0.25


def fault_params(kind: str, timeout_ms: int) -> dict:
    if kind == "illegal_address":
        return {"start": 0, "count": 65536}  # the whole device refuses (a PLC in STOP)
    if kind in ("garbage", "bad_crc"):
        return {"probability": 0.5}
    if kind == "slow":
        return {"delay_ms": timeout_ms + 50}  # a slave slower than its timeout
    return {}


def campaign_config(tmp: Path, vm_url: str) -> Path:
    path = soak_config(tmp, vm_url)
    data = yaml.safe_load(path.read_text())
    for dev in data["devices"]:
        if dev["name"] in (SERIAL, GATEWAY):
            dev.update(hole_reprobe_s=3, hole_reprobe_max_s=6)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


WARMUP_S = 10.0


def schedule(duration: float) -> list[tuple[float, float, str]]:
    """(start, end, action) in seconds from t0: each device fault, then the outage, then the kill;
    the whole round repeated as often as the duration allows (at least once)."""
    slots = [*FAULTS, "tsdb_down", "appliance_killed"]
    rounds = max(1, int((duration - WARMUP_S) // (SLOT_S * len(slots))))
    out = []
    for r in range(rounds):
        for i, name in enumerate(slots):
            start = WARMUP_S + (r * len(slots) + i) * SLOT_S
            out.append((start, start + (3.0 if name == "appliance_killed" else ACTIVE_S), name))
    return out


class Watcher:
    """Samples /api/status: device states and tag qualities, and when the appliance answered."""

    def __init__(self, api_url: Callable[[], str | None]) -> None:
        self.url = api_url  # the appliance takes any free port at each (re)start
        self.samples: list[tuple[float, dict[str, str], dict[str, set[str]]]] = []  # t, state, good tags

    def sample(self) -> None:
        url = self.url()
        if url is None:
            return
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                body = json.loads(r.read())
        except (OSError, ValueError):
            return
        states = {d["name"]: d["state"] for d in body["devices"]}
        good: dict[str, set[str]] = {}
        for t in body["tags"]:
            if t["quality_code"] == 0:
                good.setdefault(t["device"], set()).add(t["name"])
        self.samples.append((time.time(), states, good))


async def run_campaign(duration: float, tmp: Path) -> dict:
    from tsdb import VictoriaMetrics

    from drivers.modbus.sim.plant import listening_socket
    from drivers.modbus.sim.process import SimPlantProcess
    from drivers.modbus.simulation import plant_specs
    from edge.config.loader import load_config

    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    plc, gateway = listening_socket(), listening_socket()  # held until the simulator serves on them
    env = {**os.environ, "EDGE_RUN_DIR": str(tmp / "run"), "EDGE_DATA_DIR": str(tmp / "data"),
           "EDGE_DEMO_PLC_PORT": str(plc.getsockname()[1]), "EDGE_DEMO_GATEWAY_PORT": str(gateway.getsockname()[1]),
           "EDGE_DEMO_OPCUA_PORT": "0", "EDGE_DEMO_API_PORT": "0"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("EDGE_")})
    config = campaign_config(tmp, vm.url)
    loaded = load_config(config)
    from drivers.modbus.resolve import timeout_ms

    timeouts = {d.name: timeout_ms(d) for d in loaded.devices}
    (tmp / "run").mkdir(parents=True, exist_ok=True)
    sim = SimPlantProcess(plant_specs(loaded), sockets={s.getsockname()[1]: s for s in (plc, gateway)})
    await sim.start()
    plc.close()  # the simulator's child has its own copies
    gateway.close()
    app = Appliance(config, env, tmp / "appliance.log")
    watcher = Watcher(app.api_url)
    events: list[dict] = []
    starts: list[float] = []
    crashed: list[str] = []
    t0 = time.time()
    await app.start()
    starts.append(time.time())
    plan = schedule(duration)
    pending = sorted([(s, "start", n) for s, _, n in plan] + [(e, "end", n) for _, e, n in plan])
    try:
        while time.time() < t0 + duration:
            now = time.time() - t0
            while pending and now >= pending[0][0]:
                _, edge, name = pending.pop(0)
                await act(name, edge, sim, vm, app, timeouts, events, starts)
            if app.died_by_itself():
                crashed.append(f"appliance exited with {app.proc.returncode} at {now:.0f} s")
                await app.start()
                starts.append(time.time())
            await asyncio.to_thread(watcher.sample)
            await asyncio.sleep(SAMPLE_S)
        drained = await drain(vm.url, t0, timeout_s=60)
        exit_code = await app.stop()
    finally:
        await sim.stop()
    t1 = time.time()
    try:
        checks = evaluate(watcher, events, starts, t0, t1)
        checks["no_crash"] = {"ok": not crashed and exit_code == 0, "detail": crashed or f"exit code {exit_code}"}
        checks["ledger"] = ledger_check(vm.url, tmp, t0, t1, drained)
    finally:
        vm.stop()
    return {"ok": all(c["ok"] for c in checks.values()), "duration_s": round(t1 - t0, 1), "checks": checks,
            "events": [{**e, "start": round(e["start"] - t0, 1), "end": round(e.get("end", t1) - t0, 1)}
                       for e in events], "samples": len(watcher.samples)}


async def act(name: str, edge: str, sim, vm, app: Appliance, timeouts: dict, events: list[dict],
              starts: list[float]) -> None:
    if name in FAULTS:
        for device in (SERIAL, GATEWAY):
            if edge == "start":
                sim.set_fault(device, name, **fault_params(name, timeouts[device]))
                events.append({"fault": name, "device": device, "start": time.time()})
            else:
                sim.clear_fault(device)
                next(e for e in reversed(events) if e["device"] == device)["end"] = time.time()
        return
    if name == "tsdb_down":
        await asyncio.to_thread(vm.stop if edge == "start" else vm.start)
    elif edge == "start":
        await app.kill9()
    else:
        await app.start()
        starts.append(time.time())
    if edge == "start":
        events.append({"fault": name, "device": None, "start": time.time()})
    else:
        next(e for e in reversed(events) if e["fault"] == name)["end"] = time.time()


def evaluate(w: Watcher, events: list[dict], starts: list[float], t0: float, t1: float) -> dict:
    """No false offline, neighbours' availability, recovery time of each device fault."""
    kills = [(e["start"], e.get("end", t1)) for e in events if e["fault"] == "appliance_killed"]

    def settled(t: float) -> bool:  # the appliance runs and had time to bring its devices up
        if any(a <= t <= b + RESTART_GRACE_S for a, b in kills):
            return False
        return any(s + RESTART_GRACE_S <= t for s in starts)

    def excused(device: str, t: float) -> bool:  # under a fault or recovering from it
        return any(e["device"] == device and e["start"] <= t <= e.get("end", t1) + RECOVERY_MAX_S for e in events)

    samples = [s for s in w.samples if settled(s[0])]
    false_offline = [(round(t - t0, 1), d) for t, states, _ in samples for d, st in states.items()
                     if st == "OFFLINE" and not excused(d, t)]
    baseline = {}
    for t, states, good in samples:  # every tag of each device that is Good while nothing is wrong
        for d in states:
            if not excused(d, t):
                baseline[d] = baseline.get(d, set()) | good.get(d, set())
    availability = {}
    for d in NEIGHBOURS:
        up = [states.get(d) == "ONLINE" and baseline.get(d, set()) <= good.get(d, set())
              for t, states, good in samples if not excused(d, t)]
        availability[d] = round(sum(up) / len(up), 4) if up else 0.0
    recovery = {}
    for e in events:
        if e["device"] is None or "end" not in e:
            continue
        want = baseline.get(e["device"], set())
        back = next((t for t, states, good in w.samples if t >= e["end"] and states.get(e["device"]) == "ONLINE"
                     and want <= good.get(e["device"], set())), None)
        recovery[f"{e['fault']}@{e['device']}"] = round(back - e["end"], 2) if back is not None else None
    worst = max((v for v in recovery.values() if v is not None), default=0.0)
    missing = [k for k, v in recovery.items() if v is None]
    low = {d: a for d, a in availability.items() if a < AVAILABILITY_MIN}
    return {
        "no_false_offline": {"ok": not false_offline, "detail": false_offline[:20] or "none"},
        "availability": {"ok": not low and bool(samples), "detail": availability},
        "recovery": {"ok": not missing and worst <= RECOVERY_MAX_S, "detail": recovery, "worst_s": worst},
    }


def report_text(r: dict, duration: float) -> str:
    c = r["checks"]
    lines = [f"# Fault campaign ({duration:.0f} s, {r['samples']} status samples)", "",
             "| check | ok | detail |", "|---|---|---|"]
    for name, check in c.items():
        detail = check.get("detail")
        if name == "ledger":
            detail = {k: check[k] for k in ("spooled_points", "server_points", "resent_or_missing", "dropped_points")}
        lines.append(f"| {name} | {'yes' if check['ok'] else 'NO'} | {json.dumps(detail)} |")
    lines += ["", "| fault | device | start s | end s | recovered after s |", "|---|---|---|---|---|"]
    for e in r["events"]:
        rec = c["recovery"]["detail"].get(f"{e['fault']}@{e['device']}", "") if e["device"] else ""
        lines.append(f"| {e['fault']} | {e['device'] or '-'} | {e['start']} | {e['end']} | {rec} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of the run (default 150: one round)")
    parser.add_argument("--long", action="store_true", help="a 20-minute run")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    args = parser.parse_args()
    duration = 1200.0 if args.long else max(args.duration, WARMUP_S + 9 * SLOT_S + 5)
    tmp = Path(tempfile.mkdtemp(prefix="edge-faults-"))
    r = asyncio.run(run_campaign(duration, tmp))
    text = report_text(r, duration)
    print(text)
    if args.report:
        args.report.write_text(text)
    c = r["checks"]
    figures = {"ok": r["ok"], "duration_s": r["duration_s"], "false_offline": len(c["no_false_offline"]["detail"])
               if isinstance(c["no_false_offline"]["detail"], list) else 0,
               "availability_min": min(c["availability"]["detail"].values(), default=0.0),
               "recovery_worst_s": c["recovery"]["worst_s"],
               "lost_or_resent_points": c["ledger"].get("resent_or_missing"),
               "dropped_points": c["ledger"].get("dropped_points"),
               "spooled_points": c["ledger"].get("spooled_points"),
               **{f"{k}_ok": v["ok"] for k, v in c.items()}}
    print("RESULT " + json.dumps(figures))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
