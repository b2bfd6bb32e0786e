"""Writing one point to a device: encode, the right function code, read back, compare.

Runs as one exclusive operation on the line at write priority, so a read-modify-write of a
bit in a register cannot interleave with another master transaction from this appliance.
"""
from __future__ import annotations

import math

from drivers.modbus.bus import PRIORITY_WRITE, Line
from drivers.modbus.client import (
    ModbusConnectionError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
    Transport,
)
from drivers.modbus.codec import EncodeError, EncodeRangeError, decode_point, encode, encode_bits
from drivers.modbus.points import RegisterPoint, Table
from edge.core.model import WriteResult, WriteStatus


async def write_point(line: Line, unit: int, point: RegisterPoint, value: object, timeout_s: float) -> WriteResult:
    """Write ``value`` (engineering units) to ``point`` and report exactly what happened."""
    if not point.writable or not point.table.writable:
        return WriteResult(WriteStatus.BAD_NOT_WRITABLE, f"{point.name} is not writable")
    if point.dtype == "bool" and point.table == Table.HOLDING:
        op = _bit_in_register_op(unit, point, value, timeout_s)
    elif point.sf_address is not None:
        op = _scale_factor_op(unit, point, value, timeout_s)
    else:
        try:
            words = encode(point, value)
        except EncodeError as exc:
            return WriteResult(_encode_status(exc), str(exc))
        op = _plain_op(unit, point, words, timeout_s)
    try:
        return await line.run(op, PRIORITY_WRITE)
    except EncodeError as exc:
        return WriteResult(_encode_status(exc), str(exc))
    except ModbusExceptionResponse as exc:
        status = WriteStatus.BAD_OUT_OF_RANGE if exc.code in (2, 3) else WriteStatus.BAD_COMM_ERROR
        return WriteResult(status, f"device refused the write: {exc}")
    except ModbusTimeout:
        return WriteResult(WriteStatus.BAD_TIMEOUT, f"no answer within {timeout_s * 1e3:.0f} ms")
    except (ModbusConnectionError, ModbusFrameError) as exc:
        return WriteResult(WriteStatus.BAD_COMM_ERROR, str(exc))


def _encode_status(exc: EncodeError) -> WriteStatus:
    return WriteStatus.BAD_OUT_OF_RANGE if isinstance(exc, EncodeRangeError) else WriteStatus.BAD_TYPE_MISMATCH


def _plain_op(unit: int, point: RegisterPoint, words: list, timeout_s: float):
    async def op(t: Transport) -> WriteResult:
        if point.table == Table.COIL:
            await t.write_coils(unit, point.address, words, timeout_s)
        else:
            await t.write_registers(unit, point.address, words, timeout_s)
        back = await t.read(unit, point.table, point.address, point.count, timeout_s)
        return _compare(point, words, back)

    return op


def _bit_in_register_op(unit: int, point: RegisterPoint, value: object, timeout_s: float):
    async def op(t: Transport) -> WriteResult:
        current = await t.read(unit, Table.HOLDING, point.address, point.count, timeout_s)
        words = encode_bits(point, [int(r) for r in current], value)
        await t.write_registers(unit, point.address, words, timeout_s)
        back = await t.read(unit, Table.HOLDING, point.address, point.count, timeout_s)
        return _compare(point, words, back)

    return op


def _scale_factor_op(unit: int, point: RegisterPoint, value: object, timeout_s: float):
    """Read the point's scale factor, write value / 10**sf, read back with the same factor."""
    async def op(t: Transport) -> WriteResult:
        assert point.sf_address is not None
        regs = await t.read(unit, point.table, point.sf_address, 1, timeout_s)
        sf = int(regs[0]) - 0x10000 if int(regs[0]) >= 0x8000 else int(regs[0])
        words = encode(point, value, sf)  # EncodeError propagates to write_point
        await t.write_registers(unit, point.address, words, timeout_s)
        back = await t.read(unit, point.table, point.address, point.count, timeout_s)
        return _compare(point, words, back, sf)

    return op


def _compare(point: RegisterPoint, written: list, back, sf: int | None = None) -> WriteResult:
    read_back = decode_point(point, back, sf)
    if [int(v) for v in back] != [int(v) for v in written]:
        return WriteResult(WriteStatus.BAD_COMM_ERROR,
                           f"read-back differs: device holds {read_back!r} after the write", _plain(read_back))
    return WriteResult(WriteStatus.GOOD, "written and read back", _plain(read_back))


def _plain(value: object) -> float | str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        f = float(value)
        return f if not math.isnan(f) else None
    return None
