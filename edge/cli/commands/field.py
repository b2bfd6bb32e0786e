"""Technician commands that talk to field devices directly: ``edge read`` and ``edge write``.

They open the device through its driver exactly as the running appliance does (same lines,
plans, codec, hole learning and write path, through ``edge.driver.protocol``), so what they
show is what the appliance will see. Protocol-specific tools (``scan``, ``probe``, ``plan``)
are contributed by the drivers.
"""
from __future__ import annotations

import argparse
import asyncio

from edge.cli.commands import CliError
from edge.cli.commands.run import format_value
from edge.config.loader import load_config
from edge.config.resolved import ResolvedDevice
from edge.core.derived import DerivedStage
from edge.core.model import DeviceDiagnostics, Plant, Quality, SampleBatch, WriteResult
from edge.driver.protocol import DeviceContext


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("device", help="device name")
    if name == "read":
        p.add_argument("tag", nargs="*", help="only these tags (default: all)")
    elif name == "write":
        p.add_argument("tag", help="tag name")
        p.add_argument("value", help="value in engineering units (true/false for bits, text for strings)")


async def read_device(dev: ResolvedDevice, only: list[str], plant: Plant) -> list[tuple[str, str, str]]:
    """(tag, value, quality) for every tag of a device after one poll of every poll group.

    The plugin's derived tags are computed from what was read, through the same hooks (and the
    same containment) as in the running appliance.
    """
    ids = {t.name: t.id for t in plant.tags if t.device == dev.name}
    names = {tag_id: name for name, tag_id in ids.items()}
    tags = {t.id: t for t in plant.tags if t.device == dev.name}
    batches: list[SampleBatch] = []
    diag = DeviceDiagnostics(dev.name, dev.bus.name)
    publish = DerivedStage(dev.name, dev.hooks, ids, batches.append, diag).publish if dev.hooks else batches.append
    session = dev.driver.session()
    try:
        runtime = session.open_device(dev, DeviceContext(tag_ids=ids, publish=publish, diag=diag))
        await runtime.poll_once()
    finally:
        session.close()
    latest: dict[int, tuple[float | str, int]] = {}  # in the order the tags were read
    for batch in batches:
        texts = batch.texts or {}
        for tag_id, value, q in zip(batch.tag_ids.tolist(), batch.values.tolist(), batch.quality.tolist(), strict=True):
            latest[tag_id] = (texts.get(tag_id, value), q)
    out = []
    for tag_id, (value, q) in latest.items():
        tag = tags[tag_id]
        if q != Quality.GOOD and q == Quality.BAD_COMM_ERROR and diag.last_error:
            out.append((names[tag_id], "-", f"{Quality(q).name}: {diag.last_error}"))
            continue
        shown = format_value(value, tag.unit, Quality.GOOD)
        if tag.enum and isinstance(value, float) and value.is_integer():
            shown += f" ({tag.enum.get(int(value), 'not a listed state')})"
        out.append((names[tag_id], shown, Quality(q).name))
    return [row for row in out if not only or row[0] in only]


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
    loaded = load_config(args.config)
    try:
        dev = loaded.device(args.device)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if dev.plugin_error:
        raise CliError(f"device {dev.name}: {dev.plugin_error}")
    if args.command == "read":
        rows = asyncio.run(read_device(dev, args.tag, loaded.plant))
        for name, value, quality in rows:
            print(f"{name:<28} {value:<24} {quality}")
        return 0 if rows and all(q == "GOOD" for _, _, q in rows) else 1
    result = asyncio.run(write_device(dev, args.tag, args.value, loaded.plant))
    print(f"{dev.name}.{args.tag} = {args.value}: {result.status.name}: {result.message}"
          + (f" (read back {result.read_back})" if result.read_back is not None else ""))
    return 0 if result.ok else 1
