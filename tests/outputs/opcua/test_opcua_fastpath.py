"""The fast path's own pieces: the notification encoder matches asyncua's, client filters apply."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import Client, ua
from asyncua.ua import ua_binary
from opcua_helpers import PASSWORDS, ROOT, config, make_plant, tag_id

from edge.core.model import SampleBatch
from edge.outputs.opcua import asyncua_adapter as fp
from edge.outputs.opcua.server import OpcUaServer

NOW = datetime.now(UTC)
ITEM = ua.MonitoredItemNotification(ClientHandle=7, Value=ua.DataValue(ua.Variant(2.5, ua.VariantType.Double),
                                                                       ua.StatusCode(0), NOW, NOW))
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
    assert fp.encode_notification(item) == fp.library_notification_serializer(item)


def test_encoder_falls_back_for_picoseconds_and_decodes_back() -> None:
    dv = ua.DataValue(ua.Variant(3.0, ua.VariantType.Double), ua.StatusCode(0), NOW, NOW, SourcePicoseconds=5)
    item = ua.MonitoredItemNotification(ClientHandle=1, Value=dv)
    assert fp.encode_notification(item) == fp.library_notification_serializer(item)
    notif = ua.DataChangeNotification(MonitoredItems=[
        ua.MonitoredItemNotification(ClientHandle=9, Value=ua.DataValue(ua.Variant(1.25, ua.VariantType.Float),
                                                                        ua.StatusCode(0), NOW, NOW))])
    back = ua.ua_binary.struct_from_binary(ua.DataChangeNotification,
                                           ua.utils.Buffer(ua.ua_binary.struct_to_binary(notif)))
    got = back.MonitoredItems[0]
    assert (got.ClientHandle, got.Value.Value.Value, got.Value.Value.VariantType) == (9, 1.25, ua.VariantType.Float)
    assert abs(got.Value.SourceTimestamp.replace(tzinfo=UTC) - NOW).total_seconds() < 1e-6


async def test_client_deadband_filter_on_each_path(opcua_path: str, running: OpcUaServer) -> None:
    """A client's own absolute deadband (2.0 on a tag without a configured deadband), 0.8 of drift per poll.

    Fast path: compared with the last value sent to that client, so every third poll is reported.
    The library's plain path: asyncua compares each sample with the previous sample, so slow drift
    is never reported (STACK-NOTES); the test pins that difference down."""
    c_id = tag_id(running.plant, "meter1.current")
    got: list[float] = []

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            got.append(val)

    c = Client(running.endpoint_url, timeout=10)
    c.set_user("victor")
    c.set_password(PASSWORDS["victor"])
    want = [10.0, 12.4, 14.8] if opcua_path == "fast" else [10.0]

    def poll(i: int) -> None:
        running.consume(SampleBatch("meter1", time.time_ns(), np.array([c_id], np.int32),
                                    np.array([10.0 + 0.8 * i]), np.zeros(1, np.uint8)))

    poll(0)  # a value before the subscription (asyncua's own deadband fails on a null initial value)
    async with c:
        sub = await c.create_subscription(10, Handler())
        flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=ua.DeadbandType.Absolute,
                                  DeadbandValue=2.0)
        node = c.get_node(f"ns={running.ns};s=meter1.current")
        await sub._subscribe(node, ua.AttributeIds.Value, flt, queuesize=10)
        for i in range(1, 8):
            poll(i)
        deadline = time.monotonic() + (5 if opcua_path == "fast" else 1.5)  # plain: wait to see nothing more
        while (len([v for v in got if v is not None]) < len(want) or opcua_path == "plain") \
                and time.monotonic() < deadline:
            await c.nodes.server.read_browse_name()  # let notifications arrive
        await sub.delete()
    values = [round(v, 1) for v in got if v is not None]
    assert values == want


def test_nothing_is_patched_at_import() -> None:
    """Importing the server, the value path and the adapter leaves asyncua as it is."""
    code = ("from asyncua.ua import ua_binary; original = ua_binary.create_dataclass_serializer; "
            "import edge.outputs.opcua.server, edge.outputs.opcua.fastpath, edge.outputs.opcua.asyncua_adapter; "
            "import edge.runtime.app; "
            "assert ua_binary.create_dataclass_serializer is original; print('unpatched')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "unpatched", r.stderr


async def test_the_encoder_is_installed_while_a_fast_server_runs(users_file) -> None:  # noqa: ANN001
    library = fp._library_dataclass_serializer
    assert ua_binary.create_dataclass_serializer is library and not fp.encoder_installed()
    plain = OpcUaServer(make_plant(), config(users_file, fast_path=False))
    await plain.start()
    try:
        assert not plain.publisher.fast and ua_binary.create_dataclass_serializer is library
        fast = OpcUaServer(make_plant(), config(users_file, fast_path=True))
        await fast.start()
        try:
            assert fast.publisher.fast and fp.encoder_installed()
            assert ua_binary.struct_to_binary(ITEM) == fp.encode_notification(ITEM)
        finally:
            await fast.stop()
        assert ua_binary.create_dataclass_serializer is library  # the last fast server put it back
        assert ua_binary.create_dataclass_serializer(ua.MonitoredItemNotification) is not fp.encode_notification
    finally:
        await plain.stop()


def test_an_untested_asyncua_version_runs_on_the_plain_path(monkeypatch, caplog) -> None:  # noqa: ANN001
    assert fp.version_tested("2.1.0") and not fp.version_tested("2.2.0") and not fp.version_tested("2.10.1")
    monkeypatch.setattr(fp.asyncua, "__version__", "2.2.0")
    assert fp.acquire(True) is False
    assert not fp.encoder_installed() and "not the tested 2.1.x" in caplog.text


@pytest.mark.parametrize("why", ["setting", "untested asyncua"])
async def test_the_plain_path_keeps_the_library_s_own_node_table(why: str, users_file, monkeypatch) -> None:  # noqa: ANN001
    """``fast_path: false`` (or an asyncua the fast path was not tested with) replaces nothing of
    asyncua: its node table stays a plain dict holding every device, tag and property node (built
    at once); the fast path's nodes-on-first-access table is a fast-path internal like the rest."""
    if why == "untested asyncua":
        monkeypatch.setattr(fp.asyncua, "__version__", "2.2.0")
    plain = OpcUaServer(make_plant(), config(users_file, fast_path=why != "setting"))
    await plain.start()
    try:
        assert plain.server is not None and not plain.publisher.fast
        table = plain.server.iserver.aspace._nodes
        assert type(table) is dict
        for ident in ("meter1", "meter1.voltage", "meter1.voltage#EURange", "meter2.mode#EnumValues"):
            assert ua.NodeId(ident, plain.ns) in table, ident
        c = Client(plain.endpoint_url, timeout=10)
        c.set_user("victor")
        c.set_password(PASSWORDS["victor"])
        async with c:  # browse and read the stored nodes
            voltage = c.get_node(f"ns={plain.ns};s=meter1.voltage")
            assert (await (await voltage.get_child(["0:EURange"])).read_value()).High == 400.0
            assert (await voltage.get_parent()).nodeid == ua.NodeId("meter1", plain.ns)
    finally:
        await plain.stop()
    monkeypatch.undo()
    fast = OpcUaServer(make_plant(), config(users_file, fast_path=True))
    await fast.start()
    try:
        assert fast.server is not None and fast.publisher.fast
        assert type(fast.server.iserver.aspace._nodes) is not dict  # built on first access
        assert dict.get(fast.server.iserver.aspace._nodes, ua.NodeId("meter1.voltage", fast.ns)) is None
    finally:
        await fast.stop()
