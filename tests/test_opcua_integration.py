"""The whole path with a real OPC UA client: simulated device -> poller -> OPC UA value and StatusCode;
client write -> write path -> device register, with the audit log; history from the ring buffers."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua import Client, ua
from harness import server_pki, wait_until


def site_text(users: str) -> str:
    """The PLC on a port held for the simulator (``{port:plc}``, see make_site); OPC UA on any free port."""
    pki = server_pki(Path(users).parent)
    return f"""
site: {{name: line2}}
buses: [{{name: net, type: modbus_tcp, timeout_ms: 100}}]
devices:
  - name: plc
    bus: net
    port: {{port:plc}}
    interval_ms: 100
    offline_after_failures: 2
    backoff_max_s: 1
    points:
      - {{name: level, address: 0, type: float32, unit: "%", range: [0, 100], sim: {{kind: constant, value: 42.5}},
          aggregate: {{windows: [1s], capacity_s: 60}}}}
      - {{name: setpoint, address: 2, type: float32, unit: degC, range: [0, 200], writable: true}}
outputs:
  opcua:
    endpoint: opc.tcp://127.0.0.1:0/edge
    security_policies: [None]
    allow_security_none: true
    users_file: {users}
    pki_dir: {pki}
"""


async def test_client_sees_poll_values_quality_and_writes_reach_the_device(make_site, tmp_path):
    from edge.security.users import add_user

    users = tmp_path / "users.txt"
    add_user(users, "olga", "operator", "operator-password")
    add_user(users, "vic", "viewer", "viewer-password")
    site = await make_site(site_text(str(users)))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    url = site.app.outputs.opcua.endpoint_url
    client = Client(url, timeout=10)
    client.set_user("olga")
    client.set_password("operator-password")
    async with client:
        ns = await client.get_namespace_index("urn:edge:line2")
        level = client.get_node(ua.NodeId("plc.level", ns))
        dv = await level.read_data_value()
        assert dv.Value.Value == 42.5 and dv.StatusCode.is_good()
        assert dv.SourceTimestamp is not None and abs(dv.SourceTimestamp.timestamp() - time.time()) < 5

        setpoint = client.get_node(ua.NodeId("plc.setpoint", ns))
        await setpoint.write_value(ua.DataValue(ua.Variant(150.0, ua.VariantType.Float)))
        assert site.sim.get_value("plc", "setpoint") == 150.0
        try:
            await setpoint.write_value(ua.DataValue(ua.Variant(500.0, ua.VariantType.Float)))
            raise AssertionError("an out-of-range write must fail")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadOutOfRange
        assert await asyncio.to_thread(site.app.writes.audit.flush, 5)
        audit = (site.loaded.data_dir / "audit.log").read_text().splitlines()
        assert any('"user":"olga"' in a and '"source":"opcua"' in a and '"result":"GOOD"' in a for a in audit)

        # history from the tag's ring buffer
        await asyncio.sleep(0.5)
        history = await level.read_raw_history(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC),
                                               return_bounds=False)
        assert len(history) >= 3 and all(h.Value.Value == 42.5 for h in history)

        # the device goes silent: the client sees BadNoCommunication, then Good again
        site.sim.set_fault("plc", "silence")
        assert await wait_until(lambda: site.value("plc", "level")[1].name == "BAD_NO_COMMUNICATION", 5)
        await asyncio.sleep(0.2)
        dv = await level.read_data_value(raise_on_bad_status=False)
        assert dv.StatusCode.value == ua.StatusCodes.BadNoCommunication
        site.sim.clear_fault("plc")
        assert await wait_until(lambda: site.value("plc", "level")[1].name == "GOOD", 5)
        await asyncio.sleep(0.2)
        assert (await level.read_data_value()).StatusCode.is_good()

    viewer = Client(url, timeout=10)
    viewer.set_user("vic")
    viewer.set_password("viewer-password")
    async with viewer:
        ns = await viewer.get_namespace_index("urn:edge:line2")
        try:
            await viewer.get_node(ua.NodeId("plc.setpoint", ns)).write_value(
                ua.DataValue(ua.Variant(10.0, ua.VariantType.Float)))
            raise AssertionError("a viewer must not write")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadUserAccessDenied
    assert site.sim.get_value("plc", "setpoint") == 150.0


SCALED_SITE = """
site: {{name: line3}}
buses: [{{name: net, type: modbus_tcp, timeout_ms: 100}}]
devices:
  - name: room
    bus: net
    port: {{port:room}}
    interval_ms: 100
    points:
      - {{name: temperature, address: 0, type: int16, scale: 0.1, unit: degC, sim: {{kind: constant, value: 84.6}},
          aggregate: {{windows: [1s], capacity_s: 60}}}}
      - {{name: current, address: 1, type: uint16, scale: 0.1, unit: A, sim: {{kind: constant, value: 9.8}}}}
      - {{name: setpoint, address: 2, type: int16, scale: 0.1, unit: degC, range: [0, 100], writable: true,
          sim: {{kind: constant, value: 20.0}}}}
      - {{name: count, address: 3, type: uint16, sim: {{kind: constant, value: 7}}}}
outputs:
  opcua:
    endpoint: opc.tcp://127.0.0.1:0/edge
    security_policies: [None]
    allow_security_none: true
    users_file: {users}
    pki_dir: {pki}
"""


async def test_scaled_integers_reach_clients_as_doubles_with_their_decimals(make_site, tmp_path):
    """Issue 14: a scaled int16 of 84.6 degC reached OPC UA clients as Int16 84 (live, history
    and aggregates), and 0.5 degC could not be written. Read with asyncua's client, checked
    against the simulator's engineering values."""
    from edge.security.users import add_user

    users = tmp_path / "users.txt"
    add_user(users, "olga", "operator", "operator-password")
    site = await make_site(SCALED_SITE.format(users=users, pki=server_pki(tmp_path)))
    assert await wait_until(lambda: site.diag("room").polls_ok >= 3, 5)
    client = Client(site.app.outputs.opcua.endpoint_url, timeout=10)
    client.set_user("olga")
    client.set_password("operator-password")
    async with client:
        ns = await client.get_namespace_index("urn:edge:line3")
        for name, expected in (("temperature", 84.6), ("current", 9.8), ("setpoint", 20.0)):
            node = client.get_node(ua.NodeId(f"room.{name}", ns))
            dv = await node.read_data_value()
            assert dv.Value.VariantType == ua.VariantType.Double, name
            assert dv.Value.Value == expected == site.value("room", name)[0], name
            assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double), name
        count = client.get_node(ua.NodeId("room.count", ns))
        dv = await count.read_data_value()
        assert dv.Value.VariantType == ua.VariantType.UInt16 and dv.Value.Value == 7

        temperature = client.get_node(ua.NodeId("room.temperature", ns))
        await asyncio.sleep(0.3)
        history = await temperature.read_raw_history(datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC),
                                                     return_bounds=False)
        assert history and all(h.Value.Value == 84.6 and h.Value.VariantType == ua.VariantType.Double
                               for h in history)

        setpoint = client.get_node(ua.NodeId("room.setpoint", ns))
        await setpoint.write_value(ua.DataValue(ua.Variant(0.5, ua.VariantType.Double)))
        assert site.sim.get_value("room", "setpoint") == 0.5
        try:
            await setpoint.write_value(ua.DataValue(ua.Variant(0.55, ua.VariantType.Double)))
            raise AssertionError("a value between two steps of the resolution must be refused")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadOutOfRange
        assert site.sim.get_value("room", "setpoint") == 0.5
    assert await asyncio.to_thread(site.app.writes.audit.flush, 5)
    audit = (site.loaded.data_dir / "audit.log").read_text()
    assert "not a multiple of its resolution 0.1" in audit
