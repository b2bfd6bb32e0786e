"""`edge fleet render`: the example inventory renders three valid sites; the merge rules; errors name
the appliance (and the rendered file's line); a broken inventory is refused with file:line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.cli.main import main
from edge.config.fleet import MergeError, deep_merge, render_fleet
from edge.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "provisioning" / "fleet" / "inventory.yaml"


def test_the_example_inventory_renders_three_checked_sites(tmp_path, capsys):
    assert main(["fleet", "render", str(INVENTORY), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 appliance configuration(s) rendered and checked" in out
    env = {**os.environ, "INFLUX_TOKEN": "t"}
    sites = {name: load_config(tmp_path / name / "edge.yaml", env=env)
             for name in ("plant_north", "plant_south", "warehouse")}
    assert {n: s.site for n, s in sites.items()} == {n: n for n in sites}
    north, south, warehouse = sites["plant_north"], sites["plant_south"], sites["warehouse"]
    bus = {b.name: b for b in north.config.buses}
    assert bus["plc_net"].host == "10.1.0.10" and bus["rs485_a"].port == "/dev/ttyUSB0"  # template kept
    bus = {b.name: b for b in south.config.buses}
    assert bus["plc_net"].host == "10.2.0.10" and (bus["rs485_a"].port, bus["rs485_a"].baud) == ("/dev/ttyUSB1", 9600)
    assert bus["rs485_a"].timeout_ms == 200  # merged by name: the keys not overridden stay
    assert [d.name for d in south.devices] == ["meter_main", "th_room1", "plc_line1", "th_room2"]
    assert south.device("plc_line1").config.unit_id == 3
    assert south.config.outputs.spool.max_bytes == 1 << 30 and south.config.outputs.spool.path == south.data_dir / "spool/spool.db"
    assert [b.name for b in warehouse.config.buses] == ["rs485_a"]
    assert [d.name for d in warehouse.devices] == ["meter_main", "th_room1"]
    assert warehouse.config.outputs.influxdb is None
    assert north.config.outputs.influxdb is not None and north.config.outputs.influxdb.token == "t"
    text = (tmp_path / "plant_north" / "edge.yaml").read_text()
    assert "token: ${INFLUX_TOKEN}" in text  # secrets stay references, resolved on the appliance
    assert text.startswith("# Rendered by `edge fleet render` for appliance plant_north")
    assert (tmp_path / "plant_north" / north.config.plugins_dir).resolve() == REPO / "plugins"
    # every rendered file passes `edge check` itself
    for name in sites:
        r = subprocess.run([sys.executable, "-m", "edge.cli.main", "check", str(tmp_path / name / "edge.yaml")],
                           capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_rendering_twice_gives_the_same_files(tmp_path):
    render_fleet(INVENTORY, tmp_path / "a")
    render_fleet(INVENTORY, tmp_path / "a")
    render_fleet(INVENTORY, tmp_path / "b")
    for name in ("plant_north", "plant_south", "warehouse"):
        a = (tmp_path / "a" / name / "edge.yaml").read_text().split("\n", 4)[4]  # after the header's paths
        b = (tmp_path / "b" / name / "edge.yaml").read_text().split("\n", 4)[4]
        assert a == b


def test_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2]}, "items": [{"name": "p", "v": 1, "sub": {"k": 1}}, {"name": "q", "v": 2}],
            "plain": [1, 2, 3]}
    before = yaml.safe_dump(base)
    merged = deep_merge(base, {
        "a": {"y": [9]},  # unnamed list: replaced
        "items": [{"name": "q", "remove": True}, {"name": "p", "sub": {"j": 2}}, {"name": "r", "v": 3}],
        "plain": [4], "new": {"z": None},
    })
    assert merged == {"a": {"x": 1, "y": [9]}, "plain": [4], "new": {"z": None},
                      "items": [{"name": "p", "v": 1, "sub": {"k": 1, "j": 2}}, {"name": "r", "v": 3}]}
    assert yaml.safe_dump(base) == before  # the template is never modified
    assert deep_merge({"a": 1}, {"a": None}) == {"a": None}  # null replaces (e.g. influxdb: null)
    assert deep_merge({"l": [{"name": "a"}]}, {"l": []}) == {"l": []}  # an empty list replaces
    with pytest.raises(MergeError, match=r"items\[zz\]: cannot remove 'zz': the template has no such item"):
        deep_merge(base, {"items": [{"name": "zz", "remove": True}]})
    with pytest.raises(MergeError, match=r"items\[p\]\.remove: must be true or false"):
        deep_merge(base, {"items": [{"name": "p", "remove": "yes"}]})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TEMPLATE = f"""
site: {{name: tmpl}}
plugins_dir: {REPO / 'plugins'}
runtime: {{data_dir: data}}
buses: [{{name: net, type: modbus_tcp, host: 127.0.0.1, port: 1502, timeout_ms: 200}}]
devices:
  - {{name: plc, bus: net, plugin: siemens_s7_1200}}
"""


def test_errors_name_the_appliance_and_the_rendered_line(tmp_path, capsys):
    write(tmp_path / "template.yaml", TEMPLATE)
    inv = write(tmp_path / "inventory.yaml", """
template: template.yaml
appliances:
  - name: good
    overrides: {site: {name: good}}
  - name: bad_unit
    overrides:
      site: {name: bad_unit}
      devices: [{name: plc, unit_id: 999}]
  - name: bad_remove
    overrides:
      devices: [{name: ghost, remove: true}]
""")
    assert main(["fleet", "render", str(inv), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "good                 OK" in captured.out
    rendered = tmp_path / "out" / "bad_unit" / "edge.yaml"
    lines = rendered.read_text().splitlines()
    unit_line = next(i for i, ln in enumerate(lines, 1) if "unit_id: 999" in ln)
    assert f"bad_unit: {rendered}:{unit_line}: error: devices[0].unit_id" in captured.err
    assert f"bad_remove: {inv}: appliances[2].overrides.devices[ghost]: cannot remove 'ghost'" in captured.err
    assert "edge fleet: error: 2 of 3 appliance configuration(s) have errors" in captured.err


@pytest.mark.parametrize("inventory, message", [
    ("template: t.yaml\nappliances: []\n", ":2: error: appliances: "),
    ("template: t.yaml\nappliance: [{name: a}]\n", "appliance"),
    ("template: t.yaml\nappliances:\n  - {name: a}\n  - {name: a}\n", "appliance names must be unique: a listed twice"),
    ("template: t.yaml\nappliances:\n  - {name: 'bad name'}\n", ":3: error: appliances[0].name"),
    ("template: t.yaml\nappliances:\n  - {name: a, overides: {}}\n", "overides"),
    ("template: [t.yaml\n", "YAML syntax error"),
    ("- just a list\n", "the inventory must be a mapping"),
])
def test_a_broken_inventory_is_refused_with_file_and_line(tmp_path, capsys, inventory, message):
    inv = write(tmp_path / "inventory.yaml", inventory)
    assert main(["fleet", "render", str(inv), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(inv) in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_missing_template_names_the_appliance(tmp_path, capsys):
    write(tmp_path / "template.yaml", TEMPLATE)
    inv = write(tmp_path / "inventory.yaml", """
template: template.yaml
appliances:
  - {name: fine}
  - {name: other, template: nowhere.yaml}
""")
    assert main(["fleet", "render", str(inv), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "other: " in err and "nowhere.yaml" in err and "cannot read file" in err
    assert (tmp_path / "out" / "fine" / "edge.yaml").exists()


def test_every_appliance_is_its_own_sparkplug_edge_node_in_the_fleet_group(tmp_path):
    results = {r.name: r for r in render_fleet(INVENTORY, tmp_path)}
    assert all(r.ok for r in results.values()), [r.issues for r in results.values()]
    ids = {}
    for name, r in results.items():
        mqtt = r.loaded.config.outputs.mqtt
        assert mqtt.sparkplug.edge_node_id == name  # filled in by the render
        ids[name] = (mqtt.group_id(r.loaded.site), mqtt.edge_node_id(), mqtt.resolved_client_id(r.loaded.site))
        assert yaml.safe_load((tmp_path / name / "edge.yaml").read_text())["outputs"]["mqtt"]["sparkplug"][
            "edge_node_id"] == name
    assert {g for g, _, _ in ids.values()} == {"packaging"}
    assert len({c for _, _, c in ids.values()}) == 3


def test_two_appliances_with_one_edge_node_id_are_refused(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f"""template: {INVENTORY.parent / 'template.yaml'}
appliances:
  - {{name: a, overrides: {{site: {{name: a}}, outputs: {{mqtt: {{sparkplug: {{edge_node_id: line1}}}}}}}}}}
  - {{name: b, overrides: {{site: {{name: b}}, outputs: {{mqtt: {{sparkplug: {{edge_node_id: line1}}}}}}}}}}
  - {{name: c, overrides: {{site: {{name: c}}}}}}
""")
    results = {r.name: r for r in render_fleet(inv, tmp_path / "out")}
    assert results["c"].ok
    for name in ("a", "b"):
        assert any("Sparkplug edge node 'packaging/line1' is used by 2 appliances (a, b)" in i
                   for i in results[name].issues), results[name].issues
