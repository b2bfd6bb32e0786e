"""Run ``edge`` (same arguments as the ``edge`` command) with a memory probe thread beside it.

Used by bench/soak_memory.py to see inside the appliance while it runs: nothing in the
appliance is changed, the probe only reads. Environment:

* ``EDGE_MEMPROBE_DIR`` (required): where ``probe.jsonl`` is written and ``control`` is read.
* ``EDGE_MEMPROBE_INTERVAL_S``: seconds between samples (default 1).
* ``EDGE_MEMPROBE_TRACEMALLOC``: frames to keep per allocation; tracemalloc is off when unset
  (it costs CPU and memory of its own, so RSS figures of such a run are not comparable).

Every sample (one JSON line, ``"kind": "sample"``): wall time, VmRSS, pymalloc blocks in use
(``sys.getallocatedblocks``), glibc ``mallinfo2`` (heap in use / free), gc generation counts.

Commands, one per line appended to ``control``:

* ``mark NAME``: a ``"kind": "mark"`` line with the sample figures, the 25 object types
  that grew most since the first mark (gc-tracked objects), and with tracemalloc the 25
  source lines whose allocations grew most since the first mark;
* ``collect``: one full ``gc.collect()``; records objects found unreachable and RSS after;
* ``trim``: glibc ``malloc_trim(0)``; records RSS after.
"""
from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def main() -> int:
    out_dir = Path(os.environ["EDGE_MEMPROBE_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = os.environ.get("EDGE_MEMPROBE_TRACEMALLOC")
    if frames:
        tracemalloc.start(int(frames))
    probe = Probe(out_dir, float(os.environ.get("EDGE_MEMPROBE_INTERVAL_S", "1")))
    threading.Thread(target=probe.run, name="memprobe", daemon=True).start()
    from edge.cli import main as edge_main

    return edge_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
