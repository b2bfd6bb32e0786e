"""``plugin: sunspec``: a device's points from its SunSpec model chain instead of a plugin folder.

The chain is discovered on the device (``load_config(..., discover=True)``: ``edge run``,
``edge read``) and cached in ``<data_dir>/sunspec/<device>.json``; without discovery (``edge
check``, reloads) the cache is used, so a configuration check never touches hardware and an
inverter that sleeps at night still starts with the models it served by day.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.errors import ConfigIssue
from edge.config.models import Point, PollGroup
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource

if TYPE_CHECKING:
    from edge.config.loader import ResolvedDevice, ResolvedPoint

log = logging.getLogger("edge.config.sunspec")
PLUGIN = "sunspec"
STATIC_GROUP = PollGroup(interval_ms=60_000)  # nameplate strings and settings: once a minute
DISCOVERY_TIMEOUT_S = 60.0


def cache_path(data_dir: Path, device: str) -> Path:
    return data_dir / "sunspec" / f"{device}.json"


def discover_device(dev: ResolvedDevice) -> Any:
    """Walk the device's SunSpec chain now (in a worker thread with its own event loop)."""
    from drivers.modbus.bus import Line
    from drivers.modbus.points import Table
    from drivers.modbus.sunspec.discovery import discover
    from edge.runtime.app import line_gap_s, make_transport

    async def run() -> Any:
        line = Line(dev.name, make_transport(dev), gap_s=line_gap_s(dev))
        timeout = dev.timeout_ms() / 1e3

        async def read(address: int, count: int) -> list[int]:
            return [int(v) for v in await line.read(dev.config.unit_id, Table.HOLDING, address, count, timeout)]

        try:
            return await discover(read)
        finally:
            line.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sunspec-discovery") as pool:
        return pool.submit(asyncio.run, run()).result(timeout=DISCOVERY_TIMEOUT_S)


def sunspec_points(dev: ResolvedDevice, data_dir: Path, discover: bool,
                   issues: list[ConfigIssue], source: YamlSource) -> list[ResolvedPoint]:
    """The device's points from its discovered (or cached) models; unknown models are reported."""
    from drivers.modbus.sunspec.discovery import Discovery
    from drivers.modbus.sunspec.models import SunSpecError, config_points, describe
    from edge.config.loader import ResolvedPoint

    where = ("devices", dev.index, "plugin")
    cache = cache_path(data_dir, dev.name)
    found, why = None, ""
    if discover:
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
        issues.append(source.issue(where, f"SunSpec device {dev.name!r}: no models known yet "
                                   f"({why or 'not discovered: edge run or edge read discovers them'}); "
                                   "it has no tags until then", PLUGIN, "warning"))
        return []
    dev.sunspec = found
    log.info("device %s: SunSpec models at %d:\n  %s", dev.name, found.base, "\n  ".join(describe(found.models)))
    for m in found.models:
        if m.name is None:
            detail = m.problem or "no definition in pysunspec2"
            issues.append(source.issue(where, f"SunSpec device {dev.name!r}: model {m.id} at {m.address} "
                                       f"({m.length} registers) skipped: {detail}", m.id, "warning"))
    generated = YamlSource(f"<SunSpec models of device {dev.name}>", None)
    out: list[ResolvedPoint] = []
    for m in found.known:
        for data in config_points(m):
            point = validate(Point, data, generated, ("models", m.id, data["name"]), issues)
            if point is not None:
                out.append(ResolvedPoint(point, generated, ("models", m.id, data["name"])))
    dev.poll_groups.setdefault("static", STATIC_GROUP)
    return out
