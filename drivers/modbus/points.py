"""Driver-level description of one Modbus point, independent of the YAML configuration.

The configuration layer converts each configured tag into a :class:`RegisterPoint` once at
start-up: datasheet addresses are already converted to 0-based protocol (PDU) addresses
here, so nothing downstream deals with 1-based or 40001-style numbering.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"  # read FC1, write FC5/FC15
    DISCRETE = "discrete"  # read FC2, read-only
    HOLDING = "holding"  # read FC3, write FC6/FC16
    INPUT = "input"  # read FC4, read-only

    @property
    def is_bits(self) -> bool:
        return self in _BIT_TABLES  # a set of plain strings: no enum attribute lookups on the hot path

    @property
    def writable(self) -> bool:
        return self in _WRITABLE_TABLES


_BIT_TABLES = frozenset({"coil", "discrete"})
_WRITABLE_TABLES = frozenset({"coil", "holding"})


#: Registers taken by each data type ("string" uses RegisterPoint.length; "bool" in a bit
#: table takes one bit, in a register table one register with RegisterPoint.bit set).
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
DTYPES = (*REGISTER_COUNT, "string")

#: Byte and word orders, named by where bytes A (most significant) .. D land on the wire.
#: ABCD: big-endian words, high word first (Modbus standard). CDAB: low word first.
#: BADC: bytes swapped inside each word. DCBA: fully little-endian. For 64-bit values the
#: same rule extends to four words (CDAB = words in reverse order, and so on).
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

#: Protocol limits per request.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """One tag as the Modbus driver sees it.

    Engineering value = raw * scale + offset. ``low``/``high`` are the engineering range:
    with ``clamp`` a value outside is clamped, otherwise it is marked Bad_OutOfRange.
    """

    tag_id: int
    name: str
    table: Table
    address: int  # 0-based protocol address
    dtype: str
    order: str = "ABCD"
    bit: int | None = None  # bool taken from bit N (0 = least significant) of a register
    length: int = 0  # registers, for dtype "string" (two ASCII characters per register)
    scale: float = 1.0
    offset: float = 0.0
    low: float | None = None
    high: float | None = None
    clamp: bool = False
    enum: tuple[tuple[int, str], ...] | None = None  # raw value -> state name
    writable: bool = False

    @property
    def count(self) -> int:
        """Registers (or bits, in a bit table) that this point spans."""
        if self.table.is_bits:
            return 1
        if self.dtype == "string":
            return self.length
        return REGISTER_COUNT[self.dtype]

    @property
    def end(self) -> int:
        """First address after this point."""
        return self.address + self.count
