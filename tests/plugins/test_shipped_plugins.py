"""Every folder under plugins/ passes ``edge plugin check`` (a real simulator polled by the real
appliance) and ships a README and a sample.yaml that loads as part of a site."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pluginsupport import PLUGINS, edge, tag_lines

from edge.config.loader import load_config
from edge.plugins.loader import load_plugin

FOLDERS = sorted(p.name for p in PLUGINS.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def test_there_are_plugins_and_the_template():
    assert "_template" in FOLDERS
    assert len([f for f in FOLDERS if f != "_template"]) >= 4


@pytest.mark.parametrize("name", FOLDERS)
async def test_plugin_check_polls_every_point_good(name: str):
    plugin = load_plugin(PLUGINS / name, name, None)
    assert plugin.error is None, plugin.error
    assert plugin.points is not None
    expected = [p.name for p in plugin.points.points] + [d.name for d in plugin.points.derived]
    expected += [f"{p.name}_{label}" for p in plugin.points.points for label in (p.bits or {}).values()]
    code, out = await edge("plugin", "check", name)
    assert code == 0, out
    rows = tag_lines(out)
    assert sorted(rows) == sorted(expected), out
    for tag, (value, quality, _, _) in rows.items():
        assert quality == "Good" and value != "-", f"{tag}: {value} {quality}"
    assert f"{name}: OK: {len(expected)} of {len(expected)} tags Good" in out


@pytest.mark.parametrize("name", [f for f in FOLDERS if f != "_template"])
def test_plugin_has_readme_naming_its_document_and_a_sample_site(name: str, tmp_path: Path):
    folder = PLUGINS / name
    plugin = load_plugin(folder, name, None)
    assert plugin.manifest is not None, plugin.error
    assert plugin.manifest.documentation, "manifest.yaml must name the document the map comes from"
    readme = (folder / "README.md").read_text()
    assert readme.startswith(f"# {name}:"), "README starts with '# <id>: <what it is>'"
    assert "## Source of the register map" in readme and "## Quirks" in readme
    snippet = yaml.safe_load((folder / "sample.yaml").read_text())
    assert any(d.get("plugin") == name for d in snippet["devices"])
    site = tmp_path / "edge.yaml"
    site.write_text(f"site: {{name: sample}}\nplugins_dir: '{PLUGINS}'\n" + (folder / "sample.yaml").read_text())
    loaded = load_config(site)
    assert {d.config.plugin for d in loaded.devices} == {name}
    assert all(d.plugin_error is None for d in loaded.devices)


def _effective_points():
    """(plugin, point, effective order) over every shipped plugin (the template excluded)."""
    for name in FOLDERS:
        if name == "_template":
            continue
        plugin = load_plugin(PLUGINS / name, name, None)
        assert plugin.points is not None, plugin.error
        for p in plugin.points.points:
            yield name, p, p.order or plugin.points.order


def test_shipped_plugins_exercise_the_issue_s_types():
    """float32 in two word orders, int32, scaled int16, bit fields and a writable command."""
    points = list(_effective_points())
    float_orders = {order for _, p, order in points if p.type == "float32"}
    assert {"ABCD", "CDAB"} <= float_orders
    assert {order for _, p, order in points if p.type == "int32"} >= {"ABCD", "CDAB"}
    assert any(p.type == "int16" and p.scale != 1.0 for _, p, _ in points)
    assert any(p.type == "bool" and p.bit is not None for _, p, _ in points)
    assert any(p.writable and p.table == "holding" and p.type in ("uint16", "int16") for _, p, _ in points)
