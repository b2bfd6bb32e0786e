"""Loads a site configuration once: YAML -> pydantic models -> resolved devices and the plant.

Everything downstream uses :class:`~edge.config.resolved.LoadedConfig`; nothing re-parses
YAML or resolves a path again (``edge.config.paths``). Each bus is validated with the model of
the driver its ``type`` belongs to, each device with the model of its bus's driver, the other
sections with :class:`SiteConfig`: all schema errors of a file come out together, then the
cross-object checks once the schema holds, and everything is raised as one :class:`ConfigError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config.checks import run_checks
from edge.config.errors import ConfigError, ConfigIssue
from edge.config.models import BusConfig, DeviceConfig, PollGroup, SiteConfig
from edge.config.paths import absolute, resolve_paths
from edge.config.resolved import LoadedConfig, ResolvedDevice, ResolvedPoint
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource, load_yaml
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo
from edge.driver import registry
from edge.driver.protocol import Driver
from edge.plugins.loader import Hook, LoadedPlugin, load_plugin
from edge.plugins.models import PluginPoints

__all__ = ["ConfigError", "LoadedConfig", "ResolvedDevice", "ResolvedPoint", "build_plant", "load_config"]


def load_config(path: str | Path, env: dict[str, str] | None = None, strict_plugins: bool = True) -> LoadedConfig:
    """Load and check a site configuration; raise ConfigError listing every error found.

    With ``strict_plugins`` (``edge check``) a broken plugin is an error; without it (``edge run``)
    the devices using it are kept, quarantined, with the plugin's error, so other devices run.
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
    configs = _validate_devices(source, raw_buses, _raw_list(source, "devices", issues), issues)
    rest = {k: v for k, v in source.data.items() if k not in ("buses", "devices")}
    site = validate(SiteConfig, rest, source, (), issues)
    if site is None or _errors(issues):
        raise ConfigError(issues)
    data_dir = absolute(site.runtime.data_dir, path.parent, site.site.name)
    site = resolve_paths(site.model_copy(update={"buses": [b for b in buses if b is not None],
                                                 "devices": [d for d, _ in configs if d is not None]}),
                         path.parent, data_dir, site.site.name)
    assert isinstance(site, SiteConfig)
    bus_by_name = {b.name: b for b in site.buses}
    devices = _resolve_devices(site, source, bus_by_name, env, issues, strict_plugins)
    loaded = LoadedConfig(path, source, site, devices, Plant(site.site.name), [])
    if not _errors(issues):
        run_checks(loaded, issues)
    if _errors(issues):
        raise ConfigError(issues)
    loaded.plant = build_plant(loaded)
    loaded.issues = issues
    return loaded


# ----------------------------------------------------------------------------- buses and devices (schema)


def _raw_list(source: YamlSource, key: str, issues: list[ConfigIssue]) -> list[Any]:
    value = source.data.get(key)
    if not isinstance(value, list) or not value:
        what = "required key is missing" if value is None else f"{key} must be a non-empty list"
        issues.append(source.issue((key,), f"{what}: the site needs at least one entry under {key!r}"))
        return []
    return value


def _validate_buses(source: YamlSource, raw: list[Any], issues: list[ConfigIssue]) -> list[BusConfig | None]:
    """Each bus with its driver's model, chosen by ``type`` (registered drivers list the types)."""
    out: list[BusConfig | None] = []
    types = registry.bus_types()
    for i, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        driver = types.get(kind) if isinstance(kind, str) else None
        if driver is None:
            what = "required key is missing" if kind is None else f"unknown bus type {kind!r}"
            issues.append(source.issue(("buses", i, "type"), f"{what}; allowed values: {', '.join(sorted(types))}",
                                       kind if isinstance(kind, str) else None))
            out.append(None)
            continue
        out.append(validate(driver.bus_models[kind], item, source, ("buses", i), issues))
    return out


def _validate_devices(source: YamlSource, raw_buses: list[Any], raw: list[Any],
                      issues: list[ConfigIssue]) -> list[tuple[DeviceConfig | None, Driver | None]]:
    """Each device with the device model of its bus's driver."""
    types = registry.bus_types()
    bus_type = {b.get("name"): b.get("type") for b in raw_buses
                if isinstance(b, dict) and isinstance(b.get("name"), str)}
    out: list[tuple[DeviceConfig | None, Driver | None]] = []
    for i, item in enumerate(raw):
        bus = item.get("bus") if isinstance(item, dict) else None
        if not isinstance(bus, str) or bus not in bus_type:
            names = ", ".join(str(n) for n in bus_type)
            issues.append(source.issue(("devices", i, "bus"),
                                       "required key is missing" if bus is None else
                                       f"no bus named {bus!r}; buses: {names}", bus if isinstance(bus, str) else None))
            out.append((None, None))
            continue
        kind = bus_type[bus]
        driver = types.get(kind) if isinstance(kind, str) else None
        if driver is None:  # the bus's own error says why
            out.append((None, None))
            continue
        out.append((validate(driver.device_model, item, source, ("devices", i), issues), driver))
    return out


def _errors(issues: list[ConfigIssue]) -> bool:
    return any(i.severity == "error" for i in issues)


# ----------------------------------------------------------------------------- devices and plugins


def _resolve_devices(site: SiteConfig, source: YamlSource, buses: dict[str, BusConfig], env: dict[str, str] | None,
                     issues: list[ConfigIssue], strict_plugins: bool) -> list[ResolvedDevice]:
    """Devices with their plugins merged, then handed to their drivers' ``resolve``."""
    cache: dict[str, LoadedPlugin] = {}
    out: list[ResolvedDevice] = []
    for index, dev in enumerate(site.devices):
        bus = buses[dev.bus]
        driver = registry.bus_types()[bus.type]
        groups = {"default": PollGroup(interval_ms=dev.interval_ms), **dev.poll_groups}
        resolved = ResolvedDevice(dev, bus, driver, index, [], groups)
        site_points = [ResolvedPoint(p, source, ("devices", index, "points", i)) for i, p in enumerate(dev.points)]
        resolved.points = site_points
        if dev.plugin:
            if dev.plugin not in cache:
                cache[dev.plugin] = load_plugin(Path(site.plugins_dir) / dev.plugin, dev.plugin, env)
            _apply_plugin(resolved, cache[dev.plugin], source, site_points, issues, strict_plugins)
        driver.resolve(resolved, issues)
        out.append(resolved)
    return out


def _apply_plugin(dev: ResolvedDevice, plugin: LoadedPlugin, source: YamlSource, site_points: list[ResolvedPoint],
                  issues: list[ConfigIssue], strict_plugins: bool) -> None:
    """Merge a loaded plugin into a device, or quarantine the device with the plugin's error."""
    index, name = dev.index, dev.config.plugin
    dev.plugin_dir = plugin.folder
    error = plugin.error
    if error is None and plugin.manifest is not None and plugin.manifest.driver != dev.driver.name:
        error = (f"plugin {name!r} is for the {plugin.manifest.driver} driver, but bus {dev.bus.name!r} is "
                 f"{dev.bus.type} ({dev.driver.name} driver)")
    if error is not None:
        dev.plugin_error = error
        if strict_plugins:
            issues.append(source.issue(("devices", index, "plugin"), error, name))
        else:
            issues.append(source.issue(("devices", index, "plugin"), error + " (device quarantined)", name, "warning"))
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


def _raw_type(point: object, engineering: str) -> str | None:
    """The type the device holds when it differs from the engineering type (a scaled int16)."""
    raw = getattr(point, "type", None)
    return raw if isinstance(raw, str) and raw != engineering else None
