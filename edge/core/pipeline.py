"""Fan-out of sample batches from the pollers to every output (store, aggregator, OPC UA, spool).

A sink is anything with ``consume(batch)``; it runs on the event loop and must not block.
A sink that raises is contained: the error is counted and logged once per kind, the batch
still reaches the other sinks, and polling goes on.
"""
from __future__ import annotations

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


@dataclass
class Pipeline:
    sinks: dict[str, Sink] = field(default_factory=dict)
    stats: dict[str, SinkStats] = field(default_factory=dict)
    batches: int = 0
    samples: int = 0

    def add(self, name: str, sink: Sink) -> None:
        self.sinks[name] = sink
        self.stats[name] = SinkStats()

    def remove(self, name: str) -> None:
        self.sinks.pop(name, None)

    def publish(self, batch: SampleBatch) -> None:
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
