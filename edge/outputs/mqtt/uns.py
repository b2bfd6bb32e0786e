"""Plain JSON unified namespace: one retained topic per tag, ``<prefix>/<bus>/<device>/<tag>``.

For consumers that do not speak Sparkplug (Node-RED, Home Assistant, Telegraf's mqtt_consumer).
Each message is the tag's latest sample as JSON::

    {"value": 230.4, "quality": "Good", "status_code": 0, "unit": "V",
     "timestamp": "2026-11-24T10:15:02.125Z", "ts_ms": 1795428902125}

``value`` is a number, true/false for bool tags, text for string tags, null without a usable
value. Only changes are published (deadband and quality, like Sparkplug DDATA); after every
(re)connection every tag's latest sample is published again, so the retained topics are current.
Nothing is held while the broker is away: the namespace is a latest-value view.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np

from edge.config.mqtt import UnsConfig
from edge.core.model import QUALITY_NAMES, STATUS_CODES, Plant, Quality, SampleBatch
from edge.outputs.mqtt.delivery import ChangeFilter
from edge.outputs.mqtt.transport import Transport

VALUE_KEPT = (int(Quality.GOOD), int(Quality.UNCERTAIN_LAST_USABLE))


def iso_ms(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + f".{ts_ms % 1000:03d}Z"


class UnsPublisher:
    def __init__(self, config: UnsConfig, plant: Plant):
        self.config = config
        self.set_plant(plant)
        self.messages = 0

    def set_plant(self, plant: Plant) -> None:
        prefix = self.config.topic_prefix or plant.site
        self.plant = plant
        self.topic = [f"{prefix}/{t.bus}/{t.device}/{t.name}" for t in plant.tags]
        self.filter = ChangeFilter(len(plant.tags), np.array([t.deadband for t in plant.tags], dtype=np.float64),
                                   {t.id for t in plant.tags if t.dtype == "string"})

    def payload(self, tag_id: int, value: float, quality: int, ts_ms: int, text: str | None) -> bytes:
        tag = self.plant.tags[tag_id]
        out: object
        if quality not in VALUE_KEPT:
            out = None
        elif tag.dtype == "string":
            out = text
        elif math.isnan(value):
            out = None
        elif tag.dtype == "bool":
            out = value != 0
        elif tag.dtype in ("float32", "float64"):
            out = value
        else:
            out = int(value)
        q = Quality(quality)
        return json.dumps({"value": out, "quality": QUALITY_NAMES[q], "status_code": STATUS_CODES[q],
                           "unit": tag.unit, "timestamp": iso_ms(ts_ms), "ts_ms": ts_ms},
                          separators=(",", ":")).encode()

    def publish_batch(self, transport: Transport, batch: SampleBatch) -> None:
        changed = self.filter.changes(batch.tag_ids, batch.values, batch.quality, batch.texts)
        if not changed.any():
            return
        ts_ms = batch.ts_ns // 1_000_000
        texts = batch.texts or {}
        for i, v, q in zip(batch.tag_ids[changed].tolist(), batch.values[changed].tolist(),
                           batch.quality[changed].tolist(), strict=True):
            if transport.publish(self.topic[i], self.payload(i, v, q, ts_ms, texts.get(i)), self.config.qos,
                                 self.config.retain):
                self.messages += 1

    def publish_all(self, transport: Transport, values: np.ndarray, quality: np.ndarray, stamps_ms: np.ndarray,
                    texts: dict[int, str | None]) -> None:
        """Every tag that has a sample, again (after a (re)connection)."""
        for i in np.flatnonzero(stamps_ms > 0).tolist():
            if transport.publish(self.topic[i], self.payload(i, float(values[i]), int(quality[i]),
                                                             int(stamps_ms[i]), texts.get(i)),
                                 self.config.qos, self.config.retain):
                self.messages += 1
        ids = np.flatnonzero(stamps_ms > 0).astype(np.int32)
        self.filter.adopt(ids, values[ids], quality[ids], texts)
