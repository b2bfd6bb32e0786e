"""Fan-out of sample batches from the pollers to every output (store, aggregator, OPC UA, spool).

A sink is anything with ``consume(batch)``; it runs on the event loop and must not block.
A sink that raises is contained: the error is counted and logged once per kind, the batch
still reaches the other sinks, and polling goes on.

A reload holds the pipeline while it swaps the plant under the sinks (:meth:`Pipeline.hold`):
batches published after the pollers' tag ids were renumbered wait until every sink has the new
plant, instead of reaching a sink that would read their ids with the old one.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from edge.core.model import SampleBatch

log = logging.getLogger("edge.core.pipeline")


class Sink(Protocol):
    def consume(self, batch: SampleBatch) -> object: ...  # whatever it returns is ignored


@dataclass
class SinkStats:
    batches: int = 0
    errors: int = 0
    last_error: str = ""


#: Samples a held pipeline keeps at most (a reload takes seconds; ~100 MB of batches at worst).
HOLD_MAX_SAMPLES = 5_000_000
RELEASE_CHUNK = 200  # held batches delivered per loop turn at the release
RELEASE_TURNS_MAX = 10_000


@dataclass
class Pipeline:
    sinks: dict[str, Sink] = field(default_factory=dict)
    stats: dict[str, SinkStats] = field(default_factory=dict)
    batches: int = 0
    samples: int = 0
    held: list[SampleBatch] = field(default_factory=list)
    holds: int = 0  # nesting depth of hold()
    held_samples: int = 0
    dropped_while_held: int = 0  # samples beyond HOLD_MAX_SAMPLES (counted, logged)

    def hold(self) -> None:
        """Keep the batches published from now on until the matching :meth:`release` (nestable)."""
        self.holds += 1

    def release(self) -> int:
        """End one :meth:`hold`; the outermost one delivers the held batches in order. Returns how many."""
        self.holds = max(0, self.holds - 1)
        if self.holds:
            return 0
        held, self.held, self.held_samples = self.held, [], 0
        for batch in held:
            self._deliver(batch)
        return len(held)

    async def release_gradually(self, chunk: int = RELEASE_CHUNK) -> int:
        """:meth:`release` for the event loop: the held batches go out ``chunk`` at a time with a loop
        turn between chunks (thousands of them after a long reload), and batches published meanwhile
        queue behind them, so the order is kept. Returns how many were delivered."""
        if self.holds > 1:
            self.holds -= 1
            return 0
        done = 0
        for _ in range(RELEASE_TURNS_MAX):
            if done >= len(self.held):
                break
            for batch in self.held[done:done + chunk]:
                self._deliver(batch)
                done += 1
            await asyncio.sleep(0)
        rest = self.held[done:]
        self.held, self.held_samples, self.holds = [], 0, 0
        for batch in rest:  # arrivals kept pace with the chunks for too long: the rest at once
            self._deliver(batch)
        return done + len(rest)

    def add(self, name: str, sink: Sink) -> None:
        self.sinks[name] = sink
        self.stats[name] = SinkStats()

    def remove(self, name: str) -> None:
        self.sinks.pop(name, None)

    def publish(self, batch: SampleBatch) -> None:
        if self.holds:
            self._keep(batch)
            return
        self._deliver(batch)

    def _deliver(self, batch: SampleBatch) -> None:
        self.batches += 1
        self.samples += len(batch)
        for name, sink in self.sinks.items():
            try:
                sink.consume(batch)
            except Exception as exc:  # noqa: BLE001 - one output must not stop the others
                st = self.stats[name]
                st.errors += 1
                text = f"{type(exc).__name__}: {exc}"
                if text != st.last_error:
                    log.exception("output %s failed on a batch from %s", name, batch.device)
                st.last_error = text
            else:
                self.stats[name].batches += 1

    def _keep(self, batch: SampleBatch) -> None:
        if self.held_samples + len(batch) > HOLD_MAX_SAMPLES:
            if not self.dropped_while_held:
                log.error("pipeline held for too long (%d samples kept): dropping batches until it is released",
                          self.held_samples)
            self.dropped_while_held += len(batch)
            return
        self.held.append(batch)
        self.held_samples += len(batch)
