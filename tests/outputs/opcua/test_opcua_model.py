"""The model a SCADA engineer expects (issue 14, point 6): UserAccessLevel per session role, EURange
only where a range is known, no empty EUInformation, UNECE codes for the shipped plugins' units,
MinimumSamplingInterval = the poll interval, this product's BuildInfo and an ApplicationUri unique
per appliance. Read with asyncua and node-opcua."""
from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Client, ua
from opcua_helpers import PASSWORDS, config, make_plant, node_ua

from edge.outputs.opcua.model import READ, WRITE, unece_unit
from edge.outputs.opcua.server import OpcUaServer

REPO = Path(__file__).resolve().parents[3]


def client(srv: OpcUaServer, user: str) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def test_user_access_level_follows_the_session_role(running: OpcUaServer, tmp_path: Path) -> None:
    """Issue 14: UserAccessLevel always equalled AccessLevel: viewers were offered write controls."""
    nid = ua.NodeId("meter1.setpoint", running.ns, ua.NodeIdType.String)
    async with client(running, "olga") as op, client(running, "victor") as viewer:
        assert await op.get_node(nid).read_attribute(ua.AttributeIds.AccessLevel) is not None
        op_level = (await op.get_node(nid).read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value
        viewer_level = (await viewer.get_node(nid).read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value
        access = (await viewer.get_node(nid).read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
    assert access & WRITE and op_level & WRITE
    assert viewer_level & READ and not viewer_level & WRITE
    (read,) = await node_ua(running.endpoint_url, "victor", PASSWORDS["victor"],
                            [{"op": "read", "nodeId": f"ns={running.ns};s=meter1.setpoint",
                              "attribute": "UserAccessLevel"}], tmp_path / "pki")
    assert read["value"] & READ and not read["value"] & WRITE


async def test_ranges_units_sampling_build_info_and_application_uri(running: OpcUaServer) -> None:
    ns = running.ns
    async with client(running, "victor") as c:
        voltage = c.get_node(ua.NodeId("meter1.voltage", ns, ua.NodeIdType.String))
        props = {(await p.read_browse_name()).Name: p for p in await voltage.get_properties()}
        assert (await props["EURange"].read_value()).High == 400.0
        assert (await props["EngineeringUnits"].read_value()).UnitId == unece_unit("V").UnitId
        assert await voltage.read_attribute(ua.AttributeIds.MinimumSamplingInterval) is not None
        assert (await voltage.read_attribute(ua.AttributeIds.MinimumSamplingInterval)).Value.Value == 1000.0
        # Issue 14: an unranged tag carried the raw type's limits (0..4294967295) as EURange
        energy = c.get_node(ua.NodeId("meter1.energy", ns, ua.NodeIdType.String))
        names = {(await p.read_browse_name()).Name for p in await energy.get_properties()}
        assert "EURange" not in names and "EngineeringUnits" in names
        # Issue 14: a unitless tag carried an empty EUInformation
        counter = c.get_node(ua.NodeId("meter1.counter", ns, ua.NodeIdType.String))
        assert "EngineeringUnits" not in {(await p.read_browse_name()).Name for p in await counter.get_properties()}
        # Issue 14: BuildInfo said "FreeOpcUa Python Server 1.0pre"
        build = await c.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo)).read_value()
        assert build.ProductName == "OT edge appliance" and "FreeOpcUa" not in build.ManufacturerName
        assert re.match(r"\d+\.\d+", build.SoftwareVersion)
        # Issue 14: every appliance had the ApplicationUri urn:edge:opcua-server
        servers = await c.find_servers()
        assert servers[0].ApplicationUri == f"urn:{socket.gethostname()}:edge:{running.plant.site}"


def test_every_unit_of_the_shipped_plugins_has_a_unece_code() -> None:
    units = set()
    for path in (REPO / "plugins").glob("*/points.yaml"):
        units |= {u.strip().strip('"') for u in re.findall(r"unit: *([^,}\n]+)", path.read_text())}
    missing = sorted(u for u in units if unece_unit(u).UnitId == -1)
    assert units and not missing, f"units without a UNECE code: {missing}"


async def test_port_zero_listens_on_a_free_port_and_advertises_it(users_file: Path) -> None:
    """Tests bind port 0 instead of guessing a free port: the server reports and advertises the bound one."""
    srv = OpcUaServer(make_plant(), config(users_file, endpoint="opc.tcp://127.0.0.1:0/edge"))
    await srv.start()
    try:
        port = urlparse(srv.endpoint_url).port
        assert port and port != 0
        async with client(srv, "victor") as c:
            endpoints = await c.get_endpoints()
            assert {urlparse(e.EndpointUrl).port for e in endpoints} == {port}
            assert await c.get_node(ua.NodeId("meter1.voltage", srv.ns, ua.NodeIdType.String)).read_browse_name()
    finally:
        await srv.stop()
