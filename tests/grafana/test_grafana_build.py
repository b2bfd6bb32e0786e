"""``edge grafana build``: canonical files, stable uids, the SDK's dashboard model, every tag drawn."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from plantdata import DEMO, ROOT, load, make_site, site_names

from edge.cli.main import main
from edge.config.loader import load_config
from edge.grafana import influxql
from edge.grafana.dashboards import build_dashboards
from edge.grafana.influxql import InfluxQLQuery, interpolate
from edge.grafana.plantview import site_view
from edge.grafana.provisioning import build_site, render_site

PANEL_TYPES = {"row", "stat", "timeseries", "state-timeline", "table"}


def all_panels(model: dict):
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_committed_demo_files_are_what_a_build_gives():
    """grafana/ in the repository is the build of the demo plant, byte for byte (rebuild: no change)."""
    expected = render_site(site_view(load_config(DEMO)), with_token=False)
    for rel, text in expected.items():
        path = ROOT / "grafana" / rel
        assert path.exists(), f"{rel} missing: run `edge grafana build {DEMO.relative_to(ROOT)}`"
        assert path.read_text() == text, f"{rel} differs from a fresh build"
    committed = {str(p.relative_to(ROOT / "grafana")) for p in (ROOT / "grafana" / "dashboards" / "demo").glob("*")}
    assert committed == {rel for rel in expected if rel.startswith("dashboards/demo/")}


def test_two_builds_are_byte_identical_and_stale_dashboards_go(tmp_path: Path):
    loaded = load_config(DEMO)
    first = build_site(site_view(loaded), tmp_path / "a", with_token=False)
    stale = tmp_path / "a" / "dashboards" / "demo" / "old_plugin.json"
    stale.write_text("{}")
    other_site = tmp_path / "a" / "dashboards" / "other" / "overview.json"
    other_site.parent.mkdir(parents=True)
    other_site.write_text("{}")
    again = build_site(site_view(load_config(DEMO)), tmp_path / "a", with_token=False)
    assert again.changed == [] and again.removed == [stale] and not stale.exists() and other_site.exists()
    fresh = build_site(site_view(load_config(DEMO)), tmp_path / "b", with_token=False)
    for a, b in zip(first.written, fresh.written, strict=True):
        assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")
        assert a.read_bytes() == b.read_bytes()


def test_cli_build_writes_the_files_and_a_second_run_changes_nothing(tmp_path: Path, capsys):
    assert main(["grafana", "build", str(DEMO), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "7 file(s) for site demo, 7 changed" in out
    assert (tmp_path / "dashboards" / "demo" / "overview.json").exists()
    assert main(["grafana", "build", str(DEMO), "--out", str(tmp_path)]) == 0
    assert "0 changed" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["build", "push"])
def test_without_the_grafana_extra_the_command_says_what_to_install_in_one_line(action: str, tmp_path: Path):
    """grafana-foundation-sdk is the optional extra [grafana]; the runtime install has no SDK
    (tests/provisioning/test_install_script.py checks a real install without it)."""
    blocked = ("import sys; sys.modules['grafana_foundation_sdk'] = None; from edge.cli.main import main; "
               f"sys.exit(main(['grafana', {action!r}, {str(DEMO)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    r = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == (f"edge grafana: error: edge grafana {action} needs grafana-foundation-sdk, which is not "
                        "installed (the Grafana tooling is optional): pip install 'ot-edge-appliance[grafana]'\n")
    assert not (tmp_path / "out").exists()


def test_cli_build_rejects_a_bad_config_with_the_loader_message(tmp_path: Path, capsys):
    bad = tmp_path / "edge.yaml"
    bad.write_text("site: {name: x}\nbuses: []\ndevices: []\n")
    assert main(["grafana", "build", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "configuration rejected" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("site_name", site_names())
def test_dashboards_decode_with_the_sdk_model_and_round_trip(site_name: str, tmp_path: Path):
    register_default_plugins()  # the SDK's panel options and field configs
    influxql.register()  # the InfluxQL query variant (edge.grafana.dashboards also registers it at import)

    for name, model in build_dashboards(site_view(load(make_site(site_name, tmp_path)))).items():
        decoded = Dashboard.from_json(model)
        assert json.loads(json.dumps(decoded, cls=JSONEncoder)) == model, name
        for panel in decoded.panels:
            for target in getattr(panel, "targets", None) or []:
                assert isinstance(target, InfluxQLQuery), (name, panel.title)


def test_influxql_target_decoder_rejects_what_grafana_would_not_run():
    with pytest.raises(ValueError, match="unknown keys"):
        InfluxQLQuery.from_json({"refId": "A", "query": "SELECT 1", "rawQuery": True, "measurment": "x"})
    with pytest.raises(ValueError, match="raw query"):
        InfluxQLQuery.from_json({"refId": "A", "query": "SELECT 1"})
    with pytest.raises(KeyError, match=r"\$plant.*device"):
        interpolate("SELECT * FROM x WHERE a = '$plant'", 0, 1, "1s", {"device": "d"})


@pytest.mark.parametrize("site_name", site_names())
def test_every_tag_is_drawn_with_its_quality_and_every_device_is_on_the_overview(site_name: str, tmp_path: Path):
    view = site_view(load(make_site(site_name, tmp_path)))
    dashboards = build_dashboards(view)
    uids = [m["uid"] for m in dashboards.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)
    for name, model in dashboards.items():
        ids = [p["id"] for p in all_panels(model)]
        assert len(set(ids)) == len(ids), name
        for panel in all_panels(model):
            assert panel["type"] in PANEL_TYPES
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "influxdb", "uid": view.datasource_uid}
    overview = json.dumps(dashboards["overview.json"])
    for device in view.devices:
        assert device in overview
    for dtype in view.types:
        model = dashboards[f"{dtype.key}.json"]
        assert model["templating"]["list"][0]["query"] == ",".join(dtype.devices)
        panels = list(all_panels(model))
        values = " ".join(t["query"] for p in panels if "quality" not in p["title"] for t in p.get("targets", []))
        quality = " ".join(t["query"] for p in panels if "quality" in p["title"] for t in p.get("targets", []))
        for tag in dtype.tags:
            assert f'"{tag.name}' in values, f"{dtype.key}.{tag.name} has no value panel"
            assert f'last("q_{tag.name}")' in quality, f"{dtype.key}.{tag.name} has no quality panel"


@pytest.mark.parametrize("site_name", ["demo", "sample-eastron_sdm630"])
def test_panels_fit_the_grid_without_overlapping(site_name: str, tmp_path: Path):
    for name, model in build_dashboards(site_view(load(make_site(site_name, tmp_path)))).items():
        cells: dict[tuple[int, int], str] = {}
        for panel in model["panels"]:
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (name, panel["title"], g)
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_units_thresholds_and_state_names_come_from_the_points(tmp_path: Path):
    view = site_view(load(make_site("demo", tmp_path)))
    th = build_dashboards(view)["xymd02_th.json"]
    stat = next(p for p in all_panels(th) if p["type"] == "stat" and p["title"].startswith("degC"))
    assert stat["fieldConfig"]["defaults"]["unit"] == "celsius"
    temp = next(o for o in stat["fieldConfig"]["overrides"] if o["matcher"]["options"] == "temperature")
    props = {p["id"]: p["value"] for p in temp["properties"]}
    assert props["thresholds"]["steps"] == [{"color": "red", "value": None}, {"color": "green", "value": -40.0},
                                            {"color": "red", "value": 125.0}]
    assert (props["min"], props["max"]) == (-40.0, 125.0)
    plc = build_dashboards(view)["siemens_s7_1200.json"]
    timeline = next(p for p in all_panels(plc) if p["type"] == "state-timeline" and "states" in p["title"]
                    and any('"state"' in t["query"] for t in p["targets"]))
    state = next(o for o in timeline["fieldConfig"]["overrides"] if o["matcher"]["options"] == "state")
    names = {v["text"] for v in state["properties"][0]["value"][0]["options"].values()}
    assert names == {"stopped", "starting", "running", "stopping", "fault", "maintenance"}


def test_datasource_provisioning_reads_the_token_from_grafana_environment(tmp_path: Path):
    site = make_site("demo", tmp_path)
    doc = yaml.safe_load(site.path.read_text())
    doc["outputs"]["influxdb"].update(url="https://influx.example:8086", bucket="plant/autogen", token="s3cret-tok")
    site.path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["grafana", "build", str(site.path), "--out", str(out)]) == 0
    files = {p: p.read_text() for p in out.rglob("*") if p.is_file()}
    assert not any("s3cret-tok" in text for text in files.values()), "a secret was written to disk"
    ds = yaml.safe_load((out / "provisioning" / "datasources" / "demo.yaml").read_text())["datasources"][0]
    assert ds["url"] == "https://influx.example:8086" and ds["jsonData"]["dbName"] == "plant"
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token ${INFLUX_TOKEN}"}
    overview = (out / "dashboards" / "demo" / "overview.json").read_text()
    assert '\\"autogen\\".\\"edge_health\\"' in overview  # the retention policy qualifies measurements


def test_a_shared_dashboard_reads_windows_only_when_every_device_of_the_type_has_them():
    """The demo aggregates vfd_pump1's motor current but not vfd_fan1's: both share the ATV320
    dashboard, so its band must come from raw samples, or the fan's panel would be empty."""
    view = site_view(load_config(DEMO))
    atv = next(t for t in view.types if t.plugin == "schneider_atv320")
    assert {t.name: t.windows for t in atv.tags}["motor_current"] == ()
    model = build_dashboards(view)["schneider_atv320.json"]
    bands = [p["targets"][0]["query"] for p in all_panels(model)
             if p.get("targets") and '"motor_current"' in p["targets"][0]["query"] and "min(" in p["targets"][0]["query"]]
    assert bands and all("edge_window" not in q for q in bands)


def test_the_sentinel_quality_has_a_value_mapping():
    """Issue 16: the quality a sentinel gets (6, Bad_SensorFailure) is named on every quality panel."""
    from edge.grafana.panels import quality_mapping

    mapping = json.loads(JSONEncoder().encode(quality_mapping()))
    assert mapping["options"]["6"]["text"] == "Bad_SensorFailure"
    built = (ROOT / "grafana" / "dashboards" / "demo").glob("*.json")
    assert any('"Bad_SensorFailure"' in p.read_text() for p in built)
