"""``edge probe --draft FILE`` against a simulated device: the entry it writes is a valid
points.yaml point with the type and word order the device really uses."""
from __future__ import annotations

from pathlib import Path

import yaml
from pluginsupport import edge

from drivers.modbus.config import ModbusPluginPoints as PluginPoints
from drivers.modbus.config import ModbusPoint as Point


def site_text(port: int) -> str:
    return f"""
site: {{name: draft}}
buses:
  - {{name: net, type: modbus_tcp, port: {port}, timeout_ms: 200}}
devices:
  - name: meter
    bus: net
    points:
      - {{name: level, table: input, address: 10, type: float32, order: CDAB, sim: {{kind: constant, value: 42.25}}}}
      - {{name: energy, table: holding, address: 20, type: int32, order: ABCD, sim: {{kind: constant, value: 1234567}}}}
"""


async def test_probe_draft_appends_valid_points_entries(make_site, held_ports, tmp_path: Path):
    port = held_ports.port("net")  # held until the simulator serves on it
    await make_site(site_text(port), start_app=False)
    draft = tmp_path / "draft.yaml"
    code, out = await edge("probe", "--host", "127.0.0.1", "--port", str(port), "--table", "input", "--address", "10",
                           "--reads", "3", "--interval-ms", "50", "--range", "0", "100", "--draft", str(draft))
    assert code == 0, out
    assert f"draft points.yaml entry for float32 CDAB appended to {draft}" in out
    code, out = await edge("probe", "--host", "127.0.0.1", "--port", str(port), "--address", "20",
                           "--reads", "3", "--interval-ms", "50", "--range", "1000000", "2000000",
                           "--draft", str(draft))
    assert code == 0, out

    text = draft.read_text()
    assert text.startswith("# edge probe input 10..11 of unit 1 at 127.0.0.1:")
    entries = yaml.safe_load(text)
    points = [Point.model_validate(e) for e in entries]
    assert [(p.name, p.table, p.address, p.type, p.order) for p in points] == [
        ("input_10", "input", 10, "float32", "CDAB"), ("holding_20", "holding", 20, "int32", "ABCD")]
    assert points[0].range == (0.0, 100.0) and "42.25" in points[0].description
    assert "1234567" in points[1].description
    # pasted under 'points:' the draft is a valid points.yaml
    indented = "".join(f"  {line}\n" for line in text.splitlines())
    PluginPoints.model_validate(yaml.safe_load("points:\n" + indented))
