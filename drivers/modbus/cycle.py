"""One poll cycle of a device read in several blocks, decoded into one batch.

Every output costs about the same per batch whatever its size, so a 100-tag device read in two
blocks cost two passes through the pipeline per cycle (issue 21). The blocks of a cycle now
decode into slices of one cycle's arrays and go out as one :class:`SampleBatch`, stamped with
the last answer's time, when their answers come within ``JOIN_SPAN_NS`` of the first one held.
The held blocks are always a contiguous run: the poller publishes them before anything else of
the device (a failed block's Bad batch, a later block beyond the span, the end of the cycle).
"""
from __future__ import annotations

import numpy as np

from drivers.modbus.codec import Registers
from drivers.modbus.planner import ReadBlock
from edge.core.model import QUALITY_DTYPE, VALUE_DTYPE, SampleBatch

#: The blocks of one cycle whose answers arrive within this span of the first one held are one batch.
#: A slower cycle (a serial line, a slow device, a retry) publishes what it holds before the late block.
JOIN_SPAN_NS = 10_000_000


class CycleLayout:
    """What every cycle of one list of blocks shares: each block's slice and the tag ids in order.

    Kept by the poller per poll group while the plan's blocks stay the same objects (and dropped
    when a reload renumbers the ids in place): building it per cycle cost more than the decode."""

    __slots__ = ("blocks", "offsets", "ids")

    def __init__(self, blocks: list[ReadBlock]):
        self.blocks = list(blocks)
        offsets = [0]
        for block in blocks:
            offsets.append(offsets[-1] + len(block.codec))
        self.offsets = offsets
        self.ids = np.concatenate([block.codec.tag_ids for block in blocks])

    def fits(self, blocks: list[ReadBlock]) -> bool:
        """Is this the layout of ``blocks`` (the same block objects, in order)?"""
        mine = self.blocks
        return len(blocks) == len(mine) and all(a is b for a, b in zip(blocks, mine, strict=True))


class CycleBatch:
    """The arrays one cycle's blocks decode into, and the run of blocks held for publishing."""

    __slots__ = ("device", "layout", "ids", "values", "quality", "texts", "lo", "hi", "ts_first", "ts_last")

    def __init__(self, device: str, layout: CycleLayout):
        self.device = device
        self.layout = layout
        offsets = layout.offsets
        # fresh arrays per cycle: a published batch keeps them (a reload renumbers the codecs' ids in place)
        self.ids = layout.ids.copy()
        self.values = np.empty(offsets[-1], dtype=VALUE_DTYPE)
        self.quality = np.empty(offsets[-1], dtype=QUALITY_DTYPE)
        self.texts: dict[int, str] | None = None
        self.lo = self.hi = 0  # blocks [lo, hi) are held; none when equal
        self.ts_first = self.ts_last = 0

    def due_before(self, ts_ns: int) -> bool:
        """Must the held blocks go out before a block answered at ``ts_ns`` (beyond the span)?"""
        return self.hi > self.lo and ts_ns - self.ts_first > JOIN_SPAN_NS

    def hold(self, slot: int, ts_ns: int, registers: Registers) -> None:
        """Decode block ``slot`` into its slice and hold it (raises DecodeError, holding nothing more)."""
        codec = self.layout.blocks[slot].codec
        start, end = self.layout.offsets[slot], self.layout.offsets[slot + 1]
        codec.decode(registers, self.values[start:end], self.quality[start:end])
        if codec.has_strings and (texts := codec.decode_texts(registers)):
            self.texts = {**(self.texts or {}), **texts}
        if self.hi == self.lo:
            self.lo, self.ts_first = slot, ts_ns
        self.hi, self.ts_last = slot + 1, ts_ns

    def take(self) -> SampleBatch | None:
        """The held blocks as one batch (None if nothing is held); holds nothing afterwards."""
        if self.hi == self.lo:
            return None
        start, end = self.layout.offsets[self.lo], self.layout.offsets[self.hi]
        whole = start == 0 and end == len(self.ids)
        ids, values, quality = self.ids, self.values, self.quality
        if not whole:
            ids, values, quality = ids[start:end], values[start:end], quality[start:end]
        batch = SampleBatch(self.device, self.ts_last, ids, values, quality, self.texts)  # texts: the held blocks' only
        self.lo = self.hi
        self.texts = None
        return batch


__all__ = ["JOIN_SPAN_NS", "CycleBatch", "CycleLayout"]
