"""The appliance: builds every part from a loaded configuration, runs it, stops it in order.

Start order: the drivers' sessions and device runtimes, sinks (latest store, then the
outputs), then the pollers. Stop order is the reverse: pollers first (no new data), outputs
flushed, lines closed (serial ports released). Field devices are reached only through the
driver protocol (``edge.driver.protocol``): this module knows no protocol.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import marshal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge.config.models import Runtime
from edge.config.resolved import LoadedConfig, ResolvedDevice
from edge.core.derived import DerivedStage
from edge.core.model import DeviceDiagnostics, DeviceState, Plant, Quality, SampleBatch
from edge.core.pipeline import Pipeline
from edge.core.store import LatestStore
from edge.core.writes import AuditLog, WriteService, WriteTarget
from edge.driver.protocol import DeviceContext, DeviceRuntime, DriverSession, Publish
from edge.intelligence.service import Intelligence
from edge.outputs.manager import Outputs
from edge.runtime.reload import ReloadRefused

if TYPE_CHECKING:
    from edge.runtime.reload import ReloadOutcome

log = logging.getLogger("edge.runtime.app")
#: Successive devices start this far apart (as a share of their interval): an even spread of
#: poll cycles over time for any number of devices, so 500 devices do not all poll at once.
GOLDEN_RATIO_FRACTION = 0.6180339887
GC_THRESHOLDS = (100_000, 50, 100)
RESETTLE_AFTER_RELOAD_S = 30.0


@dataclass
class DeviceRunner:
    """One configured device in the running appliance: its driver runtime (None when it is
    quarantined or disabled), its diagnostics and its polling task."""

    resolved: ResolvedDevice
    diag: DeviceDiagnostics
    runtime: DeviceRuntime | None
    task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def line(self) -> str | None:
        return self.runtime.line if self.runtime is not None else None


def settle_gc() -> None:
    """Keep garbage-collection pauses out of the poll schedule.

    Everything built at start-up (configuration, plans, the OPC UA address space) lives as
    long as the process; moving it to the permanent generation spares every later collection
    from re-scanning it, and larger thresholds make the costly older-generation collections
    rare. Measured with bench/e2e.py (500 devices x 100 tags): poll jitter p99 of the worst
    device from ~100 ms to ~30 ms. A reload unfreezes at once and settles again later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def device_fingerprint(dev: ResolvedDevice) -> str:
    """Everything that decides how a device is polled: equal fingerprints need no restart."""
    parts = {
        "driver": dev.driver.name,
        "device": dev.config.model_dump(mode="json"), "bus": dev.bus.model_dump(mode="json"),
        "points": [rp.point.model_dump(mode="json") for rp in dev.points],
        "groups": {g: pg.interval_ms for g, pg in dev.poll_groups.items()},
        "manifest": dev.manifest.model_dump(mode="json") if dev.manifest else None,
        "plugin_error": dev.plugin_error,
        "hooks": [(h.derived.model_dump(mode="json"), _source_hash(h.function)) for h in dev.hooks],
    }
    return json.dumps(parts, sort_keys=True, default=str)


def _source_hash(fn) -> str:
    """The hook's compiled code (marshal of its code object: constants, names, nested code, lines).

    ``inspect.getsource`` tokenized the plugin file on every reload: 40 of the demo's 65 ms of
    reload on the loop (tests/test_loop_debug.py); this takes microseconds."""
    try:
        return hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest()
    except (AttributeError, ValueError):
        return repr(fn)


def _id_map(old: Plant, new: Plant) -> np.ndarray:
    """old tag id -> new tag id (-1 where the tag is gone)."""
    new_ids = {t.key: t.id for t in new.tags}
    return np.array([new_ids.get(t.key, -1) for t in old.tags], dtype=np.int32)


#: edge_health ``last_reload_result``: 0 no reload yet or applied, 1 refused, 2 failed while applying
RELOAD_RESULT_CODES = {"applied": 0, "refused": 1, "failed": 2}


class Appliance:
    """Everything that runs for one loaded configuration."""

    def __init__(self, loaded: LoadedConfig, *, audit: bool = True, outputs: bool = True):
        self.loaded = loaded
        self.plant = loaded.plant
        self.store = LatestStore(self.plant)
        self.pipeline = Pipeline()
        self.pipeline.add("store", self.store)
        self.sessions: dict[str, DriverSession] = {}  # driver name -> its session (lines it owns)
        self.devices: dict[str, DeviceRunner] = {}
        rt_cfg = loaded.config.runtime
        audit_log = AuditLog(loaded.data_dir / "audit.log", max_bytes=rt_cfg.audit_max_bytes,
                             backups=rt_cfg.audit_backups) if audit else None
        self.writes = WriteService(self.plant, self.store, audit_log)
        self.started_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self._stages: dict[str, DerivedStage] = {}  # devices with plugin hooks
        self.last_reload: ReloadOutcome | None = None  # of the latest reload (edge.runtime.reload)
        self.reloads = {"applied": 0, "refused": 0, "failed": 0}  # reloads by outcome, for edge_health
        #: set by ``edge run`` when it set logging up: its command-line (level, json) overrides, which a
        #: reload keeps; None: the embedding program owns logging and a reload leaves it alone
        self.logging: tuple[str | None, bool] | None = None
        for dev in loaded.devices:
            self._add_device(dev)
        self.outputs = Outputs(loaded, self.pipeline, self.writes, self.diagnostics, self.stats) if outputs else None
        self.intelligence: Intelligence | None = None  # alarms, rules, HTTP API: started after the outputs

    # ------------------------------------------------------------------ building

    def _session(self, dev: ResolvedDevice) -> DriverSession:
        session = self.sessions.get(dev.driver.name)
        if session is None:
            session = self.sessions[dev.driver.name] = dev.driver.session()
        return session

    def _add_device(self, dev: ResolvedDevice) -> DeviceRunner:
        diag = DeviceDiagnostics(dev.name, dev.bus.name, plugin=dev.config.plugin,
                                 plugin_version=dev.manifest.version if dev.manifest else None)
        runtime = None
        if dev.plugin_error:
            diag.state = DeviceState.QUARANTINED
            diag.last_error = dev.plugin_error
        elif not dev.config.enabled:
            diag.state = DeviceState.DISABLED
        else:
            ctx = DeviceContext(tag_ids=self._tag_ids(dev.name, self.plant),
                                publish=self._publisher(dev, diag, self.loaded), diag=diag,
                                stats_window_s=self.loaded.config.runtime.stats_window_s,
                                phase=(len(self.devices) * GOLDEN_RATIO_FRACTION) % 1.0)
            runtime = self._session(dev).open_device(dev, ctx)
        runner = DeviceRunner(dev, diag, runtime)
        self.devices[dev.name] = runner
        self._register_writes(runner)
        return runner

    @staticmethod
    def _tag_ids(device: str, plant: Plant) -> dict[str, int]:
        """The device's tag names -> ids, from its own id list (the tag table is indexed by id):
        walking the whole table per device made building a site quadratic in its size."""
        try:
            ids = plant.device(device).tag_ids
        except KeyError:
            return {}
        tags = plant.tags
        return {tags[i].name: i for i in ids}

    def _register_writes(self, runner: DeviceRunner) -> None:
        available = self._availability(runner)
        ids = self._tag_ids(runner.name, self.plant)
        for rp in runner.resolved.points:
            tag_id = ids.get(rp.point.name) if rp.point.writable else None
            if tag_id is not None:
                self.writes.register(tag_id, WriteTarget(self._writer(runner, tag_id), available))

    def _publisher(self, dev: ResolvedDevice, diag: DeviceDiagnostics, loaded: LoadedConfig) -> Publish:
        """Where a device's batches go: through its derived-tag hooks, if any, into the pipeline."""
        old = self._stages.pop(dev.name, None)
        if old is not None:
            old.close()
        if not dev.hooks:
            return self.pipeline.publish
        ids = self._tag_ids(dev.name, loaded.plant)
        stage = DerivedStage(dev.name, dev.hooks, ids, self.pipeline.publish, diag, offload=True)
        self._stages[dev.name] = stage  # hooks run in its worker thread, off the loop
        return stage.publish

    @staticmethod
    def _writer(runner: DeviceRunner, tag_id: int):
        async def write(value: object):
            assert runner.runtime is not None  # availability() refuses writes to devices without one
            return await runner.runtime.write(tag_id, value)

        return write

    @staticmethod
    def _availability(runner: DeviceRunner):
        def available() -> str | None:
            if runner.diag.state == DeviceState.QUARANTINED:
                return f"device {runner.name} is quarantined: {runner.diag.last_error}"
            if runner.diag.state == DeviceState.DISABLED or runner.runtime is None:
                return f"device {runner.name} is disabled"
            return None

        return available

    # ------------------------------------------------------------------ running

    def diagnostics(self) -> list[DeviceDiagnostics]:
        return [rt.diag for rt in self.devices.values()]

    def stats(self) -> dict:
        """The appliance's own figures for the edge_health measurement and the status table."""
        return {"uptime_s": time.monotonic() - self.started_at if self.started_at else 0.0,
                "samples": self.pipeline.samples, "batches": self.pipeline.batches,
                "output_errors": sum(s.errors for s in self.pipeline.stats.values()),
                "samples_dropped_while_held": self.pipeline.dropped_while_held,
                "devices_online": sum(rt.diag.state == DeviceState.ONLINE for rt in self.devices.values()),
                "devices_offline": sum(rt.diag.state == DeviceState.OFFLINE for rt in self.devices.values()),
                "line_utilisation_pct": self.line_utilisation(), "reloads": dict(self.reloads),
                "last_reload_result": RELOAD_RESULT_CODES.get(self.last_reload.result if self.last_reload else "", 0)}

    async def start(self) -> None:
        self.started_at = time.monotonic()
        if self.outputs is not None:
            await self.outputs.start()
        ts = time.time_ns()
        for rt in self.devices.values():
            self._start_device(rt, ts)
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        if self.outputs is not None:
            self.intelligence = Intelligence(self)
            await self.intelligence.start()
        settle_gc()

    def _start_device(self, runner: DeviceRunner, ts: int | None = None) -> None:
        if runner.diag.state == DeviceState.QUARANTINED:
            ids = np.array(self.plant.device(runner.name).tag_ids, dtype=np.int32)
            self.pipeline.publish(SampleBatch.bad(runner.name, ts or time.time_ns(), ids, Quality.BAD_CONFIG_ERROR))
            log.error("device %s not started: %s", runner.name, runner.diag.last_error)
        if runner.runtime is not None:
            runner.task = asyncio.create_task(self._run_device(runner), name=f"poll:{runner.name}")

    async def _run_device(self, runner: DeviceRunner) -> None:
        """Run a device's polling; an unexpected error restarts it after a pause instead of killing it."""
        assert runner.runtime is not None
        while True:
            try:
                await runner.runtime.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - contain: log, count, restart this device only
                log.exception("device %s: poller crashed; restarting in 1 s", runner.name)
                runner.diag.last_error = "internal error in poller (see log)"
                await asyncio.sleep(1.0)

    async def _settle_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        settle_gc()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.loaded.config.runtime.status_interval_s)
            for session in self.sessions.values():
                session.update_stats()

    # ------------------------------------------------------------------ reload

    async def reload(self, new: LoadedConfig) -> dict[str, list[str]]:
        """Switch to a new configuration without a gap for devices whose configuration is unchanged.

        The API server is restarted first when its address changed (:class:`ReloadRefused` when
        the new one cannot be bound, nothing changed then); the ``runtime`` section is applied in place.

        Unchanged devices keep their poller, line and learned address holes; only their tag ids
        are renumbered in place (in one step with the swap of the plant, so no batch carries a
        stale id). Changed and removed devices are stopped, changed and added ones started.
        """
        api = await self._reload_api(new)  # first: a refusal here leaves everything as it was
        old_runtime = self.loaded.config.runtime
        window, new_window = old_runtime.stats_window_s, new.config.runtime.stats_window_s
        old_fp = {name: device_fingerprint(rt.resolved) + f"|{window}" for name, rt in self.devices.items()}
        new_by_name = {d.name: d for d in new.devices}
        kept = [n for n, d in new_by_name.items() if old_fp.get(n) == device_fingerprint(d) + f"|{new_window}"]
        gone = [n for n in self.devices if n not in kept]
        for name in gone:
            await self._stop_device(self.devices.pop(name))
        id_map = _id_map(self.plant, new.plant)
        # From the renumbering on, batches carry the new tag ids: the sinks get them once every one of
        # them has the new plant (an output restart below awaits; the spool, OPC UA, the aggregator,
        # MQTT and the alarms would otherwise read new ids with the old plant in the meantime).
        self.pipeline.hold()
        try:
            for name in kept:
                self._renumber(self.devices[name], new_by_name[name], id_map, new)
            self._swap_plant(new)
            runtime_changed = self._apply_runtime(old_runtime, new.config.runtime)
            outputs_restarted: list[str] = []
            if self.outputs is not None:
                outputs_restarted = await self.outputs.reload(new)
            self._release_unused_lines()
            added = [d.name for d in new.devices if d.name not in kept]
            for name in added:
                runner = self._add_device(new_by_name[name])
                if self.started_at:
                    self._start_device(runner)
            self.devices = {d.name: self.devices[d.name] for d in new.devices}  # site order
            if self.intelligence is not None:
                await self.intelligence.reload(new)
                if "opcua" in outputs_restarted and self.outputs is not None and self.outputs.opcua is not None:
                    await self.intelligence.rebind_opcua(self.outputs.opcua)
        finally:
            await self.pipeline.release_gradually()
        # The old configuration's objects are frozen: hand them back to the collector now, and
        # settle (one full collection, then freeze) later, away from the reload itself.
        gc.unfreeze()
        self._tasks.append(asyncio.create_task(self._settle_later(RESETTLE_AFTER_RELOAD_S), name="gc-settle"))
        log.warning("configuration reloaded: %d devices kept running, %d restarted or added, %d removed",
                    len(kept), len(added), len([n for n in gone if n not in new_by_name]))
        changes = {"kept": kept, "started": added, "removed": [n for n in gone if n not in new_by_name],
                   "outputs": outputs_restarted}
        if api is not None:
            changes["api"] = [api]
        if runtime_changed:
            changes["runtime"] = runtime_changed
        return changes

    async def _reload_api(self, new: LoadedConfig) -> str | None:
        """Restart the API server if its listener settings changed; a new address that cannot be
        bound refuses the reload (nothing else has changed yet, the old server still serves)."""
        if self.intelligence is None:
            return None
        try:
            return await self.intelligence.reload_api(new)
        except OSError as exc:
            cfg = new.config.api
            where = f"{cfg.host}:{cfg.port}" if cfg is not None else "?"
            raise ReloadRefused(f"api: cannot listen on {where}: {exc}") from exc

    def _apply_runtime(self, old: Runtime, new: Runtime) -> list[str]:
        """Apply a changed ``runtime`` section in place; the names of the keys that changed.

        Log level, format and per-component levels are set again (when ``edge run`` set logging up:
        its command-line ``--log-level``/``--log-json`` still win); the status and health intervals
        are read at each tick; the audit log's rotation takes the new limits; a new statistics window
        restarts the devices (their fingerprint includes it). ``data_dir`` never gets here
        (:func:`edge.runtime.reload.needs_restart` refuses it).
        """
        changed = [k for k in type(new).model_fields if getattr(old, k) != getattr(new, k)]
        if self.logging is not None and {"log_level", "log_format", "log_levels"} & set(changed):
            from edge.runtime.logs import setup_logging

            level, json_lines = self.logging
            for name in set(old.log_levels) - set(new.log_levels):
                logging.getLogger(name).setLevel(logging.NOTSET)  # back to its parent's level
            setup_logging(level or new.log_level, json_lines or new.log_format == "json", new.log_levels)
        audit = self.writes.audit
        if audit is not None:
            audit.max_bytes, audit.backups = new.audit_max_bytes, new.audit_backups
        if changed:
            log.warning("reload: runtime settings applied: %s", ", ".join(changed))
        return changed

    def _renumber(self, runner: DeviceRunner, dev: ResolvedDevice, id_map: np.ndarray, new: LoadedConfig) -> None:
        if runner.runtime is not None:
            runner.runtime.renumber(id_map)
            runner.runtime.set_publish(self._publisher(dev, runner.diag, new))
        runner.resolved = dev

    def _release_unused_lines(self) -> None:
        for name, session in self.sessions.items():
            session.release_unused(r.runtime for r in self.devices.values()
                                   if r.runtime is not None and r.resolved.driver.name == name)

    def _swap_plant(self, new: LoadedConfig) -> None:
        old_store = self.store
        self.loaded, self.plant = new, new.plant
        self.store = LatestStore(self.plant)
        self.store.take_over(old_store)
        self.pipeline.add("store", self.store)
        self.writes.rebind(self.plant, self.store)
        for runner in self.devices.values():
            self._register_writes(runner)

    @staticmethod
    async def _stop_device(runner: DeviceRunner) -> None:
        if runner.task is not None:
            runner.task.cancel()
            await asyncio.gather(runner.task, return_exceptions=True)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Reverse order: the API and rules, the pollers, the outputs (flushed), the lines."""
        if self.intelligence is not None and self.intelligence.started:
            try:
                await self.intelligence.stop(timeout_s)
            except Exception:  # noqa: BLE001 - still stop the rest
                log.exception("alarms, rules or API did not stop cleanly")
        tasks = [r.task for r in self.devices.values() if r.task] + self._tasks
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)
        if self.outputs is not None:
            try:
                await self.outputs.stop(timeout_s)
            except Exception:  # noqa: BLE001 - still release the lines
                log.exception("outputs did not stop cleanly")
        for session in self.sessions.values():
            session.close()
        for stage in self._stages.values():
            stage.close()
        if self.writes.audit is not None:  # every queued audit entry on disk before the process ends
            await asyncio.to_thread(self.writes.audit.close, timeout_s)
        self._tasks.clear()

    def line_utilisation(self) -> dict[str, float]:
        """Share of wall time each line spent in transactions since start, in percent."""
        elapsed = time.monotonic() - self.started_at if self.started_at else 0.0
        out: dict[str, float] = {}
        for session in self.sessions.values():
            out |= session.line_utilisation(elapsed)
        return out

