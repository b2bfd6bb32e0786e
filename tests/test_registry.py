"""Third-party drivers and plugins arrive through the entry-point groups edge.drivers and edge.plugins
of an installed distribution (a real dist-info on sys.path, found by importlib.metadata)."""
from __future__ import annotations

import pytest

from edge.config.errors import ConfigError
from edge.config.loader import load_config
from edge.driver import registry


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    pkg = site / "acme_plugins" / "acme_meter"
    pkg.mkdir(parents=True)
    (site / "acme_plugins" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "manifest.yaml").write_text("id: acme_meter\nname: ACME meter\nversion: '2.1'\nvendor: ACME\nmodel: M1\n")
    (pkg / "points.yaml").write_text("points:\n  - {name: kwh, table: input, address: 0, type: float32}\n")
    (pkg / "canbus_device").mkdir()
    dist = site / "acme_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edge.plugins]\nacme_meter = acme_plugins.acme_meter\n\n"
        "[edge.drivers]\nbroken = acme_plugins.no_such_module:DRIVER\n")
    monkeypatch.syspath_prepend(str(site))
    registry.drivers.cache_clear()
    yield site
    registry.drivers.cache_clear()


def test_plugin_from_an_installed_package(installed, tmp_path, caplog):
    config = tmp_path / "edge.yaml"
    config.write_text(f"""
site: {{name: t}}
plugins_dir: {tmp_path / 'empty'}
buses: [{{name: net, type: modbus_tcp}}]
devices: [{{name: m, bus: net, plugin: acme_meter}}]
""")
    loaded = load_config(config, env={})
    assert [t.key for t in loaded.plant.tags] == ["m.kwh"]
    assert loaded.plant.devices[0].plugin_version == "2.1"
    assert "modbus" in registry.drivers()
    assert "broken" not in registry.drivers()  # a broken package is logged, not fatal
    assert any("driver broken" in r.getMessage() for r in caplog.records)


def test_unknown_plugin_lists_local_and_installed_ones(installed, tmp_path):
    config = tmp_path / "edge.yaml"
    config.write_text("""
site: {name: t}
buses: [{name: net, type: modbus_tcp}]
devices: [{name: m, bus: net, plugin: acme_metre}]
""")
    with pytest.raises(ConfigError) as err:
        load_config(config, env={})
    assert "plugin 'acme_metre' not found" in str(err.value) and "acme_meter" in str(err.value)


def test_plugin_for_a_driver_that_is_not_installed(tmp_path):
    folder = tmp_path / "plugins" / "can_dev"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text("id: can_dev\nname: x\nversion: '1.0'\nvendor: v\nmodel: m\ndriver: canopen\n")
    (folder / "points.yaml").write_text("points:\n  - {name: v, address: 0}\n")
    config = tmp_path / "edge.yaml"
    config.write_text(f"""
site: {{name: t}}
plugins_dir: {tmp_path / 'plugins'}
buses: [{{name: net, type: modbus_tcp}}]
devices: [{{name: m, bus: net, plugin: can_dev}}]
""")
    with pytest.raises(ConfigError) as err:
        load_config(config, env={})
    assert "no field driver 'canopen' is installed; drivers: modbus" in str(err.value)
