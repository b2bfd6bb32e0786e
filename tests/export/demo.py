"""A synthetic demo plant and deterministic sample batches for exporter tests and benchmarks.

Values are a pure function of (device, tag, poll index), so a test can recompute exactly what
should have reached the server.
"""
from __future__ import annotations

import numpy as np

from edge.model import BusInfo, DeviceInfo, Plant, Quality, SampleBatch, TagInfo

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
        plant.devices.append(DeviceInfo(dev, bus, d + 1, "meter" if d % 2 == 0 else None, None, tuple(ids)))
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
