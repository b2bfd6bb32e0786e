"""``edge plugin new|list|check``: the technician's tools for device plugins.

``new`` copies ``plugins/_template/`` to a new folder and fills in its id; ``list`` shows every
plugin folder on one line each (broken ones with their error); ``check`` loads one plugin
through the same loader as ``edge run`` (so the same file:line errors), then serves a simulated
device built from the plugin's own ``points.yaml`` on a free loopback TCP port and polls it
with the real appliance, printing every decoded value (derived tags included).
"""
from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from edge.cli.commands import CliError
from edge.cli.commands.simulate import simulations
from edge.config.loader import LoadedConfig, load_config
from edge.core.model import QUALITY_NAMES, Quality, TagInfo
from edge.driver import registry
from edge.plugins.loader import LoadedPlugin, load_plugin
from edge.runtime.app import Appliance
from edge.storage.history import format_value

PROJECT_PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
TEMPLATE = "_template"
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Files of the template that mention its id; ``new`` writes the new id into them.
FILLED = ("manifest.yaml", "points.yaml", "hooks.py", "README.md", "sample.yaml")
CHECK_TIMEOUT_S = 15.0


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=None, metavar="DIR",
                        help="plugins folder (default: ./plugins if it exists, else the project's plugins/)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    new = sub.add_parser("new", parents=[common], help="create plugins/NAME from plugins/_template",
                         description="Copy plugins/_template/ to plugins/NAME/ and fill in its id.")
    new.add_argument("name", help="plugin id: lower-case letters, digits and '_', e.g. acme_pm3000")
    sub.add_parser("list", parents=[common], help="one line per plugin: id, version, vendor, model, points",
                   description="List every plugin folder; broken plugins are listed with their error.")
    check = sub.add_parser("check", parents=[common], help="validate a plugin and poll a simulated device built "
                                                           "from its points.yaml",
                           description="Validate manifest, points and hooks, then poll a simulated twin of the "
                                       "device once and print every decoded value.")
    check.add_argument("name", help="plugin id (its folder name)")


def plugins_dir(arg: str | None) -> Path:
    """The folder holding the plugins: ``--dir``, else ./plugins, else the project's."""
    if arg:
        path = Path(arg)
        if not path.is_dir():
            raise CliError(f"--dir {arg}: no such folder")
        return path.resolve()
    local = Path("plugins")
    return local.resolve() if local.is_dir() else PROJECT_PLUGINS


# ----------------------------------------------------------------------------- new


def new_plugin(folder: Path, name: str) -> Path:
    """Copy the template to ``folder/name`` with its id filled in; refuse to overwrite anything."""
    if not PLUGIN_NAME.match(name):
        raise CliError(f"plugin name {name!r} is not allowed: use lower-case letters, digits and '_', "
                       "starting with a letter (e.g. acme_pm3000)", 2)
    target = folder / name
    if target.exists():
        raise CliError(f"{target} already exists: not overwriting it (pick another name or delete it first)")
    template = folder / TEMPLATE
    if not (template / "manifest.yaml").is_file():
        template = PROJECT_PLUGINS / TEMPLATE
    if not (template / "manifest.yaml").is_file():
        raise CliError(f"no plugin template found in {folder} or {PROJECT_PLUGINS}")
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for fname in FILLED:
        path = target / fname
        if path.is_file():
            path.write_text(path.read_text(encoding="utf-8").replace(TEMPLATE, name), encoding="utf-8")
    return target


def next_steps(target: Path) -> str:
    name = target.name
    return "\n".join([
        f"created {target}",
        "next steps (plugins/README.md explains each one):",
        f"  1. edit {target / 'manifest.yaml'}: name, vendor, model, documentation, address_base",
        f"  2. edit {target / 'points.yaml'}: one line per register of the datasheet's table",
        f"  3. edge plugin check {name}" + ("" if target.parent == plugins_dir(None) else f" --dir {target.parent}"),
        f"  4. copy {target / 'sample.yaml'} into your site's edge.yaml, then: edge check edge.yaml",
        "  5. on site: edge read edge.yaml DEVICE (and edge probe for values that look wrong)",
    ])


# ----------------------------------------------------------------------------- list


def plugin_folders(folder: Path) -> list[Path]:
    """Every sub-folder that looks like a plugin (hidden folders and caches left out)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name != "__pycache__")


def describe(plugin: LoadedPlugin) -> str:
    """One line: id, version, vendor, model, points, derived tags, driver; or the error."""
    if plugin.error or plugin.manifest is None or plugin.points is None:
        return f"{plugin.name:<20} BROKEN  {plugin.error}"
    m, pts = plugin.manifest, plugin.points
    return (f"{m.id:<20} {m.version:<7} {m.vendor[:24]:<24} {m.model[:32]:<32} "
            f"{len(pts.points):>3} points {len(pts.derived):>2} derived  {m.driver}")


def list_plugins(folder: Path) -> tuple[list[str], int]:
    """Lines to print and the number of broken plugins."""
    lines, broken = [], 0
    for path in plugin_folders(folder):
        plugin = load_plugin(path, path.name, None)
        broken += plugin.error is not None
        lines.append(describe(plugin))
    return lines, broken


# ----------------------------------------------------------------------------- check


def check_timeout_ms(plugin: LoadedPlugin) -> int:
    """A request timeout the site checks accept: at most 1 s and never above the fastest poll interval."""
    assert plugin.points is not None
    intervals = [plugin.points.interval_ms or 1000, *(g.interval_ms for g in plugin.points.poll_groups.values())]
    return max(10, min(1000, *intervals))


def format_row(tag: TagInfo, value: float | str, quality: Quality, at: str) -> str:
    """One value row of ``check``: name, value with unit (and enum state), quality, type, where."""
    if quality is not Quality.GOOD:
        shown = "-"
    elif isinstance(value, str):
        shown = repr(value)
    elif math.isnan(value):
        shown = "-"
    elif tag.dtype == "bool":
        shown = "true" if value else "false"
    else:
        shown = format_value(value, tag.dtype) + (f" {tag.unit}" if tag.unit else "")  # full precision
        if tag.enum is not None and float(value).is_integer():
            shown += f" ({tag.enum.get(int(value), 'not in enum')})"
    return f"  {tag.name:<28} {shown:<30} {QUALITY_NAMES[quality]:<26} {at}"


async def poll_once(loaded: LoadedConfig, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[Appliance, bool]:
    """Serve the config's devices from their drivers' simulators, run the appliance until every
    tag has been polled once (or the time is up); return the stopped appliance (its store holds
    the values)."""
    sims = [sim for sim, _ in simulations(loaded, seed=0).values()]
    for sim in sims:
        await sim.start()
    app = Appliance(loaded, audit=False)
    try:
        await app.start()
        deadline = time.monotonic() + timeout_s
        complete = False
        for _ in range(int(timeout_s / 0.05) + 1):
            if bool((app.store.ts_ns > 0).all()):
                complete = True
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await app.stop()
        for sim in sims:
            await sim.stop()
    return app, complete


def check_plugin(folder: Path, name: str) -> tuple[list[str], bool]:
    """Validate, simulate and poll one plugin; lines to print and whether everything was Good."""
    path = folder / name
    plugin = load_plugin(path, name, None)
    if plugin.error:  # every problem, one per line (the first in the summary line)
        return [plugin.error, *(f"  {issue}" for issue in plugin.issues[1:])], False
    assert plugin.manifest is not None and plugin.points is not None
    driver = registry.drivers()[plugin.manifest.driver]
    problems = driver.plugin_problems(plugin)
    if problems:
        return problems, False
    m = plugin.manifest
    lines = [f"{name}: {m.name} ({m.vendor} {m.model}) version {m.version}",
             f"  manifest, {len(plugin.points.points)} points and {len(plugin.hooks)} hook(s): valid"]
    with tempfile.TemporaryDirectory(prefix="edge-plugin-check-") as tmp:
        site = Path(tmp) / "edge.yaml"
        data = driver.plugin_test_site(name, folder, Path(tmp) / "data", check_timeout_ms(plugin))
        site.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        loaded = load_config(site)
        lines += [f"  warning: {issue}" for issue in loaded.issues]
        lines.append(f"  polling a simulated {name} ({loaded.devices[0].bus.type} on "
                     f"{driver.device_address(loaded.devices[0])}) once:")
        app, complete = asyncio.run(poll_once(loaded))
    rows, ok = report(loaded, plugin, app, complete)
    return lines + rows, ok


def report(loaded: LoadedConfig, plugin: LoadedPlugin, app: Appliance, complete: bool) -> tuple[list[str], bool]:
    """One row per tag (register points, then derived tags), the device's last error and a verdict."""
    dev = loaded.devices[0]
    at = {rp.point.name: dev.driver.point_location(dev, rp.point.name) for rp in dev.points}
    at |= {h.derived.name: f"derived  {h.derived.hook}({', '.join(h.derived.inputs)})" for h in plugin.hooks}
    lines, good = [], 0
    for tag in loaded.plant.tags:
        value, quality, ts_ns = app.store.get(tag.id)
        if ts_ns == 0:
            quality = Quality.BAD_NO_COMMUNICATION  # never polled: the store's initial value means nothing
        good += quality is Quality.GOOD
        lines.append(format_row(tag, value, quality, at[tag.name]))
    diag = app.devices[plugin.name].diag
    if diag.last_error:
        lines.append(f"  last error: {diag.last_error}")
    if not complete:
        lines.append(f"  not every tag was polled within {CHECK_TIMEOUT_S:g} s")
    total = len(loaded.plant.tags)
    ok = complete and good == total
    lines.append(f"{plugin.name}: {'OK' if ok else 'FAILED'}: {good} of {total} tags Good")
    return lines, ok


# ----------------------------------------------------------------------------- entry


def run(args: argparse.Namespace) -> int:
    folder = plugins_dir(args.dir)
    if args.action == "new":
        print(next_steps(new_plugin(folder, args.name)))
        return 0
    if args.action == "list":
        lines, broken = list_plugins(folder)
        print("\n".join(lines) if lines else f"no plugins in {folder}")
        print(f"{len(lines)} plugin(s) in {folder}" + (f", {broken} broken" if broken else ""))
        return 1 if broken else 0
    if not (folder / args.name).is_dir():
        available = ", ".join(p.name for p in plugin_folders(folder))
        raise CliError(f"no plugin {args.name!r} in {folder}; available: {available}")
    lines, ok = check_plugin(folder, args.name)
    print("\n".join(lines))
    return 0 if ok else 1
