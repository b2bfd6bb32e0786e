"""The register image of the simulated plant: every device's four tables in shared numpy arrays.

All register tables (holding, input) of all devices live in one uint16 array and all bit
tables (coils, discrete inputs) in one uint8 array, so that the signal update can scatter a
whole plant's new values with one fancy-index assignment per (dtype, order) group. Each
device sees its tables as views. A table is as long as its highest point ends: reads beyond
it get exception 2 (illegal data address), as from a real device.

Each register/bit also has an access code: unmapped (reads as 0, writes are kept), a
read-only point (writes get exception 2) or a writable point (writes are kept and never
overwritten by the signal update).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymodbus.constants import ExcCodes

from drivers.modbus.points import RegisterPoint, Table

from .encoding import decode_exact, decode_value, encode_value, permute

UNMAPPED, READ_ONLY, WRITABLE = 0, 1, 2

#: Modbus function code -> the table it reads or writes.
FUNCTION_TABLES: dict[int, Table] = {
    1: Table.COIL,
    5: Table.COIL,
    15: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    6: Table.HOLDING,
    16: Table.HOLDING,
    22: Table.HOLDING,
    23: Table.HOLDING,
    4: Table.INPUT,
}


def table_sizes(points: Sequence[RegisterPoint]) -> dict[Table, int]:
    """Length of each table: the end of its highest point (0 when the table holds no point)."""
    sizes = dict.fromkeys(Table, 0)
    for p in points:
        sizes[p.table] = max(sizes[p.table], p.end)
    return sizes


@dataclass(slots=True)
class Layout:
    """Where one device's tables live in the plant-wide arrays."""

    offsets: dict[Table, int]
    sizes: dict[Table, int]


class PlantMemory:
    """Plant-wide arrays: ``regs``/``reg_access`` (uint16/uint8) and ``bits``/``bit_access`` (uint8)."""

    def __init__(self, devices: Sequence[Sequence[RegisterPoint]]) -> None:
        self.layouts: list[Layout] = []
        reg_total = bit_total = 0
        for points in devices:
            sizes = table_sizes(points)
            offsets: dict[Table, int] = {}
            for table in Table:
                if table.is_bits:
                    offsets[table], bit_total = bit_total, bit_total + sizes[table]
                else:
                    offsets[table], reg_total = reg_total, reg_total + sizes[table]
            self.layouts.append(Layout(offsets, sizes))
        self.regs = np.zeros(reg_total, dtype=np.uint16)
        self.reg_access = np.zeros(reg_total, dtype=np.uint8)
        self.bits = np.zeros(bit_total, dtype=np.uint8)
        self.bit_access = np.zeros(bit_total, dtype=np.uint8)

    def arrays(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        return (self.bits, self.bit_access) if table.is_bits else (self.regs, self.reg_access)


class DeviceImage:
    """One device's view of the plant memory, with Modbus-level read and write."""

    def __init__(self, memory: PlantMemory, index: int, points: Sequence[RegisterPoint]) -> None:
        self.memory = memory
        self.layout = memory.layouts[index]
        self.points = {p.name: p for p in points}
        for p in points:
            _, access = memory.arrays(p.table)
            start = self.global_index(p.table, p.address)
            code = WRITABLE if p.writable else READ_ONLY
            access[start : start + p.count] = np.maximum(access[start : start + p.count], code)

    def global_index(self, table: Table, address: int) -> int:
        return self.layout.offsets[table] + address

    def view(self, table: Table) -> np.ndarray:
        data, _ = self.memory.arrays(table)
        start = self.layout.offsets[table]
        return data[start : start + self.layout.sizes[table]]

    def access(self, table: Table) -> np.ndarray:
        _, acc = self.memory.arrays(table)
        start = self.layout.offsets[table]
        return acc[start : start + self.layout.sizes[table]]

    def in_range(self, table: Table, address: int, count: int) -> bool:
        return address >= 0 and count >= 1 and address + count <= self.layout.sizes[table]

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """Values for a read request, or exception 2 outside the table."""
        if not self.in_range(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        values = self.view(table)[address : address + count]
        return [bool(v) for v in values] if table.is_bits else values.tolist()

    def write(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        """Store a client's write; exception 2 outside the table or onto a read-only point."""
        count = len(values)
        if not self.in_range(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        if (self.access(table)[address : address + count] == READ_ONLY).any():
            return ExcCodes.ILLEGAL_ADDRESS
        self.view(table)[address : address + count] = np.asarray(values, dtype=np.int64)
        return None

    # --- point-level access for the control API -------------------------------------------
    def point(self, name: str) -> RegisterPoint:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"no point {name!r}; points are {sorted(self.points)}") from None

    def set_point(self, point: RegisterPoint, value: float | str) -> None:
        """Encode an engineering value into the point's registers (pymodbus encoder).

        Raises ValueError naming the point when the value does not fit its type.
        """
        if point.dtype != "string" and (isinstance(value, str) or value is None):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"point {point.name!r} is {point.dtype}: give a number, not {value!r}") from None
        view = self.view(point.table)
        if point.table.is_bits:
            view[point.address] = 1 if float(value) else 0
        elif point.dtype == "bool" and point.count > 1:  # a bit of a 32/64-bit word, in the point's order
            abcd = permute([int(w) for w in view[point.address:point.end]], point.order)
            word = int.from_bytes(b"".join(w.to_bytes(2, "big") for w in abcd), "big")
            mask = 1 << (point.bit or 0)
            word = (word | mask) if float(value) else (word & ~mask)
            abcd = [(word >> (16 * (point.count - 1 - i))) & 0xFFFF for i in range(point.count)]
            view[point.address:point.end] = permute(abcd, point.order)
        elif point.dtype == "bool":
            mask = 1 << (point.bit or 0)
            word = int(view[point.address])
            view[point.address] = (word | mask) if float(value) else (word & ~mask & 0xFFFF)
        else:
            view[point.address : point.end] = encode_value(point, value)

    def get_point(self, point: RegisterPoint) -> float | str:
        """Decode the point's current registers to an engineering value (pymodbus decoder)."""
        view = self.view(point.table)
        if point.table.is_bits:
            return float(view[point.address])
        return decode_value(point, view[point.address : point.end].tolist())

    def held_point(self, point: RegisterPoint) -> float | str:
        """The point's current registers read exactly (:func:`~.encoding.decode_exact`: 97 x 0.1 is 9.7)."""
        view = self.view(point.table)
        if point.table.is_bits:
            return float(view[point.address])
        return decode_exact(point, view[point.address : point.end].tolist())
