"""A held pipeline (a reload swapping the plant) keeps batches in order until the outermost release,
and counts what it cannot keep."""
from __future__ import annotations

import numpy as np

from edge.core import pipeline as pl
from edge.core.model import SampleBatch


def batch(i: int, n: int = 2) -> SampleBatch:
    return SampleBatch("d", i, np.arange(n, dtype=np.int32), np.full(n, float(i)), np.zeros(n, dtype=np.uint8))


class Keep:
    def __init__(self) -> None:
        self.ts: list[int] = []

    def consume(self, b: SampleBatch) -> None:
        self.ts.append(b.ts_ns)


def test_held_batches_reach_the_sinks_in_order_at_the_outermost_release():
    p, sink = pl.Pipeline(), Keep()
    p.add("keep", sink)
    p.publish(batch(1))
    p.hold()
    p.hold()
    p.publish(batch(2))
    p.publish(batch(3))
    assert p.release() == 0 and sink.ts == [1]  # still held by the outer hold
    p.publish(batch(4))
    assert p.release() == 3 and sink.ts == [1, 2, 3, 4]
    p.publish(batch(5))
    assert sink.ts == [1, 2, 3, 4, 5] and p.batches == 5 and p.held == []


def test_a_pipeline_held_too_long_drops_and_counts_beyond_its_bound(monkeypatch):
    monkeypatch.setattr(pl, "HOLD_MAX_SAMPLES", 5)
    p, sink = pl.Pipeline(), Keep()
    p.add("keep", sink)
    p.hold()
    for i in range(4):
        p.publish(batch(i))  # 2 samples each: two fit
    assert p.release() == 2 and sink.ts == [0, 1] and p.dropped_while_held == 4


def test_a_gradual_release_yields_between_chunks_and_keeps_later_batches_behind_the_held_ones():
    import asyncio

    async def main() -> tuple[int, list[int]]:
        p, sink = pl.Pipeline(), Keep()
        p.add("keep", sink)
        p.hold()
        for i in range(10):
            p.publish(batch(i))

        async def poller() -> None:  # publishes while the release is under way
            for i in range(10, 13):
                await asyncio.sleep(0)
                p.publish(batch(i))

        task = asyncio.create_task(poller())
        n = await p.release_gradually(chunk=3)
        await task
        p.publish(batch(13))
        return n, sink.ts

    n, ts = asyncio.run(main())
    assert ts == list(range(14)), ts  # in order: the ones published during the release came after
    assert n >= 10
