"""Line protocol written by the encoder, parsed by a real InfluxDB 1.x and read back with InfluxQL."""
from __future__ import annotations

import math

import numpy as np

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.core.model import (
    BusInfo,
    DeviceDiagnostics,
    DeviceInfo,
    DeviceState,
    Plant,
    Quality,
    SampleBatch,
    TagInfo,
    WindowBatch,
)
from edge.outputs.influx import LineEncoder, append_diagnostics, diagnostics_fields, health_fields
from edge.storage.spool import HEALTH_MANY, KIND_HEALTH, Spool, encode_health_many, is_health_table
from tests.outputs.demo import BASE_TS_NS


def odd_plant() -> Plant:
    """Names that need escaping in line protocol (spaces, commas, equals signs)."""
    tags = [
        TagInfo(0, "pump 1", "flow,m3=h", "line a", "float32", plugin="acme pump"),
        TagInfo(1, "pump 1", "state", "line a", "uint16", plugin="acme pump"),
        TagInfo(2, "pump 1", "serial", "line a", "string", plugin="acme pump"),
        TagInfo(3, "meter", "p", "line a", "float64"),
    ]
    return Plant("site x", [BusInfo("line a", "modbus_rtu", ("pump 1", "meter"))],
                 [DeviceInfo("pump 1", "line a", "unit 1", "acme pump", "1.0", (0, 1, 2)),
                  DeviceInfo("meter", "line a", "unit 2", None, None, (3,))], tags)


def spooled(tmp_path, plant: Plant) -> Spool:
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(retention_s=0))
    sp.start()
    return sp


def test_encoded_samples_windows_health_read_back_from_influxdb1(tmp_path, influxdb1):
    plant = odd_plant()
    sp = spooled(tmp_path, plant)
    try:
        ts = BASE_TS_NS + 123_456_789  # ns precision must survive
        sp.append_samples(SampleBatch("pump 1", ts, np.array([0, 1, 2], np.int32), np.array([12.5, 3.0, np.nan]),
                                      np.array([0, 0, 0], np.uint8), {2: 'SN "7", x\\y'}))
        sp.append_samples(SampleBatch.bad("meter", ts + 1, np.array([3], np.int32), Quality.BAD_NO_COMMUNICATION))
        sp.append_samples(SampleBatch.bad("meter", ts + 2, np.array([3], np.int32), Quality.BAD_SENSOR_FAILURE))
        sp.append_windows(WindowBatch("10s", 10**10, np.array([0, 1, 3], np.int32),
                                      np.array([BASE_TS_NS] * 3, np.int64),
                                      {"min": np.array([1.0, 2.0, 3.0]), "mean": np.array([1.5, np.nan, 3.5])}))
        sp.append_health("appliance", ts, health_fields({"unsent_points": 5, "dropped_points": {"max_bytes": 2},
                                                         "last_error": "x"}))
        diag = DeviceDiagnostics("pump 1", "line a", DeviceState.OFFLINE, polls_ok=7, timeouts=2,
                                 exceptions={2: 3}, latency_p99_ms=12.5)
        sp.append_health("pump 1", ts, diagnostics_fields(diag))  # one row per source (rows of older spools)
        later = [DeviceDiagnostics("meter", "line a", DeviceState.ONLINE, polls_ok=11, latency_p50_ms=0.25),
                 DeviceDiagnostics("pump 1", "line a", DeviceState.ONLINE, polls_ok=8, exceptions={4: 1})]
        assert append_diagnostics(sp, ts + 5, later)  # one health-table row, both sources (what the manager writes)
        old_json = [("meter", {"polls_ok": 12.0, "odd key,=": 1.5}), ("pump 1", {"polls_ok": 9.0, "exception_4": 2.0})]
        sp._append(ts + 6, KIND_HEALTH, HEALTH_MANY, 4, encode_health_many(old_json))  # a JSON row of older spools
        assert sp.flush()
        enc = LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge"))
        rows = sp.unsent(0, None, 1000)
        assert [is_health_table(r.blob) for r in rows if r.source == HEALTH_MANY] == [True, False]
        lines = [enc.encode_bytes(r).decode() for r in rows]  # what the forwarder sends
        assert lines == [enc.encode(r) for r in rows]
        influxdb1.create_database("edge")
        influxdb1.write_lines("edge", "\n".join(lines))
    finally:
        sp.close()

    r = influxdb1.query('SELECT * FROM "pump 1"', db="edge")["results"][0]["series"][0]
    row = dict(zip(r["columns"], r["values"][0], strict=True))
    assert row["time"] == ts
    assert row["flow,m3=h"] == 12.5 and row["q_flow,m3=h"] == 0
    assert row["state"] == 3.0 and row["serial"] == 'SN "7", x\\y' and row["q_serial"] == 0
    assert row["site"] == "site x" and row["bus"] == "line a" and row["device"] == "pump 1"
    assert row["plugin"] == "acme pump"

    r = influxdb1.query('SELECT * FROM "meter"', db="edge")["results"][0]["series"][0]
    row = dict(zip(r["columns"], r["values"][0], strict=True))
    assert row["q_p"] == int(Quality.BAD_NO_COMMUNICATION) and "p" not in row  # NaN value left out
    sentinel = dict(zip(r["columns"], r["values"][1], strict=True))
    assert sentinel["q_p"] == int(Quality.BAD_SENSOR_FAILURE) == 6 and "p" not in sentinel  # a sentinel (issue 16)

    r = influxdb1.query('SELECT * FROM "edge_window" GROUP BY "device"', db="edge")["results"][0]["series"]
    by_dev = {s["tags"]["device"]: dict(zip(s["columns"], s["values"][0], strict=True)) for s in r}
    assert by_dev["pump 1"]["window"] == "10s" and by_dev["pump 1"]["time"] == BASE_TS_NS
    assert by_dev["pump 1"]["flow,m3=h_min"] == 1.0 and by_dev["pump 1"]["flow,m3=h_mean"] == 1.5
    assert by_dev["pump 1"]["state_min"] == 2.0 and by_dev["pump 1"].get("state_mean") is None
    assert by_dev["meter"]["p_mean"] == 3.5

    r = influxdb1.query('SELECT * FROM "edge_health" WHERE "source" = \'appliance\'', db="edge")
    row = dict(zip(r["results"][0]["series"][0]["columns"], r["results"][0]["series"][0]["values"][0], strict=True))
    assert row["source"] == "appliance" and row["unsent_points"] == 5 and row["dropped_points.max_bytes"] == 2
    assert not any(isinstance(v, float) and math.isnan(v) for v in row.values() if v is not None)
    r = influxdb1.query('SELECT * FROM "edge_health" WHERE "source" = \'pump 1\'', db="edge")
    row = dict(zip(r["results"][0]["series"][0]["columns"], r["results"][0]["series"][0]["values"][0], strict=True))
    assert (row["state"], row["polls_ok"], row["timeouts"], row["exceptions"], row["exception_2"]) == (2, 7, 2, 3, 3)
    assert row["latency_p99_ms"] == 12.5 and row["site"] == "site x"
    r = influxdb1.query(f'SELECT * FROM "edge_health" WHERE time = {ts + 5} GROUP BY "source"', db="edge")
    by_src = {x["tags"]["source"]: dict(zip(x["columns"], x["values"][0], strict=True))
              for x in r["results"][0]["series"]}
    assert sorted(by_src) == ["meter", "pump 1"]
    assert (by_src["meter"]["polls_ok"], by_src["meter"]["latency_p50_ms"], by_src["meter"]["site"]) == (11, 0.25, "site x")
    assert (by_src["pump 1"]["polls_ok"], by_src["pump 1"]["exception_4"], by_src["pump 1"]["state"]) == (8, 1, 1)
    r = influxdb1.query(f'SELECT * FROM "edge_health" WHERE time = {ts + 6} GROUP BY "source"', db="edge")
    by_src = {x["tags"]["source"]: dict(zip(x["columns"], x["values"][0], strict=True))
              for x in r["results"][0]["series"]}
    assert (by_src["meter"]["polls_ok"], by_src["meter"]["odd key,="], by_src["pump 1"]["exception_4"]) == (12, 1.5, 2)


def test_plugin_measurement_option(tmp_path, influxdb1):
    plant = odd_plant()
    sp = spooled(tmp_path, plant)
    try:
        sp.append_samples(SampleBatch("pump 1", BASE_TS_NS, np.array([1], np.int32), np.array([4.0]),
                                      np.zeros(1, np.uint8)))
        sp.append_samples(SampleBatch("meter", BASE_TS_NS, np.array([3], np.int32), np.array([5.0]),
                                      np.zeros(1, np.uint8)))
        assert sp.flush()
        enc = LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge", measurement="plugin"))
        influxdb1.create_database("edge")
        influxdb1.write_lines("edge", "\n".join(enc.encode(r) for r in sp.unsent(0, None, 100)))
    finally:
        sp.close()
    names = {s[0] for s in influxdb1.query("SHOW MEASUREMENTS", db="edge")["results"][0]["series"][0]["values"]}
    assert names == {"acme pump", "meter"}  # a device without a plugin keeps its own name


def test_request_bodies_are_gzip_that_the_standard_library_reads_at_every_level(monkeypatch):
    """The forwarder's bodies are compressed by ISA-L (isal) where it is installed, by zlib
    otherwise: both must give a gzip stream that another implementation (Python's gzip module)
    reads back to the exact line protocol, at every configurable level."""
    import gzip
    import zlib

    from edge.outputs import influx

    lines = [f"plant,device=d{d},tag=t{t} value={d * 0.1 + t!r} {BASE_TS_NS + d}".encode()
             for d in range(50) for t in range(20)]
    rows = [b"\n".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
    expect = b"\n".join(rows)
    assert influx._deflate.__name__ == "isal.isal_zlib"  # setup.py requires it
    for level in range(1, 10):
        for make in (influx._compressobj, lambda lv: zlib.compressobj(lv, zlib.DEFLATED, 31)):
            monkeypatch.setattr(influx, "_compressobj", make)
            body = influx._Body(level)
            for r in rows:
                body.add(r)
            assert body.nbytes == len(expect)
            assert gzip.decompress(body.finish()) == expect
    assert [influx._isal_level(v) for v in range(1, 10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_the_devices_health_of_one_tick_is_a_few_rows_with_the_same_lines(tmp_path):
    """Every device's health record of one tick goes into the spool as rows of up to HEALTH_MANY_MAX
    records (one insert, ack and encoder call each, not one per device); the lines are exactly those
    one row per device gives (which is what older spool files hold, and still encode)."""
    from edge.storage.spool import HEALTH_MANY, HEALTH_MANY_MAX, KIND_HEALTH

    plant = odd_plant()
    diags = [DeviceDiagnostics(f"dev {i},x", "line a", DeviceState(i % 3), polls_ok=i, exceptions={2: i % 4},
                               latency_p50_ms=i / 7) for i in range(HEALTH_MANY_MAX + 44)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    many = spooled(tmp_path / "a", plant)
    one = spooled(tmp_path / "b", plant)
    try:
        assert many.append_health_many(BASE_TS_NS, [(d.name, diagnostics_fields(d)) for d in diags])
        for d in diags:
            assert one.append_health(d.name, BASE_TS_NS, diagnostics_fields(d))
        assert many.flush() and one.flush()
        rows = many.unsent(0, None, 10**9)
        assert [(r.kind, r.source) for r in rows] == [(KIND_HEALTH, HEALTH_MANY)] * 2
        assert sum(r.n for r in rows) == sum(r.n for r in one.unsent(0, None, 10**9))
        cfg = InfluxConfig(url="http://127.0.0.1:1", bucket="edge")
        got = "\n".join(LineEncoder(many, cfg).encode(r) for r in rows).split("\n")
        expect = [LineEncoder(one, cfg).encode(r) for r in one.unsent(0, None, 10**9)]
        assert len(got) == len(diags) and got == expect
        assert got[5].startswith("edge_health,site=site\\ x,source=dev\\ 5\\,x state=2.0,polls_ok=5.0,")
    finally:
        many.close()
        one.close()
