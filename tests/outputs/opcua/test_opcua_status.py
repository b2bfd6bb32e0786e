"""Devices' Status variables as clients see them (issue 21: values built when read or watched).

A status tick no longer builds a DataValue per changed field; a Read, a new monitored item and
the items already on a field must still get the value of the last tick, stamped with the time
of the tick at which that field changed. Checked with asyncua and node-opcua, on both value paths.
"""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.address_space import AttributeValue
from harness import wait_until
from opcua_helpers import NODE_DIR, PASSWORDS, ensure_node_client, make_plant, read_node_lines, user_client

from edge.core.model import DeviceDiagnostics, DeviceState
from edge.outputs.opcua.fastpath import FastPublisher
from edge.outputs.opcua.model import STATUS_FIELDS, status_nodeid, status_values
from edge.outputs.opcua.server import OpcUaServer
from edge.outputs.opcua.status import DeviceStatus

pytestmark = pytest.mark.usefixtures("opcua_path")  # the fast path and the library's plain path


def _us(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def _tick(srv: OpcUaServer, diag: DeviceDiagnostics, k: int) -> tuple[int, int]:
    """One status tick after the device's k-th good poll; returns the wall time around it."""
    diag.polls_ok, diag.requests = k, 2 * k
    diag.last_ok_ns = time.time_ns()
    diag.latency_p50_ms = 10.0 + k
    before = time.time_ns()
    srv.update_device(diag)
    return before, time.time_ns()


def test_lazy_values_equal_status_values() -> None:
    """Every field's value and type as the eager conversion gave them, for a record with all fields set."""
    records = [AttributeValue(ua.DataValue(ua.Variant(None))) for _ in STATUS_FIELDS]
    status = DeviceStatus(records)
    diag = DeviceDiagnostics(name="d", bus="b", state=DeviceState.OFFLINE, polls_ok=7, polls_failed=2, requests=9,
                             timeouts=1, exceptions={2: 3, 4: 1}, crc_errors=5, overruns=6, latency_p50_ms=1,
                             latency_p99_ms=2.5, holes=3, unreadable_points=4, last_error="boom",
                             last_error_ns=1_700_000_000_123_456_789, last_ok_ns=1_700_000_001_000_000_000,
                             plugin="p", plugin_version=None)
    assert status.update(diag, 5_000_000_000, FastPublisher()) == len(STATUS_FIELDS)
    eager = status_values(diag)
    for i, (field, (_, vtype)) in enumerate(STATUS_FIELDS.items()):
        dv = status.read(i)
        assert (dv.Value.Value, dv.Value.VariantType) == (eager[field], vtype), field
        assert dv.SourceTimestamp == dv.ServerTimestamp == _us(5_000_000_000)
        assert records[i].value_callback is not None and records[i].value_callback(None, None) is dv
    assert status.update(diag, 6_000_000_000, FastPublisher()) == 0  # nothing moved: nothing to do
    diag.exceptions[2] += 1
    assert status.update(diag, 7_000_000_000, FastPublisher()) == 1
    assert status.read(list(STATUS_FIELDS).index("Exceptions")).Value.Value == 5


async def test_read_returns_the_last_tick(running: OpcUaServer) -> None:
    """A Read after each tick sees that tick's counters; an unchanged field keeps the time it changed."""
    ns = running.ns
    diag = DeviceDiagnostics(name="meter1", bus="line1", state=DeviceState.ONLINE)
    async with user_client(running.endpoint_url) as c:
        node = {f: c.get_node(status_nodeid(ns, "meter1", f)) for f in ("PollsOk", "Requests", "LastOkTime", "State",
                                                                          "LatencyP50Ms")}
        assert await node["PollsOk"].read_value() == 0  # before the first tick: the defaults
        assert await node["State"].read_value() == "CONNECTING"
        assert await node["PollsOk"].read_data_type() == ua.NodeId(ua.ObjectIds.UInt64)
        first = None
        for k in range(1, 5):
            before, after = _tick(running, diag, k)
            first = first or (before, after)
            dv = await node["PollsOk"].read_data_value()
            assert (dv.Value.Value, dv.Value.VariantType) == (k, ua.VariantType.UInt64)
            assert _us(before) <= dv.SourceTimestamp <= _us(after) and dv.ServerTimestamp == dv.SourceTimestamp
            assert await node["Requests"].read_value() == 2 * k
            assert await node["LastOkTime"].read_value() == datetime.fromtimestamp(diag.last_ok_ns / 1e9, UTC)
            if k % 2 == 0:  # read only every other tick: what was not read in between is still current
                assert await node["LatencyP50Ms"].read_value() == 10.0 + k
            state = await node["State"].read_data_value()
            assert state.Value.Value == "ONLINE"
            assert _us(first[0]) <= state.SourceTimestamp <= _us(first[1])  # changed at the first tick only
            await asyncio.sleep(0.002)  # ticks at distinct microseconds
        diag.state = DeviceState.OFFLINE
        before, after = _tick(running, diag, 5)
        state = await node["State"].read_data_value()
        assert state.Value.Value == "OFFLINE" and _us(before) <= state.SourceTimestamp <= _us(after)
        children = [(await n.read_browse_name()).Name
                    for n in await c.get_node(status_nodeid(ns, "meter1")).get_children()]
        assert children == list(STATUS_FIELDS)


class _Collect:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, datetime]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen.append((node.nodeid.Identifier.rsplit(".", 1)[1], val,
                          data.monitored_item.Value.SourceTimestamp))


async def test_subscribers_get_the_current_value_and_every_change(running: OpcUaServer) -> None:
    """A new item's first notification is the last tick's value (fields changed while nobody
    watched); then one notification per tick for the fields that changed, none for the others;
    after the items are gone, reads are current again."""
    ns = running.ns
    diag = DeviceDiagnostics(name="meter2", bus="line1", state=DeviceState.ONLINE)
    for k in range(1, 4):
        _tick(running, diag, k)
    handler = _Collect()
    async with user_client(running.endpoint_url) as c:
        sub = await c.create_subscription(50, handler)
        nodes = [c.get_node(status_nodeid(ns, "meter2", f)) for f in ("PollsOk", "LastOkTime", "State")]
        handles = await sub.subscribe_data_change(nodes, sampling_interval=0)
        assert await wait_until(lambda: len(handler.seen) >= 3, 5)
        assert sorted((f, v) for f, v, _ in handler.seen if f != "LastOkTime") == [("PollsOk", 3), ("State", "ONLINE")]
        handler.seen.clear()
        for k in range(4, 7):
            before, after = _tick(running, diag, k)
            assert await wait_until(lambda k=k: ("PollsOk", k) in [(f, v) for f, v, _ in handler.seen], 5)
            ts = [t for f, v, t in handler.seen if (f, v) == ("PollsOk", k)][0]
            assert _us(before) <= ts <= _us(after)
        assert await wait_until(lambda: sum(f == "LastOkTime" for f, _, _ in handler.seen) == 3, 5)
        assert [v for f, v, _ in handler.seen if f == "PollsOk"] == [4, 5, 6]
        assert [v for f, v, _ in handler.seen if f == "LastOkTime"][-1] == datetime.fromtimestamp(
            diag.last_ok_ns / 1e9, UTC)
        assert not [f for f, _, _ in handler.seen if f == "State"]  # unchanged: no notification
        await sub.unsubscribe(handles)
        await sub.delete()
        _tick(running, diag, 7)
        assert await nodes[0].read_value() == 7


async def test_node_opcua_reads_and_subscribes_status(running: OpcUaServer, tmp_path: Path) -> None:
    """The second client stack: Read after ticks, then the initial and the changed values."""
    ensure_node_client()
    diag = DeviceDiagnostics(name="meter1", bus="line1", state=DeviceState.ONLINE)
    for k in range(1, 3):
        _tick(running, diag, k)
    node_ids = [f"ns={running.ns};s=meter1#status.{f}" for f in ("PollsOk", "LatencyP50Ms")]
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "read_subscribe.js"), running.endpoint_url, "victor", PASSWORDS["victor"], "4",
        "30000", *node_ids, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "NODE_OPCUA_PKI": str(tmp_path / "node-pki")})
    lines: list[dict] = []
    try:
        await read_node_lines(proc, lines, lambda m: m.get("ready"))
        _tick(running, diag, 3)
        await read_node_lines(proc, lines, lambda m: sum("changed" in x for x in lines) >= 4)  # 2 initial + 2 changes
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    def uint64(v: Any) -> int:
        return v[0] * 2**32 + v[1] if isinstance(v, list) else int(v)

    reads = {m["read"]: m for m in lines if "read" in m}
    assert uint64(reads[node_ids[0]]["value"]) == 2 and reads[node_ids[1]]["value"] == 12.0
    assert reads[node_ids[0]]["dataType"] == ua.VariantType.UInt64.value
    polls = [uint64(m["value"]) for m in lines if m.get("changed") == node_ids[0]]
    latency = [m["value"] for m in lines if m.get("changed") == node_ids[1]]
    assert (polls, latency) == ([2, 3], [12.0, 13.0])


async def test_reload_keeps_kept_devices_status_and_renews_removed_ones(running: OpcUaServer) -> None:
    """A reload that keeps a device keeps its Status (current on read, items still told); one that
    removes a device removes its Status; a device added again starts from the defaults."""
    ns = running.ns
    d1 = DeviceDiagnostics(name="meter1", bus="line1", state=DeviceState.ONLINE)
    d2 = DeviceDiagnostics(name="meter2", bus="line1", state=DeviceState.ONLINE)
    _tick(running, d1, 1)
    _tick(running, d2, 1)
    handler = _Collect()
    async with user_client(running.endpoint_url) as c:
        sub = await c.create_subscription(50, handler)
        await sub.subscribe_data_change([c.get_node(status_nodeid(ns, "meter1", "PollsOk"))], sampling_interval=0)
        assert await wait_until(lambda: [v for f, v, _ in handler.seen] == [1], 5)
        await running.reload(make_plant(devices=1))
        _tick(running, d1, 2)
        _tick(running, d2, 2)  # no longer in the plant: ignored
        assert await c.get_node(status_nodeid(ns, "meter1", "PollsOk")).read_value() == 2
        gone = await c.get_node(status_nodeid(ns, "meter2", "PollsOk")).read_data_value(raise_on_bad_status=False)
        assert gone.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        assert await wait_until(lambda: [v for f, v, _ in handler.seen] == [1, 2], 5)
        await running.reload(make_plant(devices=2))
        again = c.get_node(status_nodeid(ns, "meter2", "PollsOk"))
        assert await again.read_value() == 0  # a new Status object: the defaults until its first tick
        _tick(running, d2, 3)
        _tick(running, d1, 3)
        assert await again.read_value() == 3
        assert await wait_until(lambda: [v for f, v, _ in handler.seen] == [1, 2, 3], 5)
