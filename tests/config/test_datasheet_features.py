"""Sentinels, scale-factor registers, bits of 32-bit words and named bits from YAML alone (issue 16).

A plugin declares them; the real appliance polls a simulated device whose registers the test
sets directly (raw words, so the truth is independent of the appliance's codec), and the
latest-value store must show the values and qualities the datasheet implies.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from drivers.modbus.points import Table
from drivers.modbus.runtime import register_points
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.simulation import plant_specs
from edge.config.errors import ConfigError
from edge.config.loader import load_config
from edge.core.model import Quality
from edge.runtime.app import Appliance

MANIFEST = """id: acme_inv
name: ACME inverter
version: "1.0"
vendor: ACME
model: INV-1
address_base: 0
"""
POINTS = """order: ABCD
invalid: {int16: [0x8000], uint16: [0xFFFF], uint32: [0xFFFFFFFF], string: [all_nul]}
points:
  - {name: serial, address: 0, type: string, length: 4}
  - {name: W, address: 10, type: int16, unit: W, scale_factor: W_SF}
  - {name: W_SF, address: 11, type: int16, invalid: [-32768], sim: {kind: constant, value: -1}}
  - {name: A, address: 12, type: uint16, unit: A, scale_factor: A_SF}
  - {name: A_SF, address: 13, type: int16, sim: {kind: constant, value: -2}}
  - {name: temp, address: 14, type: int16, scale: 0.1, unit: degC, invalid: [0x7FFF]}
  - {name: events, address: 20, type: uint32, order: CDAB, bits: {0: ground_fault, 17: over_temp, 31: manual_stop}}
  - {name: door_open, address: 20, type: uint32, order: CDAB, bit: 5}
  - {name: WMax, address: 30, type: uint16, unit: W, scale_factor: W_SF, writable: true}
"""


def site(tmp_path: Path, port: int) -> Path:
    plugin = tmp_path / "plugins" / "acme_inv"
    plugin.mkdir(parents=True)
    (plugin / "manifest.yaml").write_text(MANIFEST)
    (plugin / "points.yaml").write_text(POINTS)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"""site: {{name: t}}
plugins_dir: plugins
runtime: {{data_dir: {tmp_path / 'data'}}}
buses: [{{name: net, type: modbus_tcp, host: 127.0.0.1, port: {port}, timeout_ms: 300}}]
devices: [{{name: inv, bus: net, unit_id: 1, plugin: acme_inv, interval_ms: 300}}]
""")
    return cfg


def test_the_register_map_follows_the_datasheet(tmp_path):
    loaded = load_config(site(tmp_path, 1502))
    dev = loaded.device("inv")
    by = {p.name: p for p in register_points(dev)}
    assert by["W"].sf_address == 11 and by["A"].sf_address == 13 and by["WMax"].sf_address == 11
    assert by["W"].invalid == (0x8000,) and by["A"].invalid == (0xFFFF,) and by["temp"].invalid == (0x7FFF,)
    assert by["serial"].nul_invalid and by["W_SF"].invalid == (0x8000,)
    assert [n for n in by if n.startswith("events_")] == ["events_ground_fault", "events_over_temp",
                                                         "events_manual_stop"]
    bit = by["events_over_temp"]
    assert (bit.dtype, bit.word, bit.bit, bit.order, bit.invalid) == ("bool", "uint32", 17, "CDAB", (0xFFFFFFFF,))
    assert (by["door_open"].dtype, by["door_open"].word, by["door_open"].bit) == ("bool", "uint32", 5)
    tags = {t.name: t for t in loaded.plant.tags}
    assert tags["W"].dtype == "float64" and tags["events_over_temp"].dtype == "bool"
    assert tags["events"].text_of(float((1 << 17) | 1)) == "ground_fault,over_temp"


@pytest.mark.parametrize(("points", "message"), [
    ("- {name: x, address: 0, type: float32, bit: 3}", "bit is for type bool"),
    ("- {name: x, address: 0, type: uint16, bit: 16}", "bit 16 does not exist in a uint16: bits are 0-15"),
    ("- {name: x, address: 0, type: uint32, bits: {32: a}}", "bits of a uint32 are 0-31"),
    ("- {name: x, address: 0, type: int16, invalid: [70000]}", "does not fit 16 bits"),
    ("- {name: x, address: 0, type: int16, invalid: [all_nul]}", "all_nul is for strings"),
    ("- {name: x, address: 0, type: int16, scale_factor: nope}", "no point 'nope' in device"),
    ("- {name: x, address: 0, type: int16, scale_factor: y}\n  - {name: y, address: 1, type: uint32}",
     "scale factor 'y' must be an int16 register"),
])
def test_bad_declarations_are_refused_with_a_reason(tmp_path, points, message):
    (tmp_path / "plugins" / "p").mkdir(parents=True)
    (tmp_path / "plugins" / "p" / "manifest.yaml").write_text(MANIFEST.replace("acme_inv", "p"))
    (tmp_path / "plugins" / "p" / "points.yaml").write_text("points:\n  " + points + "\n")
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("site: {name: t}\nplugins_dir: plugins\nbuses: [{name: n, type: modbus_tcp}]\n"
                   "devices: [{name: d, bus: n, plugin: p}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert message in str(err.value)


async def _poll(app: Appliance, names: list[str], after_ns: int) -> dict[str, tuple[float, Quality]]:
    ids = {t.name: t.id for t in app.plant.tags if t.name in names}
    for _ in range(200):
        got = {n: app.store.get(i) for n, i in ids.items()}
        if all(ts > after_ns for _, _, ts in got.values()):
            return {n: (v, Quality(q)) for n, (v, q, _) in got.items()}
        await asyncio.sleep(0.05)
    raise AssertionError("no fresh poll within 10 s")


async def test_sentinels_factors_and_bits_through_the_real_poller(tmp_path):
    from drivers.modbus.sim.plant import listening_socket

    held = listening_socket()  # the inverter's port, held until the simulator serves on it
    port = held.getsockname()[1]
    loaded = load_config(site(tmp_path, port))
    plant = SimPlant(plant_specs(loaded), sockets={port: held})
    await plant.start()
    regs = plant.device("inv").image.view(Table.HOLDING)
    app = Appliance(loaded, audit=False)
    names = ["serial", "W", "A", "temp", "events", "events_ground_fault", "events_over_temp", "events_manual_stop",
             "door_open"]
    for name in ("W", "W_SF", "A", "A_SF", "temp", "events", "WMax"):
        plant.set_value("inv", name, 0)  # pinned: the signal update leaves the raw words the test writes
    try:
        await app.start()
        regs[0:4] = 0  # serial all NUL: absent
        regs[10:14] = [12345, 0xFFFF, 1575, 0xFFFE]  # W raw 12345 with W_SF -1; A raw 1575 with A_SF -2
        regs[14] = 0x7FFF  # the sensor's error value
        regs[20:22] = [0x0021, 0x8002]  # CDAB: low word 0x0021 (bits 0 and 5), high word 0x8002 (bits 17 and 31)
        got = await _poll(app, names, time.time_ns())
        assert got["serial"][1] is Quality.BAD_SENSOR_FAILURE
        assert got["W"] == (1234.5, Quality.GOOD) and got["A"] == (15.75, Quality.GOOD)
        assert got["temp"][1] is Quality.BAD_SENSOR_FAILURE
        assert got["events"] == (float(0x8002_0021), Quality.GOOD)
        assert [got[n][0] for n in names[5:]] == [1.0, 1.0, 1.0, 1.0]
        # the HTTP API's view of the same store: the sentinel's quality name, the set bits' names
        from types import SimpleNamespace

        from edge.api.app import tag_out
        intel = SimpleNamespace(app=app)
        tags = {t.name: t for t in app.plant.tags}
        assert tag_out(intel, tags["temp"]).quality == "Bad_SensorFailure" and tag_out(intel, tags["temp"]).value is None
        assert tag_out(intel, tags["events"]).state == "ground_fault,over_temp,manual_stop"
        # the inverter changes its factor at run time; then reports it not implemented; then the word is invalid
        regs[11] = 0  # W_SF 0
        regs[10] = 1234
        regs[20:22] = [0x0000, 0x0002]
        got = await _poll(app, names, time.time_ns())
        assert got["W"] == (1234.0, Quality.GOOD) and got["events_manual_stop"][0] == 0.0
        regs[11] = 0x8000  # W_SF not implemented: W is bad, not wrong
        regs[20:22] = [0xFFFF, 0xFFFF]
        got = await _poll(app, names, time.time_ns())
        assert got["W"][1] is Quality.BAD_SENSOR_FAILURE and got["A"] == (15.75, Quality.GOOD)
        assert all(got[n][1] is Quality.BAD_SENSOR_FAILURE for n in names[4:])
        # a write applies the factor inversely
        regs[11] = 0xFFFF  # W_SF -1
        wmax = next(t.id for t in app.plant.tags if t.name == "WMax")
        result = await app.writes.write(wmax, 750.5)
        assert result.ok, result.message
        assert int(regs[30]) == 7505 and result.read_back == 750.5
    finally:
        await app.stop()
        await plant.stop()
