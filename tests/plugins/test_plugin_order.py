"""The device-wide ``order:`` at the top of a plugin's points.yaml applies to its points, unless
the site's device sets its own; a point's own ``order:`` always wins. The guide and the template
tell technicians to set the order once at the top."""
from __future__ import annotations

from pathlib import Path

from pluginsupport import copy_plugin

from drivers.modbus.runtime import register_points
from edge.config.loader import load_config


def orders(tmp_path: Path, device_order: str | None) -> dict[str, str]:
    folder = copy_plugin("_template", tmp_path, "cdab_device")
    points = folder / "points.yaml"
    text = points.read_text().replace("order: ABCD", "order: CDAB")
    extra = "  - {name: raw_abcd, table: input, address: 30, type: uint32, order: ABCD}\n"
    points.write_text(text.replace("# Derived tags", extra + "# Derived tags", 1))
    site = tmp_path / "edge.yaml"
    order = f", order: {device_order}" if device_order else ""
    site.write_text(f"site: {{name: o}}\nplugins_dir: '{tmp_path}'\n"
                    "buses: [{name: b, type: modbus_tcp, port: 1502}]\n"
                    f"devices: [{{name: d, bus: b, plugin: cdab_device{order}}}]\n")
    loaded = load_config(site)
    return {p.name: p.order for p in register_points(loaded.device("d")) if p.count > 1}


def test_plugin_level_order_applies_to_points_without_their_own(tmp_path: Path):
    assert orders(tmp_path, None) == {"energy": "CDAB", "raw_abcd": "ABCD"}


def test_site_device_order_overrides_the_plugin_s(tmp_path: Path):
    assert orders(tmp_path, "DCBA") == {"energy": "DCBA", "raw_abcd": "ABCD"}
