"""Loads one device plugin folder: manifest.yaml, points.yaml and, if derived tags need it, hooks.py.

A plugin that cannot be loaded is returned with a one-line ``error`` (file:line and the
reason), never raised: ``edge check`` reports it, ``edge run`` quarantines only the devices
that use it. Only plugins that a site configuration names are loaded.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from edge import __version__
from edge.config.errors import ConfigIssue
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource, load_yaml
from edge.driver import registry
from edge.driver.protocol import Driver
from edge.plugin_api import DEFAULT_BUDGET_MS
from edge.plugins.models import DerivedPoint, PluginManifest, PluginPoints


@dataclass(frozen=True)
class Hook:
    derived: DerivedPoint
    function: Callable[..., object]
    budget_ms: float


@dataclass
class LoadedPlugin:
    name: str
    folder: Path
    manifest: PluginManifest | None = None
    points: PluginPoints | None = None
    source: YamlSource | None = None
    hooks: list[Hook] = field(default_factory=list)
    error: str | None = None
    issues: list[ConfigIssue] = field(default_factory=list)  # every problem, each with its file and line


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def load_plugin(folder: Path, name: str, env: dict[str, str] | None) -> LoadedPlugin:
    """Load plugin ``name`` from ``folder`` (the site's plugins directory), else from an installed package."""
    if not folder.is_dir():
        folder = registry.plugin_folder(name) or folder
    plugin = LoadedPlugin(name, folder)
    if not folder.is_dir():
        local = sorted(p.name for p in folder.parent.iterdir() if (p / "manifest.yaml").exists()) \
            if folder.parent.is_dir() else []
        available = sorted(set(local) | set(registry.installed_plugins()))
        plugin.error = (f"plugin {name!r} not found in {folder.parent} nor in installed packages"
                        + (f"; available: {', '.join(available)}" if available else ""))
        return plugin
    issues: list[ConfigIssue] = []
    msource = load_yaml(folder / "manifest.yaml", env)
    issues += msource.issues
    driver = _driver_of(msource, issues) if not msource.issues else None
    manifest = validate(driver.manifest_model, msource.data, msource, (), issues) if driver is not None else None
    psource = load_yaml(folder / "points.yaml", env)
    issues += psource.issues
    points = validate(driver.plugin_points_model, psource.data, psource, (), issues) \
        if driver is not None and not psource.issues else None
    if manifest is not None:
        if manifest.id != name:
            issues.append(msource.issue(("id",), f"manifest id {manifest.id!r} differs from the folder name {name!r}"))
        if _version(manifest.min_appliance_version) > _version(__version__):
            issues.append(msource.issue(("min_appliance_version",),
                                        f"needs appliance {manifest.min_appliance_version}, this is {__version__}"))
    if points is not None:
        issues += _check_derived(points, psource)
    if issues:
        more = f" (+{len(issues) - 1} more, listed below)" if len(issues) > 1 else ""
        plugin.error = f"plugin {name!r} is broken: {issues[0]}{more}"
        plugin.issues = issues
        return plugin
    plugin.manifest, plugin.points, plugin.source = manifest, points, psource
    if points is not None and points.derived:
        plugin.hooks, plugin.error = _load_hooks(folder, name, points, psource)
    return plugin


def _driver_of(source: YamlSource, issues: list[ConfigIssue]) -> Driver | None:
    """The registered driver a manifest names (``driver:``, default modbus), or None with an issue."""
    data = source.data if isinstance(source.data, dict) else {}
    name = data.get("driver", "modbus")
    found = registry.drivers()
    if not isinstance(name, str) or name not in found:
        issues.append(source.issue(("driver",), f"no field driver {name!r} is installed; drivers: "
                                   f"{', '.join(found)}", name))
        return None
    return found[name]


def _check_derived(points: PluginPoints, source: YamlSource) -> list[ConfigIssue]:
    names = {p.name for p in points.points}
    out = []
    for i, d in enumerate(points.derived):
        if d.name in names:
            out.append(source.issue(("derived", i, "name"), f"{d.name!r} is already a point of this plugin", d.name))
        for j, inp in enumerate(d.inputs):
            if inp not in names:
                out.append(source.issue(("derived", i, "inputs", j), f"no point {inp!r} in this plugin", inp))
    return out


def _load_hooks(folder: Path, name: str, points: PluginPoints,
                source: YamlSource) -> tuple[list[Hook], str | None]:
    path = folder / "hooks.py"
    if not path.exists():
        return [], f"plugin {name!r} is broken: {path}: missing; derived tags need their hook functions"
    try:
        module = _import(path, f"edge_plugins.{name}.hooks")
    except SyntaxError as exc:
        return [], f"plugin {name!r} is broken: {path}:{exc.lineno}: syntax error: {exc.msg}"
    except Exception as exc:  # noqa: BLE001 - a plugin's import may fail in any way; report it in one line
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return [], f"plugin {name!r} is broken: {frame.filename}:{frame.lineno}: {type(exc).__name__}: {exc}"
    hooks = []
    for i, d in enumerate(points.derived):
        fn = getattr(module, d.hook, None)
        where = f"{source.file}:{source.line_of(('derived', i, 'hook'))}"
        if fn is None or not getattr(fn, "__edge_hook__", False):
            what = "is not marked with @hook" if fn is not None else "does not exist"
            return [], f"plugin {name!r} is broken: {where}: hook {d.hook!r} {what} in {path.name}"
        if not _accepts(fn, len(d.inputs)):
            return [], (f"plugin {name!r} is broken: {where}: hook {d.hook!r} must take {len(d.inputs)} "
                        f"argument(s) ({', '.join(d.inputs)})")
        hooks.append(Hook(d, fn, getattr(fn, "__edge_budget_ms__", DEFAULT_BUDGET_MS)))
    return hooks, None


def _import(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(module_name, None)  # a reload must read the file again
    spec.loader.exec_module(module)
    return module


def _accepts(fn: Callable[..., object], n: int) -> bool:
    try:
        sig = inspect.signature(fn)
        sig.bind(*([0.0] * n))
    except (TypeError, ValueError):
        return False
    return True
