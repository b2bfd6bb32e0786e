"""A synthetic demo plant and deterministic sample batches for exporter tests and benchmarks.

Values are a pure function of (device, tag, poll index), so a test can recompute exactly what
should have reached the server.
"""
from __future__ import annotations

import numpy as np

from edge.core.model import BusInfo, DeviceInfo, Plant, Quality, SampleBatch, TagInfo

BASE_TS_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def demo_plant(devices: int = 4, tags_per_device: int = 25, site: str = "demo", strings: bool = False) -> Plant:
    """``devices`` devices on two buses, each with ``tags_per_device`` float tags (plus one string tag)."""
    plant = Plant(site=site)
    buses = {"bus_a": [], "bus_b": []}
    for d in range(devices):
        dev = f"dev{d:02d}"
        bus = "bus_a" if d % 2 == 0 else "bus_b"
        buses[bus].append(dev)
        ids = []
        for t in range(tags_per_device):
            tid = len(plant.tags)
            plant.tags.append(TagInfo(id=tid, device=dev, name=f"t{t:03d}", bus=bus, dtype="float32",
                                      plugin="meter" if d % 2 == 0 else None))
            ids.append(tid)
        if strings:
            tid = len(plant.tags)
            plant.tags.append(TagInfo(id=tid, device=dev, name="serial", bus=bus, dtype="string"))
            ids.append(tid)
        plant.devices.append(DeviceInfo(dev, bus, f"unit {d + 1}", "meter" if d % 2 == 0 else None, None, tuple(ids)))
    plant.buses = [BusInfo(b, "modbus_tcp", tuple(ds)) for b, ds in buses.items()]
    return plant


def value_of(device_index: int, tag_index: np.ndarray, poll: int) -> np.ndarray:
    """The deterministic value of a tag at one poll (exactly representable in float32 and float64)."""
    return (poll % 10_000) * 0.25 + device_index * 1000.0 + tag_index.astype(np.float64)


def batch_for(plant: Plant, device_index: int, poll: int, step_ns: int = 1_000_000,
              base_ts_ns: int = BASE_TS_NS) -> SampleBatch:
    """Poll number ``poll`` of device ``device_index``: ts = base + poll * step (ns)."""
    dev = plant.devices[device_index]
    ids = np.asarray(dev.tag_ids, dtype=np.int32)
    n_num = len([i for i in ids if plant.tags[i].dtype != "string"])
    values = np.full(len(ids), np.nan)
    values[:n_num] = value_of(device_index, np.arange(n_num), poll)
    quality = np.zeros(len(ids), dtype=np.uint8)
    if poll % 7 == 3:
        quality[0] = int(Quality.UNCERTAIN_LAST_USABLE)
    texts = {int(i): f"SN-{device_index}-{poll}" for i in ids[n_num:]} or None
    return SampleBatch(dev.name, base_ts_ns + poll * step_ns, ids, values, quality, texts)


def expected_points(plant: Plant, polls: dict[int, range | list[int]],
                    step_ns: int = 1_000_000) -> dict[tuple[str, int], float]:
    """(VictoriaMetrics metric name, ts_ns) -> value for the numeric and quality fields of these polls."""
    out: dict[tuple[str, int], float] = {}
    for d, ps in polls.items():
        b0 = batch_for(plant, d, 0)
        names = [plant.tags[i].name for i in b0.tag_ids]
        n_num = sum(plant.tags[i].dtype != "string" for i in b0.tag_ids)
        dev = plant.devices[d].name
        for p in ps:
            b = batch_for(plant, d, p, step_ns=step_ns)
            for name, v in zip(names[:n_num], b.values[:n_num].tolist(), strict=True):
                out[(f"{dev}_{name}", b.ts_ns)] = v
            for name, q in zip(names, b.quality.tolist(), strict=True):
                out[(f"{dev}_q_{name}", b.ts_ns)] = float(q)
    return out


def compare(vm_samples: dict[tuple, list[tuple[int, float]]], expected: dict[tuple[str, int], float]):
    """(raw samples read, missing keys, duplicated samples, wrong values, unexpected keys) against ``expected``."""
    seen: dict[tuple[str, int], list[float]] = {}
    raw = 0
    for key, pts in vm_samples.items():
        name = dict(key)["__name__"]
        for ts, v in pts:
            seen.setdefault((name, ts), []).append(v)
            raw += 1
    missing = [k for k in expected if k not in seen]
    dupes = sum(len(v) - 1 for v in seen.values())
    wrong = [k for k, v in seen.items() if k in expected and any(x != expected[k] for x in v)]
    unexpected = [k for k in seen if k not in expected]
    return raw, missing, dupes, wrong, unexpected
