"""A loaded configuration as every component receives it: validated, merged, paths absolute.

:func:`edge.config.loader.load_config` builds these once; nothing downstream re-reads YAML or
resolves a path again. Plain data: the loader fills it, the checks and the runtime read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.errors import ConfigIssue
from edge.config.models import BusConfig, DeviceConfig, PointConfig, PollGroup, SiteConfig
from edge.config.yamlsource import YamlSource
from edge.core.model import Plant
from edge.plugins.loader import Hook
from edge.plugins.models import PluginManifest, PluginPoints

if TYPE_CHECKING:
    from edge.driver.protocol import Driver


@dataclass
class ResolvedPoint:
    """A point after plugin merge and overrides, with where it was written."""

    point: PointConfig  # the driver's point model
    source: YamlSource
    path: tuple[Any, ...]  # key path of the point in ``source``


@dataclass
class ResolvedDevice:
    """One configured device with its plugin merged in and its driver's form of its points."""

    config: DeviceConfig  # the driver's device model
    bus: BusConfig  # the driver's bus model
    driver: Driver
    index: int  # position in the site file's devices list
    points: list[ResolvedPoint]
    poll_groups: dict[str, PollGroup]  # including "default"
    manifest: PluginManifest | None = None
    plugin_points: PluginPoints | None = None
    plugin_dir: Path | None = None
    plugin_error: str | None = None  # set when the plugin failed to load (the device is quarantined)
    hooks: list[Hook] = field(default_factory=list)  # derived tags and their hook functions
    driver_data: Any = None  # what the driver's resolve() derived (e.g. Modbus protocol addresses)
    point_errors: int = 0  # errors found in its points: checks that plan its polling skip it

    @property
    def name(self) -> str:
        return self.config.name

    def interval_ms(self, group: str) -> int:
        return self.poll_groups[group].interval_ms

    @property
    def runnable(self) -> bool:
        """Enabled and with a plugin that loaded: the appliance polls it."""
        return self.config.enabled and self.plugin_error is None


@dataclass
class LoadedConfig:
    path: Path
    source: YamlSource
    config: SiteConfig  # every path in it is absolute (edge.config.paths)
    devices: list[ResolvedDevice]
    plant: Plant
    issues: list[ConfigIssue]  # warnings (errors raise)
    #: the file's index of each bus and device kept in ``config`` (items that failed the schema are left out)
    file_indices: dict[str, list[int]] = field(default_factory=dict)

    def file_index(self, section: str, position: int) -> int:
        """The index in the file of the ``position``-th item of ``config.buses`` or ``config.devices``."""
        kept = self.file_indices.get(section)
        return kept[position] if kept is not None and 0 <= position < len(kept) else position

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

    @property
    def data_dir(self) -> Path:
        return Path(self.config.runtime.data_dir)
