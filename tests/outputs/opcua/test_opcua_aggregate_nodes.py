"""Aggregate variables of the OPC UA server fed with real aggregator windows, read and browsed
by a real asyncua client: node layout, types, units, StatusCodes, timestamps, reload."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from asyncua import Client, ua
from harness import wait_until
from opcua_helpers import PASSWORDS, config, make_plant, tag_id

from edge.aggregate.engine import Aggregator
from edge.config.aggregate import TagAggregateConfig
from edge.core.model import Plant, Quality, SampleBatch
from edge.outputs.opcua.server import OpcUaServer

pytestmark = pytest.mark.usefixtures("opcua_path")  # the fast path and the library's plain path

S = 1_000_000_000
FULL = ["Count", "Min", "Max", "Mean", "First", "Last", "Sum", "Std", "Twa", "GoodRatio", "BadCount"]


def login(srv: OpcUaServer) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    return c


def aggregator(plant: Plant, **cfgs: TagAggregateConfig) -> Aggregator:
    return Aggregator.from_tags(plant.tags, {tag_id(plant, k.replace("__", ".")): c for k, c in cfgs.items()})


def push(agg: Aggregator, srv: OpcUaServer, plant: Plant, key: str, ts_ns: int, value: float,
         quality: Quality = Quality.GOOD) -> None:
    """One sample of one tag into the aggregator and the server's live values (like the pipeline)."""
    batch = SampleBatch(key.split(".")[0], ts_ns, np.array([tag_id(plant, key)], np.int32), np.array([value]),
                        np.array([int(quality)], np.uint8))
    agg.consume(batch)
    srv.consume(batch)


def close(agg: Aggregator, srv: OpcUaServer, now_ns: int) -> int:
    """What Outputs does per collect: every closed batch to OPC UA, then the empty windows."""
    n = 0
    for wb in agg.collect(now_ns):
        latest = agg.for_opcua(wb)
        if latest is not None:
            n += srv.consume_windows(latest, agg.window_quality(latest))
    return n + srv.close_empty_windows(now_ns)


async def read(c: Client, ns: int, key: str, window: str, names: list[str]) -> dict[str, ua.DataValue]:
    """Every statistic of one window in ONE Read request (a consistent set)."""
    nodes = [c.get_node(ua.NodeId(f"{key}#aggregates.{window}.{n}", ns)) for n in names]
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=n.nodeid, AttributeId=ua.AttributeIds.Value) for n in nodes]
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    return dict(zip(names, await c.uaclient.read(params), strict=True))


async def test_layout_types_units_and_only_configured_tags(users_file) -> None:
    plant = make_plant()
    agg = aggregator(plant, meter1__voltage=TagAggregateConfig(windows=["1s", "60s"], opcua=True),
                     meter1__current=TagAggregateConfig(windows=["1s"], opcua=["mean", "count"]),
                     meter1__ai0=TagAggregateConfig(windows=["1s"]),  # aggregated, not published
                     meter2__energy=TagAggregateConfig(windows=["10s"], opcua=["max"]))
    srv = OpcUaServer(plant, config(users_file), aggregates=agg.opcua_specs())
    await srv.start()
    try:
        ns = srv.ns
        async with login(srv) as c:
            meter1 = await c.nodes.objects.get_child([f"{ns}:plant1", f"{ns}:line1", f"{ns}:meter1"])
            folder = await meter1.get_child([f"{ns}:Aggregates"])
            assert folder.nodeid == ua.NodeId("meter1#aggregates", ns)
            assert await folder.read_type_definition() == ua.NodeId(ua.ObjectIds.FolderType)
            assert sorted([(await n.read_browse_name()).Name for n in await folder.get_children()]) == \
                ["current", "voltage"]  # ai0 has a ring but no opcua: no nodes
            voltage = await folder.get_child([f"{ns}:voltage"])
            assert voltage.nodeid == ua.NodeId("meter1.voltage#aggregates", ns)
            # 60s is the aggregator's canonical label 1min
            assert sorted([(await n.read_browse_name()).Name for n in await voltage.get_children()]) == ["1min", "1s"]
            w1 = await voltage.get_child([f"{ns}:1s"])
            assert [(await n.read_browse_name()).Name for n in await w1.get_children()] == FULL
            mean = await w1.get_child([f"{ns}:Mean"])
            assert mean.nodeid == ua.NodeId("meter1.voltage#aggregates.1s.Mean", ns)
            assert await mean.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseAnalogType)
            assert await mean.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
            assert (await (await mean.get_child(["0:EngineeringUnits"])).read_value()).DisplayName.Text == "V"
            count = await w1.get_child([f"{ns}:Count"])
            assert await count.read_data_type() == ua.NodeId(ua.ObjectIds.UInt32)
            assert await count.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseDataVariableType)
            assert await count.get_properties() == []  # no unit on a count
            assert await (await w1.get_child([f"{ns}:GoodRatio"])).get_properties() == []
            access = (await mean.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
            assert access == 1 << ua.AccessLevel.CurrentRead
            dv = await mean.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData and dv.Value.Value is None
            try:  # read-only, even for an operator-level write request
                await mean.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
                raise AssertionError("aggregate variables are read-only")
            except ua.UaStatusCodeError as exc:
                assert exc.code in (ua.StatusCodes.BadNotWritable, ua.StatusCodes.BadUserAccessDenied)

            current = await folder.get_child([f"{ns}:current", f"{ns}:1s"])
            assert [(await n.read_browse_name()).Name for n in await current.get_children()] == ["Count", "Mean"]
            meter2 = await c.nodes.objects.get_child([f"{ns}:plant1", f"{ns}:line1", f"{ns}:meter2"])
            energy = await meter2.get_child([f"{ns}:Aggregates", f"{ns}:energy", f"{ns}:10s", f"{ns}:Max"])
            assert (await (await energy.get_child(["0:EngineeringUnits"])).read_value()).DisplayName.Text == "kWh"
            # tags without opcua aggregates have no aggregate node at all
            for nodeid in ("meter1.ai0#aggregates", "meter1.energy#aggregates", "meter2#aggregates.x"):
                dv = await c.get_node(ua.NodeId(nodeid, ns)).read_data_value(raise_on_bad_status=False)
                assert dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
            tag_children = {(await n.read_browse_name()).Name for n in await c.get_node(
                ua.NodeId("meter1.voltage", ns)).get_children()}
            assert tag_children == {"EURange", "EngineeringUnits"}  # the tag variable itself is unchanged
        assert srv.aggregates.node_count == 2 * 11 + 2 + 1
    finally:
        await srv.stop()


async def notified(c: Client, nodeid: ua.NodeId) -> list[ua.DataValue]:
    """Subscribe to one variable; the returned list fills with every DataValue notified."""
    got: list[ua.DataValue] = []

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            got.append(data.monitored_item.Value)

    sub = await c.create_subscription(20, Handler())
    await sub.subscribe_data_change(c.get_node(nodeid))
    return got


async def test_values_status_codes_and_timestamps(users_file) -> None:
    plant = make_plant()
    cfg = TagAggregateConfig(windows=["1s"], grace_ms=0, capacity_s=60, opcua=True)
    agg = aggregator(plant, meter1__voltage=cfg, meter1__current=cfg)
    srv = OpcUaServer(plant, config(users_file), aggregates=agg.opcua_specs())
    await srv.start()
    t0 = (time.time_ns() // S - 30) * S  # whole seconds, in the recent past
    try:
        ns = srv.ns
        async with login(srv) as c:
            mean = c.get_node(ua.NodeId("meter1.voltage#aggregates.1s.Mean", ns))
            # changes once per window: its MinimumSamplingInterval is the window, so a client asking
            # a shorter sampling interval gets every window (not one per requested interval)
            assert (await mean.read_attribute(ua.AttributeIds.MinimumSamplingInterval)).Value.Value == 1000.0
            got = await notified(c, mean.nodeid)

            # window 1: all good
            for k, v in enumerate([230.0, 232.0, 231.0, 229.0]):
                push(agg, srv, plant, "meter1.voltage", t0 + k * 250_000_000, v)
            push(agg, srv, plant, "meter1.current", t0 + 100, 5.0)
            before = time.time()
            assert close(agg, srv, t0 + S) == 2
            dvs = await read(c, ns, "meter1.voltage", "1s", FULL)
            values = {k: d.Value.Value for k, d in dvs.items()}
            assert values == {"Count": 4, "Min": 229.0, "Max": 232.0, "Mean": 230.5, "First": 230.0, "Last": 229.0,
                              "Sum": 922.0, "Std": np.std([230.0, 232.0, 231.0, 229.0]), "Twa": 230.5,
                              "GoodRatio": 1.0, "BadCount": 0}
            assert dvs["Count"].Value.VariantType == ua.VariantType.UInt32
            assert dvs["Mean"].Value.VariantType == ua.VariantType.Double
            for d in dvs.values():
                assert d.StatusCode.is_good()
                assert d.SourceTimestamp.timestamp() == (t0 + S) / 1e9  # the window's end
                assert before - 0.5 <= d.ServerTimestamp.timestamp() <= time.time() + 0.5
            assert await wait_until(lambda: any(d.Value.Value == 230.5 for d in got), 5)

            # window 2: one sample out of range -> Uncertain, statistics of the good ones
            push(agg, srv, plant, "meter1.voltage", t0 + S, 240.0)
            push(agg, srv, plant, "meter1.voltage", t0 + S + 500_000_000, 999.0, Quality.BAD_OUT_OF_RANGE)
            push(agg, srv, plant, "meter1.current", t0 + S, 5.0)
            close(agg, srv, t0 + 2 * S)
            dvs = await read(c, ns, "meter1.voltage", "1s", FULL)
            assert dvs["Mean"].StatusCode.value == ua.StatusCodes.UncertainDataSubNormal
            assert dvs["Mean"].Value.Value == 240.0 and dvs["Max"].Value.Value == 240.0
            assert (dvs["Count"].Value.Value, dvs["BadCount"].Value.Value, dvs["GoodRatio"].Value.Value) == (1, 1, 0.5)
            assert dvs["Count"].StatusCode.is_good() and dvs["GoodRatio"].StatusCode.is_good()
            assert dvs["Mean"].SourceTimestamp.timestamp() == (t0 + 2 * S) / 1e9

            # window 3: only failed polls -> null values, the samples' StatusCode; counts stay Good
            for k in range(3):
                push(agg, srv, plant, "meter1.voltage", t0 + 2 * S + k * 300_000_000, np.nan, Quality.BAD_COMM_ERROR)
            push(agg, srv, plant, "meter1.current", t0 + 2 * S, 5.0)
            close(agg, srv, t0 + 3 * S)
            dvs = await read(c, ns, "meter1.voltage", "1s", FULL)
            for name in ("Min", "Max", "Mean", "First", "Last", "Sum", "Std", "Twa"):
                assert dvs[name].StatusCode.value == ua.StatusCodes.BadCommunicationError, name
                assert dvs[name].Value.Value is None
            assert (dvs["Count"].Value.Value, dvs["BadCount"].Value.Value, dvs["GoodRatio"].Value.Value) == (0, 3, 0.0)
            assert dvs["Count"].StatusCode.is_good()

            # the device goes offline: one Bad_NoCommunication sample, then no samples at all
            push(agg, srv, plant, "meter1.voltage", t0 + 3 * S + 100, np.nan, Quality.BAD_NO_COMMUNICATION)
            push(agg, srv, plant, "meter1.current", t0 + 3 * S, 5.0)
            close(agg, srv, t0 + 4 * S)
            dvs = await read(c, ns, "meter1.voltage", "1s", ["Mean", "Count"])
            assert dvs["Mean"].StatusCode.value == ua.StatusCodes.BadNoCommunication
            # windows 5 and 6 hold no sample of voltage: published empty, stamped with their ends
            push(agg, srv, plant, "meter1.current", t0 + 4 * S, 5.0)
            push(agg, srv, plant, "meter1.current", t0 + 5 * S, 5.0)
            assert close(agg, srv, t0 + 6 * S) == 2  # current's window and voltage's empty one
            dvs = await read(c, ns, "meter1.voltage", "1s", ["Mean", "Count", "BadCount", "GoodRatio"])
            assert dvs["Mean"].StatusCode.value == ua.StatusCodes.BadNoCommunication
            assert dvs["Mean"].SourceTimestamp.timestamp() == (t0 + 6 * S) / 1e9
            assert (dvs["Count"].Value.Value, dvs["BadCount"].Value.Value) == (0, 0)
            assert dvs["GoodRatio"].Value.Value is None and dvs["GoodRatio"].StatusCode.value == ua.StatusCodes.BadNoData
            # a tag polled less often than its window (live quality Good) keeps its last window
            dvs = await read(c, ns, "meter1.current", "1s", ["Mean"])
            assert dvs["Mean"].StatusCode.is_good() and dvs["Mean"].SourceTimestamp.timestamp() == (t0 + 6 * S) / 1e9
            assert close(agg, srv, t0 + 9 * S) == 1  # voltage again; current keeps its window of t0+5s
            dvs = await read(c, ns, "meter1.current", "1s", ["Mean"])
            assert dvs["Mean"].SourceTimestamp.timestamp() == (t0 + 6 * S) / 1e9

            # back online
            push(agg, srv, plant, "meter1.voltage", t0 + 9 * S, 235.0)
            close(agg, srv, t0 + 10 * S)
            dvs = await read(c, ns, "meter1.voltage", "1s", ["Mean", "Count"])
            assert dvs["Mean"].StatusCode.is_good() and dvs["Mean"].Value.Value == 235.0
            assert await wait_until(lambda: got and got[-1].Value.Value == 235.0, 5)
            statuses = [d.StatusCode.value for d in got]
            assert statuses[-1] == ua.StatusCodes.Good
            assert {ua.StatusCodes.UncertainDataSubNormal, ua.StatusCodes.BadCommunicationError,
                    ua.StatusCodes.BadNoCommunication} <= set(statuses)
            stamps = [d.SourceTimestamp for d in got if d.SourceTimestamp is not None]
            assert stamps == sorted(stamps)
        assert srv.aggregates.stats.empty_windows == 2
    finally:
        await srv.stop()


async def test_reload_keeps_wanted_nodes_subscriptions_and_last_windows(users_file) -> None:
    plant = make_plant()
    agg = aggregator(plant, meter1__voltage=TagAggregateConfig(windows=["1s"], grace_ms=0, opcua=True),
                     meter2__voltage=TagAggregateConfig(windows=["1s"], grace_ms=0, opcua=True))
    srv = OpcUaServer(plant, config(users_file), aggregates=agg.opcua_specs())
    await srv.start()
    t0 = (time.time_ns() // S - 30) * S
    try:
        ns = srv.ns
        async with login(srv) as c:
            got = await notified(c, ua.NodeId("meter1.voltage#aggregates.1s.Max", ns))
            push(agg, srv, plant, "meter1.voltage", t0, 230.0)
            push(agg, srv, plant, "meter2.voltage", t0, 231.0)
            close(agg, srv, t0 + S)
            assert await wait_until(lambda: any(d.Value.Value == 230.0 for d in got), 5)

            # new plant: meter2.current removed (ids move), meter1.voltage in kV, meter2 stops
            # publishing, meter1.voltage gets a 10s window and only max/count
            tags = []
            for t in plant.tags:
                if t.key == "meter2.current":
                    continue
                if t.key == "meter1.voltage":
                    t = dataclasses.replace(t, unit="kV")
                tags.append(dataclasses.replace(t, id=len(tags)))
            devices = [dataclasses.replace(d, tag_ids=tuple(t.id for t in tags if t.device == d.name))
                       for d in plant.devices]
            new_plant = Plant(site=plant.site, buses=plant.buses, devices=devices, tags=tags)
            agg2 = aggregator(new_plant, meter1__voltage=TagAggregateConfig(
                windows=["1s", "10s"], grace_ms=0, opcua=["max", "count"]))
            await srv.reload(new_plant, aggregates=agg2.opcua_specs())

            w1 = c.get_node(ua.NodeId("meter1.voltage#aggregates.1s", ns))
            assert [(await n.read_browse_name()).Name for n in await w1.get_children()] == ["Count", "Max"]
            max_node = c.get_node(ua.NodeId("meter1.voltage#aggregates.1s.Max", ns))
            dv = await max_node.read_data_value()
            assert dv.Value.Value == 230.0 and dv.SourceTimestamp.timestamp() == (t0 + S) / 1e9  # kept
            assert (await (await max_node.get_child(["0:EngineeringUnits"])).read_value()).DisplayName.Text == "kV"
            dv = await c.get_node(ua.NodeId("meter1.voltage#aggregates.10s.Max", ns)).read_data_value(
                raise_on_bad_status=False)
            assert dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData  # new window, nothing yet
            for gone in ("meter1.voltage#aggregates.1s.Mean", "meter2.voltage#aggregates", "meter2#aggregates"):
                dv = await c.get_node(ua.NodeId(gone, ns)).read_data_value(raise_on_bad_status=False)
                assert dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown, gone

            # same subscription: the next window of the new plant arrives
            push(agg2, srv, new_plant, "meter1.voltage", t0 + S, 0.231)
            close(agg2, srv, t0 + 2 * S)
            assert await wait_until(lambda: any(d.Value.Value == 0.231 for d in got), 5)
    finally:
        await srv.stop()
