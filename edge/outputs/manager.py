"""The IP side of the appliance: spool and InfluxDB forwarder, aggregator, OPC UA server, MQTT.

Built from the configuration's ``outputs`` section; each output is a sink of the pipeline.
The spool always exists (with no InfluxDB it is the local historian). A periodic task closes
aggregation windows (to the spool and so to InfluxDB) and records health (per device and for
the appliance) in the ``edge_health`` measurement; the newest closed window of each tag with
``aggregate: {opcua: ...}`` also goes to the OPC UA server. Start order: spool, forwarder, aggregator,
OPC UA, MQTT (a sink after the spool: it follows its progress through the spool's rows); stop
order the reverse, each bounded in time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.aggregate.engine import Aggregator
from edge.config.loader import LoadedConfig
from edge.core.model import DeviceDiagnostics, Plant, WindowBatch
from edge.core.pipeline import Pipeline
from edge.core.writes import WriteService
from edge.outputs.influx import InfluxForwarder, append_diagnostics, health_fields, open_storage
from edge.runtime.memory import LEDGER
from edge.storage.history import HistoryArrays, spool_history
from edge.storage.spool import Spool

if TYPE_CHECKING:
    from edge.outputs.opcua.server import OpcUaServer

log = logging.getLogger("edge.outputs.manager")
DRAIN_ON_STOP_S = 5.0
#: ``influx_state_code`` in edge_health: the forwarder's state as a number for dashboards
FORWARDER_STATE_CODES = {"ok": 0, "retrying": 1, "refused": 2, "stopped": 3, "starting": 4}
#: a backlog whose oldest point is older than this (and the live window) still counts as degraded
BACKLOG_DEGRADED_S = 10.0


def aggregate_configs(loaded: LoadedConfig) -> dict:
    """tag id -> TagAggregateConfig for every point configured with ``aggregate:``."""
    keys = loaded.plant.tag_by_key()
    return {keys[f"{dev.name}.{rp.point.name}"].id: rp.point.aggregate
            for dev in loaded.devices for rp in dev.points
            if rp.point.aggregate is not None and f"{dev.name}.{rp.point.name}" in keys}


class _Holding:
    """A stand-in sink while the spool is swapped on reload: keeps the batches for the new one."""

    def __init__(self) -> None:
        self.batches: list = []

    def consume(self, batch) -> None:
        self.batches.append(batch)


class Outputs:
    def __init__(self, loaded: LoadedConfig, pipeline: Pipeline, writes: WriteService,
                 diagnostics: Callable[[], list[DeviceDiagnostics]], appliance_stats: Callable[[], dict[str, Any]]):
        self.loaded = loaded
        self.pipeline = pipeline
        self.writes = writes
        self.diagnostics = diagnostics
        self.appliance_stats = appliance_stats
        outputs = loaded.config.outputs
        self.spool: Spool
        self.forwarder: InfluxForwarder | None
        self.spool, self.forwarder = open_storage(loaded.plant, outputs.spool, outputs.influxdb)
        self.aggregator = Aggregator.from_tags(loaded.plant.tags, aggregate_configs(loaded), outputs.aggregator)
        self.opcua: OpcUaServer | None = None
        if outputs.opcua is not None and outputs.opcua.enabled:
            from edge.outputs.opcua.server import OpcUaServer

            self.opcua = OpcUaServer(loaded.plant, outputs.opcua, writer=self._opcua_write,
                                     refuse=self.writes.refuse,
                                     history=self.history, aggregates=self.aggregator.opcua_specs())
        self.mqtt = None
        if outputs.mqtt is not None and outputs.mqtt.enabled:
            from edge.outputs.mqtt.output import MqttOutput

            self.mqtt = MqttOutput(outputs.mqtt, loaded.plant, self.spool, writes, diagnostics, self.node_health,
                                   loaded.data_dir, loaded.base_dir)
        self._tasks: list[asyncio.Task] = []
        self._started = False  # stop() has nothing to flush or close before start() (the spool is not open)
        self.windows = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._started = True  # set first: a start that fails half-way is still stopped in full
        self.spool.start()
        self.pipeline.add("spool", self.spool)
        if self.forwarder is not None:
            self.forwarder.start()
        if self.aggregator.tag_ids:
            self.pipeline.add("aggregator", self.aggregator)
        LEDGER.mark("spool_forwarder_aggregator")
        if self.opcua is not None:
            await self.opcua.start()
            self.pipeline.add("opcua", self.opcua)
            LEDGER.mark("opcua")
        if self.mqtt is not None:
            await self.mqtt.start()
            self.pipeline.add("mqtt", self.mqtt)  # after "spool": it reads spool.last_consumed
            LEDGER.mark("mqtt")
        self._tasks = [asyncio.create_task(self._periodic(), name="outputs"),
                       asyncio.create_task(self._status_ticks(), name="outputs-status")]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close the windows, stop the outputs, flush and close the spool. Before start() there is
        nothing to stop: a health record appended then would wait ``timeout_s`` for a spool writer
        that never ran (an appliance built only for its configuration, e.g. `edge read`)."""
        if not self._started:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_windows(time.time_ns())
        self._record_health(time.time_ns())
        for name in ("mqtt", "opcua", "aggregator", "spool"):
            self.pipeline.remove(name)
        if self.mqtt is not None:
            try:
                await asyncio.wait_for(self.mqtt.stop(timeout_s), timeout_s)
            except Exception:  # noqa: BLE001 - still stop the rest
                log.exception("MQTT output did not stop cleanly")
        if self.opcua is not None:
            await asyncio.wait_for(self.opcua.stop(), timeout_s)
        await asyncio.to_thread(self.spool.flush, timeout_s)
        if self.forwarder is not None:
            await self._drain(min(timeout_s, DRAIN_ON_STOP_S))
            await self.forwarder.stop(timeout_s)
        await self.spool.stop(timeout_s)

    async def _drain(self, timeout_s: float) -> None:
        """At shutdown, give the forwarder a bounded moment to send what is left; what it cannot
        send stays in the spool and goes out after the next start."""
        forwarder = self.forwarder
        if forwarder is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.spool.stats()["unsent_points"]:
            if forwarder.stats()["state"] in ("retrying", "refused"):
                return  # the server is not taking data now: the spool keeps it
            self.spool.new_data.set()
            await asyncio.sleep(0.05)

    async def reload(self, loaded: LoadedConfig) -> list[str]:
        """New configuration: outputs whose settings changed are restarted (the spool, the InfluxDB
        forwarder, the OPC UA server, MQTT), each alone and without stopping the polling; then the new
        plant: the spool records a new plant version, rings are rebuilt, OPC UA nodes updated.
        Returns the names of the outputs restarted."""
        self._close_windows(time.time_ns())  # closed under the plant they were collected with
        restarted = await self._restart_changed(loaded)
        # the plant's version row is written off the loop (the writer's lock, a commit); until the
        # switch below, windows and samples still go out under the old plant, with the old ids
        plant_id = await asyncio.to_thread(self.spool.register_plant, loaded.plant)
        self.loaded = loaded
        self.spool.use_plant(loaded.plant, plant_id)
        self.aggregator = Aggregator.from_tags(loaded.plant.tags, aggregate_configs(loaded),
                                               loaded.config.outputs.aggregator)
        self.pipeline.remove("aggregator")
        if self.aggregator.tag_ids:
            self.pipeline.add("aggregator", self.aggregator)
        if self.mqtt is not None:
            self.mqtt.reload(loaded.plant)
        if self.opcua is not None:
            self.pipeline.remove("opcua")  # no batch with new tag ids may reach the old address space
            try:
                await self.opcua.reload(loaded.plant, aggregates=self.aggregator.opcua_specs())
            finally:
                self.pipeline.add("opcua", self.opcua)
        return restarted

    async def _restart_changed(self, loaded: LoadedConfig) -> list[str]:
        """Restart the outputs whose configuration differs (called before the plant is swapped)."""
        old, new = self.loaded.config.outputs, loaded.config.outputs
        influx_old, influx_new = old.influxdb, new.influxdb
        restarted: list[str] = []
        if old.spool != new.spool or (influx_old is None) != (influx_new is None):
            await self._restart_storage(loaded)
            restarted += ["spool"] + (["influxdb"] if influx_old or influx_new else [])
        elif influx_old != influx_new:
            await self._restart_forwarder(influx_new)
            restarted.append("influxdb")
        if old.opcua != new.opcua:
            await self._restart_opcua(loaded)
            restarted.append("opcua")
        if old.mqtt != new.mqtt or ("spool" in restarted and self.mqtt is not None):
            await self._restart_mqtt(loaded)
            restarted.append("mqtt")
        return restarted

    async def _restart_forwarder(self, cfg) -> None:
        """A new InfluxDB target or settings: the old forwarder finishes its request and stops; the new
        one sends everything unsent (the spool keeps it meanwhile)."""
        if self.forwarder is not None:
            await self.forwarder.stop()
        self.forwarder = InfluxForwarder(self.spool, cfg) if cfg is not None else None
        if self.forwarder is not None:
            self.forwarder.start()
        log.warning("reload: InfluxDB forwarder restarted -> %s", cfg.url if cfg is not None else "none")

    async def _restart_storage(self, loaded: LoadedConfig) -> None:
        """New spool settings: batches polled meanwhile are held in RAM and handed to the new spool."""
        held = _Holding()
        self.pipeline.add("spool", held)  # replaces the old spool as a sink: nothing polled is lost
        if self.forwarder is not None:
            await self.forwarder.stop()
        await self.spool.stop()
        self.spool, self.forwarder = open_storage(self.loaded.plant, loaded.config.outputs.spool,
                                                  loaded.config.outputs.influxdb)
        self.spool.start()
        for batch in held.batches:
            self.spool.append_samples(batch)
        self.pipeline.add("spool", self.spool)
        if self.forwarder is not None:
            self.forwarder.start()
        log.warning("reload: spool restarted (%d batches held during the switch)", len(held.batches))

    async def _restart_opcua(self, loaded: LoadedConfig) -> None:
        self.pipeline.remove("opcua")
        if self.opcua is not None:
            await self.opcua.stop()
            self.opcua = None
        cfg = loaded.config.outputs.opcua
        if cfg is not None and cfg.enabled:
            from edge.outputs.opcua.server import OpcUaServer

            self.opcua = OpcUaServer(self.loaded.plant, cfg, writer=self._opcua_write,
                                     history=self.history, aggregates=self.aggregator.opcua_specs())
            await self.opcua.start()
            self.pipeline.add("opcua", self.opcua)
        log.warning("reload: OPC UA server restarted")

    async def _restart_mqtt(self, loaded: LoadedConfig) -> None:
        self.pipeline.remove("mqtt")
        if self.mqtt is not None:
            await self.mqtt.stop()
            self.mqtt = None
        cfg = loaded.config.outputs.mqtt
        if cfg is not None and cfg.enabled:
            from edge.outputs.mqtt.output import MqttOutput

            self.mqtt = MqttOutput(cfg, self.loaded.plant, self.spool, self.writes, self.diagnostics,
                                   self.node_health, loaded.data_dir, loaded.base_dir)
            await self.mqtt.start()
            self.pipeline.add("mqtt", self.mqtt)
        log.warning("reload: MQTT output restarted")

    # ------------------------------------------------------------------ store-and-forward status

    def delivery(self) -> dict:
        """Spool and forwarder figures for the status table, ``/api/status``, ``/metrics``, OPC UA and
        ``edge_health``; ``degraded`` says in words why data are not reaching the time-series server
        (None when they are). Reads counters only: cheap enough for the loop at any rate."""
        spool = self.spool.stats()
        fw = self.forwarder.stats() if self.forwarder is not None else None
        crashes = int(spool["writer"]["crashes"]) + (int(fw["thread"]["crashes"]) if fw else 0)
        return {"spool": spool, "forwarder": fw, "degraded": self._degraded(spool, fw), "thread_crashes": crashes}

    def _degraded(self, spool: dict, fw: dict | None) -> str | None:
        waiting = f"{spool['unsent_points']} points waiting in the spool, oldest {spool['oldest_unsent_age_s']:.0f} s"
        if spool["writer"]["state"] in ("restarting", "given_up"):
            return f"spool writer {spool['writer']['state']}: {spool['writer']['last_crash']}"
        if fw is None:
            return None
        if fw["thread"]["state"] in ("restarting", "given_up"):
            return f"forwarder thread {fw['thread']['state']}: {fw['thread']['last_crash']}"
        if fw["state"] in ("retrying", "refused"):
            return f"time-series server {fw['state']}: {fw['last_error']}; {waiting}"
        live_s = self.forwarder.config.live_window_ms / 1e3 if self.forwarder is not None else 0.0
        if spool["unsent_points"] and spool["oldest_unsent_age_s"] > max(BACKLOG_DEGRADED_S, live_s):
            return f"draining a backlog: {waiting}"
        return None

    def delivery_health(self, delivery: dict) -> dict[str, float]:
        """The ``edge_health`` fields of :meth:`delivery` that are not in the spool/forwarder stats."""
        fw = delivery["forwarder"]
        out = {"degraded": float(delivery["degraded"] is not None), "thread_crashes": float(delivery["thread_crashes"])}
        if fw is not None:
            out["influx_state_code"] = float(FORWARDER_STATE_CODES.get(fw["state"], -1))
            out["influx_down_s"] = (time.time_ns() - fw["down_since_ns"]) / 1e9 if fw["down_since_ns"] else 0.0
        return out

    # ------------------------------------------------------------------ periodic work

    async def _periodic(self) -> None:
        """Windows at the aggregator's ``collect_interval_ms``, health records at ``health_interval_s``."""
        next_health = time.monotonic()
        while True:  # the intervals are read at each tick: a reload may change them
            await asyncio.sleep(self.loaded.config.outputs.aggregator.collect_interval_ms / 1e3)
            now_ns = time.time_ns()
            try:
                self._close_windows(now_ns)
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + self.loaded.config.runtime.health_interval_s
                    self._record_health(now_ns)
            except Exception:  # noqa: BLE001 - keep the outputs running; the error is logged
                log.exception("periodic output work failed")

    async def _status_ticks(self) -> None:
        """The OPC UA Status objects (devices and appliance) at ``runtime.status_interval_s``, like the
        statistics they show: they once followed the aggregator's ``collect_interval_ms``, so a fast
        window collection multiplied their cost and ``status_interval_s`` did not reach them."""
        while True:  # read at each tick: a reload may change it
            await asyncio.sleep(self.loaded.config.runtime.status_interval_s)
            if self.opcua is None:
                continue
            try:
                for diag in self.diagnostics():
                    self.opcua.update_device(diag)
                self.opcua.update_appliance(self.delivery())
            except Exception:  # noqa: BLE001 - keep the outputs running; the error is logged
                log.exception("OPC UA status update failed")

    def _close_windows(self, now_ns: int) -> None:
        opcua = self.opcua if self.aggregator.has_opcua else None  # publishes the windows too
        for batch in self.aggregator.collect(now_ns):
            self.windows += len(batch)
            self.spool.append_windows(batch)
            if opcua is not None:
                self._publish_windows(opcua, batch)
        if opcua is not None:
            try:
                opcua.close_empty_windows(now_ns)
            except Exception:  # noqa: BLE001 - the exporter and the next windows go on; the error is logged
                log.exception("OPC UA: publishing empty aggregation windows failed")

    def _publish_windows(self, opcua: OpcUaServer, batch: WindowBatch) -> None:
        """The newest window of each OPC UA-enabled tag in ``batch``: one call per batch."""
        try:
            wb = self.aggregator.for_opcua(batch)
            if wb is not None:
                opcua.consume_windows(wb, self.aggregator.window_quality(wb))
        except Exception:  # noqa: BLE001 - the exporter and the next windows go on; the error is logged
            log.exception("OPC UA: publishing %s windows failed", batch.window)

    def _record_health(self, now_ns: int) -> None:
        append_diagnostics(self.spool, now_ns, self.diagnostics())
        delivery = self.delivery()
        fields = health_fields(self.appliance_stats()) | health_fields(delivery["spool"], "spool_") | LEDGER.fields()
        if delivery["forwarder"] is not None:
            fields |= health_fields(delivery["forwarder"], "influx_")
        fields |= self.delivery_health(delivery)
        if self.mqtt is not None:
            fields |= health_fields(self.mqtt.stats(), "mqtt_")
        fields["aggregator_memory_bytes"] = float(self.aggregator.memory_bytes())
        if self.writes.audit is not None:
            fields |= health_fields(self.writes.audit.stats(), "audit_")
        if self.opcua is not None and self.opcua.users is not None:
            from edge.outputs.opcua.security import snapshot

            fields |= health_fields(vars(self.opcua.users.guard.stats), "opcua_logins_")
            fields |= health_fields(snapshot(self.opcua.security), "opcua_security_")
        self.spool.append_health("appliance", now_ns, fields)

    # ------------------------------------------------------------------ status

    def node_health(self) -> dict[str, float | str]:
        """The appliance's figures a Sparkplug NBIRTH/NDATA carries (fixed names, stable types)."""
        a, s = self.appliance_stats(), self.spool.stats()
        out: dict[str, float | str] = {
            "Health/Uptime s": float(a["uptime_s"]), "Health/Samples": float(a["samples"]),
            "Health/Output errors": float(a["output_errors"]), "Health/Devices online": float(a["devices_online"]),
            "Health/Devices offline": float(a["devices_offline"]),
            "Spool/Unsent points": float(s["unsent_points"]), "Spool/Stored bytes": float(s["stored_bytes"]),
            "Spool/Oldest unsent age s": float(s["oldest_unsent_age_s"]),
            "Spool/Dropped points": float(s["dropped_points_total"]),
            "Forwarder/State": "none", "Forwarder/Points sent": 0.0, "Forwarder/Server down": 0.0,
        }
        if self.forwarder is not None:
            f = self.forwarder.stats()
            out.update({"Forwarder/State": str(f["state"]), "Forwarder/Points sent": float(f["points_sent"]),
                        "Forwarder/Server down": float(f["server_down"])})
        return out

    def status(self) -> dict[str, dict]:
        """State of the outputs with a connection of their own beyond the spool and its forwarder
        (those are in :meth:`delivery`): the MQTT output. Status table, /api/status, /metrics."""
        return {"mqtt": self.mqtt.stats()} if self.mqtt is not None else {}

    # ------------------------------------------------------------------ services for the OPC UA server

    async def _opcua_write(self, tag_id: int, value, user: str, source: str):
        from edge.outputs.opcua.channel_guard import current_channel

        channel = current_channel()  # the Write request's channel: the client's address for the audit log
        return await self.writes.write(tag_id, value, user=user, source=source, role="operator",
                                       address=channel.peer if channel is not None else "")

    async def history(self, tag_id: int, t0_ns: int, t1_ns: int, max_values: int,
                      newest_first: bool = False) -> HistoryArrays:
        """Raw history of one tag with t0 <= ts < t1, at most ``max_values`` from the oldest end (the
        newest end, newest first, with ``newest_first``): the tag's ring when it holds the whole
        range, else the spool on disk. String tags come with their texts (spool only: rings hold numbers)."""
        plant: Plant = self.loaded.plant
        if tag_id in self.aggregator:
            ts, values, quality = self.aggregator.read_range(tag_id, t0_ns, t1_ns)
            if len(ts) and ts[0] <= t0_ns + 1_000_000_000:
                if newest_first:
                    ts, values, quality = ts[::-1], values[::-1], quality[::-1]
                return HistoryArrays(ts[:max_values], values[:max_values], quality[:max_values])
        return await asyncio.to_thread(spool_history, self.spool, plant.tags[tag_id].key, t0_ns, t1_ns, max_values,
                                       newest_first)
