"""All poll groups of one device: a :class:`PollPlan` per group sharing one :class:`Holes`.

What the device teaches at run time (an address hole found in one group's block) is shared
by every group of that device and survives re-plans, because the ``Holes`` object is shared.
A hole that reads again is forgotten and every group re-planned (:meth:`DevicePlan.heal`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from drivers.modbus.planner import Holes, LearnedHole, PlanLimits, PollPlan, ReadBlock, ReprobePolicy
from drivers.modbus.points import RegisterPoint
from drivers.modbus.timing import BusTiming


class DevicePlan:
    def __init__(self, points: Iterable[tuple[str, RegisterPoint]], intervals_ms: dict[str, int],
                 limits: PlanLimits | None = None, holes: Holes | None = None,
                 reprobe: ReprobePolicy | None = None):
        """``points``: (group, point) pairs; ``intervals_ms``: group -> poll interval;
        ``reprobe``: when learned holes are read again (default :class:`ReprobePolicy`)."""
        self.holes = holes if holes is not None else Holes()
        if reprobe is not None:
            self.holes.policy = reprobe
        self.limits = limits
        by_group: dict[str, list[RegisterPoint]] = {}
        for group, point in points:
            by_group.setdefault(group, []).append(point)
        self._points = by_group
        self.intervals_ms = {g: intervals_ms[g] for g in by_group}
        self.plans = {g: PollPlan(pts, limits, self.holes) for g, pts in by_group.items()}

    def groups(self) -> list[str]:
        return list(self.plans)

    def interval_s(self, group: str) -> float:
        return self.intervals_ms[group] / 1e3

    def min_interval_s(self) -> float:
        return min(self.intervals_ms.values()) / 1e3 if self.intervals_ms else 1.0

    def blocks(self, group: str) -> list[ReadBlock]:
        return self.plans[group].blocks

    def split(self, block: ReadBlock) -> list[ReadBlock]:
        """Learn from an illegal-address answer (see PollPlan.split); [] when the points are unreadable."""
        for plan in self.plans.values():
            if any(b is block for b in plan.blocks):
                return plan.split(block)
        return []

    def heal(self, hole: LearnedHole) -> None:
        """A refused span reads again: forget the hole and re-plan every group (blocks merge again,
        unreadable points are read again)."""
        self.holes.forget(hole)
        self.plans = {g: PollPlan(pts, self.limits, self.holes) for g, pts in self._points.items()}

    def renumber(self, id_map: np.ndarray) -> None:
        """A configuration reload renumbered the tags: old id -> new id, in place (no re-plan)."""
        for plan in self.plans.values():
            plan.tag_ids[:] = id_map[plan.tag_ids]
            for block in plan.blocks:
                block.codec.tag_ids[:] = id_map[block.codec.tag_ids]
        self._points = {g: [dataclasses.replace(p, tag_id=int(id_map[p.tag_id])) for p in pts]
                        for g, pts in self._points.items()}

    def unreadable_count(self) -> int:
        return sum(len(plan.unreadable) for plan in self.plans.values())

    def probe_block(self) -> ReadBlock | None:
        """The cheapest read of the device: used to probe an offline device."""
        blocks = [b for plan in self.plans.values() for b in plan.blocks]
        return min(blocks, key=lambda b: b.count) if blocks else None

    def tag_ids(self) -> np.ndarray:
        ids = [plan.tag_ids for plan in self.plans.values()]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)

    def requests_per_s(self) -> float:
        return sum(len(p.blocks) / (self.intervals_ms[g] / 1e3) for g, p in self.plans.items())

    def busy_share(self, timing: BusTiming, pause_ms: float = 0.0) -> float:
        """Share of the line's time this device's polling needs (1.0 = all of it)."""
        return sum(p.cycle_s(timing, pause_ms) / (self.intervals_ms[g] / 1e3) for g, p in self.plans.items())
