"""``plugin: sunspec``: discovery, points from pysunspec2's model definitions, and a full poll (issue 16).

The device is the project's SunSpec simulator, built from the same official definitions, with
raw values and scale factors of its own; its truth is cross-checked with pysunspec2's own Modbus
client (its own socket code and its own scale-factor arithmetic), and the appliance's values are
compared with that truth for every tag.
"""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sunspec2.modbus.client as sunspec_client

from drivers.modbus.client import ModbusExceptionResponse
from drivers.modbus.points import Table
from drivers.modbus.sunspec.discovery import SunSpecNotFound, discover
from drivers.modbus.sunspec.models import ModelInstance, config_points, lay_out
from drivers.modbus.sunspec.sim import SunSpecSim
from edge.config.loader import load_config
from edge.core.model import Quality
from edge.runtime.app import Appliance

ROOT = Path(__file__).resolve().parents[4]
UNKNOWN = (64999, 8)  # a vendor model pysunspec2 has no definition for


def reader(sim: SunSpecSim):
    async def read(address: int, count: int) -> list[int]:
        if address not in sim.regs:
            raise ModbusExceptionResponse(3, 2)  # illegal data address, as a device answers
        return [sim.regs.get(a, 0) for a in range(address, address + count)]
    return read


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_discovery_finds_the_marker_and_walks_the_chain(base):
    sim = SunSpecSim([1, 103, (160, 3)], base=base, unknown=[UNKNOWN])
    found = await discover(reader(sim))
    assert found.base == base
    assert [(m.id, m.address, m.length) for m in found.models] == [(m.id, m.address, m.length) for m in sim.models]
    assert [m.name for m in found.models] == ["common", "inverter_three_phase", "mppt", None]
    assert found.models[2].counts == {"/module": 3} and [m.id for m in found.unknown] == [64999]


async def test_no_marker_is_a_clear_error():
    async def read(address: int, count: int) -> list[int]:
        return [0] * count
    with pytest.raises(SunSpecNotFound, match="no SunSpec marker 'SunS' at 40000, 0, 50000"):
        await discover(read)


def test_points_keep_model_and_point_names_types_units_factors_sentinels():
    inst = lay_out(ModelInstance(160, 40122, 48))  # header 10 + 2 modules of 20 (count 0: from the length)
    points = {p["name"]: p for p in config_points(inst)}
    assert inst.counts == {"/module": 2}
    dcw = points["mppt_module2_DCW"]
    assert (dcw["address"], dcw["type"], dcw["unit"], dcw["scale_factor"], dcw["invalid"]) == \
        (40122 + 10 + 20 + 11, "uint16", "W", "mppt_DCW_SF", [0xFFFF])  # module: ID, IDStr (8), DCA, DCV, DCW
    assert points["mppt_module1_DCWH"]["type"] == "uint32" and points["mppt_module1_DCWH"]["invalid"] == [0]  # acc32
    assert points["mppt_module1_IDStr"] == {**points["mppt_module1_IDStr"], "type": "string", "length": 8,
                                            "invalid": ["all_nul"]}
    assert points["mppt_DCW_SF"]["invalid"] == [0x8000]
    assert points["mppt_module1_DCSt"]["enum"][4] == "MPPT"
    assert points["mppt_module1_DCEvt"]["bits"][0] == "GROUND_FAULT" and points["mppt_module1_DCEvt"]["type"] == "uint32"


async def test_the_simulator_agrees_with_pysunspec2s_own_client():
    """Independent check of the truth the next test compares with."""
    sim = SunSpecSim([1, 103, (160, 2)], seed=5)
    plant = await sim.serve()
    host, port = plant.address("inverter")

    def scan() -> dict[str, object]:
        dev = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=host, ipport=port)
        try:
            dev.scan()
            out: dict[str, object] = {}
            for name, key in (("common", 1), ("inverter_three_phase", 103)):
                for pname, point in dev.models[key][0].points.items():
                    out[f"{name}_{pname}"] = point.cvalue
            for i, module in enumerate(dev.models[160][0].groups["module"]):
                for pname, point in module.points.items():
                    out[f"mppt_module{i + 1}_{pname}"] = point.cvalue
            return out
        finally:
            dev.close()

    try:
        theirs = await asyncio.to_thread(scan)
    finally:
        await plant.stop()
    compared = 0
    for tag, want in sim.truth.items():
        if tag not in theirs or tag.endswith("_SF"):
            continue
        got = theirs[tag]
        if want is None:
            assert got is None, tag
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-6), tag
        else:
            assert got == want, tag
        compared += 1
    assert compared > 50  # every value point of the three models (scale factors are compared through them)


async def _wait_all(app: Appliance, after_ns: int, timeout_s: float = 15.0, slower_than_ms: int = 10**9) -> None:
    """Until every tag polled at least every ``slower_than_ms`` has a sample newer than ``after_ns``."""
    ids = [t.id for t in app.plant.tags if t.interval_ms < slower_than_ms]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if bool((app.store.ts_ns[ids] > after_ns).all()):
            return
        await asyncio.sleep(0.05)
    stale = [t.name for t in app.plant.tags if t.id in ids and app.store.ts_ns[t.id] <= after_ns]
    raise AssertionError(f"not polled within {timeout_s} s: {stale[:10]}")


def _compare(app: Appliance, truth: dict[str, object]) -> list[str]:
    wrong = []
    for tag in app.plant.tags:
        value, quality, _ = app.store.get(tag.id)
        want = truth[tag.name]
        if want is None:
            ok = quality is Quality.BAD_SENSOR_FAILURE and (isinstance(value, str) or math.isnan(value))
        elif isinstance(want, str):
            ok = quality is Quality.GOOD and value == want
        else:
            ok = quality is Quality.GOOD and value == float(want)
        if not ok:
            wrong.append(f"{tag.name}: {value!r} {quality.name}, want {want!r}")
    return wrong


async def test_a_site_with_only_plugin_sunspec_reads_every_point_right(tmp_path):
    """The acceptance test: {name, bus, unit_id, plugin: sunspec} and nothing else; every tag right,
    not-implemented points Bad_SensorFailure, scale factors applied and followed when they change."""
    sim = SunSpecSim([1, 103, (160, 2)], unknown=[UNKNOWN], seed=11)
    plant = await sim.serve()
    host, port = plant.address("inverter")
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"site: {{name: pv}}\nruntime: {{data_dir: {tmp_path / 'data'}}}\n"
                   f"buses: [{{name: net, type: modbus_tcp, host: {host}, port: {port}, timeout_ms: 500}}]\n"
                   "devices:\n  - {name: inv, bus: net, unit_id: 1, plugin: sunspec}\n")
    app = None
    try:
        loaded = await asyncio.to_thread(load_config, cfg, None, False, True)
        assert [str(i) for i in loaded.issues if "64999" in str(i)], "the unknown model is reported"
        names = {t.name for t in loaded.plant.tags}
        assert names == set(sim.truth), names ^ set(sim.truth)
        assert len(names) > 150 and sum(v is None for v in sim.truth.values()) > 10
        app = Appliance(loaded, audit=False)
        await app.start()
        await _wait_all(app, 0)
        assert _compare(app, sim.truth) == []
        # the inverter moves its DC power factor at run time (a Fronius' DCW_SF between -2 and -1)
        image = plant.device("inverter").image.view(Table.HOLDING)
        for sf in (-2, -1, 0):
            sim.set_scale_factor("mppt_DCW_SF", sf, image)
            sim.set_scale_factor("inverter_three_phase_W_SF", sf + 1, image)
            await _wait_all(app, time.time_ns(), slower_than_ms=60_000)  # nameplate strings: once a minute
            assert _compare(app, sim.truth) == [], sf
            w = next(t.id for t in app.plant.tags if t.name == "mppt_module2_DCW")
            assert app.store.get(w)[0] == sim.truth["mppt_module2_DCW"]
        # the models are cached: a check without hardware sees the same tags
        again = load_config(cfg)
        assert {t.name for t in again.plant.tags} == names
    finally:
        if app is not None:
            await app.stop()
        await plant.stop()


async def test_edge_scan_lists_the_models_of_a_sunspec_device():
    sim = SunSpecSim([1, 103, (160, 2)], unknown=[UNKNOWN])
    plant = await sim.serve()
    host, port = plant.address("inverter")
    try:
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "edge.cli.main", "scan", "--host", host,
                                                       "--port", str(port), "--units", "1", "--sunspec"],
                                      capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        await plant.stop()
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "unit   1: answers" in text and "SunSpec at 40000" in text
    for line in ("model     1 common", "model   103 inverter_three_phase", "model   160 mppt",
                 "(module x2)", "model 64999 unknown (no definition in pysunspec2): skipped"):
        assert line in text, text
