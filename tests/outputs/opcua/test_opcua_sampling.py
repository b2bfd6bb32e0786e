"""Requested sampling intervals (issue 14, point 6): a client asking 2 s of a 250 ms tag gets at most
one notification per 2 s, the newest value; 0 and faster requests are revised to the tag's poll
interval (MinimumSamplingInterval), -1 to the publishing interval (at least the poll interval).
Checked with asyncua's client: the revised intervals it is told and the notifications it gets."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, config, make_plant, tag_id

from edge.core.model import SampleBatch
from edge.outputs.opcua.server import OpcUaServer

NS_PER_S = 1_000_000_000


class Recorder:
    def __init__(self) -> None:
        self.by_handle: dict[int, list[tuple[float, ua.DataValue]]] = {}

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's signature
        self.by_handle.setdefault(data.monitored_item.ClientHandle, []).append(
            (time.monotonic(), data.monitored_item.Value))


def request(node: ua.NodeId, handle: int, sampling_ms: float, queue: int = 10) -> ua.MonitoredItemCreateRequest:
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=sampling_ms,
                                                      QueueSize=queue, DiscardOldest=True)
    return req


async def test_a_slower_requested_sampling_interval_is_honoured(users_file: Path) -> None:
    plant = make_plant(devices=1)
    fast = tag_id(plant, "meter1.ai0")
    plant.tags[fast] = dataclasses.replace(plant.tags[fast], interval_ms=250)  # a 250 ms tag
    srv = OpcUaServer(plant, config(users_file, max_queue_size=10))
    await srv.start()
    rec = Recorder()
    revised: list[ua.MonitoredItemCreateResult] = []
    try:
        c = Client(srv.endpoint_url, timeout=10)
        c.set_user("victor")
        c.set_password(PASSWORDS["victor"])
        async with c:
            ai0 = ua.NodeId("meter1.ai0", srv.ns, ua.NodeIdType.String)
            ai1 = ua.NodeId("meter1.ai1", srv.ns, ua.NodeIdType.String)  # polled every 1000 ms
            sub = await c.create_subscription(50, rec)
            create = sub.server.create_monitored_items

            async def spy(params):  # noqa: ANN001, ANN202 - what the server answered, as the client got it
                results = await create(params)
                revised.extend(results)
                return results

            sub.server.create_monitored_items = spy  # type: ignore[method-assign]
            await sub.create_monitored_items([request(ai0, 1, 2000.0), request(ai0, 2, 0.0), request(ai1, 3, 100.0),
                                              request(ai1, 4, -1.0)])
            assert [r.RevisedSamplingInterval for r in revised] == [2000.0, 250.0, 1000.0, 1000.0]
            t_start = time.monotonic()
            pushed: list[float] = []  # when value k + 1 was pushed
            for k in range(1, 51):  # a new value every 100 ms for 5 s
                srv.consume(SampleBatch("meter1", time.time_ns(), np.array([fast], np.int32), np.array([float(k)]),
                                        np.zeros(1, np.uint8)))
                pushed.append(time.monotonic())
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.3)  # the last interval ends and reports the newest value
            slow = [dv for _, dv in rec.by_handle[1]]
            received = [t for t, _ in rec.by_handle[1]]
            every = [dv.Value.Value for _, dv in rec.by_handle[2]]
            # the item sampling at 0 (revised 250 ms, the tag's rate) got every change
            assert every[1:] == [float(k) for k in range(1, 51)]
            # the 2 s item: the initial value, then at most one report per 2 s, each the newest value
            elapsed = time.monotonic() - t_start
            assert 2 <= len(slow) - 1 <= int(elapsed / 2.0) + 1, [dv.Value.Value for dv in slow]
            gaps = [b - a for a, b in zip(received, received[1:], strict=False)]
            assert all(g >= 2.0 - 0.1 for g in gaps), gaps  # a publish cycle (50 ms) of slack on the client's side
            for t, dv in zip(received[1:], slow[1:], strict=True):  # the newest value when it was reported
                newest = max(k + 1 for k, p in enumerate(pushed) if p <= t - 0.1)
                assert dv.Value.Value >= newest, (dv.Value.Value, newest)
            assert slow[-1].Value.Value == 50.0
            # a modified item keeps the queue cap (the library took 0 as unbounded)
            params = ua.ModifyMonitoredItemsParameters(SubscriptionId=sub.subscription_id, ItemsToModify=[
                ua.MonitoredItemModifyRequest(MonitoredItemId=revised[0].MonitoredItemId, RequestedParameters=
                                              ua.MonitoringParameters(ClientHandle=1, SamplingInterval=4000.0,
                                                                      QueueSize=0))])
            (modified,) = await c.uaclient.modify_monitored_items(params)
            assert (modified.RevisedSamplingInterval, modified.RevisedQueueSize) == (4000.0, 10)
    finally:
        await srv.stop()
