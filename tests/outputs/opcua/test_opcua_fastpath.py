"""The fast path's own pieces: the notification encoder matches asyncua's, client filters apply."""
from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, tag_id

from edge.core.model import SampleBatch
from edge.outputs.opcua import fastpath as fp
from edge.outputs.opcua.server import OpcUaServer

NOW = datetime.now(UTC)
VARIANTS = [
    ua.Variant(1.5, ua.VariantType.Double), ua.Variant(-2.25, ua.VariantType.Float),
    ua.Variant(True, ua.VariantType.Boolean), ua.Variant(7, ua.VariantType.UInt32),
    ua.Variant(-7, ua.VariantType.Int16), ua.Variant(2**40, ua.VariantType.Int64),
    ua.Variant(2**63, ua.VariantType.UInt64), ua.Variant(65535, ua.VariantType.UInt16),
    ua.Variant("grüß", ua.VariantType.String), ua.Variant(None, ua.VariantType.String),
    ua.Variant(None, ua.VariantType.Null), ua.Variant([1.0, 2.0], ua.VariantType.Double),
    ua.Variant(ua.LocalizedText("x"), ua.VariantType.LocalizedText),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.VariantType.name}")
@pytest.mark.parametrize("status", [ua.StatusCode(0), ua.StatusCode(ua.StatusCodes.BadNoCommunication), None])
@pytest.mark.parametrize("source", [NOW, None])
def test_encoder_bytes_equal_asyncua(variant: ua.Variant, status: ua.StatusCode | None, source) -> None:  # noqa: ANN001
    item = ua.MonitoredItemNotification(ClientHandle=4242, Value=ua.DataValue(variant, status, source, NOW))
    assert fp.encode_notification(item) == fp._library_notification_serializer(item)


def test_encoder_falls_back_for_picoseconds_and_decodes_back() -> None:
    dv = ua.DataValue(ua.Variant(3.0, ua.VariantType.Double), ua.StatusCode(0), NOW, NOW, SourcePicoseconds=5)
    item = ua.MonitoredItemNotification(ClientHandle=1, Value=dv)
    assert fp.encode_notification(item) == fp._library_notification_serializer(item)
    notif = ua.DataChangeNotification(MonitoredItems=[
        ua.MonitoredItemNotification(ClientHandle=9, Value=ua.DataValue(ua.Variant(1.25, ua.VariantType.Float),
                                                                        ua.StatusCode(0), NOW, NOW))])
    back = ua.ua_binary.struct_from_binary(ua.DataChangeNotification,
                                           ua.utils.Buffer(ua.ua_binary.struct_to_binary(notif)))
    got = back.MonitoredItems[0]
    assert (got.ClientHandle, got.Value.Value.Value, got.Value.Value.VariantType) == (9, 1.25, ua.VariantType.Float)
    assert abs(got.Value.SourceTimestamp.replace(tzinfo=UTC) - NOW).total_seconds() < 1e-6


async def test_client_deadband_filter_against_last_sent_value(running: OpcUaServer) -> None:
    """A client's own absolute deadband (2.0 on a tag without a configured deadband) is compared
    with the last value sent to that client, so a drift of 0.8 per poll is reported every third poll."""
    c_id = tag_id(running.plant, "meter1.current")
    got: list[float] = []

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            got.append(val)

    c = Client(running.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    async with c:
        sub = await c.create_subscription(10, Handler())
        flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=ua.DeadbandType.Absolute,
                                  DeadbandValue=2.0)
        node = c.get_node(f"ns={running.ns};s=meter1.current")
        await sub._subscribe(node, ua.AttributeIds.Value, flt, queuesize=10)
        for i in range(8):
            running.consume(SampleBatch("meter1", time.time_ns(), np.array([c_id], np.int32),
                                        np.array([10.0 + 0.8 * i]), np.zeros(1, np.uint8)))
        deadline = time.monotonic() + 5
        while len([v for v in got if v is not None]) < 3 and time.monotonic() < deadline:
            await c.nodes.server.read_browse_name()  # let notifications arrive
        await sub.delete()
    values = [round(v, 1) for v in got if v is not None]
    assert values == [10.0, 12.4, 14.8]
