"""Technician commands that talk to field devices directly: ``edge read`` and ``edge write``.

They open the device through its driver exactly as the running appliance does (same lines,
plans, codec, hole learning and write path, through ``edge.driver.protocol``), so what they
show is what the appliance will see. Protocol-specific tools (``scan``, ``probe``, ``plan``)
are contributed by the drivers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import dataclass

import numpy as np

from edge.cli.commands import CliError
from edge.config.loader import load_config
from edge.config.resolved import ResolvedDevice
from edge.core.derived import DerivedStage
from edge.core.model import (
    QUALITY_NAMES,
    DeviceDiagnostics,
    Plant,
    Quality,
    SampleBatch,
    TagInfo,
    WriteResult,
)
from edge.driver.protocol import DeviceContext
from edge.storage.history import format_value


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("device", help="device name")
    if name == "read":
        p.add_argument("tag", nargs="*", help="only these tags (default: all)")
        p.add_argument("--json", action="store_true",
                       help="print a JSON array: one object per tag with tag, value, quality, unit, ts (ISO 8601 "
                            "UTC, ns), ts_ns, and text (enum state, set bits) or error where there is one")
    elif name == "write":
        p.add_argument("tag", help="tag name")
        p.add_argument("value", help="value in engineering units (true/false for bits, text for strings)")


@dataclass
class ReadRow:
    """One tag as ``edge read`` shows it."""

    tag: str
    value: float | str | None  # NaN for a bad sample; text for strings
    quality: Quality
    ts_ns: int
    info: TagInfo | None = None
    error: str = ""

    def shown(self) -> str:
        """Full precision (the shortest text that reads back to the same double), unit, state names."""
        if self.quality is not Quality.GOOD:
            return "-"
        dtype = self.info.dtype if self.info is not None else "float64"
        if isinstance(self.value, str):
            return self.value if dtype == "string" else repr(self.value)
        text = format_value(float(self.value if self.value is not None else math.nan), dtype)
        if self.info is not None and self.info.unit and dtype not in ("bool", "string"):
            text += f" {self.info.unit}"
        if self.info is not None and self.value is not None:
            names = self.info.text_of(float(self.value))
            if names is not None or self.info.enum is not None:
                text += f" ({names if names is not None else 'not a listed state'})"
        return text

    def as_dict(self) -> dict[str, object]:
        """``edge read --json``: tag, value (number, bool, text or null), quality, unit, ts (and ts_ns, text, error)."""
        dtype = self.info.dtype if self.info is not None else "float64"
        value: object = None
        if self.quality is Quality.GOOD and self.value is not None:
            if isinstance(self.value, str):
                value = self.value
            elif dtype == "bool":
                value = bool(self.value)
            elif dtype not in ("float32", "float64") and float(self.value).is_integer():
                value = int(self.value)
            elif math.isfinite(float(self.value)):
                value = float(self.value)
        out: dict[str, object] = {
            "tag": self.tag, "value": value, "quality": QUALITY_NAMES[self.quality],
            "unit": self.info.unit if self.info is not None else None,
            "ts": str(np.datetime64(self.ts_ns, "ns")) + "Z", "ts_ns": self.ts_ns}
        if self.info is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            text = self.info.text_of(float(value))
            if text is not None:
                out["text"] = text
        if self.error:
            out["error"] = self.error
        return out


async def read_device(dev: ResolvedDevice, only: list[str], plant: Plant) -> list[ReadRow]:
    """Every tag of a device from one poll by the appliance's own poller, opened through the
    device's driver exactly as the running appliance opens it: the same plan, the same hole
    learning (an illegal-address answer splits the block and the parts are read at once), the
    same decoding, and the plugin's derived tags through the same hooks."""
    infos = {t.id: t for t in plant.tags if t.device == dev.name}
    ids = {t.name: t.id for t in infos.values()}
    batches: list[SampleBatch] = []
    diag = DeviceDiagnostics(dev.name, dev.bus.name)
    publish = DerivedStage(dev.name, dev.hooks, ids, batches.append, diag).publish if dev.hooks else batches.append
    session = dev.driver.session()
    try:
        runtime = session.open_device(dev, DeviceContext(tag_ids=ids, publish=publish, diag=diag))
        await runtime.poll_once()
    finally:
        session.close()
    latest: dict[int, tuple[float | str, int, int]] = {}
    for batch in batches:
        texts = batch.texts or {}
        for tag_id, value, q in zip(batch.tag_ids.tolist(), batch.values.tolist(), batch.quality.tolist(), strict=True):
            latest[tag_id] = (texts.get(tag_id, value), q, batch.ts_ns)
    rows = []
    for tag_id, info in infos.items():
        if only and info.name not in only:
            continue
        value, q, ts = latest.get(tag_id, (math.nan, int(Quality.BAD_COMM_ERROR), 0))
        quality = Quality(q)
        error = "" if quality is Quality.GOOD else (diag.last_error if quality in _POLL_FAILURES else "")
        rows.append(ReadRow(info.name, value, quality, ts, info, error))
    return rows


_POLL_FAILURES = (Quality.BAD_COMM_ERROR, Quality.BAD_CONFIG_ERROR, Quality.BAD_NO_COMMUNICATION)


async def write_device(dev: ResolvedDevice, tag: str, value: str, plant: Plant) -> WriteResult:
    ids = {t.name: t.id for t in plant.tags if t.device == dev.name}
    writable = [rp.point.name for rp in dev.points if rp.point.writable]
    if tag not in ids or tag not in {rp.point.name for rp in dev.points}:
        raise CliError(f"device {dev.name} has no tag {tag!r}; tags: {', '.join(rp.point.name for rp in dev.points)}")
    if tag not in writable:
        raise CliError(f"{dev.name}.{tag} is not writable; writable tags: {', '.join(writable) or 'none'}")
    session = dev.driver.session()
    try:
        runtime = session.open_device(dev, DeviceContext(tag_ids=ids, publish=lambda batch: None,
                                                         diag=DeviceDiagnostics(dev.name, dev.bus.name)))
        return await runtime.write(ids[tag], value)
    finally:
        session.close()


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, discover=args.command == "read")
    try:
        dev = loaded.device(args.device)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if dev.plugin_error:
        raise CliError(f"device {dev.name}: {dev.plugin_error}")
    if args.command == "read":
        rows = asyncio.run(read_device(dev, args.tag, loaded.plant))
        unknown = sorted(set(args.tag) - {r.tag for r in rows})
        if unknown:
            raise CliError(f"device {dev.name} has no tag {', '.join(map(repr, unknown))}")
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], indent=1))
        else:
            for r in rows:
                shown = r.shown() if r.quality is Quality.GOOD else (r.error or "-")
                print(f"{r.tag:<28} {shown:<32} {QUALITY_NAMES[r.quality]}")
        return 0 if rows and all(r.quality is Quality.GOOD for r in rows) else 1
    result = asyncio.run(write_device(dev, args.tag, args.value, loaded.plant))
    print(f"{dev.name}.{args.tag} = {args.value}: {result.status.name}: {result.message}"
          + (f" (read back {result.read_back})" if result.read_back is not None else ""))
    return 0 if result.ok else 1
