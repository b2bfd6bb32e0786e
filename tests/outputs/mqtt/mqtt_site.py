"""A small simulated plant with an MQTT output, and the delivery ledger of a Sparkplug host.

The ledger compares what the test host received in DDATA messages with the appliance's spool,
the record of every sample polled (read here with sqlite3 and the spool's row format): every
change of a tag must arrive exactly once, with its value, quality and timestamp; nothing may
arrive that was not polled.
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from spb_host import SpbHost

from edge.storage.spool import decode_samples

GROUP, NODE = "plant", "edge1"
OPC_DA = {0: 192, 1: 68, 2: 8, 3: 24, 4: 4, 5: 0, 6: 16}


def site_yaml(url: str, mqtt_extra: str = "", sparkplug_extra: str = "", interval_ms: int = 100) -> str:
    """Two Modbus TCP devices: a boiler (scaled, signed, float, bool, counter, writable setpoint) and a pump."""
    return f"""
site: {{name: mq}}
buses:
  - {{name: net, type: modbus_tcp, timeout_ms: 80}}
devices:
  - name: boiler
    bus: net
    port: {{port:boiler}}
    interval_ms: {interval_ms}
    offline_after_failures: 2
    backoff_max_s: 0.5
    points:
      - {{name: temp, address: 0, type: int16, scale: 0.1, unit: degC, range: [-50, 150],
          description: water temperature, sim: {{kind: ramp, low: 20, high: 80, period_s: 3}}}}
      - {{name: setpoint, address: 1, type: int16, scale: 0.1, unit: degC, range: [20, 90], writable: true,
          sim: {{kind: constant, value: 55.5}}}}
      - {{name: level, address: 2, type: int16, sim: {{kind: constant, value: -12}}}}
      - {{name: flow, address: 4, type: float32, unit: m3/h, sim: {{kind: sine, mean: 10, amplitude: 2, period_s: 5}}}}
      - {{name: burner_on, address: 6, type: bool, bit: 3, sim: {{kind: toggle, period_s: 2}}}}
      - {{name: count, address: 8, type: uint32, sim: {{kind: counter, start: 1000, rate_per_s: 50}}}}
  - name: pump
    bus: net
    port: {{port:pump}}
    interval_ms: {interval_ms}
    offline_after_failures: 2
    backoff_max_s: 0.5
    points:
      - {{name: speed, address: 0, type: uint16, scale: 0.1, unit: rpm, sim: {{kind: ramp, low: 0, high: 1500, period_s: 2}}}}
      - {{name: current, address: 1, type: int16, scale: 0.01, unit: A, sim: {{kind: sine, mean: 5, amplitude: 1, period_s: 3}}}}
outputs:
  mqtt:
    url: {url}
    retry_initial_ms: 100
    retry_max_ms: 500
    {mqtt_extra}
    sparkplug: {{group_id: {GROUP}, edge_node_id: {NODE}, node_metrics_interval_s: 1 {sparkplug_extra}}}
"""


@dataclass
class Ledger:
    expected: int = 0  # changes in the spool
    delivered: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    historical: int = 0

    def __str__(self) -> str:
        return (f"expected {self.expected}, delivered {self.delivered} ({self.historical} historical), lost "
                f"{len(self.lost)} {self.lost[:5]}, duplicated {len(self.duplicated)} {self.duplicated[:5]}, wrong "
                f"{len(self.wrong)} {self.wrong[:5]}, unexpected {len(self.unexpected)} {self.unexpected[:5]}")


def spool_samples(db: Path) -> dict[tuple[str, str], list[tuple[int, float, int]]]:
    """(device, tag) -> [(ts_ms, value, quality)] in spool order."""
    out: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
    with sqlite3.connect(db) as conn:
        plants = {pid: json.loads(tags) for pid, tags in conn.execute("SELECT id, tags FROM plants")}
        for ts_ns, plant, blob in conn.execute("SELECT ts_ns, plant, blob FROM batches WHERE kind = 0 ORDER BY seq"):
            d = decode_samples(blob)
            for i, v, q in zip(d.tag_ids.tolist(), d.values.tolist(), d.quality.tolist(), strict=True):
                dev, name = plants[plant][i][0], plants[plant][i][1]
                out.setdefault((dev, name), []).append((ts_ns // 1_000_000, v, q))
    return out


def ledger(host: SpbHost, db: Path) -> Ledger:
    truth = spool_samples(db)
    led = Ledger()
    by_key: dict[tuple[str, str, int], tuple[float, int]] = {}
    must: set[tuple[str, str, int]] = set()
    for (dev, name), samples in truth.items():
        prev = None
        for ts, v, q in samples:
            by_key[(dev, name, ts)] = (v, q)
            same = prev is not None and prev[1] == q and (prev[0] == v or (math.isnan(prev[0]) and math.isnan(v)))
            if not same:
                must.add((dev, name, ts))
            prev = (v, q)
    led.expected = len(must)
    got = host.delivered()
    led.delivered = len(got)
    led.historical = sum(d.historical for d in got)
    counts = Counter((d.device, d.name, d.ts) for d in got)
    led.duplicated = [k for k, n in counts.items() if n > 1]
    for d in got:
        key = (d.device, d.name, d.ts)
        if key not in by_key:
            led.unexpected.append(key)
            continue
        v, q = by_key[key]
        value = float(d.value) if d.value is not None else math.nan
        if OPC_DA[q] != d.quality or not (value == v or (math.isnan(value) and (math.isnan(v) or q > 1))
                                          or abs(value - v) <= 1e-6 * max(1.0, abs(v))):
            led.wrong.append((key, d.value, d.quality, v, q))
    led.lost = sorted(must - set(counts))
    return led
