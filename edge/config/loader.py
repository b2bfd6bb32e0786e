"""Loads a site configuration once: YAML -> pydantic models -> resolved devices and the plant.

Everything downstream uses :class:`~edge.config.resolved.LoadedConfig`; nothing re-parses
YAML or resolves a path again (``edge.config.paths``). Each bus is validated with the model of
the driver its ``type`` belongs to, each device with the model of its bus's driver, the other
sections with :class:`SiteConfig`: all schema errors of a file come out together, then the
cross-object checks once the schema holds, and everything is raised as one :class:`ConfigError`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.config.checks import run_checks
from edge.config.errors import ConfigError, ConfigIssue
from edge.config.models import BusConfig, DeviceConfig, PointConfig, PollGroup, SiteConfig
from edge.config.paths import absolute, resolve_paths
from edge.config.resolved import LoadedConfig, ResolvedDevice, ResolvedPoint
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource, load_yaml
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo
from edge.driver import registry
from edge.driver.protocol import Driver, ResolveContext
from edge.plugins.loader import Hook, LoadedPlugin, load_plugin
from edge.plugins.models import PluginPoints

__all__ = ["ConfigError", "LoadedConfig", "ResolvedDevice", "ResolvedPoint", "build_plant", "load_config"]


def load_config(path: str | Path, env: dict[str, str] | None = None, strict_plugins: bool = True,
                discover: bool = False) -> LoadedConfig:
    """Load and check a site configuration; raise ConfigError listing every error found.

    Every stage runs even when an earlier one found errors (items that fail the schema are set
    aside, the rest is checked), so one run reports every problem of the file. With
    ``strict_plugins`` (``edge check``) a broken plugin is an error; without it (``edge run``) the
    devices using it are kept, quarantined, with the plugin's error, so other devices run. With
    ``discover``, drivers may ask devices what they serve (SunSpec models) instead of using what
    they answered last time.
    """
    path = Path(path)
    source = load_yaml(path, env)
    issues = list(source.issues)
    if issues:
        raise ConfigError(issues)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue((), "the file must be a mapping of sections (site, buses, devices, outputs)")])
    raw_buses = _raw_list(source, "buses", issues)
    buses = _validate_buses(source, raw_buses, issues)
    devices = _validate_devices(source, raw_buses, _raw_list(source, "devices", issues), issues)
    site = _validate_rest(source, issues)
    if site is None:
        raise ConfigError(issues)
    data_dir = absolute(site.runtime.data_dir, path.parent, site.site.name)
    site_paths = resolve_paths(site.model_copy(update={"buses": [b for _, b in buses],
                                                       "devices": [d.config for d in devices]}),
                               path.parent, data_dir, site.site.name)
    assert isinstance(site_paths, SiteConfig)
    site = site_paths
    ctx = ResolveContext(data_dir=data_dir, discover=discover)
    resolved = _resolve_devices(site, source, devices, env, issues, strict_plugins, ctx)
    loaded = LoadedConfig(path, source, site, resolved, Plant(site.site.name), [],
                          {"buses": [i for i, _ in buses], "devices": [d.index for d in devices]})
    run_checks(loaded, issues)
    if _errors(issues):
        raise ConfigError(issues)
    loaded.plant = build_plant(loaded)
    loaded.issues = issues
    return loaded


def _errors(issues: list[ConfigIssue]) -> bool:
    return any(i.severity == "error" for i in issues)


# ----------------------------------------------------------------------------- the schema, item by item


@dataclass
class _ValidDevice:
    index: int  # in the file
    config: DeviceConfig
    driver: Driver
    points: list[int]  # the file's index of each point kept (points that failed the schema are set aside)


def _raw_list(source: YamlSource, key: str, issues: list[ConfigIssue]) -> list[Any]:
    value = source.data.get(key)
    if not isinstance(value, list) or not value:
        what = "required key is missing" if value is None else f"{key} must be a non-empty list"
        issues.append(source.issue((key,), f"{what}: the site needs at least one entry under {key!r}"))
        return []
    return value


def _validate_buses(source: YamlSource, raw: list[Any], issues: list[ConfigIssue]) -> list[tuple[int, BusConfig]]:
    """Each bus with its driver's model, chosen by ``type``: (file index, model) of the valid ones."""
    out: list[tuple[int, BusConfig]] = []
    types = registry.bus_types()
    for i, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        driver = types.get(kind) if isinstance(kind, str) else None
        if driver is None or not isinstance(kind, str):
            what = "required key is missing" if kind is None else f"unknown bus type {kind!r}"
            issues.append(source.issue(("buses", i, "type"), f"{what}; allowed values: {', '.join(sorted(types))}",
                                       kind if isinstance(kind, str) else None))
            continue
        bus = validate(driver.bus_models[kind], item, source, ("buses", i), issues)
        if bus is not None:
            out.append((i, bus))
    return out


def _validate_devices(source: YamlSource, raw_buses: list[Any], raw: list[Any],
                      issues: list[ConfigIssue]) -> list[_ValidDevice]:
    """Each device with the device model of its bus's driver; a device whose points failed the
    schema is kept without them (their errors are reported) so its other checks still run."""
    types = registry.bus_types()
    bus_type = {b.get("name"): b.get("type") for b in raw_buses
                if isinstance(b, dict) and isinstance(b.get("name"), str)}
    out: list[_ValidDevice] = []
    for i, item in enumerate(raw):
        bus = item.get("bus") if isinstance(item, dict) else None
        if not isinstance(bus, str) or bus not in bus_type:
            names = ", ".join(str(n) for n in bus_type)
            issues.append(source.issue(("devices", i, "bus"),
                                       "required key is missing" if bus is None else
                                       f"no bus named {bus!r}; buses: {names}", bus if isinstance(bus, str) else None))
            continue
        kind = bus_type[bus]
        driver = types.get(kind) if isinstance(kind, str) else None
        if driver is None or not isinstance(kind, str):  # the bus's own error says why
            continue
        config, kept = validate_salvaged(driver.device_model, item, source, ("devices", i), issues)
        if config is not None:
            out.append(_ValidDevice(i, config, driver, kept))
    return out


def _validate_rest(source: YamlSource, issues: list[ConfigIssue]) -> SiteConfig | None:
    """The sections other than buses and devices; an optional section that fails is reported and
    left out so the rest is still checked (None when ``site`` itself is wrong)."""
    rest = {k: v for k, v in source.data.items() if k not in ("buses", "devices")}
    site = validate(SiteConfig, rest, source, (), issues)
    for _ in range(len(rest)):
        if site is not None:
            return site
        try:
            return SiteConfig.model_validate(rest)
        except ValidationError as exc:
            failed = {e["loc"][0] for e in exc.errors(include_url=False) if e["loc"]}
            dropped = failed & OPTIONAL_SECTIONS
            if not dropped or dropped != failed:
                return None
            rest = {k: v for k, v in rest.items() if k not in dropped}
    return site


OPTIONAL_SECTIONS = {"outputs", "alarms", "rules", "api", "runtime", "plugins_dir"}


def validate_salvaged(model: type[DeviceConfig], data: Any, source: YamlSource, prefix: tuple[Any, ...],
                      issues: list[ConfigIssue]) -> tuple[DeviceConfig | None, list[int]]:
    """Validate one device, reporting every error; if only points failed, the device without
    them. Returns the model and the file's index of each point kept."""
    points = data.get("points") if isinstance(data, dict) else None
    all_points = list(range(len(points))) if isinstance(points, list) else []
    config = validate(model, data, source, prefix, issues)
    if config is not None or not isinstance(points, list):
        return config, all_points
    kept = all_points
    for _ in range(len(points) + 1):
        try:
            return model.model_validate({**data, "points": [points[i] for i in kept]}), kept
        except ValidationError as exc:
            locs = [tuple(e["loc"]) for e in exc.errors(include_url=False)]
            if not all(len(loc) > 1 and loc[0] == "points" and isinstance(loc[1], int) for loc in locs):
                return None, all_points  # the device itself is wrong, not only some points
            bad = {kept[i] for loc in locs if isinstance(i := loc[1], int) and i < len(kept)}
            kept = [i for i in kept if i not in bad]
    return None, all_points


# ----------------------------------------------------------------------------- devices and plugins


def _resolve_devices(site: SiteConfig, source: YamlSource, devices: list[_ValidDevice], env: dict[str, str] | None,
                     issues: list[ConfigIssue], strict_plugins: bool, ctx: ResolveContext) -> list[ResolvedDevice]:
    """Devices with their plugins merged, then handed to their drivers' ``resolve``."""
    buses = {b.name: b for b in site.buses}
    cache: dict[str, LoadedPlugin] = {}
    reported: set[str] = set()  # plugins whose problems were listed once already
    out: list[ResolvedDevice] = []
    for valid in devices:
        dev, index, driver = valid.config, valid.index, valid.driver
        bus = buses.get(dev.bus)
        if bus is None:  # its bus failed the schema: that error is reported there
            continue
        groups = {"default": PollGroup(interval_ms=dev.interval_ms), **dev.poll_groups}
        resolved = ResolvedDevice(dev, bus, driver, index, [], groups)
        site_points = [ResolvedPoint(p, source, ("devices", index, "points", valid.points[i]))
                       for i, p in enumerate(dev.points)]
        resolved.points = site_points
        if dev.plugin:
            plugin = _plugin_for(resolved, site, env, cache, ctx, issues)
            if plugin is not None:
                _apply_plugin(resolved, plugin, source, site_points, issues, strict_plugins,
                              first=plugin.name not in reported)
                reported.add(plugin.name)
        before = len(issues)
        driver.resolve(resolved, issues)
        resolved.point_errors = sum(i.severity == "error" for i in issues[before:])
        out.append(resolved)
    return out


def _plugin_for(dev: ResolvedDevice, site: SiteConfig, env: dict[str, str] | None, cache: dict[str, LoadedPlugin],
                ctx: ResolveContext, issues: list[ConfigIssue]) -> LoadedPlugin | None:
    """The plugin a device names: a folder (cached by name), or one its driver builds for this very
    device (``plugin: sunspec``: the device's own model chain) when no folder of that name exists."""
    name = dev.config.plugin
    assert name is not None
    folder = Path(site.plugins_dir) / name
    if name in dev.driver.builtin_plugins and not folder.is_dir():
        return dev.driver.builtin_plugin(dev, ctx, issues)
    if name not in cache:
        cache[name] = load_plugin(folder, name, env)
    return cache[name]


def _apply_plugin(dev: ResolvedDevice, plugin: LoadedPlugin, source: YamlSource, site_points: list[ResolvedPoint],
                  issues: list[ConfigIssue], strict_plugins: bool, first: bool) -> None:
    """Merge a loaded plugin into a device, or quarantine the device with the plugin's error."""
    index, name = dev.index, dev.config.plugin
    dev.plugin_dir = plugin.folder
    error = plugin.error
    if error is None and plugin.manifest is not None and plugin.manifest.driver != dev.driver.name:
        error = (f"plugin {name!r} is for the {plugin.manifest.driver} driver, but bus {dev.bus.name!r} is "
                 f"{dev.bus.type} ({dev.driver.name} driver)")
    if error is not None:
        dev.plugin_error = error
        severity = "error" if strict_plugins else "warning"
        suffix = "" if strict_plugins else " (device quarantined)"
        issues.append(source.issue(("devices", index, "plugin"), error + suffix, name, severity))
        if first:  # every problem of the plugin's files, once, each with its own file and line
            issues.extend(replace(i, severity=severity) for i in plugin.issues[1:])
        return
    manifest, ppoints, psource = plugin.manifest, plugin.points, plugin.source
    assert manifest is not None and ppoints is not None and psource is not None
    dev.manifest, dev.plugin_points = manifest, ppoints
    dev.points = _merge_plugin_points(dev, ppoints, psource, site_points, source, issues)
    if ppoints.interval_ms and "interval_ms" not in dev.config.model_fields_set:
        dev.poll_groups["default"] = PollGroup(interval_ms=ppoints.interval_ms)
    dev.poll_groups = {**ppoints.poll_groups, **dev.poll_groups}
    dev.hooks = _site_hooks(plugin.hooks, dev, source, issues)


def _merge_plugin_points(resolved: ResolvedDevice, ppoints: PluginPoints, psource: YamlSource,
                         site_points: list[ResolvedPoint], source: YamlSource,
                         issues: list[ConfigIssue]) -> list[ResolvedPoint]:
    dev, index = resolved.config, resolved.index
    base = {p.name: ResolvedPoint(p, psource, ("points", i)) for i, p in enumerate(ppoints.points)}
    for j, name in enumerate(dev.drop):
        if base.pop(name, None) is None:
            issues.append(source.issue(("devices", index, "drop", j), f"plugin {dev.plugin!r} has no point {name!r}",
                                       name))
    for name, change in dev.override.items():
        rp = base.get(name)
        if rp is None:
            issues.append(source.issue(("devices", index, "override", name),
                                       f"plugin {dev.plugin!r} has no point {name!r}", name))
            continue
        updates = change.model_dump(exclude_none=True)
        merged = validate(resolved.driver.point_model, {**rp.point.model_dump(exclude_none=True), **updates}, source,
                          ("devices", index, "override", name), issues)
        if merged is not None:
            base[name] = ResolvedPoint(merged, source, ("devices", index, "override", name))
    for sp in site_points:
        base[sp.point.name] = sp  # a site point with a plugin point's name replaces it
    return list(base.values())


def _site_hooks(hooks: list[Hook], dev: ResolvedDevice, source: YamlSource,
                issues: list[ConfigIssue]) -> list[Hook]:
    """The plugin's derived tags whose inputs this site keeps (a dropped input is an error)."""
    names = {rp.point.name for rp in dev.points}
    for h in hooks:
        missing = [i for i in h.derived.inputs if i not in names]
        if missing:
            issues.append(source.issue(("devices", dev.index, "drop"),
                                       f"derived tag {h.derived.name!r} needs {', '.join(missing)}: do not drop it",
                                       missing[0]))
    return hooks


# ----------------------------------------------------------------------------- plant


def build_plant(loaded: LoadedConfig) -> Plant:
    """Assign tag ids (site order: points, then derived tags, device by device) and build the Plant."""
    plant = Plant(loaded.site)
    bus_devices: dict[str, list[str]] = {b.name: [] for b in loaded.config.buses}
    for dev in loaded.devices:
        bus_devices[dev.bus.name].append(dev.name)
        ids: list[int] = []
        by_name = {rp.point.name: rp.point for rp in dev.points}
        for p in by_name.values():
            eng, resolution = dev.driver.tag_type(p)
            tag = TagInfo(
                id=len(plant.tags), device=dev.name, name=p.name, bus=dev.bus.name, dtype=eng, unit=p.unit,
                low=p.range[0] if p.range else None, high=p.range[1] if p.range else None,
                writable=p.writable, deadband=p.deadband, description=p.description, enum=p.enum, bits=p.bits,
                interval_ms=dev.interval_ms(p.group), group=p.panel or p.unit or "values",
                plugin=dev.config.plugin, raw_dtype=_raw_type(p, eng), resolution=resolution,
                type_range=_type_range(dev, p) if p.range is None else None,
            )
            plant.tags.append(tag)
            ids.append(tag.id)
        for h in dev.hooks:
            d = h.derived
            tag = TagInfo(
                id=len(plant.tags), device=dev.name, name=d.name, bus=dev.bus.name,
                dtype="bool" if d.type == "bool" else d.type, unit=d.unit,
                low=d.range[0] if d.range else None, high=d.range[1] if d.range else None,
                deadband=d.deadband, description=d.description or f"derived by hook {d.hook}", enum=d.enum,
                interval_ms=min(dev.interval_ms(by_name[i].group) for i in d.inputs),
                group=d.panel or d.unit or "values", plugin=dev.config.plugin,
            )
            plant.tags.append(tag)
            ids.append(tag.id)
        plant.devices.append(DeviceInfo(dev.name, dev.bus.name, dev.driver.device_address(dev), dev.config.plugin,
                                        dev.manifest.version if dev.manifest else None, tuple(ids)))
    plant.buses = [BusInfo(b.name, b.type, tuple(bus_devices[b.name])) for b in loaded.config.buses]
    return plant


def _type_range(dev: ResolvedDevice, point: PointConfig) -> tuple[float, float] | None:
    """What the point's type on the device can hold, from its driver (optional in the protocol)."""
    type_range = getattr(dev.driver, "type_range", None)
    return type_range(point) if type_range is not None else None


def _raw_type(point: object, engineering: str) -> str | None:
    """The type the device holds when it differs from the engineering type (a scaled int16)."""
    raw = getattr(point, "type", None)
    return raw if isinstance(raw, str) and raw != engineering else None
