"""Technician commands against simulated devices: edge read, write, scan, probe (real processes)."""
from __future__ import annotations

import asyncio
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


async def edge(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


def site_text(port: int) -> str:
    return f"""
site: {{name: t}}
buses:
  - {{name: rs485, type: modbus_rtu, port: '{{tmp}}/ttyP', baud: 38400, timeout_ms: 200}}
  - {{name: net, type: modbus_tcp, port: {port}, timeout_ms: 200}}
devices:
  - name: meter
    bus: rs485
    unit_id: 5
    points:
      - {{name: voltage, table: input, address: 0, type: float32, order: CDAB, unit: V, sim: {{kind: constant, value: 231.5}}}}
      - {{name: energy, table: input, address: 2, type: uint32, scale: 0.01, unit: kWh, sim: {{kind: constant, value: 1234.56}}}}
  - name: drive
    bus: rs485
    unit_id: 9
    points:
      - {{name: speed_ref, address: 100, type: int16, scale: 0.1, range: [-50, 50], writable: true}}
  - name: plc
    bus: net
    points:
      - {{name: level, address: 4, type: float32, order: DCBA, sim: {{kind: constant, value: 42.25}}}}
"""


async def test_read_write_scan_and_probe(make_site, held_ports):
    port = held_ports.port("net")  # held until the simulator serves on it
    site = await make_site(site_text(port), start_app=False)
    config = str(site.loaded.path)
    code, out = await edge("read", config, "meter")
    assert code == 0, out
    assert re.search(r"^voltage\s+231\.5 V\s+Good", out, re.M), out
    assert re.search(r"^energy\s+1234\.56 kWh\s+Good", out, re.M), out

    code, out = await edge("write", config, "drive", "speed_ref", "-12.5")
    assert code == 0, out
    assert "GOOD" in out and "read back -12.5" in out
    assert site.sim.get_registers("drive", "holding", 100, 1) == [(-125) & 0xFFFF]
    code, out = await edge("write", config, "drive", "speed_ref", "99")
    assert code == 1 and "BAD_OUT_OF_RANGE" in out

    serial = site.sim.address("meter")
    code, out = await edge("scan", "--serial", serial, "--baud", "38400", "--units", "1-12", "--timeout-ms", "60",
                           "--table", "input")
    assert re.findall(r"^unit\s+(\d+):", out, re.M) == ["5", "9"], out  # drive answers with an exception
    assert "2 unit(s) answered" in out

    code, out = await edge("probe", "--host", "127.0.0.1", "--port", str(port), "--address", "4", "--reads", "3",
                           "--interval-ms", "50", "--range", "0", "100")
    assert code == 0, out
    best = [ln for ln in out.splitlines() if "float32" in ln or "int32" in ln][0]
    assert "float32" in best and "DCBA" in best and "42.25" in best, out


async def test_read_computes_the_plugins_derived_tags(make_site, held_ports):
    """`edge read` shows a plugin's derived tags, computed by its hooks from what was just read."""
    port = held_ports.port("net")  # held until the simulator serves on it
    site = await make_site(f"""
site: {{name: t}}
plugins_dir: {REPO / "plugins"}
buses:
  - {{name: net, type: modbus_tcp, port: {port}, timeout_ms: 300}}
devices:
  - {{name: pump, bus: net, unit_id: 1, plugin: schneider_atv320}}
""", start_app=False)
    code, out = await edge("read", str(site.loaded.path), "pump")
    assert code == 0, out
    assert re.search(r"^running\s+\S+\s+Good", out, re.M), out
    status_word = int(re.search(r"^status_word\s+(\d+)\s+Good", out, re.M).group(1))
    hooks = runpy.run_path(str(REPO / "plugins" / "schneider_atv320" / "hooks.py"))
    state = int(hooks["cia402_state"](float(status_word)))
    assert re.search(rf"^drive_state\s+{state} \(\w+\)\s+Good", out, re.M), out
    assert re.search(r"^last_fault\s+0 \(no_fault\)\s+Good", out, re.M), out
    current = float(re.search(r"^motor_current\s+([\d.]+) A", out, re.M).group(1))
    load = float(re.search(r"^motor_load\s+([\d.]+) %\s+Good", out, re.M).group(1))
    assert load == pytest.approx(100 * current / 12.5, abs=0.01), out

    code, out = await edge("read", str(site.loaded.path), "pump", "motor_load")
    assert code == 0 and out.strip().startswith("motor_load") and len(out.strip().splitlines()) == 1, out


async def test_read_json_over_an_address_hole_full_precision_and_booleans(make_site, held_ports):
    """Issue 16 point 6 / issue 14 point 7. Before: `edge read` read each block once without the
    poller, so a block spanning a hole the device refuses showed its tags as exception 02 (the
    running appliance learns the hole and reads them all), and it printed 6 significant digits
    (1.96402e+08 Wh)."""
    port = held_ports.port("net")  # held until the simulator serves on it
    site = await make_site(f"""
site: {{name: t}}
buses:
  - {{name: net, type: modbus_tcp, port: {port}, timeout_ms: 300}}
devices:
  - name: meter
    bus: net
    points:
      - {{name: energy, address: 0, type: uint32, unit: Wh, sim: {{kind: constant, value: 196401789}}}}
      - {{name: ratio, address: 2, type: float32, sim: {{kind: constant, value: 0.1}}}}
      - {{name: current, address: 8, type: uint16, scale: 0.01, unit: A, sim: {{kind: constant, value: 12.34}}}}
      - {{name: alarm, address: 9, type: bool, bit: 3, sim: {{kind: constant, value: 1}}}}
      - {{name: mode, address: 10, type: uint16, enum: {{0: "off", 2: auto}}, sim: {{kind: constant, value: 2}}}}
""", start_app=False)
    site.sim.set_fault("meter", "illegal_address", start=4, count=3)  # registers 4..6: a hole inside the block
    config = str(site.loaded.path)
    code, out = await edge("read", config, "meter", "--json")
    assert code == 0, out
    rows = {r["tag"]: r for r in json.loads(out)}
    assert set(rows) == {"energy", "ratio", "current", "alarm", "mode"}
    assert {r["quality"] for r in rows.values()} == {"Good"}, rows
    assert rows["energy"]["value"] == 196401789 and rows["energy"]["unit"] == "Wh"
    assert rows["ratio"]["value"] == float(np.float32(0.1))  # the float32's exact double, not 0.1
    assert rows["current"]["value"] == 12.34 and rows["alarm"]["value"] is True
    assert rows["mode"]["value"] == 2 and rows["mode"]["text"] == "auto"
    assert all(set(r) >= {"tag", "value", "quality", "unit", "ts"} and r["ts"].endswith("Z") for r in rows.values())
    code, text = await edge("read", config, "meter")
    assert code == 0, text
    assert re.search(r"^energy\s+196401789 Wh\s+Good", text, re.M), text
    assert re.search(rf"^ratio\s+{re.escape(repr(float(np.float32(0.1))))}\s+Good", text, re.M), text
    assert re.search(r"^alarm\s+true\s+Good", text, re.M), text
    assert re.search(r"^mode\s+2 \(auto\)\s+Good", text, re.M), text
