"""Sparkplug B payloads of the appliance, read back by the test host's own decoder (spb_host.py).

The host decodes with a descriptor written in the tests from the Tahu schema, never with the
appliance's generated module; these checks therefore catch a wrong field number, wire type or
integer rule in the appliance's encoding.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spb_host import DT, decode, properties, value_of

from edge.core.model import Quality, TagInfo
from edge.outputs.mqtt import sparkplug as sp

REPO = Path(__file__).resolve().parents[3]
MQTT_DIR = REPO / "edge" / "outputs" / "mqtt"

TAGS = [
    TagInfo(0, "dev", "temp", "bus", "float64", unit="degC", low=-50.0, high=150.0, description="water temperature",
            raw_dtype="int16", resolution=0.1),
    TagInfo(1, "dev", "level", "bus", "int16"),
    TagInfo(2, "dev", "count", "bus", "uint32"),
    TagInfo(3, "dev", "energy", "bus", "int64"),
    TagInfo(4, "dev", "total", "bus", "uint64"),
    TagInfo(5, "dev", "flow", "bus", "float32", unit="m3/h"),
    TagInfo(6, "dev", "on", "bus", "bool", writable=True),
    TagInfo(7, "dev", "name", "bus", "string"),
    TagInfo(8, "dev", "word", "bus", "uint16"),
    TagInfo(9, "dev", "big", "bus", "int32"),
]
VALUES = np.array([23.7, -12, 4_000_000_000, -5_000_000_000, 2.0**53, 1.5, 1, np.nan, 65535, -2_000_000_000])


def layout() -> sp.Layout:
    return sp.Layout(TAGS, [("dev", [t.id for t in TAGS])])


def test_dbirth_carries_every_tag_with_name_alias_datatype_value_and_properties():
    lay = layout()
    q = np.zeros(len(TAGS), dtype=np.uint8)
    q[8] = Quality.UNCERTAIN_LAST_USABLE
    stamps = np.full(len(TAGS), 1_700_000_000_123, dtype=np.int64)
    raw = lay.dbirth("dev", 7, 1_700_000_000_999, VALUES, q, stamps, {7: "pump A"})
    p = decode(raw)
    assert p.seq == 7 and p.timestamp == 1_700_000_000_999
    by_name = {m.name: m for m in p.metrics}
    assert list(by_name) == [t.name for t in TAGS]
    want_types = {"temp": "Double", "level": "Int16", "count": "UInt32", "energy": "Int64", "total": "UInt64",
                  "flow": "Float", "on": "Boolean", "name": "String", "word": "UInt16", "big": "Int32"}
    for t in TAGS:
        m = by_name[t.name]
        assert m.datatype == DT[want_types[t.name]], t.name
        assert m.alias == sp.Layout.ALIAS_BASE + t.id and m.timestamp == 1_700_000_000_123
    got = {n: value_of(m, m.datatype) for n, m in by_name.items()}
    assert got["temp"] == 23.7  # a scaled register is a Double with its decimals
    assert got["level"] == -12 and got["big"] == -2_000_000_000  # two's complement in int_value
    assert got["count"] == 4_000_000_000 and got["word"] == 65535
    assert got["energy"] == -5_000_000_000 and got["total"] == 2**53  # long_value
    assert got["flow"] == 1.5 and got["on"] is True and got["name"] == "pump A"
    temp = properties(by_name["temp"])
    assert temp == {"engUnit": "degC", "engLow": -50.0, "engHigh": 150.0, "Documentation": "water temperature",
                    "readOnly": True, "Quality": 192, "StatusCode": 0}
    assert properties(by_name["on"])["readOnly"] is False
    word = properties(by_name["word"])
    assert word["Quality"] == 68 and word["StatusCode"] == 0x40900000  # uncertain keeps its value
    assert got["word"] == 65535


def test_ddata_has_aliases_only_timestamps_and_quality_only_when_not_good():
    lay = layout()
    ids = np.array([0, 1, 6, 2], dtype=np.int32)
    vals = np.array([23.7, -3.0, 0.0, np.nan])
    q = np.array([0, 0, 0, Quality.BAD_NO_COMMUNICATION], dtype=np.uint8)
    stamps = np.array([1000, 1001, 1002, 1003], dtype=np.int64)
    p = decode(lay.ddata(255, 5000, ids, vals, q, stamps, None, historical=False))
    assert p.seq == 255 and p.timestamp == 5000
    assert all(not m.HasField("name") and not m.HasField("datatype") for m in p.metrics)
    by_alias = {m.alias - sp.Layout.ALIAS_BASE: m for m in p.metrics}
    assert set(by_alias) == {0, 1, 6, 2}
    assert value_of(by_alias[0], DT["Double"]) == 23.7 and by_alias[0].timestamp == 1000
    assert value_of(by_alias[1], DT["Int16"]) == -3
    assert by_alias[6].boolean_value is False and by_alias[6].HasField("boolean_value")
    assert not by_alias[0].HasField("properties")
    bad = by_alias[2]
    assert bad.is_null and properties(bad) == {"Quality": 8, "StatusCode": 0x80310000}
    assert not any(m.is_historical for m in p.metrics)


def test_historical_ddata_marks_every_metric():
    lay = layout()
    ids = np.array([0, 5], dtype=np.int32)
    p = decode(lay.ddata(1, 5000, ids, np.array([1.25, 2.5]), np.zeros(2, np.uint8), 777, None, historical=True))
    assert [m.is_historical for m in p.metrics] == [True, True]
    assert [m.timestamp for m in p.metrics] == [777, 777]


def test_death_payload_is_only_bdseq_without_seq():
    p = decode(sp.death_payload(42))
    assert not p.HasField("seq")
    assert [(m.name, m.datatype, m.long_value) for m in p.metrics] == [("bdSeq", DT["Int64"], 42)]


def test_command_values_are_read_per_datatype_and_mismatches_refused():
    M = sp.Metric
    assert sp.metric_value(M(int_value=(-5) & 0xFFFFFFFF), DT["Int16"]) == -5
    assert sp.metric_value(M(long_value=4_000_000_000), DT["UInt32"]) == 4_000_000_000  # older Tahu form
    assert sp.metric_value(M(double_value=55.5), DT["Double"]) == 55.5
    assert sp.metric_value(M(boolean_value=True), DT["Boolean"]) is True
    for metric, dt in ((M(string_value="x"), DT["Double"]), (M(double_value=1.0), DT["Boolean"]),
                       (M(is_null=True), DT["Double"]), (M(), DT["Int16"]), (M(double_value=2.0), DT["String"])):
        with pytest.raises(sp.MetricValueError):
            sp.metric_value(metric, dt)


def test_generated_module_matches_the_schema_file(tmp_path):
    """sparkplug_b_pb2.py is protoc's output for sparkplug_b.proto (regenerated and compared)."""
    out = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{MQTT_DIR}", f"--python_out={tmp_path}",
                          str(MQTT_DIR / "sparkplug_b.proto")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fresh = serialized_descriptor(tmp_path / "sparkplug_b_pb2.py")
    assert fresh == serialized_descriptor(MQTT_DIR / "sparkplug_b_pb2.py"), "regenerate sparkplug_b_pb2.py (see the .proto)"
    assert len(fresh) > 3000


def serialized_descriptor(path: Path) -> bytes:
    """The FileDescriptorProto bytes a generated module registers (its AddSerializedFile argument)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError(f"{path} registers no descriptor")


def test_ddata_of_a_whole_device_reuses_its_message_and_writes_the_same_bytes():
    """A device whose every tag changed (live, Good, one timestamp) is written by filling one message
    kept per device: the bytes must be those of the general path, message after message (the values
    and each datatype's field replaced, nothing left over from the last one), and the general path
    takes over for what the reused message cannot hold (a null integer, strings, a subset, another order)."""
    ids = np.array([t.id for t in TAGS if t.dtype != "string"], dtype=np.int32)
    lay = sp.Layout(TAGS, [("dev", ids.tolist()), ("strings", [7])])
    order = ids[np.argsort(lay.kind[ids], kind="stable")]  # the general path groups metrics by value kind
    rng = np.random.default_rng(5)
    q = np.zeros(len(order), dtype=np.uint8)
    for k in range(20):
        vals = np.round(rng.normal(0, 1e6, len(order)))
        vals[lay.kind[order] == sp.K_BOOL] = k % 2
        vals[lay.kind[order] == sp.K_FLOAT] += 0.5
        stamp = 1_700_000_000_000 + k
        whole = lay.ddata(k, 5000 + k, order, vals, q, stamp, None, historical=False, device="dev")
        general = lay.ddata(k, 5000 + k, order, vals, q, stamp, None, historical=False)
        assert whole == general
        assert lay._ddata_whole("dev", k, 5000 + k, order, vals, stamp) == general  # it was the reused message
        p = decode(whole)
        assert p.seq == k and [m.alias - sp.Layout.ALIAS_BASE for m in p.metrics] == order.tolist()
        assert all(m.timestamp == stamp and not m.is_null for m in p.metrics)
    assert lay._whole["dev"] is not None  # the reused message was there to be used
    nan = vals.copy()
    nan[lay.kind[order] == sp.K_INT32] = np.nan  # null integers: general path, then the reused one again
    assert lay.ddata(1, 2, order, nan, q, 3, None, False, "dev") == lay.ddata(1, 2, order, nan, q, 3, None, False)
    assert lay.ddata(1, 2, order, vals, q, 3, None, False, "dev") == lay.ddata(1, 2, order, vals, q, 3, None, False)
    for sub in (order[:-1], order[::-1]):
        v = vals[:len(sub)]
        assert lay.ddata(1, 2, sub, v, q[:len(sub)], 3, None, False, "dev") == \
            lay.ddata(1, 2, sub, v, q[:len(sub)], 3, None, False)
    s = np.array([7], dtype=np.int32)
    assert lay.ddata(1, 2, s, np.zeros(1), np.zeros(1, np.uint8), 3, {7: "x"}, False, "strings") == \
        lay.ddata(1, 2, s, np.zeros(1), np.zeros(1, np.uint8), 3, {7: "x"}, False)
    assert lay._whole["strings"] is None
