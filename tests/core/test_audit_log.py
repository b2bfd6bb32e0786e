"""The audit log on its own: appends never block, the file is rotated at its size bound, a failing
disk is retried without losing entries, a writer thread that dies is restarted, all counted."""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from edge.core.audit import AuditLog, entry


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def one(i: int) -> dict:
    return entry(source="mqtt", user="dcmd", address="10.0.0.9", tag="plc.setpoint", value=float(i),
                 result="GOOD", reason="written and read back")


def test_entries_reach_the_disk_in_order_with_every_field(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(50):
        log.append(one(i))
    assert log.flush(5)
    got = lines(tmp_path / "audit.log")
    assert [e["new"] for e in got] == [float(i) for i in range(50)]
    assert {k for k in got[0]} >= {"ts", "time", "user", "source", "address", "tag", "new", "result", "reason"}
    assert got[0]["source"] == "mqtt" and got[0]["address"] == "10.0.0.9"
    assert log.stats()["written"] == 50 and log.stats()["writer_alive"]
    log.close()


def test_rotation_keeps_the_size_bound_and_the_number_of_backups(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=4096, backups=2)
    for i in range(200):  # ~ 300 bytes each: ~ 60 KB in all
        log.append(one(i))
        if i % 10 == 9:
            assert log.flush(5)
    assert log.flush(5)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4096 + 10 * 400  # the bound, plus at most one batch
    newest = lines(tmp_path / "audit.log")
    assert newest[-1]["new"] == 199.0 and log.stats()["rotations"] >= 10
    log.close()


async def test_append_does_not_wait_for_the_disk(tmp_path: Path) -> None:
    """fsync per entry ran on the event loop before; now the loop only queues."""
    log = AuditLog(tmp_path / "audit.log")
    log.append(one(0))
    assert log.flush(5)
    t0 = time.perf_counter()
    for i in range(2000):
        log.append(one(i))
    spent = time.perf_counter() - t0
    assert spent < 0.5, f"2000 appends took {spent:.3f} s on the loop"
    assert await asyncio.to_thread(log.flush, 10)
    assert len(lines(tmp_path / "audit.log")) == 2001
    log.close()


def test_a_failing_disk_is_retried_without_losing_entries(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.append(one(0))
    assert log.flush(5)
    path.unlink()
    path.mkdir()  # a real fault: the log's path cannot be opened for writing
    for i in range(1, 4):
        log.append(one(i))
    time.sleep(0.5)
    stats = log.stats()
    assert stats["write_errors"] >= 1 and "IsADirectoryError" in stats["last_error"]
    assert stats["writer"]["crashes"] >= 1 and "IsADirectoryError" in stats["writer"]["last_crash"]
    assert not log.flush(0.2)  # still waiting for the disk
    shutil.rmtree(path)
    assert log.flush(5)
    assert [e["new"] for e in lines(path)] == [1.0, 2.0, 3.0]  # nothing was lost
    log.close()


class WriterKilled(BaseException):
    """Stands for whatever could end the writer thread (not an OSError, which is retried)."""


def test_a_dead_writer_is_logged_counted_and_restarted(tmp_path: Path, caplog) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.append(one(0))
    assert log.flush(5)

    def kill() -> None:
        log._fault = None  # once
        raise WriterKilled("injected")

    log._fault = kill
    log.append(one(1))
    log.append(one(2))
    assert log.flush(5)  # the supervisor restarted the loop, which wrote the batch it had in hand
    assert [e["new"] for e in lines(tmp_path / "audit.log")] == [0.0, 1.0, 2.0]
    writer = log.stats()["writer"]
    assert writer["crashes"] == 1 and "WriterKilled: injected" in writer["last_crash"]
    assert writer["state"] == "running" and log.stats()["writer_alive"]
    assert "thread audit-writer crashed (restarting)" in caplog.text
    log.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.mkdir()  # the disk is "stuck": nothing leaves the queue
    log = AuditLog(path, queue_max=10)
    for i in range(30):
        log.append(one(i))
    stats = log.stats()
    # at most queue_max wait in the queue and queue_max + 1 in the writer's hands: the rest is dropped
    assert stats["dropped"] >= 30 - 21 and stats["entries"] + stats["dropped"] == 30
    path.rmdir()
    assert log.flush(5)
    log.close()
