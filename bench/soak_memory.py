"""Memory per phase of the soak: where the appliance's resident memory goes during a TSDB outage.

Runs the demo plant like bench/soak.py (simulated plant process, VictoriaMetrics, `edge run`
as a child) but with a memory probe inside the appliance (see "the probe" below), through these phases:

    warmup -> steady (before) -> outage (server stopped; or not, with --no-outage)
           -> backfill (until the backlog is gone) -> after (long steady state)

At the end of each phase the probe records RSS, pymalloc blocks, glibc heap in use and
free, and the gc-tracked object types that grew since the end of the warm-up (and with
``--tracemalloc N`` the source lines whose allocations grew). At the very end it runs one full
``gc.collect()`` and then ``malloc_trim(0)``, and records RSS after each: memory a full
collection gives back was unreachable garbage (cycles); memory malloc_trim gives back was
free memory the allocator kept.

    .venv/bin/python bench/soak_memory.py                       # outage run, default phases
    .venv/bin/python bench/soak_memory.py --no-outage           # the control run
    .venv/bin/python bench/soak_memory.py --outage 108 --after 180 --out /tmp/mem-outage

Prints one table and ends with ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import soak  # noqa: E402  (puts ROOT and tests/fixtures on sys.path)


class ProbedAppliance(soak.Appliance):
    """`edge run` with the probe inside (this script's ``--probe-child`` mode)."""

    async def start(self) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--probe-child", "run", str(self.config), "--no-status",
            cwd=ROOT, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=logf)
        logf.close()
        self.runs.append({"pid": self.proc.pid, "start": time.time(), "rss": [], "killed": False})


def backlog_age_s(db: Path) -> float:
    """Age of the oldest unsent spool row (0 when nothing waits)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            r = conn.execute("SELECT ts_ns FROM batches WHERE sent = 0 ORDER BY seq LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return float("inf")
    return 0.0 if r is None else time.time() - r[0] / 1e9


async def run(args: argparse.Namespace, tmp: Path) -> dict:
    from tsdb import VictoriaMetrics

    from drivers.modbus.sim.plant import listening_socket
    from drivers.modbus.sim.process import SimPlantProcess
    from drivers.modbus.simulation import plant_specs
    from edge.config.loader import load_config

    probe_dir = tmp / "probe"
    vm = VictoriaMetrics(tmp / "vm")
    vm.start()
    plc, gateway = listening_socket(), listening_socket()  # held until the simulator serves on them
    env = {**os.environ, "EDGE_RUN_DIR": str(tmp / "run"), "EDGE_DATA_DIR": str(tmp / "data"),
           "EDGE_DEMO_PLC_PORT": str(plc.getsockname()[1]), "EDGE_DEMO_GATEWAY_PORT": str(gateway.getsockname()[1]),
           "EDGE_DEMO_OPCUA_PORT": "0", "EDGE_DEMO_API_PORT": "0",
           "EDGE_MEMPROBE_DIR": str(probe_dir)}
    if args.tracemalloc:
        env["EDGE_MEMPROBE_TRACEMALLOC"] = str(args.tracemalloc)
    os.environ.update({k: v for k, v in env.items() if k.startswith("EDGE_") and "MEMPROBE" not in k})
    config = soak.soak_config(tmp, vm.url)
    loaded = load_config(config)
    (tmp / "run").mkdir(parents=True, exist_ok=True)
    sim = SimPlantProcess(plant_specs(loaded), sockets={s.getsockname()[1]: s for s in (plc, gateway)})
    await sim.start()
    plc.close()  # the simulator's child has its own copies
    gateway.close()
    app = ProbedAppliance(config, env, tmp / "appliance.log")
    control = probe_dir / "control"
    db = tmp / "data" / "spool.db"
    t0 = time.time()
    phases: list[tuple[str, float, float]] = []

    async def hold(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.sample_rss()
            if app.died_by_itself():
                raise RuntimeError(f"appliance exited with {app.proc.returncode}")
            await asyncio.sleep(0.5)

    async def mark(name: str, start: float) -> None:
        with open(control, "a") as f:
            f.write(f"mark {name}\n")
        phases.append((name, start, time.time()))
        await hold(3)  # the probe picks the command up within its interval

    await app.start()
    try:
        s = time.time()
        await hold(args.warmup)
        await mark("warmup", s)
        s = time.time()
        await hold(args.steady)
        await mark("steady", s)
        s = time.time()
        if args.outage > 0:
            await asyncio.to_thread(vm.stop)
        await hold(args.outage or args.control_outage)
        if args.outage > 0:
            await asyncio.to_thread(vm.start)
        await mark("outage" if args.outage > 0 else "steady2", s)
        s = time.time()
        deadline = time.time() + args.backfill_max
        while time.time() < deadline and await asyncio.to_thread(backlog_age_s, db) > 3.0:
            await hold(2)
        drained_after = time.time() - s
        await mark("backfill" if args.outage > 0 else "steady3", s)
        s = time.time()
        await hold(args.after)
        await mark("after", s)
        for cmd in ("gcstats", "collect", "trim"):
            with open(control, "a") as f:
                f.write(cmd + "\n")
            await hold(3)
        code = await app.stop()
    finally:
        await sim.stop()
        vm.stop()
    recs = [json.loads(line) for line in (probe_dir / "probe.jsonl").read_text().splitlines() if line.strip()]
    return {"exit": code, "t0": t0, "phases": phases, "drained_after_s": round(drained_after, 1),
            "records": recs, "tmp": str(tmp)}


def summarize(r: dict) -> dict:
    samples = [x for x in r["records"] if x["kind"] == "sample"]
    marks = {x["name"]: x for x in r["records"] if x["kind"] == "mark"}
    rows = []
    for name, start, end in r["phases"]:
        inside = [x["rss_mb"] for x in samples if start <= x["t"] <= end]
        m = marks.get(name, {})
        rows.append({"phase": name, "from_s": round(start - r["t0"]), "to_s": round(end - r["t0"]),
                     "rss_end_mb": m.get("rss_mb"), "rss_max_mb": max(inside) if inside else None,
                     "blocks": m.get("blocks"), "heap_used_mb": m.get("used_mb"), "heap_free_mb": m.get("free_mb"),
                     "mmap_mb": m.get("mmap_mb"), "anon_mb": m.get("anon_mb"), "objects": m.get("objects"),
                     "objects_by_gen": m.get("objects_by_gen"), "gc_collections": m.get("gc_collections"),
                     "traced_mb": m.get("traced_mb"), "types_grown": m.get("types_grown", [])[:12],
                     "old_types_grown": m.get("old_types_grown", [])[:12], "lines_grown": m.get("lines_grown", [])[:12]})
    extra = {x["kind"]: x for x in r["records"] if x["kind"] in ("collect", "trim", "gcstats")}
    return {"rows": rows, "collect": extra.get("collect"), "trim": extra.get("trim"), "gcstats": extra.get("gcstats"),
            "drained_after_s": r["drained_after_s"], "exit": r["exit"]}


# ----------------------------------------------------------------------------- the probe (child process)
#
# The probe: ``soak_memory.py --probe-child ARGS`` runs ``edge ARGS`` with a probe thread beside it.
#
# It sees inside the appliance while it runs: nothing in the
# appliance is changed, the probe only reads. Environment:
#
# * ``EDGE_MEMPROBE_DIR`` (required): where ``probe.jsonl`` is written and ``control`` is read.
# * ``EDGE_MEMPROBE_INTERVAL_S``: seconds between samples (default 1).
# * ``EDGE_MEMPROBE_TRACEMALLOC``: frames to keep per allocation; tracemalloc is off when unset
#   (it costs CPU and memory of its own, so RSS figures of such a run are not comparable).
#
# Every sample (one JSON line, ``"kind": "sample"``): wall time, VmRSS, pymalloc blocks in use
# (``sys.getallocatedblocks``), glibc ``mallinfo2`` (heap in use / free), gc generation counts.
#
# Commands, one per line appended to ``control``:
#
# * ``mark NAME``: a ``"kind": "mark"`` line with the sample figures, the 25 object types
#   that grew most since the first mark (gc-tracked objects), and with tracemalloc the 25
#   source lines whose allocations grew most since the first mark;
# * ``collect``: one full ``gc.collect()``; records objects found unreachable and RSS after;
# * ``trim``: glibc ``malloc_trim(0)``; records RSS after.


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]


try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallinfo2.restype = _Mallinfo2
    _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):  # not glibc (or glibc < 2.33)
    _libc = None


def status_mb() -> dict[str, float]:
    """VmRSS and its anonymous part (heap, arenas, thread stacks) from /proc/self/status, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "RssAnon"):
            out[key] = round(int(line.split()[1]) / 1024, 2)
    return out


def figures() -> dict:
    st = status_mb()
    out = {"t": time.time(), "rss_mb": st.get("VmRSS", 0.0), "anon_mb": st.get("RssAnon", 0.0),
           "blocks": sys.getallocatedblocks(), "gc_count": list(gc.get_count())}
    if _libc is not None:
        mi = _libc.mallinfo2()
        # arena: heap obtained with brk; hblkhd: mmapped chunks; uordblks: in use; fordblks: free inside
        out.update(heap_mb=round(mi.arena / 2**20, 2), mmap_mb=round(mi.hblkhd / 2**20, 2),
                   used_mb=round(mi.uordblks / 2**20, 2), free_mb=round(mi.fordblks / 2**20, 2))
    return out


def type_counts() -> collections.Counter:
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


class Probe:
    def __init__(self, out_dir: Path, interval_s: float) -> None:
        self.dir = out_dir
        self.interval_s = interval_s
        self.out = open(out_dir / "probe.jsonl", "a", buffering=1)  # noqa: SIM115 - lives with the process
        self.control = out_dir / "control"
        self.control.touch()
        self.offset = 0
        self.types0: collections.Counter | None = None
        self.old0: collections.Counter | None = None
        self.snap0: tracemalloc.Snapshot | None = None

    def write(self, rec: dict) -> None:
        self.out.write(json.dumps(rec) + "\n")

    def run(self) -> None:
        while True:  # daemon thread: ends with the process
            self.write({"kind": "sample", **figures()})
            for cmd in self.commands():
                try:
                    self.do(cmd)
                except Exception as e:  # noqa: BLE001 - the probe must never take the appliance down
                    self.write({"kind": "error", "cmd": cmd, "error": repr(e)})
            time.sleep(self.interval_s)

    def commands(self) -> list[str]:
        with open(self.control) as f:
            f.seek(self.offset)
            text = f.read()
        done = text.rfind("\n") + 1
        self.offset += done
        return [c.strip() for c in text[:done].splitlines() if c.strip()]

    def do(self, cmd: str) -> None:
        if cmd.startswith("mark "):
            self.mark(cmd[5:])
        elif cmd == "collect":
            before = figures()
            found = gc.collect()
            self.write({"kind": "collect", "unreachable": found, "before": before, "after": figures()})
        elif cmd == "trim" and _libc is not None:
            before = figures()
            _libc.malloc_trim(0)
            self.write({"kind": "trim", "before": before, "after": figures()})
        elif cmd == "gcstats":
            self.write({"kind": "gcstats", "stats": gc.get_stats(), "threshold": gc.get_threshold()})

    def mark(self, name: str) -> None:
        rec = {"kind": "mark", "name": name, **figures()}
        types = type_counts()
        rec["objects"] = sum(types.values())
        rec["objects_by_gen"] = [len(gc.get_objects(g)) for g in range(3)]
        rec["gc_collections"] = [s["collections"] for s in gc.get_stats()]
        # survivors of at least one collection: what the app's high thresholds leave for hours
        old = collections.Counter(type(o).__name__ for g in (1, 2) for o in gc.get_objects(g))
        if self.types0 is None:
            self.types0, self.old0 = types, old
        else:
            diff = types.copy()
            diff.subtract(self.types0)
            rec["types_grown"] = [(k, v) for k, v in diff.most_common(25) if v > 0]
            diff = old.copy()
            diff.subtract(self.old0)
            rec["old_types_grown"] = [(k, v) for k, v in diff.most_common(15) if v > 0]
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)])
            rec["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            if self.snap0 is None:
                self.snap0 = snap
            else:
                stats = snap.compare_to(self.snap0, "lineno")
                rec["lines_grown"] = [(str(s.traceback[0]), round(s.size_diff / 1024, 1), s.count_diff)
                                      for s in stats[:25] if s.size_diff > 0]
        self.write(rec)


def probe_child(argv: list[str]) -> int:
    """``edge ARGV`` with the probe thread beside it (the child process of ProbedAppliance)."""
    out_dir = Path(os.environ["EDGE_MEMPROBE_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = os.environ.get("EDGE_MEMPROBE_TRACEMALLOC")
    if frames:
        tracemalloc.start(int(frames))
    probe = Probe(out_dir, float(os.environ.get("EDGE_MEMPROBE_INTERVAL_S", "1")))
    threading.Thread(target=probe.run, name="memprobe", daemon=True).start()
    from edge.cli.main import main as edge_main

    return edge_main(argv)


def main() -> int:
    if sys.argv[1:2] == ["--probe-child"]:
        return probe_child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--steady", type=float, default=60)
    p.add_argument("--outage", type=float, default=108, help="seconds the server is down (0: none)")
    p.add_argument("--no-outage", action="store_true", help="the control run: no outage, same phase lengths")
    p.add_argument("--backfill-max", type=float, default=180)
    p.add_argument("--after", type=float, default=180)
    p.add_argument("--tracemalloc", type=int, default=0, help="frames per traced allocation (0: off)")
    p.add_argument("--out", type=Path, help="keep the run's files here (default: a temp dir)")
    args = p.parse_args()
    args.control_outage = args.outage
    if args.no_outage:
        args.outage = 0
    tmp = args.out or Path(tempfile.mkdtemp(prefix="edge-soakmem-"))
    tmp.mkdir(parents=True, exist_ok=True)
    r = asyncio.run(run(args, tmp))
    s = summarize(r)
    cols = ("rss_end_mb", "rss_max_mb", "anon_mb", "blocks", "heap_used_mb", "heap_free_mb", "mmap_mb", "objects")
    print(f"{'phase':<10} {'from-to s':>10} " + " ".join(f"{c[:-3] if c.endswith('_mb') else c:>11}" for c in cols)
          + "  objects by gen / collections")
    for row in s["rows"]:
        print(f"{row['phase']:<10} {row['from_s']:>4}-{row['to_s']:<5} "
              + " ".join(f"{row[c] if row[c] is not None else '-':>11}" for c in cols)
              + f"  {row['objects_by_gen']} / {row['gc_collections']}")
        if row["types_grown"]:
            print("    types grown since warmup:", row["types_grown"])
        if row["old_types_grown"]:
            print("    in gen 1-2:", row["old_types_grown"])
        for line in row["lines_grown"]:
            print("    ", line)
    for k in ("collect", "trim"):
        if s[k]:
            print(f"{k}: RSS {s[k]['before']['rss_mb']} -> {s[k]['after']['rss_mb']} MB"
                  + (f", {s[k]['unreachable']} unreachable objects" if k == "collect" else ""))
    (tmp / "summary.json").write_text(json.dumps(s, indent=1))
    print("RESULT " + json.dumps({"rows": [{k: v for k, v in row.items() if k not in ("types_grown", "lines_grown")}
                                           for row in s["rows"]],
                                  "drained_after_s": s["drained_after_s"], "exit": s["exit"],
                                  "collect": s["collect"] and [s["collect"]["before"]["rss_mb"],
                                                               s["collect"]["after"]["rss_mb"],
                                                               s["collect"]["unreachable"]],
                                  "trim": s["trim"] and [s["trim"]["before"]["rss_mb"], s["trim"]["after"]["rss_mb"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
