"""Latest value, quality and timestamp of every tag, in flat numpy arrays indexed by tag id.

The status table, ``edge read`` style queries, rules and the HTTP API read from here; the
pipeline writes one whole batch per poll with fancy indexing (no per-value Python work).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge.core.model import Plant, Quality, SampleBatch

if TYPE_CHECKING:
    from edge.core._latest import LatestArrays as _LatestArrays


def _compiled_scatter() -> type[_LatestArrays] | None:
    """The compiled scatter (edge/core/_latest.pyx), or None where it is not built (numpy indexing
    below does the same)."""
    try:
        from edge.core._latest import LatestArrays
    except ImportError:
        return None
    return LatestArrays


LatestArrays = _compiled_scatter()

_GOOD = int(Quality.GOOD)  # a plain int: numpy compares it without the enum's attribute lookups


class LatestStore:
    def __init__(self, plant: Plant):
        n = len(plant.tags)
        self.plant = plant
        self.values = np.full(n, np.nan, dtype=np.float64)
        self.quality = np.full(n, int(Quality.BAD_NO_COMMUNICATION), dtype=np.uint8)
        self.ts_ns = np.zeros(n, dtype=np.int64)
        self.texts: dict[int, str] = {}
        self.samples = 0
        self._compiled = LatestArrays(self.values, self.quality, self.ts_ns) if LatestArrays is not None else None

    def consume(self, batch: SampleBatch) -> None:
        ids = batch.tag_ids
        if self._compiled is None or not self._scatter_compiled(batch):
            self._scatter_numpy(batch)
        if batch.texts:
            self.texts.update(batch.texts)
        self.samples += len(ids)

    def _scatter_compiled(self, batch: SampleBatch) -> bool:
        """False when the batch's arrays are not contiguous int32/float64/uint8 (numpy handles those)."""
        assert self._compiled is not None
        try:
            self._compiled.consume(batch.tag_ids, batch.values, batch.quality, batch.ts_ns)
        except (ValueError, TypeError):
            return False
        return True

    def _scatter_numpy(self, batch: SampleBatch) -> None:
        ids = batch.tag_ids
        if not batch.quality.any():  # Good is 0: the common case, one fancy assignment
            self.values[ids] = batch.values
        else:
            # a bad sample keeps the last value visible, flagged by its quality
            good = batch.quality == _GOOD
            self.values[ids[good]] = batch.values[good]
        self.quality[ids] = batch.quality
        self.ts_ns[ids] = batch.ts_ns

    def take_over(self, old: LatestStore) -> None:
        """Carry the latest values of tags that exist in both plants (a configuration reload)."""
        old_ids = {t.key: t.id for t in old.plant.tags}
        pairs = [(t.id, old_ids[t.key]) for t in self.plant.tags if t.key in old_ids]
        if pairs:
            new_idx, old_idx = (np.array(x, dtype=np.intp) for x in zip(*pairs, strict=True))
            self.values[new_idx] = old.values[old_idx]
            self.quality[new_idx] = old.quality[old_idx]
            self.ts_ns[new_idx] = old.ts_ns[old_idx]
            back = dict(pairs)
            inverse = {o: n for n, o in back.items()}
            self.texts = {inverse[o]: text for o, text in old.texts.items() if o in inverse}
        self.samples = old.samples

    def get(self, tag_id: int) -> tuple[float | str, Quality, int]:
        value: float | str = self.texts.get(tag_id, float(self.values[tag_id]))
        return value, Quality(int(self.quality[tag_id])), int(self.ts_ns[tag_id])
