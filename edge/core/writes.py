"""The one write path for every writer (OPC UA, rules, HTTP API, MQTT, CLI), with its audit log.

Checks the caller's role and that the tag is writable, hands the write to the device's line
at write priority (ahead of polls), and records who, from where, when, what, the old and new
value and the result in the audit log (:mod:`edge.core.audit`: JSON lines, written by a
supervised thread, rotated). A writer that refuses an attempt before it gets here (a viewer's
OPC UA write, a value out of range, an API call without a token, an MQTT command for an unknown
tag) records it with :meth:`WriteService.refuse`, so every attempt is in the log.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.core.audit import AuditLog
from edge.core.model import Plant, WriteResult, WriteStatus
from edge.core.store import LatestStore

log = logging.getLogger("edge.core.writes")

ROLES_THAT_WRITE = ("operator", "admin")


@dataclass
class WriteTarget:
    """How to reach one tag's device: filled by the app per device (through its driver)."""

    write: Callable[[object], Awaitable[WriteResult]]  # the value in engineering units
    available: Callable[[], str | None]  # None when the device can take writes, else why not


class WriteService:
    def __init__(self, plant: Plant, store: LatestStore | None, audit: AuditLog | None):
        self.plant = plant
        self.store = store
        self.audit = audit
        self.targets: dict[int, WriteTarget] = {}
        self.refused: dict[str, int] = {}  # source -> attempts refused before the write path

    def rebind(self, plant: Plant, store: LatestStore | None) -> None:
        """A new plant after a reload: targets are registered again by the app."""
        self.plant, self.store = plant, store
        self.targets = {}

    def register(self, tag_id: int, target: WriteTarget) -> None:
        self.targets[tag_id] = target

    async def write(self, tag_id: int, value: object, user: str = "local", source: str = "cli",
                    role: str = "operator", *, address: str = "") -> WriteResult:
        """Write a tag by id; never raises for a refused or failed write, the result says why.

        ``source`` is ``opcua``, ``api``, ``rule``, ``mqtt`` or ``cli``; ``address`` the client's
        network address when there is one (it goes to the audit log)."""
        tag = self.plant.tags[tag_id]
        old = self.store.get(tag_id)[0] if self.store is not None else None
        start = time.time_ns()
        try:
            result = await self._write(tag_id, value, role)
        except asyncio.CancelledError:
            # the caller gave up (e.g. an OPC UA write timeout): the device may have the value already
            result = WriteResult(WriteStatus.BAD_TIMEOUT, "cancelled by the caller before the device answered; "
                                                          "the device may or may not have taken the value")
            self._audit(start, user, source, role, tag.key, old, value, result, address)
            raise
        self._audit(start, user, source, role, tag.key, old, value, result, address)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "write %s = %r by %s (%s): %s %s", tag.key, value, user, source, result.status.name,
                result.message)
        return result

    def refuse(self, target: str, value: object, user: str, source: str, role: str, status: WriteStatus,
               message: str, *, address: str = "", **extra: object) -> WriteResult:
        """Record a write attempt refused before it could reach :meth:`write` (a viewer's write, a
        value of the wrong type or out of range, no token, the rate limit, no such tag): audited and
        logged like any refused write. ``target`` names what was asked for (``device.tag``);
        ``extra`` adds fields to the audit entry (e.g. ``http_status``)."""
        result = WriteResult(status, message)
        self._audit(time.time_ns(), user, source, role, target, None, value, result, address, **extra)
        self.refused[source] = self.refused.get(source, 0) + 1
        log.warning("write %s = %r by %s (%s%s) refused: %s %s", target, value, user, source,
                    f" from {address}" if address else "", status.name, message)
        return result

    def _audit(self, start: int, user: str, source: str, role: str, key: str, old: object, value: object,
               result: WriteResult, address: str = "", **extra: object) -> None:
        if self.audit is not None:
            self.audit.record(ts_ns=start, user=user, source=source, address=address, role=role, tag=key, old=old,
                              value=value, result=result.status.name, reason=result.message,
                              read_back=result.read_back, **extra)

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

