"""Request planning: the points of one device and one poll group merged into block reads.

A :class:`PollPlan` is built once per (device, poll group) from the points' 0-based
addresses: points of a table are sorted, overlapping points (e.g. the bits of a status word
and the word itself) form an atomic cluster, and clusters are merged into blocks while the
block stays within the request limit and the unused registers between two clusters stay
within ``max_gap``. A point never straddles two blocks.

Run-time learning: a block answered with exception 2 (illegal data address) is handed to
:meth:`PollPlan.split`, which cuts it in two at the widest unused gap (else at its middle) and
remembers the cut as a hole in :class:`Holes`; plans built later with the same ``Holes``
never read across it. A block of a single cluster that is still illegal makes its points
unreadable (the poller gives them Bad_ConfigurationError).

A learned hole is not forever: exception 2 is also what a PLC in STOP or a gateway that is
still booting answers. Each hole remembers the span that was refused and is re-probed on a
back-off (:class:`ReprobePolicy`: first after 30 s, doubling up to 10 min); when the span
reads again the hole is forgotten and the device re-planned (:meth:`DevicePlan.heal`).
``permanent`` holes (an explicit setting) are never re-probed.

Each block decodes into a sample batch of its own (its codec's ``tag_ids``); ``tag_ids`` of the
plan lists every point of the plan (the readable ones block after block, then those refused
when the plan was built), so that a reload can renumber them in place.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from drivers.modbus.codec import BlockCodec, check_point
from drivers.modbus.points import MAX_READ_BITS, MAX_READ_REGISTERS, RegisterPoint, Table
from drivers.modbus.timing import READ_FC, BusTiming
from edge.core.model import TAG_ID_DTYPE

_TABLE_ORDER = {Table.COIL: 0, Table.DISCRETE: 1, Table.HOLDING: 2, Table.INPUT: 3}


def _point_order(p: RegisterPoint) -> tuple[int, int, int, int]:
    """Plan order: table, then the registers' span, then tag id."""
    return (_TABLE_ORDER[p.table], p.span_start, p.span_end, p.tag_id)
ADDRESS_SPACE = 65536


class PlanError(ValueError):
    """Points that cannot be planned within the limits (the message names the point and the limit)."""



class _DeviceLimits(Protocol):
    """The request limits of a device's configuration (drivers.modbus.config.ModbusDevice)."""

    @property
    def max_registers_per_request(self) -> int: ...
    @property
    def max_bits_per_request(self) -> int: ...
    @property
    def max_gap(self) -> int: ...
    @property
    def one_request_per_tag(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """Per-device request limits; ``max_gap`` counts unused registers bridged to merge two reads.

    ``max_gap_bits`` defaults to 16 x ``max_gap``: the same payload bytes in a bit table.
    """

    max_registers: int = MAX_READ_REGISTERS
    max_bits: int = MAX_READ_BITS
    max_gap: int = 8
    max_gap_bits: int | None = None
    one_per_tag: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_registers <= MAX_READ_REGISTERS:
            raise ValueError(f"max_registers must be 1..{MAX_READ_REGISTERS}, got {self.max_registers}")
        if not 1 <= self.max_bits <= MAX_READ_BITS:
            raise ValueError(f"max_bits must be 1..{MAX_READ_BITS}, got {self.max_bits}")
        if self.max_gap < 0 or (self.max_gap_bits is not None and self.max_gap_bits < 0):
            raise ValueError("max_gap and max_gap_bits must be 0 or more")

    @classmethod
    def from_device_config(cls, device: _DeviceLimits) -> PlanLimits:
        """From the site config's device model (``max_registers_per_request``, ``max_gap``, ...)."""
        return cls(max_registers=device.max_registers_per_request, max_bits=device.max_bits_per_request,
                   max_gap=device.max_gap, one_per_tag=device.one_request_per_tag)

    def limit(self, table: Table) -> int:
        return self.max_bits if table.is_bits else self.max_registers

    def gap(self, table: Table) -> int:
        if not table.is_bits:
            return self.max_gap
        return 16 * self.max_gap if self.max_gap_bits is None else self.max_gap_bits


@dataclass(frozen=True, slots=True)
class ReprobePolicy:
    """When learned holes are read again: first ``first_s`` after learning, then doubling up to
    ``max_s``; ``permanent`` never (an explicit setting for devices whose holes are real)."""

    first_s: float = 30.0
    max_s: float = 600.0
    permanent: bool = False


@dataclass(slots=True, eq=False)
class LearnedHole:
    """One thing a device refused: the refused span and what was remembered because of it.

    ``span`` is the (table, start, end) of the read that got exception 2: the re-probe reads
    it again. ``entry`` is the cut or unreadable range stored in :class:`Holes`.
    """

    kind: str  # "cut" (a block split in two) or "unreadable" (points refused even alone)
    span: tuple[Table, int, int]
    entry: tuple[Table, int, int]
    next_probe: float  # monotonic time of the next re-probe (inf: permanent)
    interval_s: float
    refusals: int = 1

    def describe(self) -> str:
        table, start, end = self.span
        what = "unreadable" if self.kind == "unreadable" else "split"
        return f"{table.value} {start}+{end - start} {what} ({self.refusals} refusals)"


@dataclass(slots=True)
class Holes:
    """What a device taught us at run time; share one instance between re-plans of a device.

    ``ranges``: (table, start, end) never read inside a merged block; ``start == end`` is a cut
    (no block may contain both ``start - 1`` and ``start``). ``unreadable``: (table, start, end)
    spans of points the device refuses even alone. ``learned`` holds each entry's re-probe
    schedule (see :class:`ReprobePolicy`).
    """

    ranges: set[tuple[Table, int, int]] = field(default_factory=set)
    unreadable: set[tuple[Table, int, int]] = field(default_factory=set)
    policy: ReprobePolicy = field(default_factory=ReprobePolicy)
    learned: list[LearnedHole] = field(default_factory=list)
    healed: int = 0  # holes forgotten because their span was read again

    def blocks_span(self, table: Table, start: int, end: int) -> bool:
        """True if a read of [start, end) would cross a remembered hole or cut."""
        for t, hs, he in self.ranges:
            if t != table:
                continue
            if he > hs and hs < end and start < he:
                return True
            if he == hs and start < hs < end:
                return True
        return False

    def refuses(self, table: Table, start: int, end: int) -> bool:
        return any(t == table and s < end and start < e for t, s, e in self.unreadable)

    def learn(self, kind: str, span: tuple[Table, int, int], entry: tuple[Table, int, int],
              now: float | None = None) -> LearnedHole:
        """Remember a refusal and schedule its first re-probe."""
        (self.unreadable if kind == "unreadable" else self.ranges).add(entry)
        now = time.monotonic() if now is None else now
        first = self.policy.first_s
        hole = LearnedHole(kind, span, entry, math.inf if self.policy.permanent else now + first, first)
        self.learned.append(hole)
        return hole

    def next_due(self) -> float:
        """Monotonic time of the earliest re-probe (inf when none is scheduled)."""
        return min((h.next_probe for h in self.learned), default=math.inf)

    def due(self, now: float) -> list[LearnedHole]:
        return [h for h in self.learned if h.next_probe <= now]

    def refused_again(self, hole: LearnedHole, now: float | None = None) -> None:
        """The re-probe got exception 2 again: back off (doubling, at most ``policy.max_s``)."""
        now = time.monotonic() if now is None else now
        hole.refusals += 1
        hole.interval_s = min(hole.interval_s * 2, self.policy.max_s)
        hole.next_probe = now + hole.interval_s

    def postpone(self, hole: LearnedHole, now: float | None = None) -> None:
        """The re-probe got no verdict (timeout, busy, a bad frame): ask again soon (the first
        re-probe period at most), not after the whole back-off: the device may be answering."""
        hole.next_probe = (time.monotonic() if now is None else now) + min(hole.interval_s, self.policy.first_s)

    def forget(self, hole: LearnedHole) -> None:
        """The span was read again: the hole is gone (the device must be re-planned)."""
        if hole in self.learned:
            self.learned.remove(hole)
        if not any(h.entry == hole.entry and h.kind == hole.kind for h in self.learned):
            (self.unreadable if hole.kind == "unreadable" else self.ranges).discard(hole.entry)
        self.healed += 1

    def describe(self) -> list[str]:
        return [h.describe() for h in self.learned]


@dataclass(frozen=True, slots=True)
class _Cluster:
    table: Table
    start: int
    end: int
    points: tuple[RegisterPoint, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ReadBlock:
    """One read request of a plan and the codec for its response."""

    table: Table
    start: int
    count: int
    points: tuple[RegisterPoint, ...]
    codec: BlockCodec

    @property
    def function_code(self) -> int:
        return READ_FC[self.table]

    @property
    def end(self) -> int:
        return self.start + self.count

    def __repr__(self) -> str:
        return f"ReadBlock(FC{self.function_code} {self.table} {self.start}+{self.count}, {len(self.points)} points)"


def _clusters(points: Sequence[RegisterPoint], atomic_points: bool) -> list[_Cluster]:
    """Group sorted points of one table: overlapping points form one cluster (unless split per tag).

    A point's span includes its scale-factor register, so a value and its factor always come
    from one response (``one_per_tag`` still reads the value and its factor together)."""
    out: list[_Cluster] = []
    for p in points:
        last = out[-1] if out else None
        if last is not None and not atomic_points and last.table == p.table and p.span_start < last.end:
            out[-1] = _Cluster(p.table, last.start, max(last.end, p.span_end), (*last.points, p))
        else:
            out.append(_Cluster(p.table, p.span_start, p.span_end, (p,)))
    return out


def _block(cluster_run: Sequence[_Cluster]) -> ReadBlock:
    start = cluster_run[0].start
    end = max(c.end for c in cluster_run)
    points = tuple(p for c in cluster_run for p in c.points)
    table = cluster_run[0].table
    return ReadBlock(table, start, end - start, points, BlockCodec(table, start, end - start, points))


class PollPlan:
    """Block reads of one device and one poll group, with run-time learning of address holes."""

    def __init__(self, points: Iterable[RegisterPoint], limits: PlanLimits | None = None,
                 holes: Holes | None = None):
        self.limits = limits or PlanLimits()
        self.holes = holes if holes is not None else Holes()
        points = list(points)
        for p in points:
            self._check(p)
        ordered = sorted(points, key=_point_order)
        clusters = _clusters(ordered, self.limits.one_per_tag)
        refusal = [self.holes.refuses(c.table, c.start, c.end) for c in clusters]
        readable = [c for c, no in zip(clusters, refusal, strict=True) if not no]
        refused = [p for c, no in zip(clusters, refusal, strict=True) if no for p in c.points]
        self.blocks: list[ReadBlock] = [_block(run) for run in self._merge(readable)]
        self.points: tuple[RegisterPoint, ...] = (*(p for b in self.blocks for p in b.points), *refused)
        self.tag_ids = np.array([p.tag_id for p in self.points], dtype=TAG_ID_DTYPE)
        self._unreadable: list[RegisterPoint] = refused

    def _check(self, p: RegisterPoint) -> None:
        check_point(p)
        limit = self.limits.limit(p.table)
        if p.count > limit:
            raise PlanError(f"point {p.name!r} spans {p.count} registers, more than this device's "
                            f"{limit} per request")
        if p.span_end - p.span_start > limit:
            raise PlanError(f"point {p.name!r} at {p.address} and its scale factor at {p.sf_address} span "
                            f"{p.span_end - p.span_start} registers, more than this device's {limit} per "
                            "request: value and factor must come from one read")
        if p.address < 0 or p.end > ADDRESS_SPACE:
            raise PlanError(f"point {p.name!r} at {p.address}..{p.end - 1} is outside the address space "
                            f"0..{ADDRESS_SPACE - 1}")

    def _merge(self, clusters: Sequence[_Cluster]) -> list[list[_Cluster]]:
        runs: list[list[_Cluster]] = []
        for c in clusters:
            if c.end - c.start > self.limits.limit(c.table):
                raise PlanError(f"overlapping points {', '.join(p.name for p in c.points)} span "
                                f"{c.end - c.start} registers, more than {self.limits.limit(c.table)} per request")
            run = runs[-1] if runs else None
            if run is not None and self._joinable(run, c):
                run.append(c)
            else:
                runs.append([c])
        return runs

    def _joinable(self, run: list[_Cluster], c: _Cluster) -> bool:
        head, end = run[0], max(x.end for x in run)
        if self.limits.one_per_tag or head.table != c.table:
            return False
        if c.start - end > self.limits.gap(c.table) or c.end - head.start > self.limits.limit(c.table):
            return False
        return not self.holes.blocks_span(c.table, head.start, c.end)

    # ------------------------------------------------------------------------- run-time learning

    @property
    def unreadable(self) -> tuple[RegisterPoint, ...]:
        """Points the device refused even when read alone (Bad_ConfigurationError), in address order."""
        return tuple(sorted(self._unreadable, key=_point_order))

    def split(self, block: ReadBlock) -> list[ReadBlock]:
        """Learn from an illegal-address answer to ``block``: replace it and return its replacements.

        Several clusters: two blocks cut at the widest unused gap (nearest the middle on a
        tie, or at the middle cluster when there is no gap); the cut is remembered in
        :attr:`holes`. A single cluster: its points become unreadable and nothing replaces it.
        """
        try:
            at = next(i for i, b in enumerate(self.blocks) if b is block)
        except StopIteration:
            raise ValueError(f"{block!r} is not a block of this plan (already split?)") from None
        clusters = _clusters(block.points, self.limits.one_per_tag)
        if len(clusters) == 1:
            span = (block.table, block.start, block.end)
            self.holes.learn("unreadable", span, span)
            del self.blocks[at]
            self._unreadable.extend(block.points)
            return []
        k = _cut_index(clusters)
        left, right = clusters[:k], clusters[k:]
        self.holes.learn("cut", (block.table, block.start, block.end),
                         (block.table, max(c.end for c in left), right[0].start))
        parts = [_block(left), _block(right)]
        self.blocks[at:at + 1] = parts
        return parts

    # ------------------------------------------------------------------------- outputs

    def reads(self) -> list[tuple[Table, int]]:
        """(table, count) of each request, for the timing model."""
        return [(b.table, b.count) for b in self.blocks]

    def cycle_s(self, timing: BusTiming, pause_ms: float = 0.0) -> float:
        """Estimated bus time of one poll of this plan."""
        return timing.cycle_s(self.reads(), pause_ms)


def _cut_index(clusters: Sequence[_Cluster]) -> int:
    """Index of the first cluster of the right half: the widest gap, nearest the middle on ties."""
    middle = len(clusters) / 2
    gaps = [(clusters[i].start - max(c.end for c in clusters[:i]), i) for i in range(1, len(clusters))]
    widest = max(g for g, _ in gaps)
    if widest <= 0:
        return max(1, round(middle))
    return min((abs(i - middle), i) for g, i in gaps if g == widest)[1]


def describe(device: str, group: str, interval_ms: int, plan: PollPlan, timing: BusTiming | None = None,
             pause_ms: float = 0.0, max_names: int = 6) -> str:
    """Text for ``edge plan``: one header line per (device, group) and one line per request."""
    registers = sum(b.count for b in plan.blocks if not b.table.is_bits)
    bits = sum(b.count for b in plan.blocks if b.table.is_bits)
    head = (f"{device} / {group} every {interval_ms} ms: {len(plan.blocks)} requests, "
            f"{len(plan.points) - len(plan.unreadable)} tags, {registers} registers, {bits} bits")
    if timing is not None:
        cycle = plan.cycle_s(timing, pause_ms)
        head += f", bus time {cycle * 1000:.1f} ms/cycle ({100 * cycle / (interval_ms / 1000):.1f} % of the interval)"
    lines = [head]
    for b in plan.blocks:
        names = [p.name for p in b.points]
        shown = ", ".join(names[:max_names]) + (f", ... (+{len(names) - max_names})" if len(names) > max_names else "")
        line = f"  FC{b.function_code} {b.table:<8} {b.start:>5}..{b.end - 1:<5} count {b.count:>4}  {len(names):>3} tags"
        if timing is not None:
            line += f"  {timing.read_s(b.table, b.count, pause_ms) * 1000:7.2f} ms"
        lines.append(f"{line}  [{shown}]")
    if plan.unreadable:
        lines.append("  unreadable (illegal data address): " + ", ".join(p.name for p in plan.unreadable))
    return "\n".join(lines)
