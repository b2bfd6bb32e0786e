"""The spool on a real SQLite file: round trip, resume, budget by bytes and age, retention, history."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.core.model import SampleBatch, WindowBatch
from edge.outputs.influx import open_storage
from edge.storage.history import format_history, parse_since, read_history, spool_history
from edge.storage.spool import (
    WAL_MIN_BYTES,
    WAL_SHARE,
    Spool,
    decode_samples,
    decode_windows,
    encode_samples,
    encode_windows,
)
from tests.outputs.demo import BASE_TS_NS, batch_for, demo_plant


class Clock:
    """An injectable wall clock (ns)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_sample_blob_round_trip_keeps_arrays_and_texts():
    plant = demo_plant(2, 5, strings=True)
    b = batch_for(plant, 1, 3)
    d = decode_samples(encode_samples(b))
    assert d.tag_ids.tolist() == b.tag_ids.tolist()
    np.testing.assert_array_equal(d.values, b.values)
    assert d.quality.tolist() == b.quality.tolist()
    assert d.texts == b.texts == {11: "SN-1-3"}


def test_window_blob_round_trip():
    wb = WindowBatch("10s", 10_000_000_000, np.array([0, 3], np.int32), np.array([10, 20], np.int64),
                     {"min": np.array([1.0, 2.0]), "max": np.array([3.0, np.nan])})
    d = decode_windows(encode_windows(wb), "10s")
    assert d.window_ns == wb.window_ns and d.tag_ids.tolist() == [0, 3] and d.start_ns.tolist() == [10, 20]
    assert d.stats["min"].tolist() == [1.0, 2.0] and np.isnan(d.stats["max"][1])


def test_committed_batches_survive_reopen_and_resume_as_unsent(tmp_path):
    plant = demo_plant(2, 10)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(commit_interval_ms=20))
    sp.start()
    for p in range(50):
        assert sp.append_samples(batch_for(plant, p % 2, p))
    assert sp.flush()
    assert sp.close()
    sp2 = Spool(tmp_path / "s.db", plant, SpoolConfig())
    sp2.start()
    try:
        st = sp2.stats()
        assert st["unsent_rows"] == 50 and st["unsent_points"] == 500
        rows = sp2.unsent(0, None, 10_000)
        assert [r.ts_ns for r in rows] == [BASE_TS_NS + p * 1_000_000 for p in range(50)]
        sp2.ack(rows[:20])
        assert sp2.stats()["unsent_points"] == 300
        assert [r.seq for r in sp2.unsent(0, None, 10_000)] == [r.seq for r in rows[20:]]
    finally:
        sp2.close()


def test_byte_budget_drops_the_oldest_and_counts_them_exactly(tmp_path):
    """The budget is the disk (pages in use + WAL + journal); the oldest go first, each counted."""
    plant = demo_plant(1, 100)
    cfg = SpoolConfig(max_bytes=256 << 10, commit_interval_ms=10, trim_interval_ms=10_000, retention_s=0)
    sp = Spool(tmp_path / "s.db", plant, cfg)
    sp.start()
    polls = 1000  # ~1.4 MB of payload
    try:
        for p in range(polls):
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        sp.enforce_budget()
        st = sp.stats()
        kept = st["unsent_rows"]
        assert 0 < kept < polls
        assert st["dropped_points"] == {"max_bytes": (polls - kept) * 100}
        assert st["dropped_batches"] == {"max_bytes": polls - kept}
        assert st["unsent_points"] == kept * 100
        assert st["disk_bytes"] <= cfg.max_bytes, st
        rows = sp.unsent(0, None, 10_000_000)
        assert [r.ts_ns for r in rows] == [BASE_TS_NS + p * 1_000_000 for p in range(polls - kept, polls)]
    finally:
        sp.close()


def test_a_large_commit_does_not_take_the_wal_past_its_share_of_the_budget(tmp_path):
    """Appends that pile up (a long commit interval, or a writer starved of CPU) are committed in
    chunks with a checkpoint between them, so the WAL stays within the two shares the budget keeps
    for it. Before: one transaction of ~0.6 x the budget went into the WAL at once, and a
    fresh-clone CI run measured 328,624 bytes on disk for a 262,144-byte budget."""
    plant = demo_plant(1, 50)
    budget = 256 << 10
    path = tmp_path / "s.db"
    seen: list[tuple[int, int]] = []  # (WAL bytes, disk bytes) right after each commit, in the writer

    def after_commit(_last: int, _n: int) -> None:
        wal = os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0
        seen.append((wal, wal + os.path.getsize(path)))

    cfg = SpoolConfig(max_bytes=budget, commit_interval_ms=10_000, trim_interval_ms=10_000, retention_s=0)
    sp = Spool(path, plant, cfg, on_commit=after_commit)
    sp.start()
    try:
        for p in range(400):  # ~280 KB of payload, all waiting for one wake of the writer
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        wal_share = max(budget // WAL_SHARE, WAL_MIN_BYTES)
        assert seen and max(w for w, _ in seen) <= 2 * wal_share, seen
        assert max(d for _, d in seen) <= budget, seen
        assert sp.stats()["unsent_rows"] + sp.stats()["dropped_batches"].get("max_bytes", 0) == 400
    finally:
        sp.close()


def test_giving_freed_pages_back_does_not_take_the_wal_past_its_share(tmp_path, monkeypatch):
    """After a large deletion the free pages go back to the file system in steps with a
    checkpoint between them: moving them all in one go wrote them all into the WAL first (the
    same fresh-clone run saw the WAL at 3 x its share while the budget was enforced)."""
    plant = demo_plant(1, 50)
    budget = 4 << 20
    path = tmp_path / "s.db"
    wal_before_checkpoint: list[int] = []
    checkpoint = Spool._checkpoint

    def watched(self: Spool, conn, busy_ok: bool = False, always: bool = False) -> None:
        wal_before_checkpoint.append(os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0)
        checkpoint(self, conn, busy_ok, always)

    monkeypatch.setattr(Spool, "_checkpoint", watched)
    cfg = SpoolConfig(max_bytes=budget, commit_interval_ms=10, trim_interval_ms=600_000, retention_s=0)
    sp = Spool(path, plant, cfg)
    sp.start()
    try:
        for p in range(3000):  # ~2 MB of payload
            sp.append_samples(batch_for(plant, 0, p))
        assert sp.flush()
        rows = sp.unsent(0, None, 10_000_000)
        sp.ack(rows[: len(rows) // 2])  # the oldest delivered and deleted: free pages below the rest
        with closing(sqlite3.connect(path)) as conn:  # start from an empty WAL: only the shrink's pages count
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        wal_before_checkpoint.clear()
        sp.enforce_budget()
        with closing(sqlite3.connect(path)) as conn:  # given back to the file system: no free page left in the file
            pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_count", "freelist_count", "page_size"))
        assert free == 0 and os.path.getsize(path) == pages * size
        wal_share = max(budget // WAL_SHARE, WAL_MIN_BYTES)
        assert max(wal_before_checkpoint) <= 2 * wal_share, wal_before_checkpoint
    finally:
        sp.close()


def test_age_budget_drops_unsent_batches_older_than_max_age(tmp_path):
    plant = demo_plant(1, 4)
    clock = Clock(BASE_TS_NS)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(max_age_s=60, trim_interval_ms=600_000), clock_ns=clock)
    sp.start()
    try:
        for p in range(120):  # one poll per second for two minutes
            sp.append_samples(batch_for(plant, 0, p, step_ns=1_000_000_000))
        assert sp.flush()
        clock.t = BASE_TS_NS + 120 * 1_000_000_000
        sp.enforce_budget()
        st = sp.stats()
        # polls 0..59 are older than 60 s at t=120 s (ts < now - 60 s): 60 batches of 4 points
        assert st["dropped_points"] == {"max_age": 240} and st["unsent_points"] == 240
        assert abs(st["oldest_unsent_age_s"] - 60.0) < 1e-6
    finally:
        sp.close()


def test_historian_mode_keeps_history_for_retention_and_reads_it(tmp_path):
    plant = demo_plant(2, 5)
    clock = Clock(BASE_TS_NS + 100 * 1_000_000_000)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(retention_s=50, trim_interval_ms=600_000),
               forwarding=False, clock_ns=clock)
    sp.start()
    try:
        for p in range(100):
            for d in range(2):
                sp.append_samples(batch_for(plant, d, p, step_ns=1_000_000_000))
        assert sp.flush()
        assert sp.stats()["unsent_rows"] == 0  # nothing to forward in historian mode
        sp.enforce_budget()
        st = sp.stats()
        assert st["expired_points"] == 50 * 2 * 5 and st["dropped_points_total"] == 0
        ts, vals, q, texts = read_history(tmp_path / "s.db", plant, "dev01.t002", 0, 2**62)
        assert texts is None and len(ts) == 50
        assert ts.tolist() == [BASE_TS_NS + p * 1_000_000_000 for p in range(50, 100)]
        assert vals.tolist() == [(p % 10_000) * 0.25 + 1000.0 + 2 for p in range(50, 100)]
        assert q.dtype == np.uint8 and int(q.sum()) == 0
        ts2, _, _, _ = spool_history(sp, "dev01.t002", BASE_TS_NS + 60 * 10**9, BASE_TS_NS + 70 * 10**9)
        assert len(ts2) == 10
        newest = spool_history(sp, "dev01.t002", BASE_TS_NS + 60 * 10**9, BASE_TS_NS + 70 * 10**9, 3, newest_first=True)
        assert newest.ts.tolist() == [BASE_TS_NS + p * 1_000_000_000 for p in (69, 68, 67)]
        lines = format_history(ts[:1], vals[:1], q[:1])
        assert lines == ["2026-01-01T00:00:50.000000000Z  1014.5  Good"]
    finally:
        sp.close()


def test_history_errors_name_what_is_wrong(tmp_path):
    plant = demo_plant(1, 2)
    with pytest.raises(KeyError, match="unknown tag 'dev00.nope'.*dev00.t000"):
        read_history(tmp_path, plant, "dev00.nope", 0, 1)
    with pytest.raises(FileNotFoundError, match="no spool at"):
        read_history(tmp_path, plant, "dev00.t000", 0, 1)


def test_rows_keep_their_tag_names_across_a_configuration_change(tmp_path):
    old = demo_plant(1, 3)
    sp = Spool(tmp_path / "s.db", old, SpoolConfig(), forwarding=False, clock_ns=Clock(BASE_TS_NS))
    sp.start()
    sp.append_samples(batch_for(old, 0, 1))
    assert sp.flush() and sp.close()
    new = demo_plant(1, 3)
    new.tags.reverse()  # same tags, other ids
    for i, t in enumerate(new.tags):
        object.__setattr__(t, "id", i)
    ts, vals, _, _ = read_history(tmp_path / "s.db", new, "dev00.t002", 0, 2**62)
    assert vals.tolist() == [0.25 + 2]


def test_pending_overflow_is_refused_and_counted(tmp_path):
    plant = demo_plant(1, 100)
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(max_pending_bytes=65536, commit_interval_ms=10_000))
    sp.start()
    try:
        b = batch_for(plant, 0, 0)
        results = [sp.append_samples(b) for _ in range(100)]
        ok = sum(results)
        assert 0 < ok < 100
        assert sp.stats()["dropped_points"] == {"pending_overflow": (100 - ok) * 100}
    finally:
        sp.close()


def test_empty_and_bad_batches():
    with pytest.raises(ValueError, match="same length"):
        SampleBatch("d", 1, np.zeros(2, np.int32), np.zeros(1), np.zeros(2, np.uint8))


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValidationError, match="url must look like http://host:8086"):
        InfluxConfig(url="localhost:8086", bucket="b")
    with pytest.raises(ValidationError, match="either token or token_file"):
        InfluxConfig(url="http://127.0.0.1:1", bucket="b", token="x", token_file=str(tmp_path))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SpoolConfig(max_byte=5)
    with pytest.raises(ValidationError, match="greater than or equal to 65536"):
        SpoolConfig(max_bytes=5)
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    assert InfluxConfig(url="http://127.0.0.1:1/", bucket="b", token_file=str(tok)).resolved_token() == "s3cret"


def test_parse_since():
    assert [parse_since(x) for x in ("90s", "10m", "2h", "1.5d", "1w")] == [90, 600, 7200, 129600, 604800]
    for bad in ("10", "m", "-5m", "10x", "abc"):
        with pytest.raises(ValueError, match="expected a positive number and a unit"):
            parse_since(bad)


def test_open_storage_builds_historian_or_forwarder(tmp_path):
    plant = demo_plant(1, 2)
    sp, fw = open_storage(plant, SpoolConfig(path=tmp_path / "spool.db"), None)
    assert fw is None and not sp.forwarding and sp.path == str(tmp_path / "spool.db")
    sp, fw = open_storage(plant, SpoolConfig(path=str(tmp_path / "x.db")),
                          InfluxConfig(url="http://127.0.0.1:1", bucket="b"))
    assert fw is not None and fw.spool is sp and sp.forwarding and sp.path == str(tmp_path / "x.db")


def _enforce_steps(sp: Spool) -> int:
    """SQLite virtual-machine steps (in thousands) one budget pass takes on the writer's connection."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    assert sp._conn is not None
    sp._conn.set_progress_handler(count, 1000)
    try:
        sp.enforce_budget()
    finally:
        sp._conn.set_progress_handler(None, 0)
    return steps[0]


def test_the_budget_pass_does_not_read_the_whole_history(tmp_path):
    """The pass runs every second; with nothing to expire its work must not grow with the history
    kept (7 days by default, up to the disk budget). Before: the expiry queries for acknowledged
    and for refused rows scanned the whole table each time (no index on the state and time), so a
    full history was read from disk once a second."""
    plant = demo_plant(1, 50)
    steps = []
    for n in (200, 4000):
        sp = Spool(tmp_path / f"s{n}.db", plant, SpoolConfig(trim_interval_ms=600_000, max_bytes=1 << 30),
                   clock_ns=Clock(BASE_TS_NS + 10**9))
        sp.start()
        try:
            for p in range(n):
                sp.append_samples(batch_for(plant, 0, p))
            assert sp.flush()
            sp.ack(sp.unsent(0, None, 10**9))
            assert sp.stats()["stored_rows"] == n and sp.stats()["unsent_rows"] == 0
            sp.enforce_budget()  # the first pass may settle the file; the second is the steady state
            steps.append(_enforce_steps(sp))
        finally:
            sp.close()
    assert steps[1] <= 2 * steps[0] + 5, f"thousands of VM steps at 200 and 4,000 history rows: {steps}"


_ACK_THEN_KILL = """
import os, signal, sys
sys.path.insert(0, {root!r})
from edge.config.storage import SpoolConfig
from edge.storage.spool import Spool
from tests.outputs.demo import batch_for, demo_plant
plant = demo_plant(2, 10)
sp = Spool({path!r}, plant, SpoolConfig(commit_interval_ms=20))
sp.start()
for p in range(30):
    sp.append_samples(batch_for(plant, p % 2, p))
assert sp.flush()
rows = sp.unsent(0, None, 10_000)
sp.ack(rows[:12])
print(sp._conn.execute("PRAGMA synchronous").fetchone()[0], sp._reader().execute("PRAGMA synchronous").fetchone()[0],
      flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_acknowledgements_commit_without_their_own_fsync_and_survive_a_kill(tmp_path):
    """The forwarder's connection commits acknowledgements with synchronous=NORMAL (a lost one only
    re-sends idempotent rows; bench: FULL cost ~5 us per acknowledged row), the writer's appends stay
    FULL; in WAL mode a kill -9 right after an acknowledgement loses none of it."""
    path = tmp_path / "s.db"
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", _ACK_THEN_KILL.format(root=root, path=str(path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.split() == ["2", "1"]  # writer FULL (2), acknowledgements NORMAL (1)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT sent, count(*) FROM batches GROUP BY sent").fetchall() == [(0, 18), (1, 12)]
