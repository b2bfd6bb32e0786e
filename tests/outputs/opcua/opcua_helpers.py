"""Shared helpers of the OPC UA tests (a uniquely named module, importable from every test file)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.config.opcua import OpcUaConfig  # noqa: E402
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo  # noqa: E402

PASSWORDS = {"olga": "operator-pass-1", "victor": "viewer-pass-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_plant(site: str = "plant1", devices: int = 2, analog_per_device: int = 3) -> Plant:
    """Bus ``line1`` with ``devices`` meters: analog tags plus a bool, an enum and a string each;
    ``setpoint`` (float32, 0..100, writable) and ``mode`` (enum, writable) accept writes."""
    tags: list[TagInfo] = []
    devs: list[DeviceInfo] = []

    def add(**kw: object) -> int:
        tags.append(TagInfo(id=len(tags), bus="line1", **kw))  # type: ignore[arg-type]
        return len(tags) - 1

    for d in range(devices):
        dev = f"meter{d + 1}"
        ids = [
            add(device=dev, name="voltage", dtype="float32", unit="V", low=0.0, high=400.0,
                description="phase voltage L1", deadband=0.5),
            add(device=dev, name="current", dtype="float32", unit="A", low=0.0, high=100.0),
            add(device=dev, name="energy", dtype="uint32", unit="kWh"),
            add(device=dev, name="setpoint", dtype="float32", unit="°C", low=0.0, high=100.0, writable=True),
            add(device=dev, name="counter", dtype="uint16", writable=True),
            add(device=dev, name="running", dtype="bool", enum={0: "stopped", 1: "running"}),
            add(device=dev, name="mode", dtype="uint16", enum={0: "off", 1: "auto", 3: "manual"}, writable=True),
            add(device=dev, name="serial", dtype="string"),
        ]
        for i in range(analog_per_device):
            ids.append(add(device=dev, name=f"ai{i}", dtype="float64", unit="bar", low=-1.0, high=10.0))
        devs.append(DeviceInfo(name=dev, bus="line1", address=f"unit {d + 1}", plugin="acme-meter", plugin_version="1.2.0",
                               tag_ids=tuple(ids)))
    return Plant(site=site, buses=[BusInfo("line1", "modbus_tcp", tuple(d.name for d in devs))],
                 devices=devs, tags=tags)


def tag_id(plant: Plant, key: str) -> int:
    return plant.tag_by_key()[key].id


def config(users_file: Path, pki_dir: Path | None = None, **kw: object) -> OpcUaConfig:
    base: dict[str, object] = {
        "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/edge",
        "users_file": users_file,
        "security_policies": ["None"],
        "allow_security_none": True,
    }
    if pki_dir is not None:
        base.update(pki_dir=pki_dir, security_policies=["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"])
    base.update(kw)
    return OpcUaConfig(**base)  # type: ignore[arg-type]
