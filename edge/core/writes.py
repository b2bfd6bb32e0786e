"""The one write path for every writer (OPC UA, rules, HTTP API, CLI), with its audit log.

Checks the caller's role and that the tag is writable, hands the write to the device's line
at write priority (ahead of polls), and appends who, when, what, the old and new value and
the result to an append-only JSON-lines audit log, fsynced per entry.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from edge.core.model import Plant, WriteResult, WriteStatus
from edge.core.store import LatestStore

log = logging.getLogger("edge.core.writes")

ROLES_THAT_WRITE = ("operator", "admin")


@dataclass
class WriteTarget:
    """How to reach one tag's device: filled by the app per device (through its driver)."""

    write: Callable[[object], Awaitable[WriteResult]]  # the value in engineering units
    available: Callable[[], str | None]  # None when the device can take writes, else why not


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = 0

    def append(self, entry: dict) -> None:
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries += 1


class WriteService:
    def __init__(self, plant: Plant, store: LatestStore | None, audit: AuditLog | None):
        self.plant = plant
        self.store = store
        self.audit = audit
        self.targets: dict[int, WriteTarget] = {}

    def rebind(self, plant: Plant, store: LatestStore | None) -> None:
        """A new plant after a reload: targets are registered again by the app."""
        self.plant, self.store = plant, store
        self.targets = {}

    def register(self, tag_id: int, target: WriteTarget) -> None:
        self.targets[tag_id] = target

    async def write(self, tag_id: int, value: object, user: str = "local", source: str = "cli",
                    role: str = "operator") -> WriteResult:
        """Write a tag by id; never raises for a refused or failed write, the result says why."""
        tag = self.plant.tags[tag_id]
        old = self.store.get(tag_id)[0] if self.store is not None else None
        start = time.time_ns()
        try:
            result = await self._write(tag_id, value, role)
        except asyncio.CancelledError:
            # the caller gave up (e.g. an OPC UA write timeout): the device may have the value already
            result = WriteResult(WriteStatus.BAD_TIMEOUT, "cancelled by the caller before the device answered; "
                                                          "the device may or may not have taken the value")
            self._audit(start, user, source, role, tag.key, old, value, result)
            raise
        self._audit(start, user, source, role, tag.key, old, value, result)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "write %s = %r by %s (%s): %s %s", tag.key, value, user, source, result.status.name,
                result.message)
        return result

    def refuse(self, target: str, value: object, user: str, source: str, role: str, status: WriteStatus,
               message: str) -> WriteResult:
        """A write refused before it could reach :meth:`write` (no such tag, an undecodable command):
        audited and logged like any refused write. ``target`` names what was asked for."""
        result = WriteResult(status, message)
        self._audit(time.time_ns(), user, source, role, target, None, value, result)
        log.warning("write %s = %r by %s (%s) refused: %s %s", target, value, user, source, status.name, message)
        return result

    def _audit(self, start: int, user: str, source: str, role: str, key: str, old: object, value: object,
               result: WriteResult) -> None:
        if self.audit is not None:
            self.audit.append({
                "ts": start, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9)),
                "user": user, "source": source, "role": role, "tag": key, "old": _json(old),
                "new": _json(value), "result": result.status.name, "message": result.message,
                "read_back": result.read_back,
            })

    async def _write(self, tag_id: int, value: object, role: str) -> WriteResult:
        tag = self.plant.tags[tag_id]
        if role not in ROLES_THAT_WRITE:
            return WriteResult(WriteStatus.BAD_USER_ACCESS_DENIED, f"role {role!r} may not write")
        if not tag.writable:
            return WriteResult(WriteStatus.BAD_NOT_WRITABLE, f"{tag.key} is not writable")
        target = self.targets.get(tag_id)
        if target is None:
            return WriteResult(WriteStatus.BAD_CONFIG_ERROR, f"device {tag.device} is not running")
        why_not = target.available()
        if why_not:
            return WriteResult(WriteStatus.BAD_CONFIG_ERROR, why_not)
        return await target.write(value)


def _json(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    return value
