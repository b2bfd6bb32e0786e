"""Prometheus metrics of the appliance, collected at scrape time from the live objects (prometheus_client).

Nothing is counted twice: each scrape reads the devices' diagnostics, the pipeline, the
alarm and rule engines and the API's own counters.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge.core.model import DeviceState, Quality

if TYPE_CHECKING:
    from edge.intelligence.service import Intelligence


class ApplianceCollector:
    def __init__(self, intel: Intelligence):
        self.intel = intel

    def collect(self) -> Iterator[Metric]:  # noqa: C901 - one family after the other
        app = self.intel.app
        up = GaugeMetricFamily("edge_device_up", "1 if the device is online", labels=["device", "bus"])
        state = GaugeMetricFamily("edge_device_state", "device state (0 connecting, 1 online, 2 offline, "
                                  "3 quarantined, 4 disabled)", labels=["device"])
        polls = CounterMetricFamily("edge_device_polls", "polls by result", labels=["device", "result"])
        timeouts = CounterMetricFamily("edge_device_timeouts", "request timeouts", labels=["device"])
        overruns = CounterMetricFamily("edge_device_overruns", "poll cycles skipped: the one before overran its slot",
                                       labels=["device"])
        latency = GaugeMetricFamily("edge_device_latency_seconds", "poll latency quantiles",
                                    labels=["device", "quantile"])
        for d in app.diagnostics():
            up.add_metric([d.name, d.bus], float(d.state == DeviceState.ONLINE))
            state.add_metric([d.name], float(int(d.state)))
            polls.add_metric([d.name, "ok"], d.polls_ok)
            polls.add_metric([d.name, "failed"], d.polls_failed)
            timeouts.add_metric([d.name], d.timeouts)
            overruns.add_metric([d.name], d.overruns)
            latency.add_metric([d.name, "0.5"], d.latency_p50_ms / 1e3)
            latency.add_metric([d.name, "0.99"], d.latency_p99_ms / 1e3)
        yield from (up, state, polls, timeouts, overruns, latency)
        lines = GaugeMetricFamily("edge_line_utilisation_ratio", "share of time the line is busy", labels=["line"])
        for line, pct in app.line_utilisation().items():
            lines.add_metric([line], pct / 100.0)
        yield lines
        yield CounterMetricFamily("edge_samples", "samples through the pipeline", value=app.pipeline.samples)
        yield CounterMetricFamily("edge_batches", "batches through the pipeline", value=app.pipeline.batches)
        values = GaugeMetricFamily("edge_tag_value", "latest value of numeric tags with Good quality",
                                   labels=["device", "tag"])
        quality = GaugeMetricFamily("edge_tag_quality", "latest quality code (0 Good)", labels=["device", "tag"])
        store = app.store
        for t in app.plant.tags:
            q = int(store.quality[t.id])
            quality.add_metric([t.device, t.name], float(q))
            v = float(store.values[t.id])
            if t.dtype != "string" and q == Quality.GOOD and math.isfinite(v):
                values.add_metric([t.device, t.name], v)
        yield from (values, quality)
        active = GaugeMetricFamily("edge_alarm_active", "1 while the alarm is active", labels=["alarm", "priority"])
        unacked = GaugeMetricFamily("edge_alarm_unacknowledged", "1 while the alarm waits for acknowledgement",
                                    labels=["alarm", "priority"])
        for a in self.intel.alarms.alarms.values():
            active.add_metric([a.name, a.config.priority], float(a.active))
            unacked.add_metric([a.name, a.config.priority], float(not a.acked))
        yield from (active, unacked)
        actions = CounterMetricFamily("edge_rule_actions", "rule actions done", labels=["rule"])
        blocked = CounterMetricFamily("edge_rule_blocked", "rule actions blocked by an interlock", labels=["rule"])
        badq = CounterMetricFamily("edge_rule_bad_quality", "episodes in which a rule did not act because of "
                                   "bad quality", labels=["rule"])
        for r in self.intel.rules.rules.values():
            actions.add_metric([r.name], r.actions)
            blocked.add_metric([r.name], r.blocked)
            badq.add_metric([r.name], r.bad_quality)
        yield from (actions, blocked, badq)
        yield from output_families(app.outputs.status() if app.outputs is not None else {})
        writes = CounterMetricFamily("edge_api_writes", "API writes by result", labels=["result"])
        for result, n in self.intel.api_counters.items():
            writes.add_metric([result], n)
        yield writes
        holes = GaugeMetricFamily("edge_device_holes", "learned address holes being re-probed", labels=["device"])
        unreadable = GaugeMetricFamily("edge_device_unreadable_points", "points refused even alone",
                                       labels=["device"])
        for d in app.diagnostics():
            holes.add_metric([d.name], d.holes)
            unreadable.add_metric([d.name], d.unreadable_points)
        yield from (holes, unreadable)
        delivery = self.intel.delivery()
        if delivery is not None:
            yield from delivery_metrics(delivery)
        yield from security_metrics(self.intel.security_snapshot())


def delivery_metrics(delivery: dict) -> Iterator[Metric]:
    """Store-and-forward figures: the spool's backlog and disk, drops by reason, the forwarder's state."""
    sp = delivery["spool"]
    for name, key, doc in (
            ("edge_spool_unsent_points", "unsent_points", "points waiting to be sent (the backlog)"),
            ("edge_spool_unsent_bytes", "unsent_bytes", "bytes waiting to be sent"),
            ("edge_spool_oldest_unsent_age_seconds", "oldest_unsent_age_s", "age of the oldest unsent point"),
            ("edge_spool_disk_bytes", "disk_bytes", "disk used by the spool: database pages, WAL, journal"),
            ("edge_spool_disk_budget_bytes", "disk_budget_bytes", "the spool's disk budget (max_bytes)")):
        yield GaugeMetricFamily(name, doc, value=float(sp[key]))
    dropped = CounterMetricFamily("edge_spool_dropped_points", "unsent points lost, by reason", labels=["reason"])
    for reason, n in sorted(sp["dropped_points"].items()):
        dropped.add_metric([reason], n)
    yield dropped
    yield GaugeMetricFamily("edge_degraded", "1 while data do not reach the time-series server",
                            value=float(delivery["degraded"] is not None))
    crashes = CounterMetricFamily("edge_thread_crashes", "crashes of supervised threads (each restarted)",
                                  labels=["thread"])
    crashes.add_metric(["spool-writer"], sp["writer"]["crashes"])
    fw = delivery["forwarder"]
    if fw is not None:
        crashes.add_metric(["influx-forwarder"], fw["thread"]["crashes"])
        state = GaugeMetricFamily("edge_forwarder_state", "1 for the forwarder's current state",
                                  labels=["state", "url"])
        for name in ("ok", "retrying", "refused", "stopped", "starting"):
            state.add_metric([name, fw["url"]], float(fw["state"] == name))
        yield state
        yield CounterMetricFamily("edge_forwarder_points_sent", "points the server acknowledged",
                                  value=fw["points_sent"])
        yield CounterMetricFamily("edge_forwarder_retries", "failed attempts (server down)", value=fw["retries"])
    yield crashes


#: States in which an output is delivering (edge_output_up 1).
UP_STATES = {"online", "connected", "idle", "sending"}
MQTT_COUNTERS = ("connects", "connect_failures", "disconnects", "messages", "metrics", "historical_metrics",
                 "births", "rebirths", "device_deaths", "replayed_rows", "commands_ok", "commands_refused",
                 "commands_failed", "lost_points")


def output_families(status: dict[str, dict]) -> Iterator[Metric]:
    """``edge_output_up`` per output that talks to a server, and the MQTT output's own figures."""
    up = GaugeMetricFamily("edge_output_up", "1 while the output delivers to its server (state online/idle/"
                           "sending), 0 while it is down, refused or waiting", labels=["output", "state"])
    for name, st in status.items():
        up.add_metric([name, str(st.get("state", ""))], float(st.get("state") in UP_STATES))
    yield up
    mqtt = status.get("mqtt")
    if mqtt is None:
        return
    for key in MQTT_COUNTERS:
        yield CounterMetricFamily(f"edge_mqtt_{key}", f"MQTT output: {key.replace('_', ' ')}", value=mqtt[key])
    yield GaugeMetricFamily("edge_mqtt_backlog_points", "MQTT: samples held for the Sparkplug host",
                            value=mqtt["backlog_points"])
    yield GaugeMetricFamily("edge_mqtt_bd_seq", "MQTT: Sparkplug bdSeq of the current connection", value=mqtt["bd_seq"])


def security_metrics(snap: dict) -> Iterator[Metric]:
    """The counters of GET /api/security as Prometheus families (docs/security.md explains each)."""
    refused = CounterMetricFamily("edge_api_refused", "API requests refused before they did anything",
                                  labels=["reason"])
    for reason, n in snap["api"]["refused"].items():
        refused.add_metric([reason], n)
    yield refused
    opcua = snap.get("opcua") or {}
    if not opcua:
        return
    logins = CounterMetricFamily("edge_opcua_logins", "OPC UA password checks by result", labels=["result"])
    for result, n in opcua["logins"]["counters"].items():
        logins.add_metric([result], n)
    yield logins
    yield GaugeMetricFamily("edge_opcua_lockouts_active", "user name and address pairs locked out now",
                            value=opcua["logins"]["locked_count"])
    channel = CounterMetricFamily("edge_opcua_refused", "OPC UA requests and connections refused on the wire",
                                  labels=["what", "reason"])
    channels = opcua["channels"]
    for service, n in channels["none_channel_refused"].items():
        channel.add_metric(["none_channel", service], n)
    for why, n in channels["user_tokens_refused"].items():
        channel.add_metric(["user_token", why], n)
    for why, n in channels["connections_closed"].items():
        channel.add_metric(["connection", why], n)
    for why, n in (opcua.get("certificates") or {}).get("reasons", {}).items():
        channel.add_metric(["certificate", why], n)
    yield channel


def metrics_text(intel: Intelligence) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(intel))
    return generate_latest(registry)
