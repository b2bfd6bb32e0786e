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


SCALED_SITE = """
site: {name: ranges}
buses: [{name: net, type: modbus_tcp, port: 1502}]
devices:
  - name: drive
    bus: net
    points:
      - {name: current, address: 0, type: uint16, scale: 0.1, unit: A}
      - {name: temp, address: 1, type: int16, scale: 0.1, offset: -40, unit: degC}
      - {name: ranged, address: 2, type: uint16, scale: 0.1, range: [0, 100], unit: "%"}
      - {name: counter, address: 3, type: uint32, unit: h}
      - {name: level, address: 5, type: float32, unit: m}
      - {name: setpoint, address: 7, type: int16, scale: 0.1, value_type: float32, writable: true, unit: Hz}
"""


def scaled_site(tmp_path: Path, text: str = SCALED_SITE):  # noqa: ANN201 - a LoadedConfig
    from edge.config.loader import load_config

    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return load_config(path, env={})


async def test_eurange_of_a_scaled_value_without_a_range_is_its_type_range(users_file: Path, tmp_path: Path) -> None:
    """Point 6: EURange where a range is known, configured or raw limits x scale (+ offset): a uint16 x 0.1
    holds 0..6553.5. Unscaled integers (the DataType says it) and floats get none. asyncua and node-opcua."""
    plant = scaled_site(tmp_path).plant
    srv = OpcUaServer(plant, config(users_file))
    await srv.start()
    try:
        ranges = {}
        async with client(srv, "victor") as c:
            for name in ("current", "temp", "ranged", "counter", "level", "setpoint"):
                node = c.get_node(ua.NodeId(f"drive.{name}", srv.ns, ua.NodeIdType.String))
                props = {(await p.read_browse_name()).Name: p for p in await node.get_properties()}
                typedef = (await node.read_type_definition()).Identifier
                rng = await props["EURange"].read_value() if "EURange" in props else None
                ranges[name] = ((rng.Low, rng.High) if rng else None, typedef)
        analog, base = ua.ObjectIds.AnalogItemType, ua.ObjectIds.BaseAnalogType
        assert ranges == {"current": ((0.0, 6553.5), analog), "temp": ((-3316.8, 3236.7), analog),
                          "ranged": ((0.0, 100.0), analog), "counter": (None, base), "level": (None, base),
                          "setpoint": ((-3276.8, 3276.7), analog)}
        reads = await node_ua(srv.endpoint_url, "victor", PASSWORDS["victor"],
                              [{"op": "read", "nodeId": f"ns={srv.ns};s=drive.current#EURange"}], tmp_path / "pki")
        assert reads[0]["value"]["low"] == 0 and reads[0]["value"]["high"] == 6553.5
    finally:
        await srv.stop()


async def test_value_type_float32_serves_a_scaled_value_as_float(users_file: Path, tmp_path: Path) -> None:
    """Point 1: "Float where the tag's config says so": ``value_type: float32`` on a scaled point serves
    it as Float (DataType and values, asyncua and node-opcua); a Float written by a client is its
    shortest decimal, so 9.7f lands on the 0.1 grid as 9.7."""
    import numpy as np

    from edge.core.model import SampleBatch, WriteResult, WriteStatus

    plant = scaled_site(tmp_path).plant
    sp = plant.tag_by_key()["drive.setpoint"]
    assert (sp.dtype, sp.raw_dtype, sp.resolution) == ("float32", "int16", 0.1)
    written: list[object] = []

    async def writer(tag_id: int, value: object, user: str, source: str) -> WriteResult:
        written.append(value)
        return WriteResult(WriteStatus.GOOD)

    srv = OpcUaServer(plant, config(users_file), writer=writer)
    await srv.start()
    try:
        srv.consume(SampleBatch("drive", 1_767_225_600_000_000_000, np.array([sp.id], np.int32), np.array([9.7]),
                                np.zeros(1, np.uint8)))
        async with client(srv, "olga") as c:
            node = c.get_node(ua.NodeId("drive.setpoint", srv.ns, ua.NodeIdType.String))
            assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Float)
            dv = await node.read_data_value()
            assert dv.Value.VariantType == ua.VariantType.Float and dv.Value.Value == float(np.float32(9.7))
            await node.write_value(ua.DataValue(ua.Variant(float(np.float32(3276.7)), ua.VariantType.Float)))
        assert written == [3276.7]
        (read,) = await node_ua(srv.endpoint_url, "victor", PASSWORDS["victor"],
                                [{"op": "read", "nodeId": f"ns={srv.ns};s=drive.setpoint"}], tmp_path / "pki")
        assert read["dataType"] == "Float" and read["value"] == float(np.float32(9.7))
    finally:
        await srv.stop()


def test_value_type_is_for_scaled_values_only(tmp_path: Path) -> None:
    """A value_type on a value that is not scaled is a configuration error naming the file, line and key."""
    import pytest

    from edge.config.errors import ConfigError

    text = SCALED_SITE.replace("{name: counter, address: 3, type: uint32, unit: h}",
                               "{name: counter, address: 3, type: uint32, unit: h, value_type: float32}")
    with pytest.raises(ConfigError) as err:
        scaled_site(tmp_path, text)
    message = str(err.value)
    assert "value_type is for a scaled value" in message and "edge.yaml:11" in message, message
    doubles = scaled_site(tmp_path, SCALED_SITE.replace("value_type: float32", "value_type: float64"))
    assert doubles.plant.tag_by_key()["drive.setpoint"].dtype == "float64"
