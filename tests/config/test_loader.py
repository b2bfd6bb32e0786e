"""Loading: secrets from the environment, plugins with site overrides, address numbering, the plant."""
from __future__ import annotations

from pathlib import Path

import pytest

from drivers.modbus.points import Table
from drivers.modbus.runtime import register_points
from edge.config.errors import ConfigError
from edge.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_demo_plant_has_the_promised_shape():
    loaded = load_config(DEMO, env={})
    plant = loaded.plant
    assert len(plant.devices) == 6 and len(plant.tags) >= 100
    rs485 = [b for b in plant.buses if b.kind == "modbus_rtu"]
    assert len(plant.buses) >= 2 and len(rs485[0].devices) == 3
    assert [t.id for t in plant.tags] == list(range(len(plant.tags)))
    meter = loaded.device("meter_main")
    v1 = next(p for p in register_points(meter) if p.name == "voltage_l1")
    assert (v1.table, v1.address, v1.dtype) == (Table.INPUT, 0, "float32")  # 30001 -> input register 0
    total = next(p for p in register_points(meter) if p.name == "energy_total")
    assert total.address == 342  # 30343


def test_secrets_and_defaults_come_from_the_environment(tmp_path):
    path = write(tmp_path, """
site: {name: t}
buses: [{name: net, type: modbus_tcp, port: "${PLC_PORT:-1502}"}]
devices: [{name: m, bus: net, points: [{name: v, address: 0}]}]
outputs: {grafana: {token: "${GRAFANA_TOKEN}"}}
""")
    loaded = load_config(path, env={"GRAFANA_TOKEN": "s3cret"})
    assert loaded.config.outputs.grafana.token == "s3cret"
    assert loaded.config.buses[0].port == 1502
    assert load_config(path, env={"GRAFANA_TOKEN": "x", "PLC_PORT": "5020"}).config.buses[0].port == 5020


def test_all_schema_errors_of_a_file_come_together(tmp_path):
    path = write(tmp_path, """
site: {name: t}
buses: [{name: net, type: modbus_tcp, port: 0, timeout_ms: 1}]
devices: [{name: m, bus: net, points: [{name: v, address: -1, type: float16}]}]
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    paths = {".".join(map(str, i.path)) for i in err.value.issues}
    assert {"buses.0.port", "buses.0.timeout_ms", "devices.0.points.0.address",
            "devices.0.points.0.type"} <= paths


def test_plugin_points_with_site_drop_and_override(tmp_path):
    path = write(tmp_path, f"""
site: {{name: t}}
plugins_dir: {REPO / 'plugins'}
buses: [{{name: rs485, type: modbus_rtu, port: /dev/ttyX, baud: 19200}}]
devices:
  - name: m
    bus: rs485
    plugin: eastron_sdm630
    drop: [thd_voltage_l1, thd_voltage_l2, thd_voltage_l3]
    override:
      voltage_l1: {{deadband: 2.0, group: energy}}
    points:
      - {{name: serial_number, table: holding, address: 40043, type: uint32}}
""")
    loaded = load_config(path, env={})
    dev = loaded.device("m")
    names = {p.name for p in register_points(dev)}
    assert "thd_voltage_l1" not in names and "serial_number" in names
    v1 = loaded.plant.tag_by_key()["m.voltage_l1"]
    assert v1.deadband == 2.0 and v1.interval_ms == 10000
    assert loaded.plant.devices[0].plugin_version == "1.0"


def test_unknown_plugin_point_in_override_is_an_error(tmp_path):
    path = write(tmp_path, f"""
site: {{name: t}}
plugins_dir: {REPO / 'plugins'}
buses: [{{name: rs485, type: modbus_rtu, port: /dev/ttyX}}]
devices:
  - name: m
    bus: rs485
    plugin: xymd02_th
    override:
      temprature: {{deadband: 1}}
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "plugin 'xymd02_th' has no point 'temprature'" in str(err.value)


def test_broken_plugin_quarantines_only_its_devices_at_run_time(tmp_path):
    plugins = tmp_path / "plugins"
    (plugins / "bad").mkdir(parents=True)
    (plugins / "bad" / "manifest.yaml").write_text("id: bad\nname: x\nversion: '1.0'\nvendor: v\nmodel: m\n")
    (plugins / "bad" / "points.yaml").write_text("points:\n  - {name: v, address: 0, type: float99}\n")
    path = write(tmp_path, f"""
site: {{name: t}}
plugins_dir: {plugins}
buses: [{{name: net, type: modbus_tcp}}]
devices:
  - {{name: broken, bus: net, plugin: bad}}
  - {{name: fine, bus: net, unit_id: 2, points: [{{name: v, address: 0}}]}}
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "points.yaml:2" in str(err.value) and "type" in str(err.value)
    loaded = load_config(path, env={}, strict_plugins=False)
    assert loaded.device("broken").plugin_error
    assert [t.key for t in loaded.plant.tags] == ["fine.v"]
