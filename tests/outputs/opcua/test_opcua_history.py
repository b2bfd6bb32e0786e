"""HistoryRead as SCADA historians use it (issue 14), checked with asyncua's and node-opcua's clients
against the arrays the history source holds: continuation points until every value is read (and
released), ReturnBounds, TimestampsToReturn, reverse order, strings, and processed reads (Average,
Minimum, Maximum, Count, Interpolative) against an independent numpy computation."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, HistoryStandIn, config, make_plant, node_ua, tag_id

from edge.core.model import SampleBatch
from edge.outputs.opcua.server import OpcUaServer

S = 1_000_000_000
STEP = 250_000_000  # a 250 ms tag


def dt(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def iso(ns: int) -> str:
    return dt(ns).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def historian(users_file: Path):
    """A server over 30 s of a 250 ms float tag (with 8 offline samples), a float64 tag and a string tag."""
    plant = make_plant()
    hist = HistoryStandIn()
    t_end = (time.time_ns() // S - 5) * S
    ts = t_end - 30 * S + np.arange(120, dtype=np.int64) * STEP
    volts = np.round(230.0 + 5 * np.sin(np.arange(120) / 7.0), 3)
    q = np.zeros(120, np.uint8)
    q[40:48] = 2
    volts[40:48] = np.nan
    hist.data[tag_id(plant, "meter1.voltage")] = (ts, volts.astype(np.float32).astype(np.float64), q)
    ai = np.arange(120) * 0.1
    hist.data[tag_id(plant, "meter1.ai0")] = (ts, ai, np.zeros(120, np.uint8))
    texts = [f"recipe {k // 10}" for k in range(120)]
    hist.data[tag_id(plant, "meter1.serial")] = (ts, np.full(120, np.nan), np.zeros(120, np.uint8), texts)
    srv = OpcUaServer(plant, config(users_file), history=hist)
    await srv.start()
    try:
        yield srv, hist, ts
    finally:
        await srv.stop()


def client_for(srv: OpcUaServer) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    return c


def raw_details(start: int | None, end: int | None, n: int, bounds: bool = False) -> ua.ReadRawModifiedDetails:
    d = ua.ReadRawModifiedDetails()
    d.IsReadModified = False
    d.StartTime = dt(start) if start is not None else ua.get_win_epoch()
    d.EndTime = dt(end) if end is not None else ua.get_win_epoch()
    d.NumValuesPerNode = n
    d.ReturnBounds = bounds
    return d


async def history_read(c: Client, nodeid: ua.NodeId, details, cp: bytes | None = None, release: bool = False,
                       stamps=ua.TimestampsToReturn.Both) -> ua.HistoryReadResult:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = stamps
    params.ReleaseContinuationPoints = release
    rv = ua.HistoryReadValueId()
    rv.NodeId = nodeid
    rv.ContinuationPoint = cp
    params.NodesToRead = [rv]
    return (await c.uaclient.history_read(params))[0]


async def test_paging_with_numvaluespernode_returns_every_value_then_releases(historian) -> None:
    """Issue 14: NumValuesPerNode = 100 returned 100 values and no ContinuationPoint. Now 10 per page
    over 30 s of a 250 ms tag pages through all 120 values, and the last page has no point."""
    srv, hist, ts = historian
    node = ua.NodeId("meter1.voltage", srv.ns, ua.NodeIdType.String)
    async with client_for(srv) as c:
        pages, got, cp = [], [], None
        for _ in range(50):
            r = await history_read(c, node, raw_details(int(ts[0]), int(ts[-1]) + 1_000, 10), cp)
            assert r.StatusCode.is_good()
            pages.append(len(r.HistoryData.DataValues))
            got.extend(r.HistoryData.DataValues)
            cp = r.ContinuationPoint
            if not cp:
                break
        assert pages == [10] * 12
        assert [int((d.SourceTimestamp.replace(tzinfo=UTC) - dt(0)) / timedelta(microseconds=1)) * 1000
                for d in got] == ts.tolist()
        _, values, quality = hist.data[tag_id(srv.plant, "meter1.voltage")]
        for d, v, q in zip(got, values, quality, strict=True):
            if q:
                assert d.StatusCode.value == ua.StatusCodes.BadNoCommunication and d.Value.Value is None
            else:
                assert d.StatusCode.is_good() and d.Value.Value == np.float32(v)
                assert d.Value.VariantType == ua.VariantType.Float
        assert not srv.history_service.points, "a finished read leaves no continuation point behind"

        # a released point is gone: using it again is BadContinuationPointInvalid
        r = await history_read(c, node, raw_details(int(ts[0]), None, 10))
        assert r.ContinuationPoint
        assert (await history_read(c, node, raw_details(int(ts[0]), None, 10), r.ContinuationPoint,
                                   release=True)).StatusCode.is_good()
        again = await history_read(c, node, raw_details(int(ts[0]), None, 10), r.ContinuationPoint)
        assert again.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        assert not srv.history_service.points


async def test_bounds_reverse_order_timestamps_and_strings(historian) -> None:
    srv, hist, ts = historian
    volt = ua.NodeId("meter1.voltage", srv.ns, ua.NodeIdType.String)
    async with client_for(srv) as c:
        # start and end between samples: the bounds are the samples just outside, first and last
        start, end = int(ts[10]) + STEP // 2, int(ts[20]) + STEP // 2
        r = await history_read(c, volt, raw_details(start, end, 0, bounds=True))
        dvs = r.HistoryData.DataValues
        stamps = [int((d.SourceTimestamp.replace(tzinfo=UTC) - dt(0)) / timedelta(microseconds=1)) * 1000 for d in dvs]
        assert stamps == ts[10:22].tolist()
        # no data before the start: BadBoundNotFound at the start time
        early = int(ts[0]) - 10 * S
        r = await history_read(c, volt, raw_details(early, int(ts[2]), 0, bounds=True))
        first = r.HistoryData.DataValues[0]
        assert first.StatusCode.value == ua.StatusCodes.BadBoundNotFound and first.SourceTimestamp == dt(early)
        # bounds count towards NumValuesPerNode and page like values
        r = await history_read(c, volt, raw_details(start, end, 5, bounds=True))
        assert len(r.HistoryData.DataValues) == 5 and r.ContinuationPoint

        # StartTime > EndTime: newest first, StartTime included, EndTime not
        r = await history_read(c, volt, raw_details(int(ts[30]), int(ts[20]), 0))
        stamps = [int((d.SourceTimestamp.replace(tzinfo=UTC) - dt(0)) / timedelta(microseconds=1)) * 1000
                  for d in r.HistoryData.DataValues]
        assert stamps == ts[21:31][::-1].tolist()
        # only an EndTime: the newest N before it, newest first
        r = await history_read(c, volt, raw_details(None, int(ts[-1]) + 1_000, 3))
        assert [d.Value.Value for d in r.HistoryData.DataValues] == [np.float32(v) for v in
                                                                    hist.data[tag_id(srv.plant, "meter1.voltage")][1][-1:-4:-1]]

        # TimestampsToReturn
        r = await history_read(c, volt, raw_details(int(ts[0]), int(ts[5]), 0), stamps=ua.TimestampsToReturn.Server)
        assert all(d.SourceTimestamp is None and d.ServerTimestamp is not None for d in r.HistoryData.DataValues)
        r = await history_read(c, volt, raw_details(int(ts[0]), int(ts[5]), 0), stamps=ua.TimestampsToReturn.Source)
        assert all(d.ServerTimestamp is None and d.SourceTimestamp is not None for d in r.HistoryData.DataValues)
        r = await history_read(c, volt, raw_details(int(ts[0]), int(ts[5]), 0), stamps=ua.TimestampsToReturn.Neither)
        assert r.StatusCode.value == ua.StatusCodes.BadTimestampsToReturnInvalid

        # Issue 14: the history of a String tag was null with Good; it holds its text
        serial = c.get_node(ua.NodeId("meter1.serial", srv.ns, ua.NodeIdType.String))
        dvs = await serial.read_raw_history(dt(int(ts[0])), dt(int(ts[-1]) + 1_000), return_bounds=False)
        assert [d.Value.Value for d in dvs] == [f"recipe {k // 10}" for k in range(120)]
        assert all(d.Value.VariantType == ua.VariantType.String and d.StatusCode.is_good() for d in dvs)


def expected_intervals(ts: np.ndarray, values: np.ndarray, quality: np.ndarray, start: int, width: int, n: int):
    """Average, Minimum, Maximum, Count of each interval, computed here with numpy (the reference)."""
    out = []
    for k in range(n):
        sel = (ts >= start + k * width) & (ts < start + (k + 1) * width) & (quality == 0) & ~np.isnan(values)
        v = values[sel]
        out.append((float(v.mean()) if len(v) else None, float(v.min()) if len(v) else None,
                    float(v.max()) if len(v) else None, int(len(v))))
    return out


async def test_processed_reads_with_asyncua(historian) -> None:
    srv, hist, ts = historian
    _, values, quality = hist.data[tag_id(srv.plant, "meter1.voltage")]
    start, width, n = int(ts[0]) + 300_000_000, 2 * S, 12  # intervals not aligned to samples or seconds
    want = expected_intervals(ts, values, quality, start, width, n)
    volt = ua.NodeId("meter1.voltage", srv.ns, ua.NodeIdType.String)
    async with client_for(srv) as c:
        got = {}
        for name, fn in (("avg", ua.ObjectIds.AggregateFunction_Average), ("min", ua.ObjectIds.AggregateFunction_Minimum),
                         ("max", ua.ObjectIds.AggregateFunction_Maximum), ("count", ua.ObjectIds.AggregateFunction_Count)):
            d = ua.ReadProcessedDetails()
            d.StartTime, d.EndTime, d.ProcessingInterval = dt(start), dt(start + n * width), width / 1e6
            d.AggregateType = [ua.NodeId(fn)]
            r = await history_read(c, volt, d)
            assert r.StatusCode.is_good(), name
            got[name] = r.HistoryData.DataValues
            assert [x.SourceTimestamp for x in got[name]] == [dt(start + k * width) for k in range(n)]
        for k, (avg, mn, mx, count) in enumerate(want):
            assert got["count"][k].Value.Value == count and got["count"][k].Value.VariantType == ua.VariantType.Int32
            if count == 0:
                assert got["avg"][k].StatusCode.value == ua.StatusCodes.BadNoData
                continue
            assert abs(got["avg"][k].Value.Value - avg) < 1e-9
            assert got["min"][k].Value.Value == np.float32(mn) and got["max"][k].Value.Value == np.float32(mx)
            partial = bool(((ts >= start + k * width) & (ts < start + (k + 1) * width) & (quality != 0)).any())
            assert (got["avg"][k].StatusCode.value & 0xC0000000) == (0x40000000 if partial else 0), k
            assert got["avg"][k].StatusCode.value & 0x1, "HistorianCalculated bit"


async def test_history_with_node_opcua(historian, tmp_path: Path) -> None:
    """The second client stack: paging, reverse order, processed Average/Interpolative, strings."""
    srv, hist, ts = historian
    ns = srv.ns
    _, values, quality = hist.data[tag_id(srv.plant, "meter1.voltage")]
    ai = hist.data[tag_id(srv.plant, "meter1.ai0")][1]
    start, width, n = int(ts[0]), 3 * S, 10
    ops = [
        {"op": "historyRaw", "nodeId": f"ns={ns};s=meter1.voltage", "start": iso(int(ts[0])),
         "end": iso(int(ts[-1]) + 1_000_000), "numValuesPerNode": 10},
        {"op": "historyRaw", "nodeId": f"ns={ns};s=meter1.voltage", "start": iso(int(ts[0])),
         "end": iso(int(ts[-1]) + 1_000_000), "numValuesPerNode": 10, "releaseAfterPages": 2},
        {"op": "historyRaw", "nodeId": f"ns={ns};s=meter1.ai0", "start": iso(int(ts[50])), "end": iso(int(ts[40])),
         "numValuesPerNode": 0},
        {"op": "historyRaw", "nodeId": f"ns={ns};s=meter1.serial", "start": iso(int(ts[0])),
         "end": iso(int(ts[-1]) + 1_000_000), "numValuesPerNode": 50},
        {"op": "historyProcessed", "nodeId": f"ns={ns};s=meter1.voltage", "start": iso(start),
         "end": iso(start + n * width), "interval": width / 1e6, "aggregate": "Average"},
        {"op": "historyProcessed", "nodeId": f"ns={ns};s=meter1.ai0", "start": iso(start + STEP // 2),
         "end": iso(start + STEP // 2 + 5 * S), "interval": 1000, "aggregate": "Interpolative"},
    ]
    paged, released, reverse, strings, average, interp = await node_ua(
        srv.endpoint_url, "victor", PASSWORDS["victor"], ops, tmp_path / "pki")
    assert paged["pages"] == [10] * 12 and paged["lastContinuationPoint"] is None
    good = quality == 0
    assert [v["value"] for v in paged["values"]] == [float(np.float32(x)) if g else None
                                                      for x, g in zip(values, good, strict=True)]
    assert released["pages"] == [10, 10] and released["released"] == "Good"
    assert released["afterRelease"] == "BadContinuationPointInvalid"
    assert [v["value"] for v in reverse["values"]] == ai[41:51][::-1].tolist()
    assert strings["pages"] == [50, 50, 20] and [v["value"] for v in strings["values"]] == \
        [f"recipe {k // 10}" for k in range(120)]
    want = expected_intervals(ts, values, quality, start, width, n)
    for got, (avg, *_rest) in zip(average["values"], want, strict=True):
        assert (got["value"] is None) if avg is None else abs(got["value"] - avg) < 1e-9
    # linear between the samples around each interval start: ai = 0.1 per 250 ms sample
    for k, got in enumerate(interp["values"]):
        t = start + STEP // 2 + k * S
        assert abs(got["value"] - float(np.interp(t, ts, ai))) < 1e-9 and got["dataType"] == "Double"


async def test_a_live_value_carries_the_timestamp_of_its_history_entry(historian) -> None:
    """A SCADA client finds the live value's sample in HistoryRead by its SourceTimestamp. The live path
    rounded ns to the nearest microsecond (float seconds) while history truncated: a sample stamped
    x.7 us read live as x+1 us and was not in history at that time. Both now carry the truncated us."""
    srv, hist, ts = historian
    tid = tag_id(srv.plant, "meter1.ai0")
    stamp = int(ts[-1]) + 10 * STEP + 321_700  # 700 ns past a whole microsecond
    t_all, v_all, q_all = hist.data[tid]
    hist.data[tid] = (np.append(t_all, stamp), np.append(v_all, 12.5), np.append(q_all, 0))
    srv.consume(SampleBatch("meter1", stamp, np.array([tid], np.int32), np.array([12.5]), np.zeros(1, np.uint8)))
    node = ua.NodeId("meter1.ai0", srv.ns, ua.NodeIdType.String)
    async with client_for(srv) as c:
        live = await c.get_node(node).read_data_value()
        r = await history_read(c, node, raw_details(stamp - S, stamp + S, 0))
    assert live.Value.Value == 12.5
    assert live.SourceTimestamp == dt(stamp)  # 100 ns ticks: the whole microseconds of the sample
    entry = [d for d in r.HistoryData.DataValues if d.Value.Value == 12.5]
    assert [d.SourceTimestamp for d in entry] == [live.SourceTimestamp]


async def test_history_capabilities_are_advertised_and_hold(historian, tmp_path: Path) -> None:
    """Point 6: the Server object's HistoryServerCapabilities were null. A client now learns that data
    history can be read (not events, nothing written), MaxReturnDataValues, and the aggregates; each
    advertised aggregate then works in a processed read. asyncua, and node-opcua for the flags."""
    srv, hist, ts = historian
    caps = "HistoryServerCapabilities"
    async with client_for(srv) as c:
        def node(name: str):  # noqa: ANN202
            return c.get_node(ua.NodeId(getattr(ua.ObjectIds, name)))

        assert await node(f"{caps}_AccessHistoryDataCapability").read_value() is True
        assert await node(f"{caps}_AccessHistoryEventsCapability").read_value() is False
        assert await node(f"{caps}_InsertDataCapability").read_value() is False
        assert await node(f"{caps}_DeleteRawCapability").read_value() is False
        assert await node(f"{caps}_MaxReturnDataValues").read_value() == srv.config.history_max_values
        assert await node("Server_ServerCapabilities_MaxHistoryContinuationPoints").read_value() == 500
        advertised = {}
        for folder in (f"{caps}_AggregateFunctions", "Server_ServerCapabilities_AggregateFunctions"):
            children = await node(folder).get_children(refs=ua.ObjectIds.Organizes)
            advertised[folder] = {(await n.read_browse_name()).Name: n.nodeid for n in children}
        assert set(advertised[f"{caps}_AggregateFunctions"]) == {"Average", "Minimum", "Maximum", "Count",
                                                                 "Interpolative"}
        assert advertised[f"{caps}_AggregateFunctions"] == advertised["Server_ServerCapabilities_AggregateFunctions"]
        volt = ua.NodeId("meter1.voltage", srv.ns, ua.NodeIdType.String)
        for name, function in advertised[f"{caps}_AggregateFunctions"].items():
            d = ua.ReadProcessedDetails()
            d.StartTime, d.EndTime, d.ProcessingInterval = dt(int(ts[0])), dt(int(ts[-1])), 5000.0
            d.AggregateType = [function]
            r = await history_read(c, volt, d)
            assert r.StatusCode.is_good() and len(r.HistoryData.DataValues) == 6, name
    reads = await node_ua(srv.endpoint_url, "victor", PASSWORDS["victor"],
                          [{"op": "read", "nodeId": f"i={ua.ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability}"},
                           {"op": "read", "nodeId": f"i={ua.ObjectIds.HistoryServerCapabilities_MaxReturnDataValues}"}],
                          tmp_path / "pki")
    assert [r["value"] for r in reads] == [True, srv.config.history_max_values]


async def test_without_a_history_source_no_history_is_advertised(running: OpcUaServer) -> None:
    async with client_for(running) as c:
        flag = ua.NodeId(ua.ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability)
        assert await c.get_node(flag).read_value() is False
