"""A stand-in for ``edge run`` in the crash test: spool + forwarder fed from an asyncio loop.

Usage: python crash_child.py SPOOL_DB INFLUX_URL PROGRESS_FILE FIRST_POLL POLLS
Appends the demo plant's batches (poll-major, 4 devices) from poll FIRST_POLL on, POLLS polls
(0: until killed). After each commit of the spool it appends "committed <batches>" to
PROGRESS_FILE; at a normal end it waits for the spool to drain, stops cleanly and appends
"done <json of spool and forwarder stats>".
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.config.storage import InfluxConfig, SpoolConfig  # noqa: E402
from edge.outputs.influx import InfluxForwarder  # noqa: E402
from edge.storage.spool import Spool  # noqa: E402
from tests.outputs.demo import batch_for, demo_plant  # noqa: E402

DEVICES = 4


async def main(db: str, url: str, progress: str, first: int, polls: int) -> None:
    plant = demo_plant(DEVICES, 25)
    out = open(progress, "a", buffering=1)  # noqa: SIM115 - line-buffered, lives as long as the process
    committed = 0

    def on_commit(_seq: int, batches: int) -> None:
        nonlocal committed
        committed += batches
        out.write(f"committed {committed}\n")

    spool = Spool(db, plant, SpoolConfig(commit_interval_ms=50, retention_s=0), on_commit=on_commit)
    spool.start()
    fw = InfluxForwarder(spool, InfluxConfig(url=url, bucket="edge", batch_max_points=2000, batch_max_age_ms=100,
                                             backfill_points_per_s=5000, live_window_ms=1000, retry_initial_ms=100,
                                             retry_max_ms=500))
    fw.start()
    out.write(f"started {spool.stats()['unsent_points']}\n")
    p = first
    while polls == 0 or p < first + polls:
        for d in range(DEVICES):
            spool.append_samples(batch_for(plant, d, p))
        p += 1
        await asyncio.sleep(0.004)
    await asyncio.to_thread(spool.flush)
    for _ in range(600):
        if spool.stats()["unsent_rows"] == 0:
            break
        await asyncio.sleep(0.1)
    await fw.stop()
    await spool.stop()
    out.write("done " + json.dumps({"spool": spool.stats(), "forwarder": fw.stats()}) + "\n")


if __name__ == "__main__":
    db, url, progress, first, polls = sys.argv[1:6]
    asyncio.run(main(db, url, progress, int(first), int(polls)))
