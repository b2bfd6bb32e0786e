"""Health tables (the binary HEALTH_MANY rows, issue 21): the same ``edge_health`` lines as the JSON
rows they replace, from both encoders (Python and compiled); JSON rows of older spools still encode."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge.config.storage import InfluxConfig
from edge.core.model import DeviceDiagnostics, DeviceState
from edge.outputs import influx
from edge.outputs.influx import LineEncoder, append_diagnostics, diagnostics_fields, diagnostics_table
from edge.storage.spool import (
    HEALTH_MANY,
    HEALTH_TABLE_MAGIC,
    KIND_HEALTH,
    HealthTable,
    decode_health_many,
    decode_health_table,
    encode_health_many,
    encode_health_table,
    health_table,
    is_health_table,
    key_order,
)
from tests.outputs.demo import BASE_TS_NS
from tests.outputs.test_line_protocol import odd_plant, spooled

CFG = InfluxConfig(url="http://127.0.0.1:1", bucket="edge")

#: Records with what a line must get right: keys and sources that need escaping, NaN and infinite
#: values (left out), a record with nothing finite (no line), keys only some sources have.
ODD_RECORDS: list[tuple[str, dict[str, float]]] = [
    ("pump 1,a=b", {"state": 1.0, "odd key,x=y z": 2.5, "exception_2": 3.0, "big": 1e300, "tiny": -2.2250738585072014e-308}),
    ("meter\\x", {"state": 2.0, "odd key,x=y z": math.nan, "exception_4": 1.0, "neg": -0.0}),
    ("void", {"state": math.inf, "odd key,x=y z": -math.inf}),  # nothing finite: no line at all
    ("new\nline", {"state": 0.1 + 0.2, "exception_2": 7.0, "big": 123456789012345.0, "exception_4": 8.0}),
]


def lines_of(tmp_path, blobs: list[bytes], single: list[tuple[str, dict[str, float]]] | None = None) -> list[list[str]]:
    """For each blob (a HEALTH_MANY row), the Python encoder's text and the compiled encoder's bytes
    decoded; for ``single``, one row per source (the oldest format)."""
    sp = spooled(tmp_path, odd_plant())
    try:
        for b in blobs:
            assert sp._append(BASE_TS_NS, KIND_HEALTH, HEALTH_MANY, 1, b) > 0
        for source, fields in single or []:
            assert sp.append_health(source, BASE_TS_NS, fields)
        assert sp.flush()
        enc = LineEncoder(sp, CFG)
        rows = sp.unsent(0, None, 10**9)
        out = []
        if blobs:
            out.append([line for r in rows if r.source == HEALTH_MANY for line in enc.encode(r).split("\n")])
            out.append([line for r in rows if r.source == HEALTH_MANY
                        for line in enc.encode_bytes(r).decode().split("\n")])
        if single:
            out.append([line for r in rows if r.source != HEALTH_MANY for line in [enc.encode(r)] if line])
        return out
    finally:
        sp.close()


def test_a_health_table_gives_byte_for_byte_the_lines_of_json_rows(tmp_path):
    table = health_table(ODD_RECORDS)
    assert table is not None and table.keys[:3] == ["state", "odd key,x=y z", "exception_2"]
    blob = encode_health_table(table)
    assert is_health_table(blob) and not is_health_table(encode_health_many(ODD_RECORDS))
    python, compiled, single = lines_of(tmp_path, [blob], ODD_RECORDS)
    json_python, json_compiled = lines_of(tmp_path / "json", [encode_health_many(ODD_RECORDS)])
    assert python == compiled == json_python == json_compiled == single
    assert len(python) == 3  # "void" has no finite field
    assert python[0] == ("edge_health,site=site\\ x,source=pump\\ 1\\,a\\=b state=1.0,odd\\ key\\,x\\=y\\ z=2.5,"
                         f"exception_2=3.0,big=1e+300,tiny=-2.2250738585072014e-308 {BASE_TS_NS}")
    assert python[1] == f"edge_health,site=site\\ x,source=meter\\\\x state=2.0,exception_4=1.0,neg=-0.0 {BASE_TS_NS}"
    assert python[2] == ("edge_health,site=site\\ x,source=new\\ line state=0.30000000000000004,exception_2=7.0,"
                         f"big=123456789012345.0,exception_4=8.0 {BASE_TS_NS}")


@pytest.fixture
def tmp_subdirs(tmp_path):
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    return tmp_path


def test_devices_health_as_a_table_has_the_lines_of_one_dict_per_device(tmp_subdirs):
    """What the manager writes each tick (``append_diagnostics``: no dict per device) encodes to the
    lines of one JSON row per device (older spools), exception_<code> fields included."""
    diags = [DeviceDiagnostics(f"dev {i},x", "line a", DeviceState(i % 5), polls_ok=i, requests=3 * i,
                               exceptions={2: i % 4, 11: 1} if i % 3 == 0 else ({11: 2} if i % 3 == 1 else {}),
                               latency_p50_ms=i / 7, latency_p99_ms=float("nan") if i == 4 else i * 1.5,
                               jitter_p99_ms=0.1 * i, holes=i % 2, unreadable_points=i % 3)
             for i in range(300)]
    table = diagnostics_table(diags)
    assert table is not None and table.keys[-3:] == ["exceptions", "exception_2", "exception_11"]
    expect = [(d.name, diagnostics_fields(d)) for d in diags]
    assert decode_health_many(encode_health_table(table)) == [(s, {k: v for k, v in f.items() if v == v})
                                                              for s, f in expect]
    sp = spooled(tmp_subdirs / "a", odd_plant())
    try:
        assert append_diagnostics(sp, BASE_TS_NS, diags) and sp.flush()
        rows = sp.unsent(0, None, 10**9)
        assert [(r.source, is_health_table(r.blob)) for r in rows] == [(HEALTH_MANY, True)] * 2  # 256 + 44
        assert sum(r.n for r in rows) == sum(len(f) for _, f in expect) - 1  # the NaN latency is not a point
        blobs = [r.blob for r in rows]
    finally:
        sp.close()
    python, compiled, single = lines_of(tmp_subdirs / "b", blobs, expect)
    assert python == compiled == single and len(python) == len(diags)
    assert python[3] == ("edge_health,site=site\\ x,source=dev\\ 3\\,x state=3.0,polls_ok=3.0,polls_failed=0.0,"
                         "requests=9.0,timeouts=0.0,crc_errors=0.0,overruns=0.0,latency_p50_ms=0.42857142857142855,"
                         "latency_p99_ms=4.5,jitter_p99_ms=0.30000000000000004,hook_errors=0.0,holes=1.0,"
                         "unreadable_points=0.0,holes_healed=0.0,exceptions=4.0,exception_2=3.0,exception_11=1.0 "
                         f"{BASE_TS_NS}")
    assert "latency_p99_ms" not in python[4]


def test_exception_codes_in_no_common_order_fall_back_to_json_rows_with_the_same_lines(tmp_subdirs):
    """Each device's exception_<code> fields come in the order its codes first occurred; when two
    devices disagree no column order keeps both lines as they were, so that tick is JSON rows."""
    diags = [DeviceDiagnostics("a", "line a", exceptions={4: 1, 2: 5}),
             DeviceDiagnostics("b", "line a", exceptions={2: 1, 4: 3}),
             DeviceDiagnostics("c", "line a")]
    assert key_order([[4, 2], [2, 4]]) is None and key_order([[4, 2], [2], [4, 3]]) == {4: 0, 2: 1, 3: 2}
    assert diagnostics_table(diags) is None
    sp = spooled(tmp_subdirs / "a", odd_plant())
    try:
        assert append_diagnostics(sp, BASE_TS_NS, diags) and sp.flush()
        blobs = [r.blob for r in sp.unsent(0, None, 100)]
    finally:
        sp.close()
    assert len(blobs) == 1 and blobs[0][:1] == b"["
    python, compiled, single = lines_of(tmp_subdirs / "b", blobs, [(d.name, diagnostics_fields(d)) for d in diags])
    assert python == compiled == single
    assert ",exception_4=1.0,exception_2=5.0 " in python[0] and ",exception_2=1.0,exception_4=3.0 " in python[1]


def test_health_table_blob_round_trip_and_corruption():
    values = np.array([[1.0, np.nan], [np.inf, -3.5]])
    blob = encode_health_table(HealthTable(["k", "k2"], ["s1", "s 2"], values))
    assert blob.startswith(HEALTH_TABLE_MAGIC) and len(blob) > 32
    t = decode_health_table(blob)
    assert (t.keys, t.sources) == (["k", "k2"], ["s1", "s 2"])
    np.testing.assert_array_equal(t.values, values)
    assert t.points() == 3
    for bad in (blob[:-1], blob + b"\0", blob[:10], b"[]", blob.replace(b'"s1"', b'"s1!')):
        with pytest.raises(ValueError, match="corrupt health table"):
            decode_health_table(bad)
    with pytest.raises(ValueError, match="2 sources x 1 keys"):
        encode_health_table(HealthTable(["k"], ["a", "b"], values))
    empty = decode_health_table(encode_health_table(HealthTable([], [], np.empty((0, 0)))))
    assert empty.values.shape == (0, 0)


def test_the_compiled_health_encoder_is_built():
    """The forwarder's health lines come from the compiled encoder (the Python one is its reference)."""
    assert influx.encode_health_compiled is not None
