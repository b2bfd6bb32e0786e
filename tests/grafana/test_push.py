"""``edge grafana push`` against a FAKE Grafana (tests/grafana/fake_grafana.py): no Grafana server can
run on these machines, so a local HTTP server that answers like Grafana's API records what push does."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from fake_grafana import FakeGrafana
from plantdata import load, make_site

from edge.cli.main import main
from edge.grafana.dashboards import build_dashboards
from edge.grafana.plantview import site_view
from edge.grafana.push import GrafanaPushError, push_site

TOKEN = "glsa_test_token"


@pytest.fixture
def fake_grafana():
    with FakeGrafana(TOKEN) as g:
        yield g


def test_push_twice_creates_one_folder_one_datasource_and_no_duplicate_dashboard(tmp_path: Path, fake_grafana):
    view = site_view(load(make_site("demo", tmp_path)))
    first = push_site(view, fake_grafana.url, TOKEN)
    second = push_site(view, fake_grafana.url, TOKEN)
    s = fake_grafana.state
    assert (first.folder, first.datasource) == ("created", "created")
    assert (second.folder, second.datasource) == ("exists", "exists")
    assert s.count("POST", "/api/folders") == 1 and s.count("POST", "/api/datasources") == 1
    assert list(s.folders) == [view.folder_uid] and list(s.datasources) == [view.datasource_uid]
    built = build_dashboards(view)
    assert s.count("POST", "/api/dashboards/db") == 2 * len(built)
    assert sorted(s.dashboards) == sorted(m["uid"] for m in built.values())
    assert all(d["version"] == 2 and d["folderUid"] == view.folder_uid for d in s.dashboards.values())
    for model in built.values():
        assert s.dashboards[model["uid"]]["dashboard"] == model
    # what a user sees: one dashboard per uid in the search, read with the standard library's client
    search = urllib.request.Request(f"{fake_grafana.url}/api/search?tag=site:{view.site}",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(search, timeout=5) as resp:
        hits = json.load(resp)
    assert sorted(h["uid"] for h in hits) == sorted(s.dashboards)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in s.requests)


def test_datasource_points_at_the_configured_influxdb_with_its_token(tmp_path: Path, fake_grafana):
    site = make_site("demo", tmp_path)
    doc = yaml.safe_load(site.path.read_text())
    doc["outputs"]["influxdb"].update(url="http://127.0.0.1:8086", bucket="plant/autogen")
    site.path.write_text(yaml.safe_dump(doc))
    view = site_view(load(site))
    push_site(view, fake_grafana.url, TOKEN, influx_token="influx-secret")
    ds = fake_grafana.state.datasources[view.datasource_uid]
    assert (ds["type"], ds["url"], ds["access"]) == ("influxdb", "http://127.0.0.1:8086", "proxy")
    assert ds["jsonData"] == {"dbName": "plant", "httpMode": "POST", "version": "InfluxQL",
                              "httpHeaderName1": "Authorization"}
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}


def test_an_existing_datasource_is_left_as_its_owner_set_it(tmp_path: Path, fake_grafana):
    view = site_view(load(make_site("demo", tmp_path)))
    fake_grafana.state.datasources[view.datasource_uid] = {"uid": view.datasource_uid, "name": "edge-influxdb",
                                                          "url": "http://influx.plant:8086", "type": "influxdb"}
    report = push_site(view, fake_grafana.url, TOKEN)
    assert report.datasource == "exists"
    assert fake_grafana.state.datasources[view.datasource_uid]["url"] == "http://influx.plant:8086"
    assert fake_grafana.state.count("POST", "/api/datasources") == 0


def test_a_folder_made_by_hand_with_the_same_title_is_reused(tmp_path: Path, fake_grafana):
    view = site_view(load(make_site("demo", tmp_path)))
    fake_grafana.state.folders["abc123"] = {"id": 99, "uid": "abc123", "title": view.grafana.folder, "version": 1}
    report = push_site(view, fake_grafana.url, TOKEN)
    assert report.folder == "exists" and list(fake_grafana.state.folders) == ["abc123"]
    assert {d["folderUid"] for d in fake_grafana.state.dashboards.values()} == {"abc123"}


def test_wrong_token_is_a_clear_error_and_changes_nothing(tmp_path: Path, fake_grafana):
    view = site_view(load(make_site("demo", tmp_path)))
    with pytest.raises(GrafanaPushError, match=r"refused the token \(401\).*GRAFANA_TOKEN.*invalid API key"):
        push_site(view, fake_grafana.url, "wrong")
    s = fake_grafana.state
    assert not s.folders and not s.datasources and not s.dashboards


def test_wrong_url_is_a_clear_error(tmp_path: Path):
    view = site_view(load(make_site("demo", tmp_path)))
    with socket.socket() as held:  # bound, never listening, held for the test: connection refused
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(GrafanaPushError, match=rf"cannot reach Grafana at {url} .*--url"):
            push_site(view, url, TOKEN, timeout_s=2)


def test_an_answer_that_is_not_json_is_a_clear_error(tmp_path: Path):
    """Something else than Grafana at the URL, answering with an HTML error page: the status is reported."""
    view = site_view(load(make_site("demo", tmp_path)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501, HTML
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(GrafanaPushError, match=rf"Grafana at {url} rejected the folder: 501 "):
            push_site(view, url, TOKEN, timeout_s=2)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cli_push_uses_the_token_from_the_environment(tmp_path: Path, fake_grafana, monkeypatch, capsys):
    site = make_site("demo", tmp_path)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["grafana", "push", str(site.path), "--url", fake_grafana.url]) == 0
    assert "folder created, data source created, 5 dashboard(s) written" in capsys.readouterr().out
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    assert main(["grafana", "push", str(site.path), "--url", fake_grafana.url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge grafana: error: Grafana at") and "401" in err
    monkeypatch.delenv("GRAFANA_TOKEN")
    assert main(["grafana", "push", str(site.path), "--url", fake_grafana.url]) == 1
    assert "no Grafana token: set GRAFANA_TOKEN" in capsys.readouterr().err
    assert len(fake_grafana.state.dashboards) == 5
