"""Loads a site configuration once: YAML -> pydantic models -> resolved devices and the plant.

Everything downstream uses :class:`LoadedConfig`; nothing re-parses YAML. All problems of a
file are collected (schema errors together; cross-object checks together once the schema
holds) and raised as one :class:`ConfigError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drivers.modbus.points import REGISTER_COUNT, RegisterPoint, Table
from edge.config.errors import ConfigError, ConfigIssue
from edge.config.models import TYPE_BITS, Bus, Device, Point, PollGroup, SiteConfig
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource, load_yaml
from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo
from edge.plugins.loader import Hook, LoadedPlugin, load_plugin
from edge.plugins.models import PluginManifest, PluginPoints


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
    hooks: list[Hook] = field(default_factory=list)  # derived tags and their hook functions
    default_order: str = "ABCD"  # the site device's order if it sets one, else the plugin's
    register_points: list[RegisterPoint] = field(default_factory=list)
    invalid_defaults: dict[str, list[Any]] = field(default_factory=dict)  # the plugin's sentinels per type
    sunspec: Any = None  # the SunSpec model chain of a ``plugin: sunspec`` device
    point_errors: int = 0  # errors found in its points: checks that plan its polling skip it

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
    index_maps: IndexMaps | None = None  # set when parts that failed the schema were left out

    def file_index(self, section: str, position: int) -> int:
        """The index in the file of the ``position``-th item of a top-level list (buses, devices)."""
        return self.index_maps.index((section,), position) if self.index_maps else position

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


def load_config(path: str | Path, env: dict[str, str] | None = None, strict_plugins: bool = True,
                discover: bool = False) -> LoadedConfig:
    """Load and check a site configuration; raise ConfigError listing every error found.

    With ``strict_plugins`` (``edge check``) a broken plugin is an error; without it (``edge run``)
    the devices using it are kept, quarantined, with the plugin's error, so other devices run.
    With ``discover``, devices whose points come from the device itself (``plugin: sunspec``) are
    asked now; otherwise what they answered last time (a cache in the data directory) is used.
    """
    path = Path(path)
    source = load_yaml(path, env)
    issues = list(source.issues)
    if issues:
        raise ConfigError(issues)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue((), "the file must be a mapping of sections (site, buses, devices, outputs)")])
    site = validate(SiteConfig, source.data, source, (), issues)
    index = IndexMaps()
    if site is None:  # go on with what is valid, so plugin and cross-object errors show in the same run
        site, index = _salvage(source, issues)
        if site is None:
            raise ConfigError(issues)
    from edge.config.checks import run_checks  # local: checks import this module's types

    devices = _resolve_devices(site, source, path.parent, env, issues, strict_plugins, discover, index)
    loaded = LoadedConfig(path, source, site, devices, Plant(site.site.name), [], index)
    run_checks(loaded, issues)
    if _errors(issues):
        raise ConfigError(issues)
    loaded.plant = build_plant(loaded)
    loaded.issues = issues
    return loaded


def _errors(issues: list[ConfigIssue]) -> bool:
    return any(i.severity == "error" for i in issues)


_GONE = object()  # an item removed by the salvage (kept in place so indices stay those of the file)


def _salvage(source: YamlSource, issues: list[ConfigIssue]) -> tuple[SiteConfig | None, IndexMaps]:
    """The configuration without the list items (points, devices, buses, ...) that failed the schema.

    Errors are already in ``issues``; this only lets the later stages (plugins, cross-object
    checks) look at the rest, so one run shows every problem. Returns the salvaged config (None
    if a required part failed) and, per list, the file's index of each kept item.
    """
    import copy

    from pydantic import ValidationError

    data = copy.deepcopy(source.data)
    maps: dict[tuple[Any, ...], list[int]] = {}
    for _ in range(50):  # each round removes at least one item
        maps = {}
        clean = _compact(data, (), maps)
        try:
            return SiteConfig.model_validate(clean), IndexMaps(maps)
        except ValidationError as exc:
            cut = False
            for err in exc.errors(include_url=False):
                cut |= _cut(data, _to_file_loc(tuple(err["loc"]), maps))
            if not cut:
                return None, IndexMaps(maps)
    return None, IndexMaps(maps)


@dataclass
class IndexMaps:
    """Per list path (with the file's indices), the file's index of each item the salvage kept."""

    maps: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)

    def index(self, path: tuple[Any, ...], i: int) -> int:
        kept = self.maps.get(path)
        return kept[i] if kept is not None and 0 <= i < len(kept) else i

    def removed(self, source: YamlSource, section: str) -> set[str]:
        """Names of the items of a top-level list that the salvage removed."""
        items = source.data.get(section) if isinstance(source.data, dict) else None
        if not isinstance(items, list):
            return set()
        kept = set(self.maps.get((section,), range(len(items))))
        return {str(x.get("name")) for i, x in enumerate(items) if i not in kept and isinstance(x, dict)}


def _compact(node: Any, path: tuple[Any, ...], maps: dict[tuple[Any, ...], list[int]]) -> Any:
    if isinstance(node, list):
        kept = [i for i, x in enumerate(node) if x is not _GONE]
        maps[path] = kept
        return [_compact(node[i], (*path, i), maps) for i in kept]
    if isinstance(node, dict):
        return {k: _compact(v, (*path, k), maps) for k, v in node.items() if v is not _GONE}
    return node


def _to_file_loc(loc: tuple[Any, ...], maps: dict[tuple[Any, ...], list[int]]) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in loc:
        kept = maps.get(tuple(out))
        out.append(kept[part] if isinstance(part, int) and kept is not None and 0 <= part < len(kept) else part)
    return tuple(out)


def _cut(data: Any, loc: tuple[Any, ...]) -> bool:
    """Mark the innermost list item on ``loc`` removed (or drop an optional section); True if done."""
    node, parents = data, []
    for part in loc:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) \
                and 0 <= part < len(node):
            parents.append((node, part))
            node = node[part]
        else:
            break
    for container, key in reversed(parents):
        if isinstance(container, list) and container[key] is not _GONE:
            container[key] = _GONE
            return True
    section = parents[0][1] if parents else (loc[0] if loc else None)
    if section in ("outputs", "alarms", "rules", "api", "runtime", "plugins_dir") and isinstance(data, dict) \
            and data.get(section, _GONE) is not _GONE:
        data[section] = _GONE
        return True
    return False


# ----------------------------------------------------------------------------- devices and plugins


def _resolve_devices(site: SiteConfig, source: YamlSource, base: Path, env: dict[str, str] | None,
                     issues: list[ConfigIssue], strict_plugins: bool, discover: bool = False,
                     index_maps: IndexMaps | None = None) -> list[ResolvedDevice]:
    buses = {b.name: b for b in site.buses}
    plugins_dir = (base / site.plugins_dir).resolve()
    cache: dict[str, LoadedPlugin] = {}
    out: list[ResolvedDevice] = []
    maps = index_maps or IndexMaps()
    reported_plugins: set[str] = set()
    removed_buses = maps.removed(source, "buses")
    for position, dev in enumerate(site.devices):
        index = maps.index(("devices",), position)  # the device's index in the file (for lines)
        bus = buses.get(dev.bus)
        if bus is None:
            if dev.bus not in removed_buses:  # a bus with its own schema error is reported once
                issues.append(source.issue(("devices", index, "bus"),
                                           f"no bus named {dev.bus!r}; buses: {', '.join(buses)}", dev.bus))
            continue
        groups = {"default": PollGroup(interval_ms=dev.interval_ms), **dev.poll_groups}
        resolved = ResolvedDevice(dev, bus, index, [], groups, default_order=dev.order)
        order_set_by_site = "order" in source.data["devices"][index]
        site_points = [ResolvedPoint(p, source, ("devices", index, "points", maps.index(("devices", index, "points"), i)))
                       for i, p in enumerate(dev.points)]
        if dev.plugin == SUNSPEC and not (plugins_dir / SUNSPEC).is_dir():
            from edge.config.sunspec import sunspec_points

            data_dir = Path(site.runtime.data_dir.format(site=site.site.name))
            found = sunspec_points(resolved, data_dir if data_dir.is_absolute() else (base / data_dir).resolve(),
                                   discover, issues, source)
            resolved.points = _merge_generated(dev, index, found, site_points, source, issues)
        elif dev.plugin:
            if dev.plugin not in cache:
                cache[dev.plugin] = load_plugin(plugins_dir / dev.plugin, dev.plugin, env)
            plugin = cache[dev.plugin]
            manifest, ppoints, psource, error = plugin.manifest, plugin.points, plugin.source, plugin.error
            resolved.plugin_dir = plugin.folder
            if error is not None:
                resolved.plugin_error = error
                severity = "error" if strict_plugins else "warning"
                first = plugin.name not in reported_plugins
                reported_plugins.add(plugin.name)
                if strict_plugins:
                    issues.append(source.issue(("devices", index, "plugin"), error, dev.plugin))
                else:
                    issues.append(source.issue(("devices", index, "plugin"), error + " (device quarantined)",
                                               dev.plugin, "warning"))
                if first:  # every problem of the plugin's files, once, each with its own file and line
                    issues.extend(replace(i, severity=severity) for i in plugin.issues[1:])
                resolved.points = site_points
            else:
                assert manifest is not None and ppoints is not None and psource is not None
                resolved.manifest = manifest
                resolved.points = _merge_plugin_points(dev, index, ppoints, psource, site_points, source, issues)
                if ppoints.interval_ms and "interval_ms" not in source.data["devices"][index]:
                    groups["default"] = PollGroup(interval_ms=ppoints.interval_ms)
                resolved.poll_groups = {**ppoints.poll_groups, **groups}
                if not order_set_by_site:
                    resolved.default_order = ppoints.order
                resolved.invalid_defaults = dict(ppoints.invalid)
                resolved.hooks = _site_hooks(plugin.hooks, resolved, source, issues)
        else:
            resolved.points = site_points
        before = len(issues)
        resolved.points = expand_named_bits(resolved.points, issues)
        _convert_points(resolved, issues)
        resolved.point_errors = sum(i.severity == "error" for i in issues[before:])
        out.append(resolved)
    return out


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


def _merge_generated(dev: Device, index: int, generated: list[ResolvedPoint], site_points: list[ResolvedPoint],
                     source: YamlSource, issues: list[ConfigIssue]) -> list[ResolvedPoint]:
    """Points generated from the device (SunSpec) with the site's drop, override and own points."""
    base = {rp.point.name: rp for rp in generated}
    if not base:
        return site_points
    for j, name in enumerate(dev.drop):
        if base.pop(name, None) is None:
            issues.append(source.issue(("devices", index, "drop", j), f"the device serves no point {name!r}", name))
    for name, change in dev.override.items():
        rp = base.get(name)
        if rp is None:
            issues.append(source.issue(("devices", index, "override", name), f"the device serves no point {name!r}",
                                       name))
            continue
        merged = validate(Point, {**rp.point.model_dump(exclude_none=True), **change.model_dump(exclude_none=True)},
                          source, ("devices", index, "override", name), issues)
        if merged is not None:
            base[name] = ResolvedPoint(merged, source, ("devices", index, "override", name))
    for sp in site_points:
        base[sp.point.name] = sp
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


SUNSPEC = "sunspec"  # the plugin name that means "the points come from the device's SunSpec models"
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


def expand_named_bits(points: list[ResolvedPoint], issues: list[ConfigIssue]) -> list[ResolvedPoint]:
    """Each named bit of a point (``bits: {0: ground_fault}``) becomes a bool tag
    ``<point>_<name>`` read from that bit of the point's value, right after the point."""
    out: list[ResolvedPoint] = []
    for rp in points:
        out.append(rp)
        p = rp.point
        for bit, label in sorted((p.bits or {}).items()):
            name = f"{p.name}_{label}"
            data = {"name": name, "table": p.table, "address": p.address, "type": p.type, "bit": bit,
                    "order": p.order, "group": p.group, "panel": p.panel,
                    "description": f"bit {bit} of {p.name}: {label}"}
            if p.invalid is not None:
                data["invalid"] = p.invalid
            issue_count = len(issues)
            point = validate(Point, {k: v for k, v in data.items() if v is not None}, rp.source,
                             (*rp.path, "bits", bit), issues)
            if point is None:
                for i in range(issue_count, len(issues)):  # say which generated tag failed
                    issues[i] = ConfigIssue(issues[i].file, issues[i].line, issues[i].path,
                                            f"named bit {bit} ({label!r}) makes tag {name!r}: {issues[i].message}",
                                            issues[i].value)
                continue
            out.append(ResolvedPoint(point, rp.source, (*rp.path, "bits", bit)))
    return out


def _sentinels(p: Point, defaults: dict[str, list[Any]]) -> tuple[tuple[int, ...], bool]:
    """The raw patterns (unsigned) and the all-NUL flag of a point: its own, else the plugin's for its type."""
    values = p.invalid if p.invalid is not None else defaults.get(p.type, [])
    if p.type in ("string", "bool"):
        return (), "all_nul" in values and p.type == "string"
    mask = (1 << (16 * REGISTER_COUNT[p.type])) - 1
    return tuple(sorted({int(v) & mask for v in values if v != "all_nul"})), False


def _scale_factor_address(dev: ResolvedDevice, rp: ResolvedPoint, base: int, numbers: bool,
                          issues: list[ConfigIssue]) -> int | None:
    """Protocol address of the int16 point a point names in ``scale_factor``, or an issue saying why not."""
    p = rp.point
    target = next((other.point for other in dev.points if other.point.name == p.scale_factor), None)
    problem = None
    if target is None:
        problem = f"no point {p.scale_factor!r} in device {dev.name!r} to take the scale factor from"
    elif target.type != "int16" or target.table != p.table or target.bit is not None:
        problem = (f"scale factor {p.scale_factor!r} must be an int16 register in the {p.table} table, "
                   f"not {target.type} in {target.table}")
    if problem is None:
        assert target is not None
        addr, problem = protocol_address(target, base, numbers)
        if problem is None:
            return addr
    issues.append(rp.source.issue((*rp.path, "scale_factor"), problem, p.scale_factor))
    return None


def _convert_points(dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
    """Fill ``dev.register_points`` (tag ids are assigned later by build_plant)."""
    base = dev.manifest.address_base if dev.manifest else dev.config.address_base
    numbers = dev.manifest.register_numbers if dev.manifest else dev.config.register_numbers
    order_default = dev.default_order
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
        sf_address = None
        if p.scale_factor is not None:
            sf_address = _scale_factor_address(dev, rp, base, numbers, issues)
            if sf_address is None:
                continue
        invalid, nul = _sentinels(p, dev.invalid_defaults)
        is_bit = p.bit is not None
        rpoint = RegisterPoint(
            tag_id=-1, name=p.name, table=Table(p.table), address=addr, dtype="bool" if is_bit else p.type,
            order=p.order or order_default, bit=p.bit, length=p.length or 0, scale=p.scale, offset=p.offset,
            low=p.range[0] if p.range else None, high=p.range[1] if p.range else None, clamp=p.clamp,
            enum=tuple(sorted(p.enum.items())) if p.enum else None, writable=p.writable,
            invalid=invalid, nul_invalid=nul, sf_address=sf_address,
            word=f"uint{TYPE_BITS[p.type]}" if is_bit and p.type != "bool" else None,
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
            eng, resolution = engineering_type(p)
            tag = TagInfo(
                id=len(plant.tags), device=dev.name, name=p.name, bus=dev.bus.name, dtype=eng, unit=p.unit,
                low=p.range[0] if p.range else None, high=p.range[1] if p.range else None,
                writable=p.writable, deadband=p.deadband, description=p.description, enum=p.enum, bits=p.bits,
                interval_ms=dev.interval_ms(p.group), group=p.panel or p.unit or "values",
                plugin=dev.config.plugin, raw_dtype=p.type if eng != p.type else None, resolution=resolution,
            )
            plant.tags.append(tag)
            ids.append(tag.id)
            new_points.append(_with_id(rpoint, tag.id))
        dev.register_points = new_points
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
        plant.devices.append(DeviceInfo(dev.name, dev.bus.name, dev.config.unit_id, dev.config.plugin,
                                        dev.manifest.version if dev.manifest else None, tuple(ids)))
    plant.buses = [BusInfo(b.name, b.type, tuple(bus_devices[b.name])) for b in loaded.config.buses]
    return plant


_INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")


def engineering_type(p: Point) -> tuple[str, float | None]:
    """The type of a point's engineering value downstream, and its resolution.

    A scaled or offset value is a Double everywhere downstream (OPC UA, history, API), never
    its raw integer type: 97 x 0.1 is 9.7, not 9. Unscaled integers keep their type (step 1).
    """
    if p.bit is not None:
        return "bool", None
    if p.scale_factor is not None:  # 10**sf, read with the value: the step changes at run time
        return "float64", None
    scaled = p.scale != 1.0 or p.offset != 0.0
    if p.type in _INTEGER_TYPES:
        return ("float64", abs(p.scale)) if scaled else (p.type, 1.0)
    if p.type == "float32" and scaled:
        return "float64", None
    return p.type, None


def _with_id(p: RegisterPoint, tag_id: int) -> RegisterPoint:
    from dataclasses import replace

    return replace(p, tag_id=tag_id)
