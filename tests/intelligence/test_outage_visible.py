"""An outage of the time-series server is visible while it lasts (issue 17 point 6): /metrics
shows the backlog, /api/ready says degraded, /api/status and the status table name the state
and the URL, the OPC UA appliance Status object follows, a backlog alarm fires; all clear after
the spool drains. Checked from outside: HTTP, the Prometheus text parser, an asyncua client."""
from __future__ import annotations

import io

from asyncua import Client, ua
from harness import wait_until
from prometheus_client.parser import text_string_to_metric_families
from room_site import room_config

from edge.cli.commands.run import StatusTable
from tests.fixtures.tsdb import victoria_metrics  # noqa: F401 - fixture


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


async def test_outage_is_seen_while_it_lasts_and_clears_after_the_drain(make_room, victoria_metrics):  # noqa: F811
    vm = victoria_metrics
    text = room_config(influx_url=vm.url, opcua=True, rules=False)
    text = text.replace("alarms:\n", "alarms:\n  - {kind: backlog, max_age_s: 3, priority: high}\n", 1)
    room = await make_room(text)
    app = room.site.app
    state: dict[str, object] = {}

    async def poll() -> bool:
        async with room.client(room.viewer) as viewer:
            state["metrics"] = (await viewer.get("/metrics")).text
            state["ready"] = (await viewer.get("/api/ready")).json()
            state["status"] = (await viewer.get("/api/status")).json()
        return True

    async def holds(check, timeout_s: float) -> bool:
        for _ in range(int(timeout_s / 0.5) + 1):
            await poll()
            if check():
                return True
            await wait_until(lambda: False, 0.5)
        return False

    assert await holds(lambda: state["ready"]["status"] == "ready", 15), state.get("ready")
    vm.stop()
    assert await holds(lambda: metric(state["metrics"], "edge_spool_unsent_points") > 0
                       and metric(state["metrics"], "edge_degraded") == 1.0
                       and state["ready"]["status"] == "degraded", 15), state.get("ready")
    ready = state["ready"]
    assert ready["ready"] is True and vm.url in ready["reason"] and "retrying" in ready["reason"]
    delivery = state["status"]["delivery"]
    assert delivery["forwarder"]["state"] == "retrying" and delivery["forwarder"]["url"] == vm.url
    assert delivery["forwarder"]["last_error"] == f"{vm.url} not reachable: connection refused"
    assert delivery["spool"]["unsent_points"] > 0
    assert await wait_until(lambda: app.intelligence.alarms.alarms["spool.backlog"].active, 10)
    table = StatusTable(app, io.StringIO()).render()
    assert "forwarder: RETRYING -> " + vm.url in table and "DEGRADED: time-series server retrying" in table
    client = Client(room.site.app.outputs.opcua.endpoint_url, timeout=10)
    async with client:
        ns = app.outputs.opcua.ns
        node = client.get_node(ua.NodeId("#site#status.ForwarderState", ns, ua.NodeIdType.String))
        assert await wait_until(lambda: app.outputs.opcua._status_last["#site"]["ForwarderState"] == "retrying", 5)
        assert await node.read_value() == "retrying"
        unsent = client.get_node(ua.NodeId("#site#status.SpoolUnsentPoints", ns, ua.NodeIdType.String))
        assert await unsent.read_value() > 0

        vm.start()
        assert await holds(lambda: metric(state["metrics"], "edge_spool_unsent_points") == 0
                           and metric(state["metrics"], "edge_degraded") == 0.0
                           and state["ready"]["status"] == "ready", 40), (state.get("ready"), app.outputs.delivery())
        dropped = [x.value for f in text_string_to_metric_families(state["metrics"]) for x in f.samples
                   if x.name == "edge_spool_dropped_points_total"]
        assert sum(dropped) == 0  # the outage was short: nothing lost, no reason listed
        assert await wait_until(lambda: not app.intelligence.alarms.alarms["spool.backlog"].active, 10)
        assert await wait_until(lambda: app.outputs.opcua._status_last["#site"]["ForwarderState"] == "ok", 5)
        assert await node.read_value() == "ok"
