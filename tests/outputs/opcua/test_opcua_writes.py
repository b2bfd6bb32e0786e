"""Client writes through the OPC UA server into a real pymodbus server's registers.

The writer here is a small stand-in for the lead's write path (bus queue, audit log): it
writes with a real pymodbus client to a real pymodbus server and reads the register back.
The values are checked with a second, independent pymodbus client.
"""
from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, config, make_plant
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.core.model import WriteResult, WriteStatus
from edge.outputs.opcua.server import OpcUaServer

# meter1 register map of the stand-in writer: tag -> (holding register, dtype)
REGISTERS = {"setpoint": (10, "float32"), "mode": (12, "uint16"), "counter": (500, "uint16")}  # 500: not on device


class ModbusWriter:
    """Writes tags of meter1 to a real Modbus device and keeps an audit trail of every call."""

    def __init__(self, port: int, plant) -> None:  # noqa: ANN001
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1)
        self.tags = {t.id: t for t in plant.tags}
        self.audit: list[tuple[str, str, str, object, str]] = []
        self.delay_s = 0.0

    async def __call__(self, tag_id: int, value, user: str, source: str) -> WriteResult:  # noqa: ANN001
        tag = self.tags[tag_id]
        await asyncio.sleep(self.delay_s)
        if not self.client.connected:
            await self.client.connect()
        address, dtype = REGISTERS[tag.name]
        cdt = {"float32": self.client.DATATYPE.FLOAT32, "uint16": self.client.DATATYPE.UINT16}[dtype]
        regs = self.client.convert_to_registers(value, cdt)
        resp = await self.client.write_registers(address, regs, device_id=1)
        if resp.isError():
            status = WriteStatus.BAD_OUT_OF_RANGE if resp.exception_code == 3 else WriteStatus.BAD_COMM_ERROR
            self.audit.append((user, source, tag.key, value, status.name))
            return WriteResult(status, f"exception {resp.exception_code}")
        back = await self.client.read_holding_registers(address, count=len(regs), device_id=1)
        read_back = self.client.convert_from_registers(back.registers, cdt)
        status = WriteStatus.GOOD if read_back == value or abs(read_back - value) < 1e-6 else WriteStatus.BAD_COMM_ERROR
        self.audit.append((user, source, tag.key, value, status.name))
        return WriteResult(status, read_back=read_back)


@pytest.fixture
async def modbus_device():
    device = SimDevice(id=1, simdata=[SimData(0, count=100, values=0, datatype=DataType.REGISTERS)])
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))  # port 0: the listener reports the port it got
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    checker = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1)
    assert await checker.connect(), "pymodbus server does not answer"
    try:
        yield port, checker
    finally:
        checker.close()
        await server.shutdown()


@pytest.fixture
async def writing_server(users_file, modbus_device):
    port, checker = modbus_device
    plant = make_plant()
    writer = ModbusWriter(port, plant)
    srv = OpcUaServer(plant, config(users_file, write_timeout_ms=300), writer=writer)
    await srv.start()
    try:
        yield srv, writer, checker
    finally:
        await srv.stop()
        writer.client.close()


def session(srv: OpcUaServer, user: str) -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def write(c: Client, nodeid: str, variant: ua.Variant) -> int:
    try:
        await c.get_node(nodeid).write_value(ua.DataValue(variant))
    except ua.UaStatusCodeError as e:
        return e.code
    return ua.StatusCodes.Good


async def holding(checker: AsyncModbusTcpClient, address: int, dtype) -> object:  # noqa: ANN001
    regs = (await checker.read_holding_registers(address, count=2 if dtype == checker.DATATYPE.FLOAT32 else 1,
                                                 device_id=1)).registers
    return checker.convert_from_registers(regs, dtype)


async def test_operator_write_reaches_device_registers(writing_server) -> None:
    srv, writer, checker = writing_server
    ns = srv.ns
    async with session(srv, "olga") as c:
        assert await write(c, f"ns={ns};s=meter1.setpoint", ua.Variant(42.5, ua.VariantType.Float)) == ua.StatusCodes.Good
        assert await write(c, f"ns={ns};s=meter1.mode", ua.Variant(3, ua.VariantType.UInt16)) == ua.StatusCodes.Good
    assert await holding(checker, 10, checker.DATATYPE.FLOAT32) == 42.5
    assert await holding(checker, 12, checker.DATATYPE.UINT16) == 3
    assert writer.audit == [("olga", "opcua", "meter1.setpoint", 42.5, "GOOD"), ("olga", "opcua", "meter1.mode", 3, "GOOD")]
    assert srv.writes["ok"] == 2


async def test_viewer_and_non_writable_are_refused_before_the_device(writing_server) -> None:
    srv, writer, checker = writing_server
    ns = srv.ns
    async with session(srv, "victor") as c:
        code = await write(c, f"ns={ns};s=meter1.setpoint", ua.Variant(10.0, ua.VariantType.Float))
        assert code == ua.StatusCodes.BadUserAccessDenied
    async with session(srv, "olga") as c:
        code = await write(c, f"ns={ns};s=meter1.voltage", ua.Variant(10.0, ua.VariantType.Float))
        assert code == ua.StatusCodes.BadNotWritable
        # Other attributes and the Status object are not writable either.
        code = await write(c, f"ns={ns};s=meter1#status.State", ua.Variant("ONLINE", ua.VariantType.String))
        assert code == ua.StatusCodes.BadNotWritable
    assert writer.audit == []
    assert await holding(checker, 10, checker.DATATYPE.FLOAT32) == 0.0


async def test_type_and_range_checked_before_the_device(writing_server) -> None:
    srv, writer, checker = writing_server
    ns = srv.ns
    async with session(srv, "olga") as c:
        sp = f"ns={ns};s=meter1.setpoint"
        assert await write(c, sp, ua.Variant(150.0, ua.VariantType.Float)) == ua.StatusCodes.BadOutOfRange
        assert await write(c, sp, ua.Variant("12", ua.VariantType.String)) == ua.StatusCodes.BadTypeMismatch
        assert await write(c, sp, ua.Variant(True, ua.VariantType.Boolean)) == ua.StatusCodes.BadTypeMismatch
        mode = f"ns={ns};s=meter1.mode"
        assert await write(c, mode, ua.Variant(2, ua.VariantType.UInt16)) == ua.StatusCodes.BadOutOfRange  # not an enum state
        assert await write(c, mode, ua.Variant(1.5, ua.VariantType.Double)) == ua.StatusCodes.BadTypeMismatch
        # An integral Double is accepted for an integer tag (clients such as UaExpert send Double).
        assert await write(c, mode, ua.Variant(1.0, ua.VariantType.Double)) == ua.StatusCodes.Good
    assert [a[2:] for a in writer.audit] == [("meter1.mode", 1, "GOOD")]


async def test_device_refusal_and_timeout_reach_the_client(writing_server) -> None:
    srv, writer, checker = writing_server
    ns = srv.ns
    async with session(srv, "olga") as c:
        # Register 500 does not exist on the device: it answers with a Modbus exception.
        code = await write(c, f"ns={ns};s=meter1.counter", ua.Variant(7, ua.VariantType.UInt16))
        assert code in (ua.StatusCodes.BadCommunicationError, ua.StatusCodes.BadOutOfRange)
        assert writer.audit[-1][4] in ("BAD_COMM_ERROR", "BAD_OUT_OF_RANGE")
        writer.delay_s = 1.0  # the bus is busy longer than write_timeout_ms (300)
        code = await write(c, f"ns={ns};s=meter1.setpoint", ua.Variant(1.0, ua.VariantType.Float))
        assert code == ua.StatusCodes.BadTimeout
    assert srv.writes["failed"] == 2
