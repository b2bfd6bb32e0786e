"""The device-wide ``order:`` at the top of a plugin's points.yaml applies to its points.

The guide and the template tell technicians to set the order once at the top; the shipped
plugins also write it on each 32-bit point, so they decode right either way.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from pluginsupport import copy_plugin

from edge.config.loader import load_config


@pytest.mark.xfail(strict=True, reason="edge/config/loader.py _convert_points takes the default order from the "
                                       "site device (dev.config.order) and ignores PluginPoints.order; reported "
                                       "to the lead (loader.py is not ours to edit)")
def test_plugin_level_order_applies_to_points_without_their_own(tmp_path: Path):
    folder = copy_plugin("_template", tmp_path, "cdab_device")
    points = folder / "points.yaml"
    points.write_text(points.read_text().replace("order: ABCD", "order: CDAB"))
    site = tmp_path / "edge.yaml"
    site.write_text(f"site: {{name: o}}\nplugins_dir: '{tmp_path}'\n"
                    "buses: [{name: b, type: modbus_tcp, port: 1502}]\n"
                    "devices: [{name: d, bus: b, plugin: cdab_device}]\n")
    loaded = load_config(site)
    energy = next(p for p in loaded.device("d").register_points if p.name == "energy")
    assert energy.order == "CDAB"
