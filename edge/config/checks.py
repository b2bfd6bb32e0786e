"""Checks across objects of a site configuration, run by the loader once the schema holds.

Each check appends :class:`ConfigIssue` objects that point at the offending line. The checks
here are protocol-neutral (names, poll groups, files, aggregates, alarms and rules); each
driver adds its own (shared lines, addresses, timeouts, the bus load) through
:meth:`edge.driver.protocol.Driver.check`.
"""
from __future__ import annotations

from collections.abc import Callable

from edge.aggregate.engine import Aggregator
from edge.config.aggregate import TagAggregateConfig
from edge.config.errors import ConfigIssue
from edge.config.intelligence_checks import check_intelligence
from edge.config.mqtt import check_mqtt
from edge.config.resolved import LoadedConfig, ResolvedDevice, ResolvedPoint
from edge.core.model import TagInfo
from edge.driver.protocol import Driver, LineLoad


def run_checks(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Every check, whatever the others found; a device with errors in its points (an unknown
    poll group counts) is left out of the checks that plan its polling (``point_errors``)."""
    checks: tuple[Callable[[LoadedConfig, list[ConfigIssue]], None], ...] = (
        _unique_names, _point_names, _files, _aggregates, check_intelligence, check_mqtt)
    for check in checks:
        check(loaded, issues)
    _poll_groups(loaded, issues)
    for driver, devices in by_driver(loaded).values():
        driver.check(loaded, devices, issues)


def by_driver(loaded: LoadedConfig) -> dict[str, tuple[Driver, list[ResolvedDevice]]]:
    """The site's devices grouped by driver (in configuration order)."""
    out: dict[str, tuple[Driver, list[ResolvedDevice]]] = {}
    for dev in loaded.devices:
        out.setdefault(dev.driver.name, (dev.driver, []))[1].append(dev)
    return out


def line_loads(loaded: LoadedConfig, issues: list[ConfigIssue] | None = None) -> list[LineLoad]:
    """Estimated load of every line of the site, from each driver's model of its devices."""
    return [load for driver, devices in by_driver(loaded).values()
            for load in driver.line_loads(loaded, devices, issues)]


def _unique_names(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    src = loaded.source
    for section in ("buses", "devices"):
        seen: dict[str, int] = {}
        for pos, item in enumerate(getattr(loaded.config, section)):
            i = loaded.file_index(section, pos)
            if item.name in seen:
                issues.append(src.issue((section, i, "name"),
                                        f"duplicate name: {section}[{seen[item.name]}] is already called {item.name!r}",
                                        item.name))
            seen.setdefault(item.name, i)


def _point_names(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    for dev in loaded.devices:
        seen: set[str] = set()
        for rp in dev.points:
            if rp.point.name in seen:
                issues.append(rp.source.issue((*rp.path, "name"),
                                              f"duplicate tag name {rp.point.name!r} in device {dev.name!r}",
                                              rp.point.name))
            seen.add(rp.point.name)


def _poll_groups(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Points in a poll group their device does not have (counted in the device's ``point_errors``)."""
    for dev in loaded.devices:
        for rp in dev.points:
            group = rp.point.group
            if group not in dev.poll_groups:
                dev.point_errors += 1
                issues.append(rp.source.issue((*rp.path, "group"),
                                              f"no poll group {group!r}; groups: {', '.join(dev.poll_groups)}", group))


def _files(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Files the configuration names must exist (paths are absolute by now: edge.config.paths)."""
    influx = loaded.config.outputs.influxdb
    if influx is not None and influx.token_file is not None and not influx.token_file.is_file():
        issues.append(loaded.source.issue(("outputs", "influxdb", "token_file"),
                                          f"{influx.token_file} does not exist or is not a file", str(influx.token_file)))


def _aggregates(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """What the aggregator would refuse at start-up: ring capacity, OPC UA statistics, memory."""
    # the plant is not built yet: number the aggregated tags here
    tags: dict[int, TagInfo] = {}
    configs: dict[int, TagAggregateConfig] = {}
    where: dict[int, ResolvedPoint] = {}
    for dev in loaded.devices:
        for rp in dev.points:
            if rp.point.aggregate is not None and rp.point.group in dev.poll_groups:
                i = len(tags)
                tags[i] = TagInfo(id=i, device=dev.name, name=rp.point.name, bus=dev.bus.name,
                                  dtype=dev.driver.tag_type(rp.point)[0], interval_ms=dev.interval_ms(rp.point.group))
                configs[i], where[i] = rp.point.aggregate, rp
    if not configs:
        return
    settings = loaded.config.outputs.aggregator
    for tag_id, message in Aggregator(settings).problems(tags, configs):
        if tag_id is None:
            issues.append(loaded.source.issue(("outputs", "aggregator"), message))
        else:
            rp = where[tag_id]
            issues.append(rp.source.issue((*rp.path, "aggregate"), message))
