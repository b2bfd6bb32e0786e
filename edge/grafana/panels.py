"""Panel builders shared by the generated dashboards (grafana-foundation-sdk builders).

Each function returns an SDK panel builder with its InfluxQL targets. Display names are set
with target aliases, so field overrides can match them by name (``<tag>``, ``<tag> min``).
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

from edge.core.model import QUALITY_NAMES, DeviceState
from edge.grafana.influxql import InfluxQL
from edge.grafana.plantview import TagView

#: Engineering units as written in points files -> Grafana unit ids; others are shown as a suffix.
UNITS: dict[str, str] = {
    "V": "volt", "kV": "kvolt", "mV": "mvolt", "A": "amp", "mA": "mamp", "kA": "kamp",
    "W": "watt", "kW": "kwatt", "MW": "megwatt", "VA": "voltamp", "kVA": "kvoltamp",
    "var": "voltampreact", "VAr": "voltampreact", "kvar": "kvoltampreact", "kVAr": "kvoltampreact",
    "Wh": "watth", "kWh": "kwatth", "MWh": "mwatth", "kvarh": "kvoltampreact", "Hz": "hertz",
    "°C": "celsius", "degC": "celsius", "C": "celsius", "°F": "fahrenheit", "K": "kelvin",
    "%": "percent", "%RH": "humidity", "rpm": "rotrpm", "s": "s", "ms": "ms", "min": "m", "h": "h",
    "bar": "pressurebar", "mbar": "pressurembar", "Pa": "pressurepa", "kPa": "pressurekpa",
    "m3/h": "flowcmh", "m³/h": "flowcmh", "l/min": "flowlpm", "l/s": "litreps", "Nm": "Nm", "m": "lengthm",
    "mm": "lengthmm", "ppm": "ppm", "B": "bytes",
}

QUALITY_COLORS = {0: "green", 1: "yellow", 2: "dark-red", 3: "red", 4: "purple", 5: "orange", 6: "dark-orange"}
STATE_COLORS = {DeviceState.CONNECTING: "blue", DeviceState.ONLINE: "green", DeviceState.OFFLINE: "red",
                DeviceState.QUARANTINED: "purple", DeviceState.DISABLED: "gray"}
STEP_COLORS = ("green", "blue", "yellow", "orange", "purple", "red", "dark-green", "dark-blue")


def grafana_unit(unit: str | None) -> str | None:
    """The Grafana unit id for an engineering unit; unknown units become ``suffix: <unit>``."""
    if not unit:
        return None
    return UNITS.get(unit, f"suffix: {unit}")


def value_map(entries: dict[int, tuple[str, str]]) -> ValueMap:
    """A value-to-text mapping: code -> (text, colour)."""
    return ValueMap(options={str(k): ValueMappingResult(text=t, color=c, index=i)
                             for i, (k, (t, c)) in enumerate(sorted(entries.items()))})


def quality_mapping() -> ValueMap:
    return value_map({int(q): (name, QUALITY_COLORS[int(q)]) for q, name in QUALITY_NAMES.items()})


def state_mapping() -> ValueMap:
    return value_map({int(s): (s.name.lower(), STATE_COLORS[s]) for s in DeviceState})


def tag_mapping(tag: TagView) -> ValueMap:
    """Enumerated states in the order the points file gives, or off/on for a bit."""
    if tag.enum:
        return value_map({k: (v, STEP_COLORS[i % len(STEP_COLORS)]) for i, (k, v) in enumerate(tag.enum)})
    return value_map({0: ("off", "text"), 1: ("on", "green")})


def range_thresholds(tag: TagView) -> db.ThresholdsConfig:
    """Green inside the tag's range, red outside it; plain green when there is no range."""
    steps = [Threshold(value=None, color="green")]
    if tag.low is not None:
        steps = [Threshold(value=None, color="red"), Threshold(value=tag.low, color="green")]
    if tag.high is not None:
        steps.append(Threshold(value=tag.high, color="red"))
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _json_mapping(m: ValueMap) -> dict:
    """A mapping as plain JSON, for override values (the model keeps override values opaque)."""
    return {"type": "value", "options": {k: {key: val for key, val in (("color", r.color), ("index", r.index),
                                                                      ("text", r.text)) if val is not None}
                                         for k, r in m.options.items()}}


def _targets(panel, ds: DataSourceRef, queries: list[InfluxQL]):
    """Attach targets with refIds A, B, ... and the data source to a panel builder."""
    panel.datasource(ds)
    for i, q in enumerate(queries):
        panel.with_target(q.ref_id(_ref(i)).datasource(ds))
    return panel


def _legend() -> cb.VizLegendOptions:
    return cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST).placement(
        cm.LegendPlacement.BOTTOM)


def _ref(i: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]


# ----------------------------------------------------------------------------- tag panels


def latest_values(title: str, ds: DataSourceRef, tags: list[TagView], query_for) -> stat.Panel:
    """Stat panel: the last value of each tag with its unit, coloured by its range (left of the band panel)."""
    panel = (stat.Panel().title(title).height(8).span(8)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
             .text_mode(cm.BigValueTextMode.VALUE_AND_NAME))
    units = {t.unit for t in tags}
    if len(units) == 1 and (unit := grafana_unit(next(iter(units)))):
        panel.unit(unit)
    for t in tags:
        props = [DynamicConfigValue(id_val="thresholds", value=_json_thresholds(range_thresholds(t)))]
        if (unit := grafana_unit(t.unit)) and len(units) > 1:
            props.append(DynamicConfigValue(id_val="unit", value=unit))
        if t.low is not None:
            props.append(DynamicConfigValue(id_val="min", value=t.low))
        if t.high is not None:
            props.append(DynamicConfigValue(id_val="max", value=t.high))
        if t.description:
            props.append(DynamicConfigValue(id_val="description", value=t.description))
        panel.override_by_name(t.name, props)
    return _targets(panel, ds, [InfluxQL(query_for(t)).alias(t.name) for t in tags])


def _json_thresholds(th: db.ThresholdsConfig) -> dict:
    built = th.build()
    return {"mode": str(built.mode), "steps": [{"color": s.color, "value": s.value} for s in built.steps]}


def band_series(title: str, ds: DataSourceRef, tags: list[TagView], query_for) -> timeseries.Panel:
    """Time series: each tag's mean inside a shaded min/max band (right of the latest values)."""
    panel = (timeseries.Panel().title(title).height(8).span(16).line_width(2).fill_opacity(0)
             .span_nulls(False).legend(_legend()))
    units = {t.unit for t in tags}
    if len(units) == 1 and (unit := grafana_unit(next(iter(units)))):
        panel.unit(unit)
    for t in tags:
        hidden = {"legend": True, "tooltip": False, "viz": False}
        panel.override_by_name(f"{t.name} max", [
            DynamicConfigValue(id_val="custom.fillBelowTo", value=f"{t.name} min"),
            DynamicConfigValue(id_val="custom.lineWidth", value=0),
            DynamicConfigValue(id_val="custom.fillOpacity", value=20),
            DynamicConfigValue(id_val="custom.hideFrom", value=hidden)])
        panel.override_by_name(f"{t.name} min", [
            DynamicConfigValue(id_val="custom.lineWidth", value=0),
            DynamicConfigValue(id_val="custom.hideFrom", value=hidden)])
        if len(units) > 1 and (unit := grafana_unit(t.unit)):
            panel.override_by_regexp(f"^{t.name}( min| max)?$", [DynamicConfigValue(id_val="unit", value=unit)])
    return _targets(panel, ds, [InfluxQL(query_for(t)).alias(f"{t.name} $col") for t in tags])


def states(title: str, ds: DataSourceRef, tags: list[TagView], query_for) -> statetimeline.Panel:
    """State timeline of status bits and enumerations, with their state names."""
    panel = (statetimeline.Panel().title(title).height(max(4, 2 + len(tags))).span(24)
             .show_value(cm.VisibilityMode.AUTO).merge_values(True).fill_opacity(80))
    for t in tags:
        panel.override_by_name(t.name, [DynamicConfigValue(id_val="mappings", value=[_json_mapping(tag_mapping(t))])])
    return _targets(panel, ds, [InfluxQL(query_for(t)).alias(t.name) for t in tags])


def quality(title: str, ds: DataSourceRef, query: str, rows: int) -> statetimeline.Panel:
    """State timeline of ``q_<tag>`` codes: stale (Uncertain) and Bad samples stand out in colour."""
    panel = (statetimeline.Panel().title(title).height(max(4, 2 + rows)).span(24)
             .show_value(cm.VisibilityMode.NEVER).merge_values(True).fill_opacity(80)
             .mappings([quality_mapping()]).color_scheme(db.FieldColor().mode(FieldColorModeId.FIXED)
                                                         .fixed_color("green")))
    return _targets(panel, ds, [InfluxQL(query).alias("$col")])


def texts(title: str, ds: DataSourceRef, tags: list[TagView], query_for) -> table.Panel:
    """Table of the latest text of string tags (serial numbers, firmware versions)."""
    panel = table.Panel().title(title).height(4).span(24).show_header(True)
    return _targets(panel, ds, [InfluxQL(query_for(t)).alias(t.name).table() for t in tags])


# ----------------------------------------------------------------------------- overview panels


def alarm_table(title: str, ds: DataSourceRef, query: str) -> table.Panel:
    """One row per alarm: its latest ISA-18.2 state, active/acked flags, severity and message."""
    panel = table.Panel().title(title).height(8).span(24).show_header(True)
    return _targets(panel, ds, [InfluxQL(query).alias("$tag_alarm").table()])


def series(title: str, ds: DataSourceRef, query: str, alias: str, unit: str | None = None,
           span: int = 12, draw_bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).height(8).span(span).line_width(1).fill_opacity(10)
             .legend(_legend()))
    if unit:
        panel.unit(unit)
    if draw_bars:
        panel.draw_style(cm.GraphDrawStyle.BARS)
    return _targets(panel, ds, [InfluxQL(query).alias(alias)])


def device_states(title: str, ds: DataSourceRef, query: str, rows: int) -> statetimeline.Panel:
    panel = (statetimeline.Panel().title(title).height(max(5, 2 + rows)).span(24)
             .show_value(cm.VisibilityMode.AUTO).merge_values(True).fill_opacity(80).mappings([state_mapping()])
             .legend(_legend())
             .color_scheme(db.FieldColor().mode(FieldColorModeId.FIXED).fixed_color("blue")))
    return _targets(panel, ds, [InfluxQL(query).alias("$tag_source")])


def coded_state(title: str, ds: DataSourceRef, query: str, codes: dict[int, tuple[str, str]], span: int = 8,
                timeline: bool = False) -> stat.Panel | statetimeline.Panel:
    """The latest code of an appliance state (forwarder, last reload) as its name and colour, or
    its history as a state timeline."""
    mapping = value_map(codes)
    panel: stat.Panel | statetimeline.Panel
    if timeline:
        panel = (statetimeline.Panel().title(title).height(5).span(span).show_value(cm.VisibilityMode.AUTO)
                 .merge_values(True).fill_opacity(80).mappings([mapping]))
    else:
        panel = (stat.Panel().title(title).height(4).span(span).mappings([mapping])
                 .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                 .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
                 .text_mode(cm.BigValueTextMode.VALUE))
    return _targets(panel, ds, [InfluxQL(query).alias("$col")])


def increases(title: str, ds: DataSourceRef, tags: list[TagView], query_for) -> timeseries.Panel:
    """Bars of each counter's increase per interval (energy used, parts made, hours run)."""
    panel = (timeseries.Panel().title(title).height(8).span(16).line_width(1).fill_opacity(60)
             .draw_style(cm.GraphDrawStyle.BARS).legend(_legend()))
    units = {t.unit for t in tags}
    if len(units) == 1 and (unit := grafana_unit(next(iter(units)))):
        panel.unit(unit)
    return _targets(panel, ds, [InfluxQL(query_for(t)).alias(t.name) for t in tags])


def numbers(title: str, ds: DataSourceRef, query: str, alias: str, unit: str | None = None,
            span: int = 6, red_above: float | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).height(4).span(span)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .graph_mode(cm.BigValueGraphMode.AREA).text_mode(cm.BigValueTextMode.VALUE_AND_NAME))
    steps = [Threshold(value=None, color="green")]
    if red_above is not None:
        steps.append(Threshold(value=red_above, color="red"))
    panel.thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    if unit:
        panel.unit(unit)
    return _targets(panel, ds, [InfluxQL(query).alias(alias)])
