"""The audit log of write attempts: who tried to change what, from where, and what came of it.

Every write attempt is one JSON line, whatever its source (``opcua``, ``api``, ``rule``, ``mqtt``,
``cli``) and whether it reached the device or was refused before (a viewer's write, a value
out of range, a missing token, the rate limit)::

    {"ts": <ns>, "time": "...Z", "user": "olga", "source": "opcua", "address": "10.0.0.7",
     "role": "operator", "tag": "boiler.setpoint", "old": 60.0, "new": 65.0,
     "result": "GOOD", "reason": "written and read back", "message": "...", "read_back": 65.0}

(``message`` repeats ``reason``: older readers of the log know that name.)

Writing never blocks the event loop: :meth:`AuditLog.append` puts the line on a bounded queue
(thread-safe, microseconds) and one writer thread appends, fsyncs once per batch, and rotates
the file at ``max_bytes`` (``audit.log`` -> ``audit.log.1`` ... ``audit.log.<backups>``, the
oldest deleted). The writer is a :class:`~edge.core.supervise.SupervisedThread`: an error (disk
full, permissions) or any exception ends the loop; it is logged once with its traceback, counted
(``writer.crashes``), shown in :meth:`stats`, and the loop restarts after a pause that doubles up
to 2 s, with the batch it was writing kept (nothing is lost); a writer thread that ended anyway
is started again by the next append (``restarts``). If
the queue is full (the disk stalled for a long time), new lines are dropped and counted, never
the loop blocked. :meth:`flush` waits until everything queued is on disk (tests, shutdown).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.core.supervise import SupervisedThread

log = logging.getLogger("edge.core.audit")

SOURCES = ("opcua", "api", "rule", "mqtt", "cli", "alarm")


@dataclass
class AuditStats:
    """What the audit writer did (``audit_*`` in ``edge_health``, ``GET /api/security``, ``/metrics``)."""

    entries: int = 0  # lines accepted by append()
    written: int = 0  # lines on disk (fsynced)
    dropped: int = 0  # lines refused because the queue was full
    write_errors: int = 0  # failed writes of a batch (the writer is restarted and retries it)
    restarts: int = 0  # writer threads found ended (not by close()) and started again by append()
    rotations: int = 0
    queued: int = 0
    last_error: str = ""
    writer_alive: bool = False


def entry(*, source: str, user: str, tag: str, value: object, result: str, reason: str = "",
          address: str = "", role: str = "", old: object = None, read_back: object = None,
          ts_ns: int | None = None, **extra: object) -> dict[str, object]:
    """One audit line (see the module docstring); ``extra`` adds fields (e.g. ``http_status``)."""
    ts = time.time_ns() if ts_ns is None else ts_ns
    line: dict[str, object] = {
        "ts": ts, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts / 1e9)), "user": user,
        "source": source, "address": address, "role": role, "tag": tag, "old": _json(old), "new": _json(value),
        "result": result, "reason": reason, "message": reason, "read_back": _json(read_back)}
    line.update(extra)
    return line


class AuditLog:
    """Append-only JSON-lines file written by a supervised thread (see the module docstring)."""

    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5,
                 queue_max: int = 100_000, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.stats_ = AuditStats()
        self._queue: queue.Queue[bytes | None] = queue.Queue(queue_max)
        self._lock = threading.Lock()
        self._stopping = False
        self._writer = SupervisedThread("audit-writer", self._loop, stopping=lambda: self._stopping,
                                        restart_delay_s=0.05, max_delay_s=2.0)
        self._pending: list[bytes] = []  # taken from the queue, not yet on disk (kept across errors)
        self._done = threading.Condition()
        self._fault: Callable[[], None] | None = None  # tests: raise from inside the writer

    @property
    def entries(self) -> int:
        return self.stats_.entries

    # ------------------------------------------------------------------ producers (any thread)

    def append(self, line: dict) -> None:
        """Queue one entry (a dict, see :func:`entry`); returns at once."""
        data = (json.dumps(line, separators=(",", ":"), default=str) + "\n").encode()
        self._ensure_writer()
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self.stats_.dropped += 1
            if self.stats_.dropped == 1 or self.stats_.dropped % 1000 == 0:
                log.error("audit log queue full (%d lines waiting for the disk): %d entries dropped so far",
                          self._queue.qsize(), self.stats_.dropped)
            return
        self.stats_.entries += 1

    def record(self, **fields: object) -> None:
        """:func:`entry` + :meth:`append`: the audit API for every writer (OPC UA, API, rules, MQTT)."""
        self.append(entry(**fields))  # type: ignore[arg-type]

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued entry is on disk; False on timeout."""
        self._ensure_writer()
        deadline = time.monotonic() + timeout_s
        with self._done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush, then stop the writer thread."""
        self.flush(timeout_s)
        if self._writer.is_alive():
            self._stopping = True
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._writer.join(timeout_s)
        self._writer = SupervisedThread("audit-writer", self._loop, stopping=lambda: self._stopping,
                                        restart_delay_s=0.05, max_delay_s=2.0)
        self._stopping = False

    def stats(self) -> dict[str, object]:
        s = self.stats_
        s.queued = self._queue.qsize()
        s.writer_alive = self._writer.is_alive()
        return asdict(s) | {"writer": self._writer.health.as_dict()}

    # ------------------------------------------------------------------ the writer thread

    def _ensure_writer(self) -> None:
        if self._writer.is_alive():
            return
        with self._lock:
            if self._writer.is_alive():
                return
            if self._writer.health.state not in ("new", "stopped"):  # gave up or ended: counted, logged
                self.stats_.restarts += 1
                log.error("audit log writer thread had ended (%s); starting it again (%d restarts)",
                          self._writer.health.last_crash or "no error recorded", self.stats_.restarts)
            self._writer.start()

    def _loop(self) -> None:
        """The supervised writer: take a batch, write it; an error propagates to the supervisor,
        which logs it once, counts it and runs this again after a pause (the batch is kept)."""
        while True:
            if not self._pending:
                item = self._queue.get()
                if item is None:
                    self._queue.task_done()
                    return
                self._pending.append(item)
                self._take_more()
            try:
                self._write(self._pending)
            except OSError as exc:
                self.stats_.write_errors += 1
                self.stats_.last_error = f"{type(exc).__name__}: {exc}"
                raise
            done = len(self._pending)
            self._pending = []
            self.stats_.written += done
            for _ in range(done):
                self._queue.task_done()
            with self._done:
                self._done.notify_all()

    def _take_more(self, limit: int = 1000) -> None:
        while len(self._pending) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:  # a stop request: write what we have first, stop after
                self._queue.task_done()
                self._queue.put_nowait(None)
                return
            self._pending.append(item)

    def _write(self, lines: list[bytes]) -> None:
        if self._fault is not None:
            self._fault()
        data = b"".join(lines)
        self._rotate_if_needed(len(data))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.stats_.rotations += 1


def _json(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value
