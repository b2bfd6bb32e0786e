"""``edge probe`` on recorded register traces with known truth (issue 16, point 5).

The traces (``traces/probe_traces.json``) were read with a plain pymodbus client from the
project's simulator, whose encoder is pymodbus's, while the value evolved as it does on a real
device; ``traces/record_probe_traces.py`` records them again. Before the fix, the int64 energy
counter ranked ``float64 CDAB 1.8e-28`` first and the 32-bit accumulator ``float32 ABCD
6.97e-32`` first.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.modbus.codec import decode_point
from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.probe import AMBIGUOUS_MARGIN, probe

TRACES = json.loads((Path(__file__).parent / "traces" / "probe_traces.json").read_text(encoding="utf-8"))
ROOT = Path(__file__).resolve().parents[3]


def _trace(name: str) -> dict:
    return next(t for t in TRACES if t["name"] == name)


def test_the_traces_hold_what_the_simulator_encoded():
    """Independent check of the recording: the truth decodes from the registers read."""
    for t in TRACES:
        point = RegisterPoint(0, "x", Table.HOLDING, 0, t["type"], t["order"])
        decoded = [decode_point(point, r) for r in t["reads"]]
        assert decoded == pytest.approx(t["values"], rel=1e-6), t["name"]


@pytest.mark.parametrize("trace", TRACES, ids=[t["name"] for t in TRACES])
def test_the_first_reading_gives_the_true_values(trace):
    """Every trace: the best reading decodes to the true numbers, clearly ahead of any reading
    that gives other numbers; its (type, order) is the truth or reads the very same numbers."""
    ranked = probe(trace["reads"])
    best = ranked[0]
    assert [float(v) for v in best.values] == pytest.approx(trace["values"], rel=1e-6)
    truth = next(r for r in ranked if (r.dtype, r.order) == (trace["type"], trace["order"]))
    assert truth.values == best.values
    rival = next(r for r in ranked if r.values != best.values)
    assert best.score - rival.score >= AMBIGUOUS_MARGIN, (best, rival)


def test_int64_energy_counter_ranks_int64_abcd_first():
    ranked = probe(_trace("int64 energy counter")["reads"])
    assert (ranked[0].dtype, ranked[0].order) == ("int64", "ABCD")
    trap = next(r for r in ranked if (r.dtype, r.order) == ("float64", "CDAB"))
    assert 1e-29 < abs(trap.values[0]) < 1e-27 and any("tiny" in why for why in trap.reasons)
    assert trap.score < ranked[0].score - 40


def test_acc32_ranks_uint32_first():
    ranked = probe(_trace("acc32 energy accumulator")["reads"])
    assert (ranked[0].dtype, ranked[0].order) == ("uint32", "ABCD")
    assert ranked[0].values[0] == 196_401_789 and "rises like a counter" in ranked[0].reasons
    tiny = next(r for r in ranked if (r.dtype, r.order) == ("float32", "ABCD"))
    assert tiny.score < ranked[0].score - 40


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_float32_in_every_order(order):
    ranked = probe(_trace(f"float32 {order} mains voltage")["reads"])
    assert (ranked[0].dtype, ranked[0].order) == ("float32", order)


def test_int32_crossing_zero_is_signed():
    ranked = probe(_trace("int32 net energy crossing zero")["reads"])
    assert (ranked[0].dtype, ranked[0].order) == ("int32", "ABCD") and min(ranked[0].values) < 0


def test_edge_probe_json_over_a_served_trace(tmp_path):
    """The command itself: ``edge probe --json`` against a simulated device replaying the int64
    trace (one register image per read), parsed as JSON."""
    script = tmp_path / "replay.py"
    script.write_text(_REPLAY, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout)
    assert isinstance(ranked, list) and len(ranked) == 12
    first = ranked[0]
    assert (first["type"], first["order"]) == ("int64", "ABCD")
    assert first["value"] == _trace("int64 energy counter")["values"][-1]
    assert set(first) >= {"type", "order", "value", "score", "reasons"} and isinstance(first["reasons"], list)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


_REPLAY = r'''
import asyncio, contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import SimDeviceSpec, SimPlant, TcpTransport
from edge.cli.main import main

trace = next(t for t in json.load(open(sys.argv[1] + "/tests/drivers/modbus/traces/probe_traces.json"))
             if t["name"] == "int64 energy counter")
point = RegisterPoint(0, "e", Table.HOLDING, 10, "int64", "ABCD", writable=True)

async def run():
    plant = SimPlant([SimDeviceSpec(name="meter", unit_id=1, transport=TcpTransport(port=0), points=[point])])
    await plant.start()
    host, port = plant.address("meter")
    image = plant.device("meter").image.view(Table.HOLDING)
    stats = plant.stats("meter")

    async def replay():  # the next image as soon as the previous one was read: one image per read
        for regs in trace["reads"]:
            seen = stats.replies
            image[10:14] = regs
            for _ in range(400):
                if stats.replies > seen:
                    break
                await asyncio.sleep(0.005)
    task = asyncio.create_task(replay())
    await asyncio.sleep(0.01)
    out = io.StringIO()
    args = ["probe", "--host", host, "--port", str(port), "--address", "10", "--words", "4",
            "--reads", str(len(trace["reads"])), "--interval-ms", "150", "--json"]
    with contextlib.redirect_stdout(out):
        code = await asyncio.to_thread(main, args)
    task.cancel()
    await plant.stop()
    sys.stdout.write(out.getvalue())
    return code

sys.exit(asyncio.run(run()))
'''
