"""Where the appliance's resident memory went at start-up: an RSS ledger by component.

Each stage of the start (libraries imported, configuration loaded, drivers and store built, each
output started) notes the process's resident memory when it finishes; the difference to the
previous note is that stage's share. What grows after the start (monitored items of OPC UA
clients, batches in flight, the spool's pending commits, the allocator's free lists) is the rest:
``rss now - last note``. The figures go into the ``edge_health`` record (``mem_<stage>_mb``,
``rss_mb``) so that a site, and bench/e2e.py, can see them; docs/memory.md has the budget per tag.
Linux only (``/proc/self/statm``); elsewhere every figure is 0.
"""
from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident memory (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryLedger:
    """RSS noted after each start-up stage; :meth:`fields` gives each stage's share in MB."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, int]] = []

    def mark(self, stage: str) -> None:
        """Stage ``stage`` is done: note the RSS now (a stage noted twice keeps its first share)."""
        if any(name == stage for name, _ in self.marks):
            return
        self.marks.append((stage, rss_bytes()))

    def shares(self) -> dict[str, int]:
        """Bytes per stage, in order, and ``runtime``: what grew since the last stage."""
        out: dict[str, int] = {}
        prev = 0
        for stage, rss in self.marks:
            out[stage] = rss - prev
            prev = rss
        if self.marks:
            out["runtime"] = rss_bytes() - prev
        return out

    def fields(self) -> dict[str, float]:
        """``edge_health`` fields: ``mem_<stage>_mb`` per stage and ``rss_mb``."""
        out = {f"mem_{stage}_mb": round(b / 2**20, 2) for stage, b in self.shares().items()}
        out["rss_mb"] = round(rss_bytes() / 2**20, 2)
        return out


#: The process's ledger (one appliance per process).
LEDGER = MemoryLedger()
