"""The durable store-and-forward spool: every batch lands on disk before anything is sent.

Storage is one SQLite database in WAL mode with **one row per batch** (one poll of one
device, one closed-window batch, or one health record): ``(seq, ts_ns, kind, source, n,
plant, nbytes, sent, blob)`` where ``blob`` is a compact binary copy of the batch's numpy
arrays (see :mod:`edge.storage.spool` ``encode_*``). Line protocol is produced only when forwarding
(:mod:`edge.outputs.influx`). Why SQLite and not a segment log: see docs/decisions/spool.md.

Threading model (the app's asyncio loop never waits on the disk):

* ``append_samples`` / ``append_windows`` / ``append_health`` are called on the loop. They
  encode the arrays to bytes (a few microseconds) and put them on an in-RAM list.
* One writer thread commits that list every ``commit_interval_ms`` in one transaction
  (``synchronous=FULL``: the WAL is fsynced at each commit). A power cut therefore loses
  at most the last ``commit_interval_ms`` of appends; a ``kill -9`` loses the same RAM window
  and nothing committed.
* The same thread enforces the budget every ``trim_interval_ms`` (and at once when a commit
  takes the disk over it): acknowledged rows older than ``retention_s`` expire; then, beyond
  ``max_age_s`` or ``max_bytes``, the oldest rows are deleted and every unsent point deleted is
  counted under its reason in ``stats()``. ``max_bytes`` is the **disk** budget: the database
  pages in use plus the WAL and the rollback journal. The WAL is kept to an eighth of it by
  checkpoints (``TRUNCATE``) and ``journal_size_limit``; new files use incremental
  auto-vacuum, so pages freed by the budget go back to the file system.
* The writer thread is supervised (:mod:`edge.core.supervise`): a crash is logged, counted in
  ``stats()['writer']`` and the thread restarted; never a silent death.
* ``stats()`` runs no query: the age of the oldest unsent row is kept by the threads that
  change it (writer: commit and budget; forwarder: ack), so the event loop can ask often.
* The forwarder (another thread) reads unsent rows with its own connection and calls
  :meth:`Spool.ack` for what the server acknowledged: those rows are deleted, or marked sent
  and kept as local history while ``retention_s`` > 0. That connection commits with
  ``synchronous=NORMAL`` whatever the setting (:data:`READER_SYNCHRONOUS`): an acknowledgement
  lost to a power cut only sends its rows again (delivery is at least once and idempotent), and
  the writer's next FULL commit makes it durable anyway; a ``kill -9`` loses none in WAL mode.

Tag ids are only stable within one loaded configuration, so each row names the *plant
version* it was written under (table ``plants``: the tag table as JSON, keyed by a digest);
rows written before a configuration change still decode to the right names.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge.config.storage import SpoolConfig
from edge.core.model import QUALITY_DTYPE, TAG_ID_DTYPE, VALUE_DTYPE, Plant, SampleBatch, WindowBatch
from edge.core.supervise import SupervisedThread

log = logging.getLogger(__name__)

KIND_SAMPLES = 0
KIND_WINDOWS = 1
KIND_HEALTH = 2
KIND_ALARM = 3  # one alarm state change (edge.intelligence.alarms), forwarded to the edge_alarms measurement
KIND_NAMES = {KIND_SAMPLES: "samples", KIND_WINDOWS: "windows", KIND_HEALTH: "health", KIND_ALARM: "alarm"}

SENT_NO = 0
SENT_YES = 1
SENT_REJECTED = 2  # the server refused this row's data (4xx on the row alone): kept, never re-sent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plants (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    source TEXT NOT NULL,
    n INTEGER NOT NULL,
    plant INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_unsent ON batches(seq) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS batches_history ON batches(kind, source, ts_ns);
-- the budget pass (every second) expires history by state and age: without these it read the whole table
CREATE INDEX IF NOT EXISTS batches_acked ON batches(ts_ns) WHERE sent = 1;
CREATE INDEX IF NOT EXISTS batches_rejected ON batches(ts_ns) WHERE sent = 2;
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
"""

# The forwarder's and historian's connections: they only write acknowledgements (see the module
# docstring), which need no fsync of their own; FULL there cost ~5 us per acknowledged row (bench).
READER_SYNCHRONOUS = "normal"

_INSERT = "INSERT INTO batches(ts_ns, kind, source, n, plant, nbytes, sent, blob, seq) VALUES (?,?,?,?,?,?,?,?,?)"
ROW_OVERHEAD_BYTES = 64  # rough per-row cost of the table and index entries, counted in the budget
WAL_SHARE = 8  # the WAL is checkpointed (TRUNCATE) beyond max_bytes / WAL_SHARE
WAL_MIN_BYTES = 32 << 10
RATIO_MIN_STORED = 32 << 10  # measure bytes per stored byte only over this much data (else noise)
DISK_TARGET = 0.9  # when the disk is over budget, trim to this share of it (room for the next commits)

# ----------------------------------------------------------------------------- blob codecs

_HDR = struct.Struct("<IB")  # n, flags (1: texts follow)
_WHDR = struct.Struct("<IIq")  # rows, stats, window_ns


def encode_samples(batch: SampleBatch) -> bytes:
    """``SampleBatch`` arrays as bytes: header, int32 tag ids, float64 values, uint8 quality, texts."""
    n = len(batch)
    parts = [
        _HDR.pack(n, 1 if batch.texts else 0),
        np.ascontiguousarray(batch.tag_ids, dtype=TAG_ID_DTYPE).tobytes(),
        np.ascontiguousarray(batch.values, dtype=VALUE_DTYPE).tobytes(),
        np.ascontiguousarray(batch.quality, dtype=QUALITY_DTYPE).tobytes(),
    ]
    if batch.texts:
        parts.append(json.dumps({str(k): v for k, v in batch.texts.items()}).encode())
    return b"".join(parts)


@dataclass(slots=True)
class DecodedSamples:
    tag_ids: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    texts: dict[int, str] | None


def decode_samples(blob: bytes) -> DecodedSamples:
    """Inverse of :func:`encode_samples` (arrays are read-only views on ``blob``)."""
    n, flags = _HDR.unpack_from(blob, 0)
    o = _HDR.size
    tag_ids = np.frombuffer(blob, TAG_ID_DTYPE, n, o)
    o += 4 * n
    values = np.frombuffer(blob, VALUE_DTYPE, n, o)
    o += 8 * n
    quality = np.frombuffer(blob, QUALITY_DTYPE, n, o)
    o += n
    texts = {int(k): v for k, v in json.loads(blob[o:]).items()} if flags & 1 else None
    return DecodedSamples(tag_ids, values, quality, texts)


def decode_samples_len(blob: bytes) -> int:
    """Points in an encoded sample batch (header only)."""
    return _HDR.unpack_from(blob, 0)[0]


def thin_to_windows(items: list[tuple[int, bytes]], window_ns: int, label: str) -> WindowBatch:
    """Window statistics (count, min, max, mean, bad_count) of encoded sample batches ``(ts_ns, blob)``.

    Only Good, finite values enter count/min/max/mean; windows with none have NaN statistics.
    """
    decoded = [(ts, decode_samples(blob)) for ts, blob in items]
    tags = np.concatenate([d.tag_ids for _, d in decoded])
    vals = np.concatenate([d.values for _, d in decoded])
    qual = np.concatenate([d.quality for _, d in decoded])
    ts = np.concatenate([np.full(len(d.tag_ids), t, np.int64) for t, d in decoded])
    start = ts - ts % window_ns
    order = np.lexsort((ts, start, tags))
    tags, start, vals, qual = tags[order], start[order], vals[order], qual[order]
    good = (qual == 0) & np.isfinite(vals)
    cut = np.flatnonzero((np.diff(tags) != 0) | (np.diff(start) != 0)) + 1
    idx = np.concatenate([[0], cut])
    count = np.add.reduceat(good.astype(np.float64), idx)
    gv = np.where(good, vals, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduceat(np.where(good, vals, 0.0), idx) / count
    stats = {
        "count": count,
        "min": np.fmin.reduceat(gv, idx),
        "max": np.fmax.reduceat(gv, idx),
        "mean": np.where(count > 0, mean, np.nan),
        "bad_count": np.add.reduceat((~good).astype(np.float64), idx),
    }
    return WindowBatch(window=label, window_ns=window_ns, tag_ids=tags[idx].astype(TAG_ID_DTYPE),
                       start_ns=start[idx], stats=stats)


def encode_windows(batch: WindowBatch) -> bytes:
    """``WindowBatch`` as bytes: header, stat names (JSON), tag ids, starts, one float64 array per stat."""
    names = list(batch.stats)
    name_bytes = json.dumps(names).encode()
    parts = [
        _WHDR.pack(len(batch), len(name_bytes), batch.window_ns),
        name_bytes,
        np.ascontiguousarray(batch.tag_ids, dtype=TAG_ID_DTYPE).tobytes(),
        np.ascontiguousarray(batch.start_ns, dtype=np.int64).tobytes(),
    ]
    parts.extend(np.ascontiguousarray(batch.stats[k], dtype=np.float64).tobytes() for k in names)
    return b"".join(parts)


def decode_windows(blob: bytes, window: str) -> WindowBatch:
    """Inverse of :func:`encode_windows`."""
    n, name_len, window_ns = _WHDR.unpack_from(blob, 0)
    o = _WHDR.size
    names = json.loads(blob[o:o + name_len])
    o += name_len
    tag_ids = np.frombuffer(blob, TAG_ID_DTYPE, n, o)
    o += 4 * n
    start_ns = np.frombuffer(blob, np.int64, n, o)
    o += 8 * n
    stats = {}
    for k in names:
        stats[k] = np.frombuffer(blob, np.float64, n, o)
        o += 8 * n
    return WindowBatch(window=window, window_ns=window_ns, tag_ids=tag_ids, start_ns=start_ns, stats=stats)


def encode_health(fields: Mapping[str, float | int]) -> bytes:
    return json.dumps({k: float(v) for k, v in fields.items()}).encode()


def decode_health(blob: bytes) -> dict[str, float]:
    return json.loads(blob)


#: Source of a health row that holds the records of several sources (every device of one health tick):
#: one row instead of one per device (device names cannot start with '#'). Its blob is a health table
#: (``encode_health_table``, starts with HEALTH_TABLE_MAGIC) or, in rows of older spools and when the
#: sources' keys have no common order, JSON (``encode_health_many``, starts with ``[``).
HEALTH_MANY = "#devices"
HEALTH_MANY_MAX = 256  # records per row (~30 KB as a table, ~100 KB as JSON)


def encode_health_many(records: Sequence[tuple[str, Mapping[str, float | int]]]) -> bytes:
    return json.dumps([[source, {k: float(v) for k, v in fields.items()}] for source, fields in records]).encode()


def decode_health_many(blob: bytes) -> list[tuple[str, dict[str, float]]]:
    """``(source, fields)`` of a HEALTH_MANY row in either format (a table's NaN cells left out)."""
    if is_health_table(blob):
        t = decode_health_table(blob)
        return [(source, {k: v for k, v in zip(t.keys, row, strict=True) if v == v})
                for source, row in zip(t.sources, t.values.tolist(), strict=True)]
    return [(source, fields) for source, fields in json.loads(blob)]


@dataclass(slots=True)
class HealthTable:
    """Health records of several sources as one matrix: ``values[i, j]`` is field ``keys[j]`` of
    ``sources[i]`` (float64), NaN where that source has no such field. The field order of each
    source's record is the order of ``keys`` (so ``keys`` must follow every record's own order for
    its ``edge_health`` line to be the one its dict gave: see :func:`key_order`)."""

    keys: list[str]
    sources: list[str]
    values: np.ndarray

    def points(self) -> int:
        """The fields the sources have (the non-NaN cells): the row's ``n`` in the spool."""
        return int(self.values.size - np.count_nonzero(np.isnan(self.values)))


#: First bytes of a health-table blob (a JSON blob starts with '[' or '{').
HEALTH_TABLE_MAGIC = b"\x00HT1"
_HTHDR = struct.Struct("<4sIII")  # magic, sources, keys, header bytes; then the header (JSON), then the matrix


def encode_health_table(table: HealthTable) -> bytes:
    """The header (keys and source names, JSON, once per row) and the float64 matrix (little-endian)."""
    head = json.dumps([table.keys, table.sources], separators=(",", ":")).encode()
    n, k = len(table.sources), len(table.keys)
    values = np.ascontiguousarray(table.values, "<f8")
    if values.shape != (n, k):
        raise ValueError(f"health table of {n} sources x {k} keys has a {values.shape} matrix")
    return _HTHDR.pack(HEALTH_TABLE_MAGIC, n, k, len(head)) + head + values.tobytes()


def is_health_table(blob: bytes) -> bool:
    return blob[:4] == HEALTH_TABLE_MAGIC


def decode_health_table(blob: bytes) -> HealthTable:
    """The table of :func:`encode_health_table` (its matrix a read-only view of ``blob``)."""
    if len(blob) < _HTHDR.size or not is_health_table(blob):
        raise ValueError(f"corrupt health table: {len(blob)} bytes, starting {blob[:4]!r}")
    _, n, k, hlen = _HTHDR.unpack_from(blob)
    o = _HTHDR.size + hlen
    if len(blob) != o + 8 * n * k:
        raise ValueError(f"corrupt health table: {len(blob)} bytes for {n} sources x {k} keys")
    try:
        keys, sources = json.loads(blob[_HTHDR.size:o])
    except ValueError as e:
        raise ValueError(f"corrupt health table: header not JSON ({e})") from None
    if len(keys) != k or len(sources) != n:
        raise ValueError(f"corrupt health table: header names {len(sources)} sources x {len(keys)} keys, not {n} x {k}")
    return HealthTable(keys, sources, np.frombuffer(blob, "<f8", n * k, o).reshape(n, k))


K = TypeVar("K", bound=Hashable)


def key_order(key_lists: Iterable[Iterable[K]]) -> dict[K, int] | None:
    """Column of each key, in first-seen order, if every list keeps to that order (then each
    record's non-NaN cells in column order are its own fields in its own order); None otherwise."""
    cols: dict[K, int] = {}
    for keys in key_lists:
        last = -1
        for key in keys:
            j = cols.setdefault(key, len(cols))
            if j <= last:
                return None
            last = j
    return cols


def health_table(records: Sequence[tuple[str, Mapping[str, float | int]]]) -> HealthTable | None:
    """The records as one table; None if their keys have no common order (see :func:`key_order`)."""
    cols = key_order(fields for _, fields in records)
    if cols is None:
        return None
    values = np.full((len(records), len(cols)), np.nan)
    for i, (_, fields) in enumerate(records):
        values[i, [cols[k] for k in fields]] = [float(v) for v in fields.values()]
    return HealthTable(list(cols), [source for source, _ in records], values)


def encode_alarm(record: Mapping[str, object]) -> bytes:
    """One alarm state change (str, int, float, bool or None values) as JSON."""
    return json.dumps(dict(record), separators=(",", ":")).encode()


def decode_alarm(blob: bytes) -> dict[str, object]:
    return json.loads(blob)


# ----------------------------------------------------------------------------- plant versions


@dataclass(frozen=True, slots=True)
class PlantTags:
    """The tag table of one plant version, as stored in the spool (indexed by tag id)."""

    id: int
    site: str
    device: tuple[str, ...]
    name: tuple[str, ...]
    bus: tuple[str, ...]
    plugin: tuple[str | None, ...]
    dtype: tuple[str, ...]

    def tag_id(self, key: str) -> int | None:
        """The id of ``device.tag`` in this version, or None."""
        for i, (d, n) in enumerate(zip(self.device, self.name, strict=True)):
            if f"{d}.{n}" == key:
                return i
        return None


def _plant_json(plant: Plant) -> str:
    rows = [[t.device, t.name, t.bus, t.plugin, t.dtype] for t in plant.tags]
    for i, t in enumerate(plant.tags):
        if t.id != i:
            raise ValueError(f"Plant.tags must be indexed by id: tag {t.key} has id {t.id} at index {i}")
    return json.dumps(rows, separators=(",", ":"))


def _plant_tags(pid: int, site: str, tags_json: str) -> PlantTags:
    rows = json.loads(tags_json)
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return PlantTags(pid, site, *(tuple(c) for c in cols))


# ----------------------------------------------------------------------------- the spool


@dataclass(slots=True)
class Row:
    """One spooled batch as the forwarder and the historian see it."""

    seq: int
    ts_ns: int
    kind: int
    source: str
    n: int
    plant: int
    blob: bytes


@dataclass(slots=True)
class _Counters:
    appended_batches: int = 0
    appended_points: int = 0
    committed_batches: int = 0
    committed_points: int = 0
    commits: int = 0
    commit_errors: int = 0
    acked_points: int = 0
    rejected_points: int = 0
    expired_points: int = 0  # acknowledged history past retention_s (not a loss)
    evicted_history_points: int = 0  # acknowledged history deleted to respect max_bytes (not a loss)
    thinned_points: int = 0  # unsent raw points replaced by window statistics (policy "thin")
    thin_stats_written: int = 0  # window statistic rows written in their place
    pinned_dropped_points: int = 0  # sample points a consumer's pin still needed, deleted by the budget
    dropped_points: dict[str, int] = field(default_factory=dict)  # unsent points lost, by reason
    dropped_batches: dict[str, int] = field(default_factory=dict)
    last_error: str = ""


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect only on a new, empty database
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Spool:
    """Durable on-disk spool of batches (see the module docstring for the threading model).

    Construct, then :meth:`start` (opens the file, resumes its content, starts the writer
    thread); call the ``append_*`` methods from the asyncio loop; :meth:`stop` (async) or
    :meth:`close` commits what is pending within a bounded time.

    ``forwarding`` False makes it a pure local historian: rows are stored as already sent,
    so only ``retention_s`` and the budget remove them. ``clock_ns`` (wall clock) is
    injectable for budget/retention tests.
    """

    def __init__(
        self,
        path: str | Path,
        plant: Plant,
        config: SpoolConfig | None = None,
        *,
        forwarding: bool = True,
        clock_ns: Callable[[], int] = time.time_ns,
        on_commit: Callable[[int, int], None] | None = None,
    ) -> None:
        self.path = str(path)
        self.plant = plant
        self.config = config or SpoolConfig()
        self.forwarding = forwarding
        self.clock_ns = clock_ns
        self.on_commit = on_commit  # called in the writer thread: (last committed seq, batches committed)
        self._lock = threading.Lock()
        self._db_lock = threading.RLock()  # serialises use of the writer connection (writer thread, tests)
        self._wake = threading.Condition(self._lock)
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._read_local = threading.local()
        self._plants: dict[int, PlantTags] = {}
        self.plant_id = -1
        self.new_data = threading.Event()  # set after each commit of new rows (the forwarder waits on it)
        self.c = _Counters()
        # depth, maintained under _lock: rows/points/bytes that are unsent, and all stored bytes
        self._unsent_rows = 0
        self._unsent_points = 0
        self._unsent_bytes = 0
        self._stored_rows = 0
        self._stored_bytes = 0
        self.last_seq = 0
        self._oldest_unsent_ns: int | None = None  # kept by the writer and forwarder threads (see stats())
        self._disk = {"db_bytes": 0, "db_file_bytes": 0, "wal_bytes": 0, "journal_bytes": 0}
        self._bytes_per_stored = 1.5  # disk bytes per counted stored byte (page fill, indexes), measured
        self._fixed_bytes = -1  # disk bytes that are not rows (schema, plant tables), measured at start
        self._wal_limit = max(self.config.max_bytes // WAL_SHARE, WAL_MIN_BYTES)
        self.checkpoints = 0
        self._supervisor: SupervisedThread | None = None
        self._discarded_batches = 0  # appended batches dropped before any commit (flush() counts them as done)
        self._next_seq = 1  # seqs are given at append time, so a sink can tell which row a batch became
        self.last_consumed: tuple[SampleBatch | None, int] = (None, 0)  # (batch, seq) of the last consume()
        self._pins: dict[str, int] = {}  # consumer -> lowest seq it still needs (see pin())
        self._cursor_updates: dict[str, str] = {}  # consumer -> state to persist at the next commit

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Open (or create) the database, register this plant version, start the writer thread."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path, self.config.synchronous)
        page = self._conn.execute("PRAGMA page_size").fetchone()[0]
        self._conn.execute(f"PRAGMA wal_autocheckpoint={max(4, self._wal_limit // page)}")
        self._conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        self._conn.executescript(_SCHEMA)
        self.plant_id = self._register_plant(self._conn, self.plant)
        self._load_depth(self._conn)
        self._refresh_oldest(self._conn)
        self._measure_disk(self._conn)
        self._supervisor = SupervisedThread("spool-writer", self._writer, stopping=lambda: self._stopping)
        self._supervisor.start()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Commit what is pending and stop the writer thread; True when it stopped in time."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        ok = True
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
            ok = not self._supervisor.is_alive()
        if ok and self._conn is not None:
            self._conn.close()
            self._conn = None
        self.new_data.set()
        return ok

    async def stop(self, timeout_s: float = 10.0) -> bool:
        """Async :meth:`close` for the app's loop (the join runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout_s)

    # ------------------------------------------------------------------ appends (asyncio loop)

    def append_samples(self, batch: SampleBatch) -> bool:
        """Queue one poll's samples for the next commit. False (and a counted drop) if refused."""
        return self._append(batch.ts_ns, KIND_SAMPLES, batch.device, len(batch), encode_samples(batch)) > 0

    def consume(self, batch: SampleBatch) -> None:
        """The pipeline's sink interface (edge.core.pipeline.Sink): same as :meth:`append_samples`.

        ``last_consumed`` then holds the batch and the seq its row will have (0: refused), for a
        sink after this one that tracks its own progress through the spool (the MQTT output).
        """
        seq = self._append(batch.ts_ns, KIND_SAMPLES, batch.device, len(batch), encode_samples(batch))
        self.last_consumed = (batch, seq)

    def append_windows(self, batch: WindowBatch) -> bool:
        """Queue closed aggregation windows (stamped with their earliest window start)."""
        if len(batch) == 0:
            return True
        ts = int(np.min(batch.start_ns))
        return self._append(ts, KIND_WINDOWS, batch.window, len(batch), encode_windows(batch)) > 0

    def append_health(self, source: str, ts_ns: int, fields: Mapping[str, float | int]) -> bool:
        """Queue one health record (``source``: a device name or ``"appliance"``)."""
        return self._append(ts_ns, KIND_HEALTH, source, len(fields), encode_health(fields)) > 0

    def append_health_many(self, ts_ns: int, records: Sequence[tuple[str, Mapping[str, float | int]]]) -> bool:
        """Queue the health records of several sources (``(source, fields)``, e.g. every device at one
        tick) as rows of up to HEALTH_MANY_MAX records: one insert, one acknowledgement and one encoder
        call for each instead of one per source (a row stays well under the spool's WAL share). A row
        is a health table, or JSON if its records' keys have no common order."""
        ok = True
        for i in range(0, len(records), HEALTH_MANY_MAX):
            part = records[i:i + HEALTH_MANY_MAX]
            n = sum(len(fields) for _, fields in part)
            table = health_table(part)
            blob = encode_health_table(table) if table is not None else encode_health_many(part)
            ok &= self._append(ts_ns, KIND_HEALTH, HEALTH_MANY, n, blob) > 0
        return ok

    def append_health_table(self, ts_ns: int, table: HealthTable) -> bool:
        """:meth:`append_health_many` for records already in a table (no dict per source)."""
        ok = True
        for i in range(0, len(table.sources), HEALTH_MANY_MAX):
            part = HealthTable(table.keys, table.sources[i:i + HEALTH_MANY_MAX], table.values[i:i + HEALTH_MANY_MAX])
            ok &= self._append(ts_ns, KIND_HEALTH, HEALTH_MANY, part.points(), encode_health_table(part)) > 0
        return ok

    def append_alarm(self, alarm: str, ts_ns: int, record: Mapping[str, object]) -> bool:
        """Queue one alarm state change (``alarm``: the alarm's name; ``record``: its fields and tags)."""
        return self._append(ts_ns, KIND_ALARM, alarm, 1, encode_alarm(record)) > 0

    def _append(self, ts_ns: int, kind: int, source: str, n: int, blob: bytes) -> int:
        """Queue one row; its seq (0 if refused)."""
        sent = SENT_NO if self.forwarding else SENT_YES
        with self._lock:
            if self._stopping or self._pending_bytes + len(blob) > self.config.max_pending_bytes:
                self._count_drop("stopped" if self._stopping else "pending_overflow", 1, n)
                self._discarded_batches += 1
                return 0
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append((int(ts_ns), kind, source, n, self.plant_id, len(blob), sent, blob, seq))
            self._pending_bytes += len(blob)
            self.c.appended_batches += 1
            self.c.appended_points += n
        return seq

    @property
    def next_seq(self) -> int:
        """The seq the next appended row will get (rows below it are appended, committed or pending)."""
        with self._lock:
            return self._next_seq

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything appended so far is committed (threads and tests; not on the loop)."""
        with self._lock:
            target = self.c.appended_batches
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:  # batches dropped before their commit count as done (not those the budget drops)
                done = self.c.committed_batches + self._discarded_batches
            if done >= target:
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ writer thread

    def _writer(self) -> None:
        interval = self.config.commit_interval_ms / 1000
        trim_every = self.config.trim_interval_ms / 1000
        next_trim = time.monotonic()
        while True:
            with self._lock:
                if not self._stopping:
                    self._wake.wait(interval)
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                stopping = self._stopping
            if batch:
                try:
                    self._commit(batch)
                except BaseException:
                    with self._lock:  # the batch left the pending list: count it before the supervisor restarts us
                        self._count_drop("writer_error", len(batch), sum(r[3] for r in batch))
                        self._discarded_batches += len(batch)
                    raise
            self._save_cursors()
            if time.monotonic() >= next_trim or stopping or self._disk_over_budget():
                next_trim = time.monotonic() + trim_every
                try:
                    self.enforce_budget()
                except sqlite3.Error as e:  # contained: counted and retried at the next trim
                    self.c.last_error = f"budget enforcement failed: {e}"
                    log.error("spool: %s", self.c.last_error)
            if stopping:
                with self._lock:
                    if not self._pending:
                        return

    def _commit(self, batch: list[tuple]) -> None:
        """Commit what the appends queued, in transactions of at most half the WAL's share each,
        checkpointing between them: a backlog (a long ``commit_interval_ms``, a writer starved of
        CPU) would otherwise go into the WAL in one piece, past the room the budget keeps for it."""
        with self._db_lock:
            batch = self._make_room(batch)
            for chunk in self._chunks(batch, self._wal_limit // 2):
                self._commit_locked(chunk)
                if self._conn is not None:
                    self._checkpoint(self._conn, busy_ok=True)

    @staticmethod
    def _chunks(batch: list[tuple], max_bytes: int) -> Iterator[list[tuple]]:
        """Consecutive slices of ``batch`` whose rows hold at most ``max_bytes`` (at least one row)."""
        start, size = 0, 0
        for i, row in enumerate(batch):
            if size and size + row[5] + ROW_OVERHEAD_BYTES > max_bytes:
                yield batch[start:i]
                start, size = i, 0
            size += row[5] + ROW_OVERHEAD_BYTES
        if start < len(batch):
            yield batch[start:]

    def _make_room(self, batch: list[tuple]) -> list[tuple]:
        """Before a commit that would take the disk over budget, drop the oldest to make room for it
        (its own transaction): the database never grows past the budget between two trims. A
        commit larger than the whole budget loses its own oldest batches (counted); what is left."""
        with self._lock:
            ratio, stored = self._bytes_per_stored, self._stored_bytes
        room = (DISK_TARGET * self.config.max_bytes - 2 * self._wal_limit - max(self._fixed_bytes, 0)) / ratio
        incoming = sum(r[5] for r in batch) + ROW_OVERHEAD_BYTES * len(batch)
        if self.forwarding and self.config.over_budget == "drop_oldest" and incoming > room > 0:
            cut = 0
            while cut < len(batch) and incoming > room:
                incoming -= batch[cut][5] + ROW_OVERHEAD_BYTES
                cut += 1
            with self._lock:
                self._count_drop("max_bytes", cut, sum(r[3] for r in batch[:cut]))
                self._discarded_batches += cut  # done, for flush()
            batch = batch[cut:]
        needed = int(stored + incoming - room)
        if needed <= 0 or stored <= 0 or self._conn is None:
            return batch
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._trim_bytes(conn, needed)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as e:  # contained: the periodic budget pass tries again
            self.c.last_error = f"budget enforcement failed: {e}"
            log.error("spool: %s", self.c.last_error)
        return batch

    def _save_cursors(self) -> None:
        """Persist the consumers' cursor states set since the last commit (writer thread)."""
        with self._lock:
            updates, self._cursor_updates = self._cursor_updates, {}
        if not updates or self._conn is None:
            return
        with self._db_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO cursors(name, state) VALUES (?, ?)",
                                       list(updates.items()))
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                self.c.last_error = f"saving consumer cursors failed: {e}"
                log.error("spool: %s", self.c.last_error)
                with self._lock:  # try again at the next commit, unless a newer state came meanwhile
                    for name, state in updates.items():
                        self._cursor_updates.setdefault(name, state)

    def _commit_locked(self, batch: list[tuple]) -> None:
        assert self._conn is not None
        for attempt in range(3):
            try:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                cur.executemany(_INSERT, batch)
                last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
                cur.execute("COMMIT")
                break
            except sqlite3.Error as e:
                self._rollback()
                self.c.commit_errors += 1
                self.c.last_error = f"commit failed (attempt {attempt + 1}): {e}"
                log.error("spool: %s", self.c.last_error)
                time.sleep(0.05 * (attempt + 1))
        else:
            with self._lock:
                self._count_drop("disk_error", len(batch), sum(r[3] for r in batch))
                self._discarded_batches += len(batch)
            return
        points = sum(r[3] for r in batch)
        nbytes = sum(r[5] for r in batch) + ROW_OVERHEAD_BYTES * len(batch)
        with self._lock:
            self.last_seq = last
            if self.forwarding and self._oldest_unsent_ns is None:
                self._oldest_unsent_ns = batch[0][0]
            self.c.commits += 1
            self.c.committed_batches += len(batch)
            self.c.committed_points += points
            self._stored_rows += len(batch)
            self._stored_bytes += nbytes
            if self.forwarding:
                self._unsent_rows += len(batch)
                self._unsent_points += points
                self._unsent_bytes += nbytes
        self.new_data.set()
        if self.on_commit is not None:
            self.on_commit(last, len(batch))

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")  # type: ignore[union-attr]
        except sqlite3.Error:
            pass

    def _count_drop(self, reason: str, batches: int, points: int) -> None:
        """Record a loss of unsent data (caller holds the lock)."""
        self.c.dropped_batches[reason] = self.c.dropped_batches.get(reason, 0) + batches
        self.c.dropped_points[reason] = self.c.dropped_points.get(reason, 0) + points
        log.warning("spool: dropped %d points (%d batches): %s", points, batches, reason)

    # ------------------------------------------------------------------ budget and retention

    def enforce_budget(self) -> None:
        """Expire history past ``retention_s``; drop the oldest beyond ``max_age_s`` and ``max_bytes``.

        Runs in the writer thread (also callable from tests after :meth:`flush`). Every unsent
        point deleted is counted under its reason; acknowledged history deleted is counted
        separately (it already reached the server, or the spool is the historian).
        """
        with self._db_lock:
            conn = self._conn
            if conn is not None:
                self._enforce(conn)

    def _enforce(self, conn: sqlite3.Connection) -> None:
        now = self.clock_ns()
        cfg = self.config
        self._checkpoint(conn, busy_ok=True)  # outside the transaction: a checkpoint cannot run inside one
        conn.execute("BEGIN IMMEDIATE")
        try:
            pin = self._pin()
            self._delete_where(conn, "sent = 1 AND ts_ns < ? AND seq < ?", (now - int(cfg.retention_s * 1e9), pin),
                               "expired")
            self._delete_where(conn, "sent = 2 AND ts_ns < ?", (now - int(cfg.rejected_retention_s * 1e9),),
                               "expired")
            if cfg.max_age_s is not None:
                self._delete_where(conn, "sent = 0 AND ts_ns < ?", (now - int(cfg.max_age_s * 1e9),), "max_age")
            if self._stored_bytes > cfg.max_bytes:
                self._trim_bytes(conn, self._stored_bytes - cfg.max_bytes)
            excess = self._disk_excess(conn)
            if excess > 0:
                self._trim_bytes(conn, excess)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._refresh_oldest(conn)
        self._shrink(conn)
        self._measure_disk(conn)

    # ------------------------------------------------------------------ disk use (writer thread)

    def _file_size(self, suffix: str) -> int:
        try:
            return os.path.getsize(self.path + suffix)
        except OSError:
            return 0

    def _measure_disk(self, conn: sqlite3.Connection) -> None:
        """Disk use now: database pages in use, the file, WAL and journal (read by stats())."""
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        disk = {"db_bytes": (pages - free) * page, "db_file_bytes": self._file_size(""),
                "wal_bytes": self._file_size("-wal"), "journal_bytes": self._file_size("-journal")}
        with self._lock:
            self._disk = disk
            if self._fixed_bytes < 0:  # at start: what the schema and plant tables take
                self._fixed_bytes = max(0, disk["db_bytes"] - int(self._stored_bytes * self._bytes_per_stored))
            elif self._stored_bytes >= RATIO_MIN_STORED:
                self._bytes_per_stored = max(1.0, (disk["db_bytes"] - self._fixed_bytes) / self._stored_bytes)

    def disk_bytes(self) -> int:
        """What the budget counts: database pages in use (the file when it is smaller), WAL, journal."""
        d = self._disk
        return min(d["db_bytes"], d["db_file_bytes"] or d["db_bytes"]) + d["wal_bytes"] + d["journal_bytes"]

    def _disk_over_budget(self) -> bool:
        """Cheap estimate after a commit (no query): would the disk now be over ``max_bytes``?"""
        with self._lock:
            estimate = max(self._fixed_bytes, 0) + self._stored_bytes * self._bytes_per_stored
        return estimate + min(self._file_size("-wal"), self._wal_limit) > self.config.max_bytes

    def _disk_excess(self, conn: sqlite3.Connection) -> int:
        """Counted bytes to delete so that the disk use comes back to ``DISK_TARGET`` of the budget.

        The WAL counts up to its share only: deleting rows cannot shrink a WAL that a reader
        keeps from being checkpointed (it grows by the deletions), the next checkpoint does.
        """
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        used = (conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0])
        disk = used * page + min(self._file_size("-wal"), self._wal_limit) + self._file_size("-journal")
        if disk <= self.config.max_bytes or self._stored_bytes <= 0:
            return 0
        return int((disk - DISK_TARGET * self.config.max_bytes) / self._bytes_per_stored) + 1

    def _checkpoint(self, conn: sqlite3.Connection, busy_ok: bool = False, always: bool = False) -> None:
        """Copy the WAL into the database and cut the WAL file back (when it is past its share)."""
        if not always and self._file_size("-wal") <= self._wal_limit:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error as e:
            if not busy_ok:
                raise
            log.debug("spool: checkpoint deferred: %s", e)

    def _shrink(self, conn: sqlite3.Connection) -> None:
        """Give freed pages back to the file system (incremental auto-vacuum), then checkpoint.

        Free pages are reused by the next commits; they are given back only when they are many
        (beyond a quarter of the budget). Moving pages writes them into the WAL, so it goes in
        steps of half the WAL's share with a checkpoint after each: the WAL stays within its
        room in the budget, and the last checkpoint truncates the database file.
        """
        try:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free * page > self.config.max_bytes // 4:
                step = max(1, self._wal_limit // 2 // page)
                for _ in range(free // step + 1):  # bounded: each step frees up to `step` pages
                    conn.executescript(f"PRAGMA incremental_vacuum({step});")  # execute() frees one page only
                    self._checkpoint(conn, busy_ok=True)
                    if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
                        break
                self._checkpoint(conn, busy_ok=True, always=True)  # the file shrinks at a checkpoint
            self._checkpoint(conn, busy_ok=True)
        except sqlite3.Error as e:
            log.debug("spool: shrink deferred: %s", e)

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        """The timestamp of the oldest unsent row, for stats() (a query on this thread's connection)."""
        if not self.forwarding:
            return
        r = conn.execute("SELECT ts_ns FROM batches WHERE sent = 0 ORDER BY seq LIMIT 1").fetchone()
        with self._lock:
            self._oldest_unsent_ns = r[0] if r else None

    def _delete_where(self, conn: sqlite3.Connection, where: str, args: tuple, reason: str) -> None:
        rows = conn.execute(f"SELECT sent, count(*), sum(n), sum(nbytes) FROM batches WHERE {where} GROUP BY sent",
                            args).fetchall()
        if not rows:
            return
        self._count_pinned(conn, where, args)
        conn.execute(f"DELETE FROM batches WHERE {where}", args)
        with self._lock:
            for sent, nrows, points, nbytes in rows:
                self._forget(sent, nrows, points, nbytes + ROW_OVERHEAD_BYTES * nrows, reason)

    def _forget(self, sent: int, nrows: int, points: int, nbytes: int, reason: str) -> None:
        """Update depth and counters for deleted rows (caller holds the lock)."""
        self._stored_rows -= nrows
        self._stored_bytes -= nbytes
        if sent == SENT_NO and self.forwarding:
            self._unsent_rows -= nrows
            self._unsent_points -= points
            self._unsent_bytes -= nbytes
            self._count_drop(reason, nrows, points)
        elif reason == "expired":
            self.c.expired_points += points
        else:
            self.c.evicted_history_points += points

    def _trim_bytes(self, conn: sqlite3.Connection, excess: int) -> None:
        """Free ``excess`` bytes: acknowledged history first, then unsent data (thinned or dropped)."""
        excess -= self._delete_oldest(conn, "sent != 0", excess, "max_bytes")
        if excess > 0 and self.config.over_budget == "thin":
            excess -= self._thin(conn, excess)
        if excess > 0:
            self._delete_oldest(conn, "1", excess, "max_bytes")

    def _delete_oldest(self, conn: sqlite3.Connection, where: str, excess: int, reason: str) -> int:
        """Delete the oldest rows (by seq) matching ``where`` until ``excess`` bytes are freed; bytes freed."""
        freed = 0
        seqs: list[tuple[int]] = []
        for seq, nbytes in conn.execute(f"SELECT seq, nbytes FROM batches WHERE {where} ORDER BY seq"):
            freed += nbytes + ROW_OVERHEAD_BYTES
            seqs.append((seq,))
            if freed >= excess:
                break
        if seqs:
            self._delete_seqs(conn, seqs, reason)
        return freed

    def _delete_seqs(self, conn: sqlite3.Connection, seqs: list[tuple[int]], reason: str) -> None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed(seq INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM doomed")
        conn.executemany("INSERT INTO doomed VALUES (?)", seqs)
        self._delete_where(conn, "seq IN (SELECT seq FROM doomed)", (), reason)

    def _thin(self, conn: sqlite3.Connection, excess: int) -> int:
        """Replace the oldest unsent raw batches by window statistics (policy ``thin``); bytes freed.

        The statistics rows take the seqs of the oldest batches they replace, so they keep their
        place in the queue and are the first to go if thinning is not enough.
        """
        window_ns = int(self.config.thin_window_s * 1e9)
        rows: list[tuple[int, int, int, int, bytes]] = []
        taken = 0
        for seq, ts, plant, nbytes, blob in conn.execute(
                "SELECT seq, ts_ns, plant, nbytes, blob FROM batches WHERE sent = 0 AND kind = ? ORDER BY seq",
                (KIND_SAMPLES,)):
            rows.append((seq, ts, plant, nbytes, blob))
            taken += nbytes + ROW_OVERHEAD_BYTES
            if taken >= 4 * excess or len(rows) >= 50_000:
                break
        if not rows:
            return 0
        # cut at a window boundary so that no window is split between two thinning passes
        last_start = rows[-1][1] - rows[-1][1] % window_ns
        whole = [r for r in rows if r[1] - r[1] % window_ns < last_start]
        if whole:
            rows = whole
            taken = sum(r[3] + ROW_OVERHEAD_BYTES for r in rows)
        by_plant: dict[int, list[tuple[int, bytes]]] = {}
        for _, ts, plant, _, blob in rows:
            by_plant.setdefault(plant, []).append((ts, blob))
        new_rows = []
        free_seqs = [r[0] for r in rows]
        label = f"thin_{self.config.thin_window_s:g}s"
        for i, (plant, items) in enumerate(sorted(by_plant.items())):
            wb = thin_to_windows(items, window_ns, label)
            blob = encode_windows(wb)
            new_rows.append((free_seqs[i], int(wb.start_ns.min()), KIND_WINDOWS, label, len(wb), plant,
                             len(blob), SENT_NO, blob))
        points = sum(decode_samples_len(r[4]) for r in rows)
        pin = self._pin()
        pinned = sum(decode_samples_len(r[4]) for r in rows if r[0] >= pin)
        if pinned:
            with self._lock:
                self.c.pinned_dropped_points += pinned
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed(seq INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM doomed")
        conn.executemany("INSERT INTO doomed VALUES (?)", [(r[0],) for r in rows])
        conn.execute("DELETE FROM batches WHERE seq IN (SELECT seq FROM doomed)")
        conn.executemany("INSERT INTO batches(seq, ts_ns, kind, source, n, plant, nbytes, sent, blob) "
                         "VALUES (?,?,?,?,?,?,?,?,?)", new_rows)
        added = sum(r[6] + ROW_OVERHEAD_BYTES for r in new_rows)
        added_points = sum(r[4] for r in new_rows)
        with self._lock:
            delta_rows = len(new_rows) - len(rows)
            self._stored_rows += delta_rows
            self._stored_bytes += added - taken
            self._unsent_rows += delta_rows
            self._unsent_points += added_points - points
            self._unsent_bytes += added - taken
            self.c.thinned_points += points
            self.c.thin_stats_written += added_points
        log.warning("spool: over budget, thinned %d points into %d window statistics", points, added_points)
        return taken - added

    # ------------------------------------------------------------------ forwarder side

    def _reader(self) -> sqlite3.Connection:
        """A connection for the calling thread (forwarder, historian)."""
        conn = getattr(self._read_local, "conn", None)
        if conn is None:
            conn = _connect(self.path, READER_SYNCHRONOUS)
            self._read_local.conn = conn
        return conn

    def unsent(self, after_seq: int, upto_seq: int | None, max_points: int, max_rows: int = 100_000) -> list[Row]:
        """Oldest unsent rows with ``after_seq < seq <= upto_seq``, at least one row, at most ``max_points``."""
        sql = "SELECT seq, ts_ns, kind, source, n, plant, blob FROM batches WHERE sent = 0 AND seq > ?"
        args: tuple = (after_seq,)
        if upto_seq is not None:
            sql += " AND seq <= ?"
            args += (upto_seq,)
        sql += " ORDER BY seq LIMIT ?"
        out: list[Row] = []
        points = 0
        cur = self._reader().execute(sql, args + (max_rows,))
        try:
            for r in cur:
                if out and points + r[4] > max_points:
                    break
                out.append(Row(*r))
                points += r[4]
        finally:
            cur.close()  # ends the read transaction now: an open one would keep checkpoints from the WAL
        return out

    def ack(self, rows: list[Row], *, rejected: bool = False) -> None:
        """Mark rows as handled by the server: deleted (or kept as history while retention_s > 0).

        ``rejected`` rows (the server refused their data) stay in the spool, marked, and are
        never re-sent; they expire with the history.
        """
        if not rows:
            return
        conn = self._reader()
        keep = rejected or self.config.retention_s > 0
        pin = self._pin()
        conn.execute("BEGIN IMMEDIATE")
        try:
            live = self._still_unsent(conn, {r.seq: r.kind for r in rows})
            seqs = [(s,) for s in live]
            pinned = [s for s in seqs if s[0] >= pin] if not keep else []
            if keep or pinned:  # a consumer still needs pinned rows: kept as history until it passes them
                flag = SENT_REJECTED if rejected else SENT_YES
                conn.executemany(f"UPDATE batches SET sent = {flag} WHERE seq = ?", seqs if keep else pinned)
            if not keep:
                conn.executemany("DELETE FROM batches WHERE seq = ?", [s for s in seqs if s[0] < pin])
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        # rows the budget deleted while they were in flight were already accounted for there
        done = [r for r in rows if r.seq in live]
        points = sum(r.n for r in done)
        nbytes = sum(len(r.blob) for r in done) + ROW_OVERHEAD_BYTES * len(done)
        with self._lock:
            self._unsent_rows -= len(done)
            self._unsent_points -= points
            self._unsent_bytes -= nbytes
            if not keep:
                gone = [r for r in done if r.seq < pin]
                self._stored_rows -= len(gone)
                self._stored_bytes -= sum(len(r.blob) for r in gone) + ROW_OVERHEAD_BYTES * len(gone)
            if rejected:
                self.c.rejected_points += points
            else:
                self.c.acked_points += points
        self._refresh_oldest(conn)

    @staticmethod
    def _still_unsent(conn: sqlite3.Connection, kinds: dict[int, int]) -> set[int]:
        """The seqs that are still the same unsent rows (thinning may have reused a seq for another kind)."""
        out: set[int] = set()
        seqs = list(kinds)
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(s for s, k in conn.execute(
                f"SELECT seq, kind FROM batches WHERE sent = 0 AND seq IN ({marks})", chunk) if kinds[s] == k)
        return out

    # ------------------------------------------------------------------ other consumers (MQTT)

    def pin(self, name: str, seq: int | None) -> None:
        """Consumer ``name`` still needs the rows from ``seq`` on (None: nothing any more).

        Pinned rows outlive an acknowledgement and ``retention_s`` (they are kept, marked sent);
        only the byte and age budgets delete them, and the sample points they held are counted
        in ``pinned_dropped_points``. Called from the asyncio loop; cheap.
        """
        if seq is None:
            self._pins.pop(name, None)
        else:
            self._pins[name] = int(seq)

    def _pin(self) -> int:
        """The lowest pinned seq (a huge number when nothing is pinned)."""
        return min(list(self._pins.values()), default=1 << 62)

    def _count_pinned(self, conn: sqlite3.Connection, where: str, args: tuple) -> None:
        if not self._pins:
            return
        (points,) = conn.execute(f"SELECT coalesce(sum(n), 0) FROM batches WHERE ({where}) AND kind = ? AND seq >= ?",
                                 (*args, KIND_SAMPLES, self._pin())).fetchone()
        if points:
            with self._lock:
                self.c.pinned_dropped_points += points

    def set_cursor(self, name: str, state: str) -> None:
        """Persist a consumer's progress (any text) with the next commit of the writer thread."""
        with self._lock:
            self._cursor_updates[name] = state
            self._wake.notify_all()

    def get_cursor(self, name: str) -> str | None:
        """A consumer's last persisted progress (blocking: call from a thread at start-up)."""
        row = self._reader().execute("SELECT state FROM cursors WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def samples_between(self, lo: int, hi: int, max_rows: int) -> list[Row]:
        """Stored sample rows with ``lo <= seq < hi`` in seq order, sent or not (blocking: a thread)."""
        sql = ("SELECT seq, ts_ns, kind, source, n, plant, blob FROM batches "
               "WHERE seq >= ? AND seq < ? AND kind = ? ORDER BY seq LIMIT ?")
        return [Row(*r) for r in self._reader().execute(sql, (lo, hi, KIND_SAMPLES, max_rows))]

    def plant_tags(self, plant_id: int) -> PlantTags:
        """The tag table a row was written under (cached)."""
        pt = self._plants.get(plant_id)
        if pt is None:
            site, tags = self._reader().execute("SELECT site, tags FROM plants WHERE id = ?", (plant_id,)).fetchone()
            pt = self._plants[plant_id] = _plant_tags(plant_id, site, tags)
        return pt

    def rows(self, kind: int, source: str, since_ns: int, until_ns: int) -> Iterator[Row]:
        """Stored rows of one kind and source in a time range, oldest first (historian reads)."""
        sql = ("SELECT seq, ts_ns, kind, source, n, plant, blob FROM batches "
               "WHERE kind = ? AND source = ? AND ts_ns >= ? AND ts_ns < ? ORDER BY ts_ns, seq")
        for r in self._reader().execute(sql, (kind, source, since_ns, until_ns)):
            yield Row(*r)

    # ------------------------------------------------------------------ diagnostics

    def stats(self) -> dict[str, Any]:  # a status document: numbers, words, nested documents
        """Depth and counters for diagnostics and the ``edge_health`` measurement."""
        with self._lock:
            c = self.c
            oldest = self._oldest_unsent_ns if self._unsent_rows > 0 else None
            return {
                "unsent_rows": self._unsent_rows,
                "unsent_points": self._unsent_points,
                "unsent_bytes": self._unsent_bytes,
                "oldest_unsent_age_s": (self.clock_ns() - oldest) / 1e9 if oldest is not None else 0.0,
                "stored_rows": self._stored_rows,
                "stored_bytes": self._stored_bytes,
                "pending_batches": len(self._pending),
                "pending_bytes": self._pending_bytes,
                "appended_points": c.appended_points,
                "committed_points": c.committed_points,
                "commits": c.commits,
                "commit_errors": c.commit_errors,
                "acked_points": c.acked_points,
                "rejected_points": c.rejected_points,
                "expired_points": c.expired_points,
                "evicted_history_points": c.evicted_history_points,
                "thinned_points": c.thinned_points,
                "thin_stats_written": c.thin_stats_written,
                "pinned_dropped_points": c.pinned_dropped_points,
                "dropped_points": dict(c.dropped_points),
                "dropped_batches": dict(c.dropped_batches),
                "dropped_points_total": sum(c.dropped_points.values()),
                "last_error": c.last_error,
                "disk_bytes": self.disk_bytes(),
                "disk_budget_bytes": self.config.max_bytes,
                **{f"disk_{k}": v for k, v in self._disk.items()},
                "checkpoints": self.checkpoints,
                "writer": self._supervisor.health.as_dict() if self._supervisor else {"state": "new", "crashes": 0},
            }

    # ------------------------------------------------------------------ start-up helpers

    def _register_plant(self, conn: sqlite3.Connection, plant: Plant) -> int:
        tags_json = _plant_json(plant)
        digest = hashlib.sha256((plant.site + "\n" + tags_json).encode()).hexdigest()
        conn.execute("INSERT OR IGNORE INTO plants(digest, site, tags) VALUES (?,?,?)",
                     (digest, plant.site, tags_json))
        pid = conn.execute("SELECT id FROM plants WHERE digest = ?", (digest,)).fetchone()[0]
        self._plants[pid] = _plant_tags(pid, plant.site, tags_json)
        return pid

    def _load_depth(self, conn: sqlite3.Connection) -> None:
        """Resume: depth counters from what the file holds."""
        for sent, nrows, points, nbytes in conn.execute(
                "SELECT sent, count(*), coalesce(sum(n),0), coalesce(sum(nbytes),0) FROM batches GROUP BY sent"):
            nbytes += ROW_OVERHEAD_BYTES * nrows
            self._stored_rows += nrows
            self._stored_bytes += nbytes
            if sent == SENT_NO:
                self._unsent_rows += nrows
                self._unsent_points += points
                self._unsent_bytes += nbytes
        self.last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM batches").fetchone()[0]
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
        self._next_seq = max(self.last_seq, row[0] if row else 0) + 1  # AUTOINCREMENT never reuses a seq

    def set_plant(self, plant: Plant) -> None:
        """A configuration reload: batches appended from now on are decoded with the new plant.

        Rows already spooled keep the plant version they were written with. Blocking (the writer's
        lock and a commit): the appliance calls :meth:`register_plant` in a worker thread, then
        :meth:`use_plant` on the loop.
        """
        self.use_plant(plant, self.register_plant(plant))

    def register_plant(self, plant: Plant) -> int:
        """Store ``plant``'s version (tag ids -> names) and return its id; the spool does not use it yet.

        Blocking: call it from a worker thread. -1 when the spool is not open."""
        with self._db_lock:
            if self._conn is None:
                return -1
            pid = self._register_plant(self._conn, plant)
            self._conn.commit()
            return pid

    def use_plant(self, plant: Plant, plant_id: int) -> None:
        """Append from now on under ``plant`` (version ``plant_id`` from :meth:`register_plant`)."""
        self.plant = plant
        if plant_id >= 0:
            self.plant_id = plant_id

    def reader(self) -> sqlite3.Connection:
        """The calling thread's own read connection (history reads; blocking: call from a worker thread)."""
        return self._reader()
