"""Configured paths are made absolute once, when the configuration loads, relative to the
configuration file's folder (or to runtime.data_dir), whatever the working directory (issue 18:
a relative token_file only worked when the appliance was started from the config's folder)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.config.errors import ConfigError
from edge.config.loader import load_config

SITE = """
site: {name: plant7}
runtime: {data_dir: "var/{site}"}
buses: [{name: net, type: modbus_tcp, port: 1502}]
devices:
  - {name: d, bus: net, points: [{name: v, address: 0}]}
outputs:
  influxdb: {url: "http://127.0.0.1:1", bucket: b, token_file: secrets/token}
  spool: {path: spool/edge.db}
  opcua: {endpoint: "opc.tcp://127.0.0.1:4840/edge", pki_dir: pki, users_file: users}
api: {tokens_file: api-tokens}
"""


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "token").write_text("s3cret\n")
    (folder / "api-tokens").write_text("")
    (folder / "edge.yaml").write_text(SITE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the appliance is not started from the configuration's folder
    return folder


def test_relative_paths_are_relative_to_the_configuration_file(site_dir: Path):
    loaded = load_config(site_dir / "edge.yaml")
    cfg = loaded.config
    assert cfg.runtime.data_dir == site_dir / "var" / "plant7" == loaded.data_dir
    assert cfg.outputs.influxdb is not None and cfg.outputs.influxdb.token_file == site_dir / "secrets" / "token"
    assert cfg.outputs.influxdb.resolved_token() == "s3cret"
    assert cfg.outputs.spool.path == site_dir / "var" / "plant7" / "spool" / "edge.db"  # relative to data_dir
    assert cfg.outputs.opcua is not None and cfg.outputs.opcua.pki_dir == site_dir / "pki"
    assert cfg.outputs.opcua.users_file == site_dir / "users"
    assert cfg.api is not None and cfg.api.tokens_file == site_dir / "api-tokens"
    assert cfg.plugins_dir == site_dir / "plugins"


def test_a_missing_token_file_is_an_error_at_its_line(site_dir: Path):
    (site_dir / "secrets" / "token").unlink()
    with pytest.raises(ConfigError) as err:
        load_config(site_dir / "edge.yaml")
    [issue] = [i for i in err.value.issues if i.severity == "error"]
    assert issue.path == ("outputs", "influxdb", "token_file") and issue.line == 8
    assert str(site_dir / "secrets" / "token") in issue.message and "does not exist" in issue.message
