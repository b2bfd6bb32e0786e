"""Monitored items in the compact store (issue 21, memory): a plain item of a fast server keeps a
row of arrays instead of asyncua's records, and clients see no difference: the lifecycle services
(SetMonitoringMode, ModifyMonitoredItems, DeleteMonitoredItems, DeleteSubscriptions) answer and
behave as on the library's plain path (both paths run every test here but the memory bound)."""
from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, config, tag_id

from edge.core.model import BusInfo, DeviceInfo, Plant, SampleBatch, TagInfo
from edge.outputs.opcua.server import OpcUaServer

GOOD = ua.StatusCode()
INVALID = ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid)


class Recorder:
    def __init__(self) -> None:
        self.got: dict[int, list[float | None]] = {}

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's signature
        self.got.setdefault(data.monitored_item.ClientHandle, []).append(val)


def _request(node: ua.NodeId, handle: int, queue: int = 1) -> ua.MonitoredItemCreateRequest:
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=0.0, QueueSize=queue,
                                                      DiscardOldest=True)
    return req


def _viewer(srv: OpcUaServer) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    return c


async def _watch(c: Client, srv: OpcUaServer, handler: object, keys: list[str]) -> tuple[object, list[int]]:
    """A subscription (50 ms) with one item per tag key (client handles 1, 2, ...); its item ids."""
    sub = await c.create_subscription(50, handler)
    results = await sub.create_monitored_items(
        [_request(ua.NodeId(k, srv.ns, ua.NodeIdType.String), h + 1) for h, k in enumerate(keys)])
    return sub, [r if isinstance(r, int) else r.MonitoredItemId for r in results]


async def _until(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


@pytest.mark.usefixtures("opcua_path")
async def test_item_services_behave_the_same_on_packed_items(users_file: Path) -> None:
    """Four items on four tags: disabled and re-enabled, modified to an absolute deadband, deleted
    (twice: the second answer is BadMonitoredItemIdInvalid), then the subscription deleted; the
    notifications after each step are what the library's own records give."""
    from opcua_helpers import make_plant

    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file))
    await srv.start()
    keys = ["meter1.current", "meter1.ai0", "meter1.ai1", "meter1.ai2"]
    tids = [tag_id(plant, k) for k in keys]
    step = [0.0]

    def push(value_of: dict[int, float]) -> None:
        ids = np.array(list(value_of), np.int32)
        srv.consume(SampleBatch("meter1", time.time_ns(), ids, np.array(list(value_of.values())),
                                np.zeros(len(ids), np.uint8)))

    try:
        push({t: 1.0 for t in tids})
        rec = Recorder()
        c = Client(srv.endpoint_url, timeout=10)
        c.set_user("victor")
        c.set_password(PASSWORDS["victor"])
        async with c:
            sub = await c.create_subscription(50, rec)
            reqs = [_request(ua.NodeId(k, srv.ns, ua.NodeIdType.String), h + 1) for h, k in enumerate(keys)]
            results = await sub.create_monitored_items(reqs)
            mids = [r if isinstance(r, int) else r.MonitoredItemId for r in results]
            assert await _until(lambda: all(rec.got.get(h) == [1.0] for h in (1, 2, 3, 4)))
            assert srv.server is not None
            if srv.publisher.fast:  # in the compact store: none of asyncua's records of them is left
                mis = next(iter(srv.server.iserver.subscription_service.subscriptions.values())).monitored_item_srv
                assert not set(mids) & set(mis._monitored_items)
                assert srv.publisher.packed.count == 4
            sid = sub.subscription_id
            # 1: item 1 disabled: nothing for it; the others go on
            (st,) = await c.uaclient.set_monitoring_mode(ua.SetMonitoringModeParameters(
                SubscriptionId=sid, MonitoringMode=ua.MonitoringMode.Disabled, MonitoredItemIds=[mids[0]]))
            assert st == GOOD
            step[0] = 2.0
            push({t: 2.0 for t in tids})
            assert await _until(lambda: all(rec.got.get(h, [])[-1:] == [2.0] for h in (2, 3, 4)))
            await asyncio.sleep(0.3)
            assert rec.got[1] == [1.0]
            # re-enabled: the current value at once (the library's trigger), then every change
            (st,) = await c.uaclient.set_monitoring_mode(ua.SetMonitoringModeParameters(
                SubscriptionId=sid, MonitoringMode=ua.MonitoringMode.Reporting, MonitoredItemIds=[mids[0]]))
            assert st == GOOD
            assert await _until(lambda: rec.got[1] == [1.0, 2.0])
            push({t: 3.0 for t in tids})
            assert await _until(lambda: all(rec.got.get(h, [])[-1:] == [3.0] for h in (1, 2, 3, 4))), rec.got
            # 2: item 2 gets an absolute deadband of 5: +1 is not reported, +10 is
            flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                      DeadbandType=ua.DeadbandType.Absolute, DeadbandValue=5.0)
            (mod,) = await c.uaclient.modify_monitored_items(ua.ModifyMonitoredItemsParameters(
                SubscriptionId=sid, ItemsToModify=[ua.MonitoredItemModifyRequest(
                    MonitoredItemId=mids[1], RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=2, SamplingInterval=0.0, QueueSize=3, Filter=flt))]))
            assert mod.StatusCode == GOOD and mod.RevisedQueueSize == 3
            push({t: 4.0 for t in tids})
            assert await _until(lambda: rec.got[1][-1:] == [4.0])
            await asyncio.sleep(0.3)
            assert rec.got[2][-1] == 3.0
            push({t: 14.0 for t in tids})
            assert await _until(lambda: rec.got[2][-1:] == [14.0])
            # 3: item 3 deleted; deleting it again is refused; the rest go on
            assert await c.uaclient.delete_monitored_items(ua.DeleteMonitoredItemsParameters(
                SubscriptionId=sid, MonitoredItemIds=[mids[2]])) == [GOOD]
            assert await c.uaclient.delete_monitored_items(ua.DeleteMonitoredItemsParameters(
                SubscriptionId=sid, MonitoredItemIds=[mids[2], 999_999])) == [INVALID, INVALID]
            n3 = len(rec.got[3])
            push({t: 15.0 for t in tids})
            assert await _until(lambda: rec.got[4][-1:] == [15.0] and rec.got[1][-1:] == [15.0])
            await asyncio.sleep(0.3)
            assert len(rec.got[3]) == n3
            # 4: the subscription deleted with its items: nothing is left on the server
            await sub.delete()
            assert not srv.server.iserver.subscription_service.subscriptions
            assert srv.publisher.packed.count == 0 and not srv.publisher._n_watch.any()
            push({t: 16.0 for t in tids})  # nobody watches: nothing breaks
    finally:
        await srv.stop()


def _big_plant(devices: int) -> Plant:
    tags: list[TagInfo] = []
    devs: list[DeviceInfo] = []
    for d in range(devices):
        ids = []
        for k in range(100):
            tags.append(TagInfo(id=len(tags), device=f"dev{d}", name=f"t{k}", bus="net", dtype="float32",
                                unit="kW", low=0.0, high=1000.0))
            ids.append(len(tags) - 1)
        devs.append(DeviceInfo(name=f"dev{d}", bus="net", address=f"unit {d}", plugin=None, plugin_version=None,
                               tag_ids=tuple(ids)))
    return Plant(site="mem", buses=[BusInfo("net", "modbus_tcp", tuple(x.name for x in devs))], devices=devs,
                 tags=tags)


CLIENT = """
import asyncio, sys
from asyncua import Client, ua
async def main(url, ns, devices):
    c = Client(url, timeout=60, watchdog_intervall=600.0)
    c.set_user("victor"); c.set_password(sys.argv[4])
    async with c:
        sub = await c.create_subscription(100, None)
        nodes = [c.get_node(ua.NodeId(f"dev{d}.t{k}", ns)) for d in range(devices) for k in range(100)]
        out = await sub.subscribe_data_change(nodes, queuesize=1)
        print(sum(isinstance(h, int) for h in out), flush=True)
        await asyncio.sleep(600)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def test_packed_items_cost_a_few_hundred_bytes(users_file: Path) -> None:
    """5,000 monitored items of an asyncua client in another process: the server keeps under 600 B
    per item (tracemalloc, after a collection), where asyncua's records of them cost ~2.3 KB
    (MonitoredItemData, MonitoredItemValues with a deep copy of the value, the request's ReadValueId,
    three handle maps, a callback in each tag's kept Value record)."""
    devices = 50
    plant = _big_plant(devices)
    srv = OpcUaServer(plant, config(users_file, fast_path=True, max_queue_size=1))
    await srv.start()
    assert srv.publisher.fast

    def update(k: float) -> None:
        for dev in plant.devices:
            ids = np.array(dev.tag_ids, np.int32)
            srv.consume(SampleBatch(dev.name, time.time_ns(), ids, np.arange(len(ids), dtype=np.float64) + k,
                                    np.zeros(len(ids), np.uint8)))

    assert srv.server is not None
    table = srv.server.iserver.aspace._nodes
    proc = None
    try:
        update(0)
        tracemalloc.start(1)
        table.forget()  # built nodes' cache: bounded (4,096), not per item
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, srv.endpoint_url, str(srv.ns),
                                                    str(devices), PASSWORDS["victor"], stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        created = int(await asyncio.wait_for(proc.stdout.readline(), 120))
        assert created == len(plant.tags)
        for k in (1.0, 2.0):
            update(k)
            await asyncio.sleep(0.3)
        table.forget()
        gc.collect()
        per_item = (tracemalloc.get_traced_memory()[0] - before) / created
        assert per_item < 600, f"{per_item:.0f} B per monitored item"
        assert srv.publisher.stats.packed_items == created
    finally:
        tracemalloc.stop()
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await srv.stop()


async def test_packed_items_follow_a_reload(users_file: Path) -> None:
    """A reload moves packed items with their tags (new values still arrive); the item of a tag that
    left the plant gets asyncua's records back, silent, and the client can still delete it."""
    from opcua_helpers import make_plant
    from test_opcua_history_reload import _with_meter3

    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file, fast_path=True))
    await srv.start()
    rec = Recorder()
    try:
        c = _viewer(srv)
        async with c:
            sub, mids = await _watch(c, srv, rec, ["meter1.voltage", "meter2.current"])
            assert srv.publisher.packed.count == 2
            new_plant = _with_meter3(plant)
            assert "meter2.current" not in new_plant.tag_by_key()
            await srv.reload(new_plant)
            assert srv.publisher.packed.count == 1  # meter2.current's item is the library's again
            v_new = tag_id(new_plant, "meter1.voltage")
            srv.consume(SampleBatch("meter1", time.time_ns(), np.array([v_new], np.int32), np.array([231.0]),
                                    np.zeros(1, np.uint8)))
            assert await _until(lambda: rec.got.get(1, [])[-1:] == [231.0])
            assert await c.uaclient.delete_monitored_items(ua.DeleteMonitoredItemsParameters(
                SubscriptionId=sub.subscription_id, MonitoredItemIds=mids)) == [GOOD, GOOD]
            assert srv.publisher.packed.count == 0
    finally:
        await srv.stop()



class StatusRecorder:
    """Every notification's value and StatusCode, by client handle."""

    def __init__(self) -> None:
        self.got: dict[int, list[tuple[float | None, int]]] = {}

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's signature
        item = data.monitored_item
        self.got.setdefault(item.ClientHandle, []).append((val, item.Value.StatusCode.value))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
async def test_items_of_a_tag_removed_by_a_reload_get_bad_node_id_unknown(users_file: Path, fast_path: bool) -> None:
    """A client watching a tag that a reload takes out of the plant is told: its item gets one
    notification with Bad_NodeIdUnknown (documented in OpcUaServer.reload). Before, packed items were
    given back silently and the library's items were handed a coroutine nobody awaited (a
    RuntimeWarning, nothing sent), so the client kept showing the last Good value. The other item
    keeps receiving values and both items can still be deleted."""
    from opcua_helpers import make_plant
    from test_opcua_history_reload import _with_meter3

    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file, fast_path=fast_path))
    await srv.start()
    rec = StatusRecorder()
    bad = ua.StatusCodes.BadNodeIdUnknown
    try:
        c = _viewer(srv)
        async with c:
            sub, mids = await _watch(c, srv, rec, ["meter1.voltage", "meter2.current"])
            assert await _until(lambda: len(rec.got.get(2, [])) >= 1)  # the initial value
            new_plant = _with_meter3(plant)
            assert "meter2.current" not in new_plant.tag_by_key()
            await srv.reload(new_plant)
            assert await _until(lambda: any(code == bad for _, code in rec.got.get(2, []))), rec.got.get(2)
            v_new = tag_id(new_plant, "meter1.voltage")
            srv.consume(SampleBatch("meter1", time.time_ns(), np.array([v_new], np.int32), np.array([232.0]),
                                    np.zeros(1, np.uint8)))
            assert await _until(lambda: rec.got.get(1, [])[-1:] == [(232.0, 0)])
            assert not any(code == bad for _, code in rec.got.get(1, []))
            assert [code for _, code in rec.got[2]].count(bad) == 1
            assert await c.uaclient.delete_monitored_items(ua.DeleteMonitoredItemsParameters(
                SubscriptionId=sub.subscription_id, MonitoredItemIds=mids)) == [GOOD, GOOD]
            await sub.delete()
    finally:
        await srv.stop()
