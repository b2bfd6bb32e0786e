"""Loads a site configuration once: YAML -> pydantic models -> resolved devices and the plant.

Everything downstream uses :class:`LoadedConfig`; nothing re-parses YAML. All problems of a
file are collected (schema errors together; cross-object checks together once the schema
holds) and raised as one :class:`ConfigError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from drivers.modbus.points import RegisterPoint, Table
from edge.config.errors import ConfigError, ConfigIssue
from edge.config.models import Bus, Device, Point, PollGroup, SiteConfig
from edge.config.plugin import PluginManifest, PluginPoints
from edge.config.yamlsource import YamlSource, load_yaml
from edge.model import BusInfo, DeviceInfo, Plant, TagInfo


@dataclass
class ResolvedPoint:
    """A point after plugin merge and overrides, with where it was written."""

    point: Point
    source: YamlSource
    path: tuple[Any, ...]  # key path of the point in ``source``


@dataclass
class ResolvedDevice:
    config: Device
    bus: Bus
    index: int  # position in the site file's devices list
    points: list[ResolvedPoint]
    poll_groups: dict[str, PollGroup]  # including "default"
    manifest: PluginManifest | None = None
    plugin_dir: Path | None = None
    plugin_error: str | None = None  # set when the plugin failed to load (the device is quarantined)
    register_points: list[RegisterPoint] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def interval_ms(self, group: str) -> int:
        return self.poll_groups[group].interval_ms

    def timeout_ms(self) -> int:
        return self.config.timeout_ms or self.bus.timeout_ms

    def retries(self) -> int:
        return self.bus.retries if self.config.retries is None else self.config.retries


@dataclass
class LoadedConfig:
    path: Path
    source: YamlSource
    config: SiteConfig
    devices: list[ResolvedDevice]
    plant: Plant
    issues: list[ConfigIssue]  # warnings (errors raise)

    @property
    def site(self) -> str:
        return self.config.site.name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def device(self, name: str) -> ResolvedDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device named {name!r}; devices: {', '.join(d.name for d in self.devices)}")

    def resolve_path(self, value: str) -> Path:
        p = Path(value.format(site=self.site))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self.resolve_path(self.config.runtime.data_dir)


def load_config(path: str | Path, env: dict[str, str] | None = None, strict_plugins: bool = True) -> LoadedConfig:
    """Load and check a site configuration; raise ConfigError listing every error found.

    With ``strict_plugins`` (``edge check``) a broken plugin is an error; without it (``edge run``)
    the devices using it are kept, quarantined, with the plugin's error, so other devices run.
    """
    path = Path(path)
    source = load_yaml(path, env)
    issues = list(source.issues)
    if source.data is None or issues:
        raise ConfigError(issues)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue((), "the file must be a mapping of sections (site, buses, devices, outputs)")])
    site = validate(SiteConfig, source.data, source, (), issues)
    if site is None:
        raise ConfigError(issues)
    from edge.config.checks import run_checks  # local: checks import this module's types

    devices = _resolve_devices(site, source, path.parent, env, issues, strict_plugins)
    loaded = LoadedConfig(path, source, site, devices, Plant(site.site.name), [])
    if not _errors(issues):
        run_checks(loaded, issues)
    if _errors(issues):
        raise ConfigError(issues)
    loaded.plant = build_plant(loaded)
    loaded.issues = issues
    return loaded


def _errors(issues: list[ConfigIssue]) -> bool:
    return any(i.severity == "error" for i in issues)


# ----------------------------------------------------------------------------- pydantic -> issues


def validate(model: type[BaseModel], data: Any, source: YamlSource, prefix: tuple[Any, ...],
             issues: list[ConfigIssue]) -> Any:
    """Validate ``data`` into ``model``; on failure append one issue per pydantic error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _data_path(data, tuple(err["loc"]))
            issues.append(_issue_from_error(model, source, prefix, loc, err))
        return None


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the parts pydantic adds that are not keys in the file (union tags, 'function-after')."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict | list):
            if isinstance(part, str) and (part.startswith(("function-", "tagged-union")) or
                                          (isinstance(node, dict) and node.get("type") == part)):
                continue
            out.append(part)  # a missing key: keep it so the message names it
            node = None
        else:
            # pydantic descends into a scalar (e.g. a tuple's items); keep what the file has
            continue
    return tuple(out)


def _issue_from_error(model: type[BaseModel], source: YamlSource, prefix: tuple[Any, ...],
                      loc: tuple[Any, ...], err: dict[str, Any]) -> ConfigIssue:
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
        if kind == "union_tag_not_found":
            return ConfigIssue(source.file, source.line_of(prefix + loc), prefix + loc,
                               f"required key is missing; allowed values: {_tags(model, loc)}")
    path = prefix + loc
    msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
    value = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1], source, prefix)
        msg = f"unknown key {loc[-1]!r}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        value = None
    elif kind == "missing":
        msg = "required key is missing"
        value = None
        return ConfigIssue(source.file, source.line_of(path[:-1]), path, msg)
    if isinstance(value, dict | list):
        value = None  # the whole mapping is noise; the line and key path say where
    return ConfigIssue(source.file, source.line_of(path), path, msg, value)


def _tags(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Allowed values of a discriminator (only buses use one)."""
    from edge.config.models import BUS_TYPES

    return ", ".join(BUS_TYPES)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...], source: YamlSource,
                  prefix: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at ``loc`` (follows lists, dicts and tagged unions)."""
    data = source.data
    for part in prefix:
        data = data[part] if isinstance(data, dict | list) else None
    target: Any = model
    for part in loc:
        target = _unwrap(target, data)
        if isinstance(target, type) and issubclass(target, BaseModel):
            info = target.model_fields.get(part)
            if info is None:
                return []
            target = info.annotation
        else:
            args = get_args(target)
            target = args[-1] if args else None
        data = data[part] if isinstance(data, dict | list) and _has(data, part) else None
    target = _unwrap(target, data)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return sorted(target.model_fields)
    return []


def _has(container: Any, part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(part, int) and 0 <= part < len(container)


def _unwrap(annotation: Any, data: Any) -> Any:
    """Peel Annotated/Optional/unions down to the model that ``data`` is meant to be."""
    for _ in range(10):
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin is None or origin in (list, dict, tuple):
            return annotation
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) > 1 and isinstance(data, dict):
            for m in models:
                tag = m.model_fields.get("type")
                if tag is not None and data.get("type") in get_args(tag.annotation):
                    return m
            return models[0]
        if len(models) == 1:
            return models[0]
        non_none = [a for a in args if a is not type(None)]
        annotation = non_none[0] if non_none else None
    return annotation


# ----------------------------------------------------------------------------- devices and plugins


def _resolve_devices(site: SiteConfig, source: YamlSource, base: Path, env: dict[str, str] | None,
                     issues: list[ConfigIssue], strict_plugins: bool) -> list[ResolvedDevice]:
    buses = {b.name: b for b in site.buses}
    plugins_dir = (base / site.plugins_dir).resolve()
    cache: dict[str, tuple[PluginManifest | None, PluginPoints | None, YamlSource | None, Path, str | None]] = {}
    out: list[ResolvedDevice] = []
    for index, dev in enumerate(site.devices):
        bus = buses.get(dev.bus)
        if bus is None:
            issues.append(source.issue(("devices", index, "bus"),
                                       f"no bus named {dev.bus!r}; buses: {', '.join(buses)}", dev.bus))
            continue
        groups = {"default": PollGroup(interval_ms=dev.interval_ms), **dev.poll_groups}
        resolved = ResolvedDevice(dev, bus, index, [], groups)
        site_points = [ResolvedPoint(p, source, ("devices", index, "points", i)) for i, p in enumerate(dev.points)]
        if dev.plugin:
            if dev.plugin not in cache:
                cache[dev.plugin] = _load_plugin(plugins_dir / dev.plugin, dev.plugin, env)
            manifest, ppoints, psource, pdir, error = cache[dev.plugin]
            resolved.plugin_dir = pdir
            if error is not None:
                resolved.plugin_error = error
                if strict_plugins:
                    issues.append(source.issue(("devices", index, "plugin"), error, dev.plugin))
                else:
                    issues.append(source.issue(("devices", index, "plugin"), error + " (device quarantined)",
                                               dev.plugin, "warning"))
                resolved.points = site_points
            else:
                assert manifest is not None and ppoints is not None and psource is not None
                resolved.manifest = manifest
                resolved.points = _merge_plugin_points(dev, index, ppoints, psource, site_points, source, issues)
                if ppoints.interval_ms and "interval_ms" not in source.data["devices"][index]:
                    groups["default"] = PollGroup(interval_ms=ppoints.interval_ms)
                resolved.poll_groups = {**ppoints.poll_groups, **groups}
        else:
            resolved.points = site_points
        _convert_points(resolved, issues)
        out.append(resolved)
    return out


def _load_plugin(folder: Path, name: str, env: dict[str, str] | None):
    """Returns (manifest, points, points source, folder, error); the error is one line."""
    if not folder.is_dir():
        available = sorted(p.name for p in folder.parent.iterdir() if (p / "manifest.yaml").exists()) \
            if folder.parent.is_dir() else []
        return None, None, None, folder, (f"plugin {name!r} not found in {folder.parent}"
                                          + (f"; available: {', '.join(available)}" if available else ""))
    issues: list[ConfigIssue] = []
    msource = load_yaml(folder / "manifest.yaml", env)
    issues += msource.issues
    manifest = validate(PluginManifest, msource.data, msource, (), issues) if not msource.issues else None
    psource = load_yaml(folder / "points.yaml", env)
    issues += psource.issues
    points = validate(PluginPoints, psource.data, psource, (), issues) if not psource.issues else None
    if manifest is not None and manifest.id != name:
        issues.append(msource.issue(("id",), f"manifest id {manifest.id!r} differs from the folder name {name!r}"))
    if issues:
        first = issues[0]
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        return None, None, None, folder, f"plugin {name!r} is broken: {first}{more}"
    return manifest, points, psource, folder, None


def _merge_plugin_points(dev: Device, index: int, ppoints: PluginPoints, psource: YamlSource,
                         site_points: list[ResolvedPoint], source: YamlSource,
                         issues: list[ConfigIssue]) -> list[ResolvedPoint]:
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
        merged = validate(Point, {**rp.point.model_dump(exclude_none=True), **updates}, source,
                          ("devices", index, "override", name), issues)
        if merged is not None:
            base[name] = ResolvedPoint(merged, source, ("devices", index, "override", name))
    for sp in site_points:
        base[sp.point.name] = sp  # a site point with a plugin point's name replaces it
    return list(base.values())


_TABLE_PREFIX = {"coil": 0, "discrete": 1, "input": 3, "holding": 4}


def protocol_address(p: Point, address_base: int, register_numbers: bool) -> tuple[int | None, str | None]:
    """Datasheet address -> 0-based protocol address, or an error saying why not."""
    a = p.address
    if register_numbers:
        prefix = _TABLE_PREFIX[p.table]
        width = 100_000 if a >= 100_000 else 10_000  # 400001-style (6 digits) or 40001-style (5)
        if prefix == 0 and 1 <= a <= 65536:  # coils: 00001.. has no leading digit to check
            return a - 1, None
        if a // width == prefix and 1 <= a % width <= 65536:
            return a % width - 1, None
        return None, (f"register number {a} does not belong to table {p.table} "
                      f"(expected {prefix}0001-{prefix}9999 or {prefix}00001-{prefix}65536)")
    if address_base == 1:
        if a < 1:
            return None, "addresses of this device are 1-based: 0 is not a valid address"
        a -= 1
    if a > 65535:
        return None, f"address {a} is beyond the Modbus range 0-65535 (is this a 40001-style number? " \
                     "then set register_numbers: true)"
    return a, None


def _convert_points(dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
    """Fill ``dev.register_points`` (tag ids are assigned later by build_plant)."""
    base = dev.manifest.address_base if dev.manifest else dev.config.address_base
    numbers = dev.manifest.register_numbers if dev.manifest else dev.config.register_numbers
    order_default = dev.config.order
    out: list[RegisterPoint] = []
    for rp in dev.points:
        p = rp.point
        if p.group not in dev.poll_groups:
            issues.append(rp.source.issue((*rp.path, "group"),
                                          f"no poll group {p.group!r}; groups: {', '.join(dev.poll_groups)}", p.group))
        addr, error = protocol_address(p, base, numbers)
        if error:
            issues.append(rp.source.issue((*rp.path, "address"), error, p.address))
            continue
        rpoint = RegisterPoint(
            tag_id=-1, name=p.name, table=Table(p.table), address=addr, dtype=p.type,
            order=p.order or order_default, bit=p.bit, length=p.length or 0, scale=p.scale, offset=p.offset,
            low=p.range[0] if p.range else None, high=p.range[1] if p.range else None, clamp=p.clamp,
            enum=tuple(sorted(p.enum.items())) if p.enum else None, writable=p.writable,
        )
        if rpoint.end > 65536:
            issues.append(rp.source.issue((*rp.path, "address"),
                                          f"point spans {rpoint.count} registers from {addr}: beyond address 65535",
                                          p.address))
            continue
        out.append(rpoint)
    dev.register_points = out


# ----------------------------------------------------------------------------- plant


def build_plant(loaded: LoadedConfig) -> Plant:
    """Assign tag ids (site order) and build the runtime Plant; fills RegisterPoint.tag_id."""
    plant = Plant(loaded.site)
    bus_devices: dict[str, list[str]] = {b.name: [] for b in loaded.config.buses}
    for dev in loaded.devices:
        bus_devices[dev.bus.name].append(dev.name)
        ids: list[int] = []
        by_name = {rp.point.name: rp.point for rp in dev.points}
        new_points: list[RegisterPoint] = []
        for rpoint in dev.register_points:
            p = by_name[rpoint.name]
            tag = TagInfo(
                id=len(plant.tags), device=dev.name, name=p.name, bus=dev.bus.name, dtype=p.type, unit=p.unit,
                low=p.range[0] if p.range else None, high=p.range[1] if p.range else None,
                writable=p.writable, deadband=p.deadband, description=p.description, enum=p.enum,
                interval_ms=dev.interval_ms(p.group), group=p.panel or p.unit or "values",
                plugin=dev.config.plugin,
            )
            plant.tags.append(tag)
            ids.append(tag.id)
            new_points.append(_with_id(rpoint, tag.id))
        dev.register_points = new_points
        plant.devices.append(DeviceInfo(dev.name, dev.bus.name, dev.config.unit_id, dev.config.plugin,
                                        dev.manifest.version if dev.manifest else None, tuple(ids)))
    plant.buses = [BusInfo(b.name, b.type, tuple(bus_devices[b.name])) for b in loaded.config.buses]
    return plant


def _with_id(p: RegisterPoint, tag_id: int) -> RegisterPoint:
    from dataclasses import replace

    return replace(p, tag_id=tag_id)
