"""Drivers and plugins that installed packages contribute through entry points.

Two groups: ``edge.drivers`` (name -> a DriverInfo-like object with ``name`` and
``bus_types``; the built-in Modbus driver is registered by this distribution's setup.py) and
``edge.plugins`` (name -> a module or package whose folder holds ``manifest.yaml`` and
``points.yaml``, or a path to such a folder). Nothing is scanned by class name, and a plugin
is only loaded when a site configuration names it.
"""
from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

log = logging.getLogger("edge.driver.registry")


@cache
def drivers() -> dict[str, object]:
    """Registered field drivers by name (the built-in one is always there, even uninstalled)."""
    from drivers.modbus import DRIVER

    found: dict[str, object] = {DRIVER.name: DRIVER}
    for ep in entry_points(group="edge.drivers"):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not stop the appliance
            log.error("driver %s from %s cannot be loaded: %s", ep.name, ep.value, exc)
    return found


def plugin_folder(name: str) -> Path | None:
    """The folder of a plugin contributed by an installed package, or None."""
    for ep in entry_points(group="edge.plugins"):
        if ep.name != name:
            continue
        try:
            target = ep.load()
        except Exception as exc:  # noqa: BLE001
            log.error("plugin %s from %s cannot be loaded: %s", ep.name, ep.value, exc)
            return None
        if isinstance(target, ModuleType) and getattr(target, "__file__", None):
            return Path(target.__file__).parent
        return Path(str(target))
    return None


def installed_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="edge.plugins"))
