"""``plugin: sunspec``: a device's points from its SunSpec model chain instead of a plugin folder.

The Modbus driver builds this plugin per device (:meth:`ModbusDriver.builtin_plugin`). The chain
is discovered on the device when the configuration loads with discovery (``edge run``, ``edge
read``) and cached in ``<data_dir>/sunspec/<device>.json``; without discovery (``edge check``,
reloads) the cache is used, so a configuration check never touches hardware and an inverter
that sleeps at night still starts with the models it served by day.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.modbus.config import ModbusManifest, ModbusPluginPoints, ModbusPoint
from drivers.modbus.points import Table
from drivers.modbus.resolve import config, timeout_ms
from drivers.modbus.sunspec.discovery import Discovery, discover
from drivers.modbus.sunspec.models import SunSpecError, config_points, describe
from edge.config.errors import ConfigIssue
from edge.config.models import PollGroup
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource
from edge.driver.protocol import ResolveContext
from edge.plugins.loader import LoadedPlugin

if TYPE_CHECKING:
    from edge.config.resolved import ResolvedDevice

log = logging.getLogger(__name__)
PLUGIN = "sunspec"
STATIC_GROUP = PollGroup(interval_ms=60_000)  # nameplate strings and settings: once a minute
DISCOVERY_TIMEOUT_S = 60.0


def cache_path(data_dir: Path, device: str) -> Path:
    return data_dir / "sunspec" / f"{device}.json"


def discover_device(dev: ResolvedDevice) -> Discovery:
    """Walk the device's SunSpec chain now (in a worker thread with its own event loop)."""
    from drivers.modbus.runtime import open_line

    async def run() -> Discovery:
        line = open_line(dev)
        timeout = timeout_ms(dev) / 1e3
        unit = config(dev).unit_id

        async def read(address: int, count: int) -> list[int]:
            return [int(v) for v in await line.read(unit, Table.HOLDING, address, count, timeout)]

        try:
            return await discover(read)
        finally:
            line.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sunspec-discovery") as pool:
        return pool.submit(asyncio.run, run()).result(timeout=DISCOVERY_TIMEOUT_S)


def _known_chain(dev: ResolvedDevice, ctx: ResolveContext, issues: list[ConfigIssue],
                 where: tuple[Any, ...]) -> Discovery | None:
    """The chain asked now (with discovery) or read from the cache; None with a warning if neither."""
    cache = cache_path(ctx.data_dir, dev.name)
    found, why = None, ""
    if ctx.discover:
        try:
            found = discover_device(dev)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(found.as_dict(), indent=1), encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to the cache, say why
            why = f"discovery failed ({type(exc).__name__}: {exc})"
    if found is None and cache.is_file():
        try:
            found = Discovery.from_dict(json.loads(cache.read_text(encoding="utf-8")))
        except (ValueError, KeyError, SunSpecError) as exc:
            why += f"; cache {cache} unusable ({exc})"
    if found is None:
        issues.append(ConfigIssue(str(cache), None, where,
                                  f"SunSpec device {dev.name!r}: no models known yet "
                                  f"({why or 'not discovered: edge run or edge read discovers them'}); "
                                  "it has no tags until then", PLUGIN, "warning"))
    return found


def sunspec_plugin(dev: ResolvedDevice, ctx: ResolveContext, issues: list[ConfigIssue]) -> LoadedPlugin | None:
    """The device's points from its discovered (or cached) models; unknown models are reported."""
    where = ("devices", dev.index, "plugin")
    found = _known_chain(dev, ctx, issues, where)
    if found is None:
        return None
    log.info("device %s: SunSpec models at %d:\n  %s", dev.name, found.base, "\n  ".join(describe(found.models)))
    generated = YamlSource(f"<SunSpec models of device {dev.name}>", None)
    for m in found.models:
        if m.name is None:
            detail = m.problem or "no definition in pysunspec2"
            issues.append(generated.issue((), f"SunSpec device {dev.name!r}: model {m.id} at {m.address} "
                                          f"({m.length} registers) skipped: {detail}", m.id, "warning"))
    points: list[ModbusPoint] = []
    for m in found.known:
        for data in config_points(m):
            point = validate(ModbusPoint, data, generated, ("models", m.id, data["name"]), issues)
            if point is not None:
                points.append(point)
    if not points:
        return None
    manifest = ModbusManifest(id=PLUGIN, name="SunSpec device", version="1.0", vendor="SunSpec Alliance",
                              model=", ".join(str(m.name) for m in found.known), driver="modbus",
                              description=f"models discovered at {found.base}")
    ppoints = ModbusPluginPoints(points=points, poll_groups={"static": STATIC_GROUP})
    return LoadedPlugin(PLUGIN, cache_path(ctx.data_dir, dev.name).parent, manifest, ppoints, generated)
