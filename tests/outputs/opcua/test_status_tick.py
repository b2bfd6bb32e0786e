"""The devices' OPC UA Status objects follow ``runtime.status_interval_s`` (the interval of the
statistics they show), not the aggregator's ``collect_interval_ms``: they once ticked with the
window collection, so a fast collection multiplied their cost and a slow one froze them, and
``status_interval_s`` did not reach them. Seen from a real asyncua client's subscription."""
from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua
from harness import wait_until

from edge.outputs.opcua.model import status_nodeid


def site_text(tmp: str, status_interval_s: float, collect_interval_ms: int) -> str:
    return f"""
site: {{name: tick}}
buses: [{{name: net, type: modbus_tcp, timeout_ms: 40}}]
devices:
  - name: plc
    bus: net
    port: {{port:plc}}
    interval_ms: 50
    points:
      - {{name: level, address: 0, type: float32, sim: {{kind: constant, value: 1.5}}}}
outputs:
  opcua: {{endpoint: 'opc.tcp://127.0.0.1:0/edge', security_policies: [None], allow_security_none: true,
           anonymous: true}}
  aggregator: {{collect_interval_ms: {collect_interval_ms}}}
runtime: {{data_dir: {tmp}/data, status_interval_s: {status_interval_s}}}
"""


class Changes:
    def __init__(self) -> None:
        self.values: list[object] = []

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's handler
        self.values.append(val)


WATCH_S = 4.0


@pytest.mark.parametrize(("status_s", "collect_ms"), [(0.2, 3000), (1.0, 100)])
async def test_status_values_change_at_the_status_interval(make_site, tmp_path, status_s, collect_ms):
    site = await make_site(site_text(str(tmp_path), status_s, collect_ms))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    client = Client(site.app.outputs.opcua.endpoint_url, timeout=10)
    async with client:
        ns = await client.get_namespace_index("urn:edge:tick")
        node = client.get_node(status_nodeid(ns, "plc", "PollsOk"))
        handler = Changes()
        sub = await client.create_subscription(ua.CreateSubscriptionParameters(RequestedPublishingInterval=50),
                                               handler)
        await sub.subscribe_data_change(node, sampling_interval=0)
        assert await wait_until(lambda: handler.values, 5)  # the initial value
        start = len(handler.values)
        await asyncio.sleep(WATCH_S)  # 20 polls per second: PollsOk changes at every tick there is
        changes = len(handler.values) - start
        await sub.delete()
    ticks = WATCH_S / status_s  # a loaded machine may lose a few; the collection's 1 or 30 would be far off
    assert 0.5 * ticks <= changes <= ticks + 2, (changes, handler.values)
    assert handler.values == sorted(handler.values)
