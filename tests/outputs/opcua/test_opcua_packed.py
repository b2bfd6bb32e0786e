"""Packed data changes (edge.outputs.opcua.packed): the same bytes as asyncua's encoder, the same
values at the client, queue semantics kept when a tag changes twice before a publish."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, tag_id

from edge.core.model import Quality, SampleBatch, TagInfo
from edge.outputs.opcua import asyncua_adapter, packed
from edge.outputs.opcua import fastpath as fp
from edge.outputs.opcua.server import OpcUaServer

DTYPES = ["float64", "float32", "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
CASES = [(5.0, Quality.GOOD), (-3.0, Quality.GOOD), (0.0, Quality.GOOD), (1.0, Quality.UNCERTAIN_LAST_USABLE),
         (float("nan"), Quality.GOOD), (float("nan"), Quality.BAD_NO_COMMUNICATION), (7.0, Quality.BAD_OUT_OF_RANGE),
         (2.5, Quality.GOOD)]


def _publisher(dtypes: list[str]) -> fp.FastPublisher:
    tags = [TagInfo(id=i, device="d", name=f"t{i}", bus="b", dtype=dt) for i, dt in enumerate(dtypes)]
    pub = fp.FastPublisher()
    pub.bind(tags)
    return pub


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_records_equal_asyncua_encoding(dtype: str) -> None:
    """Every row's bytes are what asyncua writes for the DataValue the delivery path would build
    (timestamps on whole microseconds, the precision of that path's datetimes)."""
    cases = [(v, q) for v, q in CASES if not (not dtype.startswith("float") and v == 2.5)
             and not (dtype.startswith("uint") and v < 0)]
    pub = _publisher([dtype] * len(cases))
    src_ns, srv_ns = 1_700_000_000_123_456_000, 1_700_000_000_223_457_000
    for tid, (v, q) in enumerate(cases):
        pub._last_v[tid], pub._last_q[tid], pub._last_src[tid], pub._last_srv[tid] = v, int(q), src_ns, srv_ns
    tids = np.arange(len(cases))
    handles = np.arange(100, 100 + len(cases), dtype=np.uint32)
    blob = packed.encode_rows(pub, tids, handles)
    src, srv = fp.ua_time(src_ns), fp.ua_time(srv_ns)
    expected = {}
    for tid, (v, q) in enumerate(cases):
        item = ua.MonitoredItemNotification(ClientHandle=100 + tid,
                                            Value=pub._datavalue(tid, v, int(q), src, srv, None))
        expected[100 + tid] = asyncua_adapter.library_notification_serializer(item)
    got = {}
    pos = 0
    while pos < len(blob):  # rows come grouped by variant type: split them by the known lengths
        handle = int.from_bytes(blob[pos:pos + 4], "little")
        n = len(expected[handle])
        got[handle] = blob[pos:pos + n]
        pos += n
    assert got == expected


def test_datachange_encoder_counts_library_and_packed_items() -> None:
    pub = _publisher(["float64", "float64"])
    for tid in (0, 1):
        pub._last_v[tid], pub._last_q[tid], pub._last_src[tid], pub._last_srv[tid] = 1.5 + tid, 0, 10**18, 10**18
    lib_item = ua.MonitoredItemNotification(ClientHandle=7, Value=ua.DataValue(ua.Variant(9.0, ua.VariantType.Double)))
    notif = packed.PackedDataChange(MonitoredItems=[lib_item])
    notif._edge_packed = (2, packed.encode_rows(pub, np.array([0, 1]), np.array([1, 2], dtype=np.uint32)))
    assert asyncua_adapter.acquire(True)  # the encoders are installed while a fast server runs
    try:
        wire = ua.ua_binary.extensionobject_to_binary(notif)  # as a NotificationMessage carries it
    finally:
        asyncua_adapter.release(True)
    back = ua.ua_binary.extensionobject_from_binary(ua.utils.Buffer(wire))
    assert [(m.ClientHandle, m.Value.Value.Value) for m in back.MonitoredItems] == [(7, 9.0), (1, 1.5), (2, 2.5)]


def test_packed_items_grow_their_arrays_by_doubling() -> None:
    """Taking up 5,000 items reallocates the row arrays a few times, not once per item (the defect:
    ``np.append`` per item, quadratic: seconds of the server's loop for a client creating 50,000 items);
    spare rows are never pending and belong to no tag, and every item keeps its handle and queue size."""
    from asyncua.server.monitored_item_service import MonitoredItemData

    n = 5_000
    ps = packed.PackedSubscription(None, None, n)  # type: ignore[arg-type]  # the arrays only
    reallocations, last = 0, ps.tids
    for tid in range(n):
        mdata = MonitoredItemData()
        mdata.client_handle, mdata.queue_size = 10_000 + tid, 1 + tid % 3
        assert ps.add(tid, mid=tid + 1, cb_handle=tid, mdata=mdata) == tid
        if ps.tids is not last:
            reallocations, last = reallocations + 1, ps.tids
    assert reallocations <= 8  # 64 rows doubled up to 8,192
    assert len(ps) == n and len(ps.tids) >= n
    assert ps.tids[:n].tolist() == list(range(n)) and (ps.tids[n:] == -1).all()
    assert ps.handles[:n].tolist() == [10_000 + t for t in range(n)]
    assert ps.queue[:n].tolist() == [1 + t % 3 for t in range(n)]
    pub = _publisher(["float64"] * n)
    pub._last_q[:] = int(Quality.GOOD)
    ps.pending[np.arange(0, n, 7)] = True
    count, blob = ps.take(pub)  # what a publish sends: the pending items only
    assert count == len(range(0, n, 7)) and not ps.pending.any()
    assert len(blob) == count * len(packed.encode_rows(pub, np.array([0]), np.array([1], dtype=np.uint32)))


async def test_subscriber_sees_every_value_through_packed_items(running: OpcUaServer) -> None:
    """After its first notification a plain item is packed; the client still receives each new value
    once, with its SourceTimestamp, and queued values in order when a tag changes twice between publishes."""
    tid = tag_id(running.plant, "meter1.current")
    got: list[tuple[float, datetime]] = []

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            got.append((val, data.monitored_item.Value.SourceTimestamp))

    c = Client(running.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    async with c:
        sub = await c.create_subscription(200, Handler())
        await sub.subscribe_data_change(c.get_node(f"ns={running.ns};s=meter1.current"), queuesize=5)
        sent = []
        for k in range(6):
            ts = time.time_ns()
            running.consume(SampleBatch("meter1", ts, np.array([tid], np.int32), np.array([10.0 + k]),
                                        np.zeros(1, np.uint8)))
            sent.append(10.0 + k)
            if k in (2, 4):  # a second value before the next publish: both must arrive, in order
                running.consume(SampleBatch("meter1", ts + 1000, np.array([tid], np.int32), np.array([50.0 + k]),
                                            np.zeros(1, np.uint8)))
                sent.append(50.0 + k)
            await asyncio.sleep(0.35)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not got or got[-1][0] != sent[-1]):
            await asyncio.sleep(0.1)
    values = [v for v, _ in got if v is not None]
    assert values[-len(sent):] == sent
    assert running.publisher.stats.packed_items >= 1
    assert all(ts is not None for _, ts in got[-len(sent):])


class _Sub:
    """The one attribute of asyncua's InternalSubscription that marking packed items touches."""

    def __init__(self) -> None:
        self._triggered_datachanges: dict = {}


def _twin_publishers(n: int, deadband: bool) -> tuple[fp.FastPublisher, fp.FastPublisher, list[_Sub]]:
    """Two publishers of one plant (float, integer and bool tags, deadbands on some when asked), each
    with a packed subscription on two thirds of the tags: one runs the compiled pass, one numpy."""
    from asyncua.server.monitored_item_service import MonitoredItemData

    dtypes = ["float32", "float64", "int16", "bool", "uint32"]
    tags = [TagInfo(id=i, device="d", name=f"t{i}", bus="b", dtype=dtypes[i % len(dtypes)],
                    deadband=(0.5 if deadband and i % 4 == 0 else 0.0)) for i in range(n)]
    pubs, subs = [], []
    for compiled in (True, False):
        pub = fp.FastPublisher()
        pub.bind(tags)
        pub.compiled = compiled
        sub = _Sub()
        for t in tags:
            if t.id % 3:
                mdata = MonitoredItemData()
                mdata.client_handle, mdata.queue_size = t.id, 1
                pub.packed.add(sub, None, t.id, t.id + 1, t.id, mdata)  # type: ignore[arg-type]
        pubs.append(pub)
        subs.append(sub)
    return pubs[0], pubs[1], subs


@pytest.mark.skipif(fp._changes is None, reason="extension not built")
@pytest.mark.parametrize("deadband", [False, True])
def test_compiled_pass_equals_numpy_version(deadband: bool) -> None:
    """Random batches (repeated values, NaN, infinities, signed zeros, every quality, unknown tag ids):
    the compiled pass and the numpy version report the same counts, leave the same last values,
    qualities and timestamps, count the same bad values and mark the same packed items."""
    n = 60
    compiled, plain, subs = _twin_publishers(n, deadband)
    rng = np.random.default_rng(5 + deadband)
    pool = np.array([0.0, -0.0, 1.0, 1.2, 1.9, np.nan, np.inf, -np.inf, 3.0, 2**31])
    for k in range(400):
        size = int(rng.integers(1, 30))
        ids = rng.choice(n, size, replace=False).astype(np.int32)
        if k % 50 == 7:
            ids[0] = n + 3 if k % 100 == 7 else -2  # unknown ids: counted and dropped on both
        values = rng.choice(pool, size) if k % 3 else rng.normal(0, 2, size)
        quality = rng.choice([0, 0, 0, 1, 2, 5], size).astype(np.uint8)
        batch = SampleBatch("d", 1_700_000_000_000_000_000 + k, ids, values, quality)
        assert compiled.consume(batch) == plain.consume(batch), k
        for pub in (compiled, plain):
            assert pub._last_srv.max() > 0 or k == 0
        assert np.array_equal(compiled._last_v.view(np.int64), plain._last_v.view(np.int64)), k  # bit for bit
        assert np.array_equal(compiled._last_q, plain._last_q) and np.array_equal(compiled._last_src, plain._last_src)
        ps_c, ps_p = (next(iter(p.packed.subs.values())) for p in (compiled, plain))
        assert np.array_equal(ps_c.pending, ps_p.pending), k
        assert (packed.PACKED_KEY in subs[0]._triggered_datachanges) == (
            packed.PACKED_KEY in subs[1]._triggered_datachanges)
        if k % 5 == 0:  # a publish takes the pending values
            for ps, sub in ((ps_c, subs[0]), (ps_p, subs[1])):
                ps.pending[:] = False
                sub._triggered_datachanges.clear()
    for field in ("batches", "samples", "reported", "dropped_unknown_tag", "bad_values"):
        assert getattr(compiled.stats, field) == getattr(plain.stats, field), field
    assert compiled.stats.reported > 1000 and compiled.stats.bad_values > 0 and compiled.stats.dropped_unknown_tag == 8
