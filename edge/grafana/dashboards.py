"""The generated dashboards: one site overview and one dashboard per device type.

Queries follow the exporter's schema (docs/influx-schema.md): a measurement per device (or per
plugin, then told apart by the ``device`` tag), ``q_<tag>`` quality fields, window statistics
``<tag>_<stat>`` in ``edge_window`` and appliance health in ``edge_health``. Every query is raw
InfluxQL (InfluxDB 1.x, 2.x through its v1 API, 3.x). Uids derive from the site and type names,
so a rebuild or a push overwrites the same dashboards.
"""
from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    AnnotationQuery,
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Panel,
)

from edge.grafana import influxql, panels
from edge.grafana.influxql import DATASOURCE_TYPE, ident, literal
from edge.grafana.plantview import DeviceType, SiteView, TagView, uid_for
from edge.outputs.influx import ALARM_MEASUREMENT
from edge.outputs.manager import FORWARDER_STATE_CODES
from edge.runtime.app import RELOAD_RESULT_CODES

SCHEMA_TAG = "edge"  # every generated dashboard carries it (search, links)
REFRESH = "10s"
TIME_FROM = "now-6h"

influxql.register()  # Dashboard.from_json decodes InfluxDB targets as InfluxQLQuery


def overview_uid(view: SiteView) -> str:
    return uid_for(f"edge-{view.site}-overview")


def type_uid(view: SiteView, dtype: DeviceType) -> str:
    return uid_for(f"edge-{view.site}-{dtype.key}")


def datasource_ref(view: SiteView) -> DataSourceRef:
    return DataSourceRef(type_val=DATASOURCE_TYPE, uid=view.datasource_uid)


def _from(view: SiteView, measurement: str) -> str:
    """A measurement reference, qualified with the retention policy when the bucket names one."""
    return (ident(view.retention_policy) + "." if view.retention_policy else "") + ident(measurement)


def _dashboard(view: SiteView, uid: str, title: str, extra_tags: list[str]) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).tags([SCHEMA_TAG, f"site:{view.site}", *extra_tags])
            .time(TIME_FROM, "now").refresh(REFRESH).timezone("browser").editable()
            .tooltip(DashboardCursorSync.CROSSHAIR)
            .link(db.DashboardLink("Site dashboards").type(DashboardLinkType.DASHBOARDS)
                  .tags([f"site:{view.site}"]).as_dropdown(True).include_vars(False).keep_time(True)))


# ----------------------------------------------------------------------------- the overview


def overview(view: SiteView) -> db.Dashboard:
    """Every device's state, comm errors and poll latency; spool depth and drops; the forwarder and
    reloads; bus utilisation; alarms."""
    ds = datasource_ref(view)
    health = _from(view, view.health_measurement)
    site = f"{ident('site')} = {literal(view.site)}"
    devices = f"{ident('source')} =~ /^({'|'.join(_regex(d) for d in view.devices)})$/"
    appliance = f"{site} AND {ident('source')} = 'appliance'"
    per_device = f"FROM {health} WHERE {site} AND {devices} AND $timeFilter"
    dash = _dashboard(view, overview_uid(view), f"{view.site}: overview", ["overview"])
    dash.with_row(db.Row("Devices"))
    dash.with_panel(panels.numbers(
        "Devices online / offline", ds,
        f'SELECT last("devices_online") AS "online", last("devices_offline") AS "offline" FROM {health} '
        f"WHERE {appliance} AND $timeFilter", "$col", span=8))
    dash.with_panel(panels.numbers(
        "Spool depth (unsent points)", ds,
        f'SELECT last("spool_unsent_points") AS "unsent" FROM {health} WHERE {appliance} AND $timeFilter',
        "$col", span=8))
    dash.with_panel(panels.numbers(
        "Points dropped (total)", ds,
        f'SELECT last("spool_dropped_points_total") AS "dropped" FROM {health} WHERE {appliance} AND $timeFilter',
        "$col", span=8, red_above=1))
    dash.with_panel(panels.device_states(
        "Device state", ds,
        f'SELECT last("state") {per_device} GROUP BY time($__interval), "source" fill(previous)', len(view.devices)))
    dash.with_panel(panels.series(
        "Communication errors (per interval)", ds,
        'SELECT non_negative_difference(last("polls_failed")) AS "failed polls", '
        'non_negative_difference(last("timeouts")) AS "timeouts", '
        'non_negative_difference(last("crc_errors")) AS "bad frames", '
        'non_negative_difference(last("exceptions")) AS "exceptions" '
        f'{per_device} GROUP BY time($__interval), "source" fill(none)', "$tag_source $col", draw_bars=True))
    dash.with_panel(panels.series(
        "Poll latency", ds,
        f'SELECT max("latency_p99_ms") AS "p99", mean("latency_p50_ms") AS "p50" {per_device} '
        'GROUP BY time($__interval), "source" fill(none)', "$tag_source $col", unit="ms"))
    dash.with_row(db.Row("Appliance"))
    dash.with_panel(panels.series(
        "Spool depth", ds,
        f'SELECT last("spool_unsent_points") AS "unsent points" FROM {health} WHERE {appliance} AND $timeFilter '
        "GROUP BY time($__interval) fill(none)", "$col", span=8))
    dash.with_panel(panels.series(
        "Oldest unsent record", ds,
        f'SELECT last("spool_oldest_unsent_age_s") AS "age" FROM {health} WHERE {appliance} AND $timeFilter '
        "GROUP BY time($__interval) fill(none)", "$col", unit="s", span=8))
    dash.with_panel(panels.series(
        "Points dropped (per interval)", ds,
        'SELECT non_negative_difference(last("spool_dropped_points_total")) AS "dropped" '
        f"FROM {health} WHERE {appliance} AND $timeFilter GROUP BY time($__interval) fill(none)", "$col",
        span=8, draw_bars=True))
    for panel in delivery_panels(view, ds, health, appliance):
        dash.with_panel(panel)
    if view.lines:
        fields = ", ".join(f'mean({ident("line_utilisation_pct." + line)}) AS {ident(line)}' for line in view.lines)
        dash.with_panel(panels.series(
            "Bus utilisation per line", ds,
            f"SELECT {fields} FROM {health} WHERE {appliance} AND $timeFilter GROUP BY time($__interval) fill(none)",
            "$col", unit="percent", span=24))
    for panel in alarm_panels(view, ds):
        dash.with_panel(panel)
    for annotation in alarm_annotations(view, ds):
        dash.annotation(annotation)
    return dash


FORWARDER_COLOURS = {"ok": "green", "retrying": "orange", "refused": "red", "stopped": "gray", "starting": "blue"}
RELOAD_COLOURS = {"applied": "green", "refused": "orange", "failed": "red"}


def delivery_panels(view: SiteView, ds: DataSourceRef, health: str, appliance: str) -> list[Builder[Panel]]:
    """The forwarder (state now and over time, points delivered, time down) and reloads (counts,
    the last outcome over time), from the appliance's ``edge_health`` records."""
    where = f"FROM {health} WHERE {appliance} AND $timeFilter"
    out: list[Builder[Panel]] = []
    if view.forwarding:
        codes = {c: (name, FORWARDER_COLOURS[name]) for name, c in FORWARDER_STATE_CODES.items()}
        out.append(panels.coded_state("Forwarder now", ds, f'SELECT last("influx_state_code") AS "forwarder" {where}',
                                      codes, span=6))
        out.append(panels.coded_state(
            "Forwarder state", ds,
            f'SELECT last("influx_state_code") AS "forwarder" {where} GROUP BY time($__interval) fill(previous)',
            codes, span=18, timeline=True))
        out.append(panels.series(
            "Points delivered (per interval)", ds,
            f'SELECT non_negative_difference(last("influx_points_sent")) AS "points sent" {where} '
            "GROUP BY time($__interval) fill(none)", "$col", span=12, draw_bars=True))
        out.append(panels.series(
            "Server down for", ds,
            f'SELECT last("influx_down_s") AS "down" {where} GROUP BY time($__interval) fill(none)', "$col",
            unit="s", span=12))
    codes = {c: (name, RELOAD_COLOURS[name]) for name, c in RELOAD_RESULT_CODES.items()}
    out.append(panels.numbers(
        "Reloads applied / refused / failed", ds,
        f'SELECT last("reloads.applied") AS "applied", last("reloads.refused") AS "refused", '
        f'last("reloads.failed") AS "failed" {where}', "$col", span=8))
    out.append(panels.coded_state(
        "Last reload", ds,
        f'SELECT last("last_reload_result") AS "last reload" {where} GROUP BY time($__interval) fill(previous)',
        codes, span=16, timeline=True))
    return out


def alarm_panels(view: SiteView, ds: DataSourceRef) -> list[Builder[Panel]]:
    """A table of every configured alarm with its latest state (ISA-18.2), from ``edge_alarms``."""
    if not view.alarms:
        return []
    query = ('SELECT last("state") AS "state", last("active") AS "active", last("acked") AS "acked", '
             'last("severity") AS "severity", last("message") AS "message" '
             f"FROM {_from(view, ALARM_MEASUREMENT)} WHERE {ident('site')} = {literal(view.site)} AND $timeFilter "
             'GROUP BY "alarm"')
    return [panels.alarm_table("Alarms (latest state per alarm)", ds, query)]


def alarm_annotations(view: SiteView, ds: DataSourceRef) -> list[Builder[AnnotationQuery]]:
    """Annotations of alarm activations: none yet. The SDK's AnnotationQuery has no InfluxQL query
    field and no Grafana runs here to check a hand-made one; the alarm table carries the alarms."""
    return []


def _regex(name: str) -> str:
    """A literal name inside an InfluxQL /regex/ (escapes regex metacharacters and slashes)."""
    out = []
    for ch in name:
        out.append("\\" + ch if ch in r"\.^$|?*+()[]{}/-" else ch)
    return "".join(out)


# ----------------------------------------------------------------------------- per device type


class TypeQueries:
    """The InfluxQL of one device type's panels, for the selected ``$device``."""

    def __init__(self, view: SiteView, dtype: DeviceType) -> None:
        self.view = view
        self.meas = _from(view, dtype.measurement or "$device")
        self.windows = _from(view, view.window_measurement)
        self.where = f"{ident('site')} = {literal(view.site)} AND {ident('device')} = '$device'"

    def latest(self, tag: TagView) -> str:
        return f"SELECT last({ident(tag.name)}) FROM {self.meas} WHERE {self.where} AND $timeFilter"

    def band(self, tag: TagView) -> str:
        """Mean, min and max per interval: from window statistics when the tag has windows, else raw Good samples."""
        if tag.windows:
            f = {s: ident(f"{tag.name}_{s}") for s in ("mean", "min", "max")}
            return (f'SELECT mean({f["mean"]}) AS "mean", min({f["min"]}) AS "min", max({f["max"]}) AS "max" '
                    f"FROM {self.windows} WHERE {self.where} AND {ident('window')} = {literal(tag.windows[0])} "
                    "AND $timeFilter GROUP BY time($__interval) fill(none)")
        t = ident(tag.name)
        return (f'SELECT mean({t}) AS "mean", min({t}) AS "min", max({t}) AS "max" FROM {self.meas} '
                f"WHERE {self.where} AND {ident('q_' + tag.name)} = 0 AND $timeFilter "
                "GROUP BY time($__interval) fill(none)")

    def increase(self, tag: TagView) -> str:
        """A counter's increase per interval (a drop, e.g. a counter reset or wrap, is left out)."""
        return (f"SELECT non_negative_difference(last({ident(tag.name)})) FROM {self.meas} "
                f"WHERE {self.where} AND {ident('q_' + tag.name)} = 0 AND $timeFilter "
                "GROUP BY time($__interval) fill(none)")

    def state(self, tag: TagView) -> str:
        return (f"SELECT last({ident(tag.name)}) FROM {self.meas} WHERE {self.where} AND $timeFilter "
                "GROUP BY time($__interval) fill(previous)")

    def quality(self, tags: list[TagView]) -> str:
        cols = ", ".join(f"last({ident('q_' + t.name)}) AS {ident(t.name)}" for t in tags)
        return (f"SELECT {cols} FROM {self.meas} WHERE {self.where} AND $timeFilter "
                "GROUP BY time($__interval) fill(previous)")


def device_type(view: SiteView, dtype: DeviceType) -> db.Dashboard:
    """One dashboard per device type, a ``device`` variable, a row per panel group."""
    ds = datasource_ref(view)
    q = TypeQueries(view, dtype)
    title = f"{view.site}: {dtype.key}" + ("" if dtype.plugin else " (device)")
    dash = _dashboard(view, type_uid(view, dtype), title, [f"plugin:{dtype.plugin}" if dtype.plugin else "device"])
    dash.with_variable(db.CustomVariable("device").label("Device").values(",".join(dtype.devices))
                       .current(_option(dtype.devices[0])).multi(False).include_all(False))
    for group, tags in dtype.panels().items():
        numeric = [t for t in tags if not t.is_discrete and not t.is_string and not t.is_counter]
        counters = [t for t in tags if t.is_counter]
        discrete = [t for t in tags if t.is_discrete]
        strings = [t for t in tags if t.is_string]
        dash.with_row(db.Row(group))
        if numeric:
            dash.with_panel(panels.latest_values(f"{group}: latest", ds, numeric, q.latest))
            dash.with_panel(panels.band_series(f"{group}: mean with min/max", ds, numeric, q.band))
        if counters:
            dash.with_panel(panels.latest_values(f"{group}: readings", ds, counters, q.latest))
            dash.with_panel(panels.increases(f"{group}: increase per interval", ds, counters, q.increase))
        if discrete:
            dash.with_panel(panels.states(f"{group}: states", ds, discrete, q.state))
        if strings:
            dash.with_panel(panels.texts(f"{group}: text", ds, strings, q.latest))
        dash.with_panel(panels.quality(f"{group}: quality (Good, stale, Bad)", ds, q.quality(tags), len(tags)))
    return dash


def _option(value: str):
    from grafana_foundation_sdk.models.dashboard import VariableOption  # noqa: PLC0415

    return VariableOption(selected=True, text=value, value=value)


# ----------------------------------------------------------------------------- the whole set


def build_dashboards(view: SiteView) -> dict[str, dict]:
    """File name (``overview.json``, ``<type>.json``) -> dashboard JSON model, for one site."""
    out = {"overview.json": to_json(overview(view))}
    for dtype in view.types:
        out[f"{dtype.key}.json"] = to_json(device_type(view, dtype))
    return out


def to_json(dash: db.Dashboard) -> dict:
    """The dashboard model as plain JSON data (what Grafana stores and the API takes).

    Panel ids are numbered 1, 2, ... in layout order (Grafana needs them unique per dashboard).
    """
    model = dash.build()
    for i, panel in enumerate(model.panels or [], start=1):
        panel.id_val = i
    return json.loads(json.dumps(model, cls=JSONEncoder))


def dumps(model: dict) -> str:
    """Canonical text of a dashboard or provisioning document: sorted keys, fixed indent, final newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
