"""The address space as a real asyncua client sees it: tree, types, units, ranges, status objects."""
from __future__ import annotations

import time

from asyncua import Client, ua
from opcua_helpers import PASSWORDS, make_plant

from edge.core.model import DeviceDiagnostics, DeviceState
from edge.outputs.opcua.model import unece_unit
from edge.outputs.opcua.server import OpcUaServer


def client_for(srv: OpcUaServer, user: str = "victor") -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def test_browse_tree_types_units_ranges(running: OpcUaServer) -> None:
    ns = running.ns
    async with client_for(running) as c:
        assert await c.get_namespace_index("urn:edge:plant1") == ns
        objects = c.nodes.objects
        site = await objects.get_child([f"{ns}:plant1"])
        bus = await site.get_child([f"{ns}:line1"])
        devices = sorted([(await n.read_browse_name()).Name for n in await bus.get_children()])
        assert devices == ["meter1", "meter2"]
        meter = await bus.get_child([f"{ns}:meter1"])
        names = {(await n.read_browse_name()).Name for n in await meter.get_children()}
        assert {"voltage", "current", "energy", "setpoint", "running", "mode", "serial", "Status"} <= names

        voltage = c.get_node(f"ns={ns};s=meter1.voltage")
        assert (await voltage.get_parent()).nodeid == meter.nodeid
        assert await voltage.read_data_type() == ua.NodeId(ua.ObjectIds.Float)
        assert await voltage.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
        assert (await voltage.read_description()).Text == "phase voltage L1"
        eurange = await (await voltage.get_child(["0:EURange"])).read_value()
        assert (eurange.Low, eurange.High) == (0.0, 400.0)
        units = await (await voltage.get_child(["0:EngineeringUnits"])).read_value()
        assert units.DisplayName.Text == "V"
        assert units.UnitId == (ord("V") << 16) | (ord("L") << 8) | ord("T")  # UNECE "VLT"
        assert units.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"

        energy = c.get_node(f"ns={ns};s=meter1.energy")
        assert await energy.read_data_type() == ua.NodeId(ua.ObjectIds.UInt32)
        setpoint = c.get_node(f"ns={ns};s=meter1.setpoint")
        assert (await (await setpoint.get_child(["0:EngineeringUnits"])).read_value()).UnitId == unece_unit("°C").UnitId
        access = await setpoint.read_attribute(ua.AttributeIds.AccessLevel)
        assert access.Value.Value & (1 << ua.AccessLevel.CurrentWrite)
        access = await voltage.read_attribute(ua.AttributeIds.AccessLevel)
        assert not access.Value.Value & (1 << ua.AccessLevel.CurrentWrite)

        running_tag = c.get_node(f"ns={ns};s=meter1.running")
        assert await running_tag.read_type_definition() == ua.NodeId(ua.ObjectIds.TwoStateDiscreteType)
        assert await running_tag.read_data_type() == ua.NodeId(ua.ObjectIds.Boolean)
        assert (await (await running_tag.get_child(["0:TrueState"])).read_value()).Text == "running"
        assert (await (await running_tag.get_child(["0:FalseState"])).read_value()).Text == "stopped"

        mode = c.get_node(f"ns={ns};s=meter1.mode")
        assert await mode.read_type_definition() == ua.NodeId(ua.ObjectIds.MultiStateValueDiscreteType)
        enum_values = await (await mode.get_child(["0:EnumValues"])).read_value()
        assert [(e.Value, e.DisplayName.Text) for e in enum_values] == [(0, "off"), (1, "auto"), (3, "manual")]

        serial = c.get_node(f"ns={ns};s=meter1.serial")
        assert await serial.read_data_type() == ua.NodeId(ua.ObjectIds.String)

        # Before the first poll: no value, BadWaitingForInitialData.
        dv = await voltage.read_data_value(raise_on_bad_status=False)
        assert dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData


async def test_device_status_object(running: OpcUaServer) -> None:
    ns = running.ns
    diag = DeviceDiagnostics(name="meter2", bus="line1", state=DeviceState.OFFLINE, polls_ok=10, polls_failed=3,
                             requests=13, timeouts=2, exceptions={2: 1, 6: 4}, crc_errors=1,
                             last_error="timeout after 500 ms", last_error_ns=time.time_ns(),
                             plugin="acme-meter", plugin_version="1.2.0", latency_p99_ms=12.5)
    running.update_device(diag)
    async with client_for(running) as c:
        status = c.get_node(f"ns={ns};s=meter2#status")
        assert (await status.read_browse_name()).Name == "Status"
        values = {(await n.read_browse_name()).Name: await n.read_value() for n in await status.get_children()}
    assert values["State"] == "OFFLINE"
    assert values["LastError"] == "timeout after 500 ms"
    assert (values["PollsOk"], values["PollsFailed"], values["Timeouts"]) == (10, 3, 2)
    assert values["Exceptions"] == 5 and values["CrcErrors"] == 1
    assert (values["Plugin"], values["PluginVersion"]) == ("acme-meter", "1.2.0")
    assert values["LatencyP99Ms"] == 12.5


async def test_anonymous_refused_unless_configured(running: OpcUaServer) -> None:
    c = Client(running.endpoint_url, timeout=5)
    try:
        await c.connect()
    except ua.UaStatusCodeError as e:
        assert e.code in (ua.StatusCodes.BadIdentityTokenInvalid, ua.StatusCodes.BadIdentityTokenRejected,
                          ua.StatusCodes.BadUserAccessDenied)
    else:
        await c.disconnect()
        raise AssertionError("anonymous session accepted while anonymous is off")


async def test_wrong_password_refused(running: OpcUaServer) -> None:
    c = Client(running.endpoint_url, timeout=5)
    c.set_user("olga")
    c.set_password("not-her-password")
    try:
        await c.connect()
    except ua.UaStatusCodeError as e:
        assert e.code == ua.StatusCodes.BadUserAccessDenied
    else:
        await c.disconnect()
        raise AssertionError("wrong password accepted")
    assert running.users is not None and running.users.refused == 1


async def test_build_10k_tags_is_fast_and_grouped_per_device(users_file) -> None:
    from opcua_helpers import config

    plant = make_plant(devices=100, analog_per_device=92)  # 100 devices x 100 tags
    assert len(plant.tags) == 10_000
    srv = OpcUaServer(plant, config(users_file), tune_gc=False)
    t0 = time.perf_counter()
    await srv.start()
    try:
        startup = time.perf_counter() - t0
        async with client_for(srv) as c:
            node = c.get_node(f"ns={srv.ns};s=meter100.ai91")
            assert (await node.read_browse_name()).Name == "ai91"
            assert len(await c.get_node(f"ns={srv.ns};s=meter50").get_children()) == 101  # 100 tags + Status
    finally:
        await srv.stop()
    print(f"10,000 tags: address space {srv.build_s:.2f} s, start-up {startup:.2f} s")
    # Not a timing assertion: the build figure is reported; the benchmark measures 50,000.
