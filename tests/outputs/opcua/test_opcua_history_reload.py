"""HistoryRead of raw values from the injected ring-buffer reader; reloads that keep sessions."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, HistoryStandIn, config, make_plant, tag_id

from edge.core.model import BusInfo, DeviceInfo, Plant, SampleBatch, TagInfo
from edge.outputs.opcua.server import OpcUaServer

pytestmark = pytest.mark.usefixtures("opcua_path")  # the fast path and the library's plain path


def login(srv: OpcUaServer) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    return c


async def test_history_read_raw_from_ring_buffers(users_file) -> None:
    plant = make_plant()
    ring = HistoryStandIn()
    v_id = tag_id(plant, "meter1.voltage")
    now = time.time_ns() // 1000 * 1000  # OPC UA DateTime has 100 ns resolution, datetime 1 us
    ts = now - np.arange(300, 0, -1, dtype=np.int64) * 1_000_000_000  # the last 5 minutes, 1 s apart
    values = 230.0 + np.arange(300) * 0.01
    quality = np.zeros(300, np.uint8)
    quality[100:110] = 2  # ten seconds offline
    ring.data[v_id] = (ts, values, quality)
    srv = OpcUaServer(plant, config(users_file), history=ring)
    await srv.start()
    try:
        async with login(srv) as c:
            node = c.get_node(f"ns={srv.ns};s=meter1.voltage")
            assert await node.read_attribute(ua.AttributeIds.Historizing) is not None
            start = datetime.fromtimestamp((now - 200 * 10**9) / 1e9, UTC)
            end = datetime.fromtimestamp(now / 1e9, UTC)
            dvs = await node.read_raw_history(start, end, return_bounds=False)
            assert len(dvs) == 200
            assert dvs[0].Value.Value == np.float32(values[100]) or dvs[0].Value.Value is None
            assert dvs[0].StatusCode.value == ua.StatusCodes.BadNoCommunication  # samples 100..109 offline
            assert dvs[10].StatusCode.is_good()
            assert abs(dvs[10].Value.Value - values[110]) < 1e-4
            assert dvs[10].Value.VariantType == ua.VariantType.Float
            assert abs(dvs[10].SourceTimestamp.replace(tzinfo=UTC).timestamp() - ts[110] / 1e9) < 1e-5
            limited = await node.read_raw_history(start, end, numvalues=5, return_bounds=False)
            assert [d.SourceTimestamp for d in limited] == [d.SourceTimestamp for d in dvs[:5]]
        assert ring.calls[0][0] == v_id
    finally:
        await srv.stop()


def _with_meter3(plant: Plant) -> Plant:
    """meter2.current removed, meter1.voltage re-ranged, device meter3 added; ids re-numbered."""
    tags: list[TagInfo] = []
    for t in plant.tags:
        if t.key == "meter2.current":
            continue
        if t.key == "meter1.voltage":
            t = dataclasses.replace(t, high=500.0, description="phase voltage L1 (new range)")
        tags.append(dataclasses.replace(t, id=len(tags)))
    tags.append(TagInfo(id=len(tags), device="meter3", name="flow", bus="line2", dtype="float32", unit="m3/h"))
    devices = [dataclasses.replace(d, tag_ids=tuple(t.id for t in tags if t.device == d.name)) for d in plant.devices]
    devices.append(DeviceInfo("meter3", "line2", "unit 7", None, None, (tags[-1].id,)))
    buses = [*plant.buses, BusInfo("line2", "modbus_rtu", ("meter3",))]
    return Plant(site=plant.site, buses=buses, devices=devices, tags=tags)


async def test_reload_adds_and_removes_nodes_without_dropping_sessions(users_file) -> None:
    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file))
    await srv.start()
    got: list[ua.DataValue] = []

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            got.append(data.monitored_item.Value)

    try:
        async with login(srv) as c:
            sub = await c.create_subscription(20, Handler())
            await sub.subscribe_data_change(c.get_node(f"ns={srv.ns};s=meter1.voltage"))
            v_id = tag_id(plant, "meter1.voltage")
            srv.consume(SampleBatch("meter1", time.time_ns(), np.array([v_id], np.int32), np.array([230.0]),
                                    np.zeros(1, np.uint8)))
            await _until(lambda: any(d.Value.Value == 230.0 for d in got if d.Value is not None))

            new_plant = _with_meter3(plant)
            await srv.reload(new_plant)

            # Same session, same subscription: a new value of the kept node still arrives.
            v_new = tag_id(new_plant, "meter1.voltage")
            srv.consume(SampleBatch("meter1", time.time_ns(), np.array([v_new], np.int32), np.array([231.0]),
                                    np.zeros(1, np.uint8)))
            await _until(lambda: any(d.Value.Value == 231.0 for d in got if d.Value is not None))
            # A value equal to the last reported one is not re-sent after the reload.
            assert srv.consume(SampleBatch("meter1", time.time_ns(), np.array([v_new], np.int32),
                                           np.array([231.0]), np.zeros(1, np.uint8))) == 0

            voltage = c.get_node(f"ns={srv.ns};s=meter1.voltage")
            assert (await (await voltage.get_child(["0:EURange"])).read_value()).High == 500.0
            assert (await voltage.read_description()).Text == "phase voltage L1 (new range)"
            flow = c.get_node(f"ns={srv.ns};s=meter3.flow")
            assert (await flow.read_browse_name()).Name == "flow"
            assert (await flow.get_parent()).nodeid == ua.NodeId("meter3", srv.ns)
            line2 = await c.nodes.objects.get_child([f"{srv.ns}:plant1", f"{srv.ns}:line2", f"{srv.ns}:meter3"])
            assert line2.nodeid == ua.NodeId("meter3", srv.ns)
            gone = await c.get_node(f"ns={srv.ns};s=meter2.current").read_attribute(
                ua.AttributeIds.BrowseName, raise_on_bad_status=False)
            assert gone.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
            names = {(await n.read_browse_name()).Name for n in await c.get_node(f"ns={srv.ns};s=meter2").get_children()}
            assert "current" not in names and "voltage" in names

            # Reloading back removes meter3 and bus line2 again.
            await srv.reload(plant)
            gone = await c.get_node(f"ns={srv.ns};s=meter3.flow").read_attribute(
                ua.AttributeIds.BrowseName, raise_on_bad_status=False)
            assert gone.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
            site = await c.nodes.objects.get_child([f"{srv.ns}:plant1"])
            # the site keeps its appliance Status object (issue 17) and only bus line1
            assert [(await n.read_browse_name()).Name for n in await site.get_children()] == ["Status", "line1"]
            await sub.delete()
    finally:
        await srv.stop()


async def _until(cond, timeout_s: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
