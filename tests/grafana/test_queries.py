"""Every panel query of the generated dashboards returns data from a real InfluxDB 1.x loaded with
the exporter's real line protocol: the demo plant, the demo plant with windows and per-plugin
measurements, and every plugin's sample.yaml."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from plantdata import (
    FAILED_EVERY,
    POLLS,
    STEP_NS,
    exporter_lines,
    load,
    make_site,
    sample_snippets,
    site_names,
)

from edge.grafana.dashboards import build_dashboards
from edge.grafana.influxql import interpolate
from edge.grafana.plantview import site_view

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
INTERVAL = "30s"  # $__interval for a 10-minute range
SITES = site_names()


def targets(model: dict):
    """(panel title, target) of every panel, including panels nested in collapsed rows."""
    for panel in model["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target


def variable_values(model: dict) -> list[dict[str, str]]:
    """One variable assignment per value of the dashboard's (single) custom variable, or none."""
    variables = model.get("templating", {}).get("list", [])
    if not variables:
        return [{}]
    assert len(variables) == 1 and variables[0]["type"] == "custom", variables
    return [{variables[0]["name"]: v} for v in variables[0]["query"].split(",")]


def columns_with_data(result: dict) -> tuple[set[str], set[str], list[dict]]:
    """(columns named, columns with at least one non-null value, the series)."""
    series = result.get("series", [])
    named, filled = set(), set()
    for s in series:
        for i, col in enumerate(s["columns"]):
            if col == "time":
                continue
            named.add(col)
            if any(row[i] is not None for row in s["values"]):
                filled.add(col)
    return named, filled, series


def test_every_plugin_sample_is_a_test_site():
    names = set(SITES)
    assert {f"sample-{p.parent.name}" for p in sample_snippets()} <= names
    assert len(sample_snippets()) >= 5 and {"demo", "demo-windows-per-plugin"} <= names


@pytest.mark.parametrize("site_name", SITES)
def test_every_panel_query_returns_data(site_name: str, tmp_path: Path, influxdb1):
    site = make_site(site_name, tmp_path)
    loaded = load(site)
    lines = exporter_lines(loaded, BASE_NS)
    view = site_view(loaded)
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(lines))
    t0, t1 = BASE_NS, BASE_NS + POLLS * STEP_NS
    checked, problems = 0, []
    for name, model in build_dashboards(view).items():
        for assignment in variable_values(model):
            for title, target in targets(model):
                q = interpolate(target["query"], t0, t1, INTERVAL, assignment)
                result = influxdb1.query(q, db=view.database)["results"][0]
                where = f"{name} / {title} / {target['refId']} {assignment}: {q}"
                checked += 1
                if "error" in result:
                    problems.append(f"{where}\n  error: {result['error']}")
                    continue
                named, filled, series = columns_with_data(result)
                if not series or named != filled:
                    problems.append(f"{where}\n  no data for {sorted(named - filled) or 'any field'}")
                if 'GROUP BY time($__interval), "source"' in target["query"]:
                    sources = {s["tags"]["source"] for s in series}
                    if sources != set(view.devices):
                        problems.append(f"{where}\n  devices {sorted(sources)} != {sorted(view.devices)}")
    assert not problems, f"{len(problems)} of {checked} queries failed:\n" + "\n".join(problems[:20])
    assert checked >= 10
    print(f"{site_name}: {checked} queries returned data")


def test_quality_panels_show_stale_and_bad_samples(tmp_path: Path, influxdb1):
    """The quality timeline of a group holds Good, Uncertain (stale) and Bad codes for its tags."""
    site = make_site("demo", tmp_path)
    loaded = load(site)
    view = site_view(loaded)
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(exporter_lines(loaded, BASE_NS)))
    model = build_dashboards(view)["xymd02_th.json"]
    quality = [t for title, t in targets(model) if "quality" in title]
    assert quality
    seen: set[int] = set()
    for target in quality:
        q = interpolate(target["query"], BASE_NS, BASE_NS + POLLS * STEP_NS, "5s", {"device": "th_room1"})
        for s in influxdb1.query(q, db=view.database)["results"][0]["series"]:
            seen.update(v for row in s["values"] for v in row[1:] if v is not None)
    assert {0, 1, 3} <= seen  # Good, Uncertain_LastUsableValue (stale), Bad_CommunicationError


def test_band_of_a_windowed_tag_reads_window_statistics(tmp_path: Path, influxdb1):
    site = make_site("demo-windows-per-plugin", tmp_path)
    loaded = load(site)
    view = site_view(loaded)
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(exporter_lines(loaded, BASE_NS)))
    model = build_dashboards(view)["xymd02_th.json"]
    band = [t for title, t in targets(model) if "min/max" in title and "temperature_mean" in t["query"]]
    assert len(band) == 1 and "\"window\" = '10s'" in band[0]["query"] and 'FROM "edge_window"' in band[0]["query"]
    q = interpolate(band[0]["query"], BASE_NS, BASE_NS + POLLS * STEP_NS, "10s", {"device": "th_room2"})
    s = influxdb1.query(q, db=view.database)["results"][0]["series"][0]
    rows = [dict(zip(s["columns"], r, strict=True)) for r in s["values"]]
    assert len(rows) >= 10
    assert all(r["min"] <= r["mean"] <= r["max"] for r in rows)
    assert any(r["min"] < r["max"] for r in rows)  # a band, not a line
    # per-plugin measurement: the raw queries read "xymd02_th" told apart by the device tag
    latest = next(t for title, t in targets(model) if title.endswith("latest"))
    assert re.search(r'FROM "xymd02_th" WHERE .*"device" = \'\$device\'', latest["query"])


def test_band_of_a_raw_tag_leaves_out_stale_and_bad_samples(tmp_path: Path, influxdb1):
    """The min/max band of a tag without windows plots Good samples only: stale values are not data."""
    site = make_site("demo", tmp_path)
    loaded = load(site)
    view = site_view(loaded)
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(exporter_lines(loaded, BASE_NS)))
    model = build_dashboards(view)["xymd02_th.json"]
    first_tag = loaded.plant.tags[loaded.plant.device("th_room1").tag_ids[0]].name  # stale every 7th poll
    band = next(t for title, t in targets(model) if "min/max" in title and f'mean("{first_tag}")' in t["query"])
    q = interpolate(band["query"], BASE_NS, BASE_NS + POLLS * STEP_NS - 1, "5s", {"device": "th_room1"})
    rows = influxdb1.query(q, db=view.database)["results"][0]["series"][0]["values"]
    good = [p for p in range(POLLS) if p % FAILED_EVERY != FAILED_EVERY - 1 and p % 7 != 3]
    assert [r[0] for r in rows] == [BASE_NS + p * STEP_NS for p in good]
    raw = influxdb1.query(f'SELECT count("{first_tag}") FROM "th_room1"', db=view.database)["results"][0]
    assert raw["series"][0]["values"][0][1] > len(good)  # the stale values are stored, just not plotted


def test_overview_shows_the_forwarder_and_reload_state(tmp_path: Path, influxdb1):
    """The overview's delivery panels follow the appliance: the forwarder starts, then retries (its
    server gone), a reload is refused; the panels' value mappings name the codes the appliance writes."""
    from edge.outputs.manager import FORWARDER_STATE_CODES
    from edge.runtime.reload import ReloadOutcome

    def on_poll(app, poll: int) -> None:
        if poll == 40:
            app.outputs.forwarder.c.state = "ok"
        if poll == 60:
            app.outputs.forwarder.c.state = "retrying"
        if poll == 80:
            app.reloads["refused"] += 1
            app.last_reload = ReloadOutcome(BASE_NS + poll * STEP_NS, "sighup", "refused", "unknown plugin")

    site = make_site("demo", tmp_path)
    loaded = load(site)
    view = site_view(loaded)
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(exporter_lines(loaded, BASE_NS, on_poll=on_poll)))
    overview = build_dashboards(view)["overview.json"]
    by_title = {p["title"]: p for p in overview["panels"]}

    def series_of(title: str) -> list[list]:
        q = interpolate(by_title[title]["targets"][0]["query"], BASE_NS, BASE_NS + POLLS * STEP_NS, INTERVAL, {})
        return influxdb1.query(q, db=view.database)["results"][0]["series"]

    codes = [row[1] for row in series_of("Forwarder state")[0]["values"] if row[1] is not None]
    seen = [c for i, c in enumerate(codes) if i == 0 or c != codes[i - 1]]
    assert seen == [FORWARDER_STATE_CODES[s] for s in ("starting", "ok", "retrying")], codes
    mapping = by_title["Forwarder state"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert mapping[str(FORWARDER_STATE_CODES["retrying"])]["text"] == "retrying"
    assert series_of("Forwarder now")[0]["values"][-1][1] == FORWARDER_STATE_CODES["retrying"]
    reloads = [row[1] for row in series_of("Last reload")[0]["values"] if row[1] is not None]
    assert reloads[0] == 0 and reloads[-1] == 1  # applied/none, then refused
    counts = series_of("Reloads applied / refused / failed")[0]
    assert dict(zip(counts["columns"][1:], counts["values"][-1][1:], strict=True)) == {
        "applied": 0, "refused": 1, "failed": 0}


def test_counters_are_drawn_as_increase_per_interval(tmp_path: Path, influxdb1):
    """Energy registers, parts counters and run hours: bars of what was added per interval, their
    readings in a stat panel; levels (voltages, speeds, temperatures) keep the mean/min/max band."""
    site = make_site("demo", tmp_path)
    view = site_view(load(site))
    boards = build_dashboards(view)
    titles = {name: {p["title"]: p for p in model["panels"]} for name, model in boards.items()}
    meter, plc = titles["eastron_sdm630.json"], titles["siemens_s7_1200.json"]
    assert {"kWh: increase per interval", "kWh: readings", "kvarh: increase per interval"} <= set(meter)
    assert "kWh: mean with min/max" not in meter and "V: mean with min/max" in meter
    bars = meter["kWh: increase per interval"]
    assert bars["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    assert {t["alias"] for t in bars["targets"]} == {"energy_import", "energy_export", "energy_total"}
    assert all("non_negative_difference(last(" in t["query"] for t in bars["targets"])
    increased = {t["alias"] for p in plc.values() if p["title"].endswith("increase per interval") for t in p["targets"]}
    assert increased == {"parts_good", "parts_rejected", "shift_counter", "heartbeat", "runtime_hours", "batch_energy"}
    # a meter's increase is what it counted: load a counter that rises 0.5 kWh per 5 s poll
    lines = [f"meter_main,site=demo,device=meter_main energy_import={1000 + 0.5 * i},q_energy_import=0i "
             f"{BASE_NS + i * STEP_NS}" for i in range(POLLS)]
    influxdb1.create_database(view.database)
    influxdb1.write_lines(view.database, "\n".join(lines))
    target = next(t for t in bars["targets"] if t["alias"] == "energy_import")
    q = interpolate(target["query"], BASE_NS, BASE_NS + POLLS * STEP_NS, INTERVAL, {"device": "meter_main"})
    values = [row[1] for row in influxdb1.query(q, db=view.database)["results"][0]["series"][0]["values"]]
    assert values and all(v == pytest.approx(3.0) for v in values[1:-1]), values  # 6 polls of 0.5 kWh per 30 s
