"""The driver protocol: everything the protocol-neutral core knows of a field driver.

A driver is one installed object registered under the ``edge.drivers`` entry-point group
(``edge.driver.registry``). It brings

* its configuration schema: pydantic models of its bus types, its devices and its points
  (subclasses of :class:`edge.config.models.BusConfig`, ``DeviceConfig`` and ``PointConfig``),
  and of its plugins' ``points.yaml`` and ``manifest.yaml``;
* the checks of a loaded configuration that need its knowledge (addresses, shared lines,
  the bus load), and the engineering type of each of its points;
* at run time a :class:`DriverSession` per appliance, which owns what devices share (serial
  lines, TCP connections) and opens one :class:`DeviceRuntime` per configured device: it polls,
  publishes :class:`~edge.core.model.SampleBatch` objects through the context it was given,
  writes a tag, and reports its diagnostics;
* the ``edge`` subcommands it adds (``scan``, ``probe``...), its simulator, and its entries for
  ``edge doctor``.

The core (configuration loading, the appliance, outputs, API, CLI shell) calls nothing else of a
driver; a driver may use anything of the core (``edge.core.model`` above all).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edge.core.model import DeviceDiagnostics, SampleBatch, WriteResult

if TYPE_CHECKING:
    from edge.config.errors import ConfigIssue
    from edge.config.loader import LoadedConfig, ResolvedDevice
    from edge.config.models import BusConfig, DeviceConfig, PointConfig
    from edge.plugins.loader import LoadedPlugin
    from edge.plugins.models import PluginManifest, PluginPoints

Publish = Callable[[SampleBatch], None]


@dataclass
class DeviceContext:
    """What the core hands a driver for one device it opens."""

    tag_ids: Mapping[str, int]  # point name -> tag id in the plant (the driver's batches carry these)
    publish: Publish  # where the device's batches go (derived tags, then the pipeline)
    diag: DeviceDiagnostics  # the device's counters and state, read by every output
    stats_window_s: float = 60.0  # latency and jitter percentiles cover this window
    phase: float = 0.0  # where in its interval the device polls (0..1): spreads a line's load


@dataclass(frozen=True)
class ResolveContext:
    """What a driver may use when it resolves a device at load time."""

    data_dir: Path  # the site's data directory (absolute): caches of what devices answered
    discover: bool = False  # may ask devices now (``edge run``, ``edge read``); else use the caches


@runtime_checkable
class DeviceRuntime(Protocol):
    """One running device: polls until cancelled, writes tags, keeps its diagnostics."""

    diag: DeviceDiagnostics

    async def run(self) -> None:
        """Poll at the configured intervals until cancelled; never raises for device faults."""

    async def poll_once(self) -> None:
        """One poll of every poll group, published through the context (``edge read``)."""

    async def write(self, tag_id: int, value: object) -> WriteResult:
        """Write one tag in engineering units; the result says exactly what happened."""

    def renumber(self, id_map: np.ndarray) -> None:
        """A reload renumbered the plant's tags: ``id_map[old_id]`` is the new id (-1: gone)."""

    def set_publish(self, publish: Publish) -> None:
        """Send batches elsewhere from now on (after a reload rebuilt the derived-tag stage)."""

    @property
    def line(self) -> str:
        """The name of the physical line or connection the device is on (status pages)."""


@dataclass(frozen=True)
class LineLoad:
    """Estimated load of one line: what ``edge check`` prints and refuses above 100 %."""

    bus: str
    line: str
    load_pct: float
    requests_per_s: float


class DriverSession(Protocol):
    """A driver's part of one running appliance: shared lines and the devices on them."""

    def open_device(self, dev: ResolvedDevice, ctx: DeviceContext) -> DeviceRuntime:
        """A runtime for one configured (and not quarantined) device; does no I/O yet."""

    def release_unused(self, in_use: Iterable[DeviceRuntime]) -> None:
        """Close lines that none of ``in_use`` needs any more (after a reload)."""

    def close(self) -> None:
        """Release every line (ports, sockets); called once, at the appliance's stop."""

    def update_stats(self) -> None:
        """Refresh the latency and jitter percentiles in the ``diag`` of every device it opened and
        that is still in use (called by the status loop once per status interval; one pass for
        all devices, so that hundreds of devices do not cost hundreds of small computations)."""

    def line_utilisation(self, elapsed_s: float) -> dict[str, float]:
        """Share of wall time each line spent in transactions, in percent."""


@dataclass(frozen=True)
class Command:
    """An ``edge`` subcommand a driver contributes (``scan``, ``probe``, ``plan``...)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Simulation(Protocol):
    """A driver's simulated twin of configured devices (``edge simulate``, ``edge demo``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def address(self, device: str) -> str: ...

    def set_fault(self, device: str, fault: str, **params: Any) -> None: ...


class Driver(Protocol):
    """A field driver as the registry hands it to the core."""

    name: str
    description: str
    bus_models: Mapping[str, type[BusConfig]]  # the ``type:`` of a bus -> its configuration model
    device_model: type[DeviceConfig]
    point_model: type[PointConfig]
    manifest_model: type[PluginManifest]
    plugin_points_model: type[PluginPoints]

    builtin_plugins: frozenset[str]  # plugin names the driver builds itself, per device (``sunspec``)

    def resolve(self, dev: ResolvedDevice, issues: list[ConfigIssue]) -> None:
        """Check the device's points against the protocol and keep the driver's form of them
        in ``dev.driver_data`` (e.g. protocol addresses); problems go to ``issues``."""

    def builtin_plugin(self, dev: ResolvedDevice, ctx: ResolveContext, issues: list[ConfigIssue]) -> LoadedPlugin | None:
        """The plugin named in ``builtin_plugins`` for this device (e.g. built from the models it
        serves), or None when nothing is known of it yet (a warning in ``issues`` says why)."""

    def check(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice], issues: list[ConfigIssue]) -> None:
        """Checks across this driver's buses and devices (shared ports, addresses, timeouts)."""

    def line_loads(self, loaded: LoadedConfig, devices: Sequence[ResolvedDevice],
                   issues: list[ConfigIssue] | None = None) -> list[LineLoad]:
        """Estimated load of each line this driver's devices use."""

    def tag_type(self, point: PointConfig) -> tuple[str, float | None]:
        """The engineering value's type of a point (``float64`` for a scaled integer) and its
        resolution (the smallest step, or None for a continuous value)."""

    def type_range(self, point: PointConfig) -> tuple[float, float] | None:
        """The engineering values the point's type on the device can represent, when that bounds a
        scaled value (a uint16 x 0.1: 0..6553.5); None when the engineering type says it already
        (unscaled integers), for floats and for what the driver cannot tell. Optional for a driver."""

    def device_address(self, dev: ResolvedDevice) -> str:
        """Where the device is on its bus, in words (``unit 3``): shown by OPC UA and the status page."""

    def timeout_s(self, dev: ResolvedDevice) -> float:
        """How long one request to the device may take (writes from the CLI wait that long)."""

    def session(self) -> DriverSession:
        """A new session for one running appliance (or one CLI command)."""

    def simulation(self, devices: Sequence[ResolvedDevice], seed: int = 0) -> Simulation | None:
        """The simulated twin of ``devices``, or None if the driver has no simulator."""

    def commands(self) -> list[Command]:
        """The ``edge`` subcommands this driver adds."""

    def point_location(self, dev: ResolvedDevice, point: str) -> str:
        """Where a point is read, in the protocol's terms (``holding 148 bit 1``): ``edge plugin check``."""

    def plugin_problems(self, plugin: LoadedPlugin) -> list[str]:
        """What is wrong with a loaded plugin beyond its schema (e.g. invalid simulator hints), as
        ``file:line: ...`` lines."""

    def plugin_test_site(self, plugin: str, plugins_dir: Path, data_dir: Path, timeout_ms: int) -> dict[str, Any]:
        """A one-device site configuration (as data) that polls ``plugin`` on a bus this driver
        can simulate on loopback (``edge plugin check``)."""

    def doctor(self) -> list[tuple[str, bool, str]]:
        """``edge doctor`` lines: (what, ok, detail)."""

