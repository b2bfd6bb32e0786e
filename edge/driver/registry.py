"""Drivers and plugins that installed packages contribute through entry points.

Two groups: ``edge.drivers`` (name -> an object implementing
:class:`edge.driver.protocol.Driver`; this distribution registers ``modbus`` and ``system``) and
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

from edge.driver.protocol import Driver

log = logging.getLogger("edge.driver.registry")


@cache
def drivers() -> dict[str, Driver]:
    """Registered field drivers by name (entry-point group ``edge.drivers``).

    A package whose driver cannot be loaded is logged and left out: it must not stop the
    appliance, whose other drivers go on.
    """
    found: dict[str, Driver] = {}
    for ep in entry_points(group="edge.drivers"):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not stop the appliance
            log.error("driver %s from %s cannot be loaded: %s", ep.name, ep.value, exc)
    return found


def bus_types() -> dict[str, Driver]:
    """Every bus ``type:`` a configuration may use -> the driver that owns it."""
    return {t: d for d in drivers().values() for t in d.bus_models}


def driver_for_bus_type(bus_type: str) -> Driver | None:
    return bus_types().get(bus_type)


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
        if isinstance(target, ModuleType) and target.__file__:
            return Path(target.__file__).parent
        return Path(str(target))
    return None


def installed_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="edge.plugins"))
