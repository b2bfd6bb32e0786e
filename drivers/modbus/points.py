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
#: table takes one bit, in a register table the registers of its ``word`` with RegisterPoint.bit set).
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
#: Integer types a bool can be a bit of (``RegisterPoint.word``), and their widths in bits.
BIT_WORDS: dict[str, int] = {"uint16": 16, "uint32": 32, "uint64": 64}
#: A scale-factor register holds a power of ten in this range; outside it the values are bad.
SCALE_FACTOR_LIMIT = 10
#: The int16 value that marks a scale factor as not implemented (SunSpec).
SCALE_FACTOR_SENTINEL = -32768

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

    Engineering value = raw * 10**sf * scale + offset, where ``sf`` is the int16 held at
    ``sf_address`` (same table) when the point has a scale-factor register, else 0. ``low``/``high``
    are the engineering range: with ``clamp`` a value outside is clamped, otherwise it is
    marked Bad_OutOfRange. ``invalid`` lists raw bit patterns (the value's bytes A.. as an
    unsigned integer, for floats too; for a bit, the pattern of its whole ``word``) that the
    device uses for "no valid value": such a sample is Bad_SensorFailure. ``nul_invalid``: the
    same for a string whose registers are all NUL. A bool in a register is bit ``bit`` of the
    integer ``word`` (uint16, uint32, uint64; counted from the least significant bit after the
    word and byte order are applied; a 16-bit word is taken as the protocol delivers it).
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
    invalid: tuple[int, ...] = ()  # raw bit patterns meaning "no valid value" (sentinels)
    nul_invalid: bool = False  # a string of NULs only means "no valid value"
    word: str | None = None  # a bool's integer word: uint16 (None), uint32 or uint64
    sf_address: int | None = None  # the int16 register holding this point's power of ten

    @property
    def bit_word(self) -> str:
        """The integer type a register bit is taken from (uint16 unless ``word`` says otherwise)."""
        return self.word or "uint16"

    @property
    def scaling(self) -> Scaling:
        """How the codec turns raw into engineering values (see :func:`scaling_of`)."""
        return scaling_of(self.scale, self.offset)

    @property
    def count(self) -> int:
        """Registers (or bits, in a bit table) that this point spans."""
        if self.table.is_bits:
            return 1
        if self.dtype == "string":
            return self.length
        if self.dtype == "bool":
            return REGISTER_COUNT[self.bit_word]
        return REGISTER_COUNT[self.dtype]

    @property
    def end(self) -> int:
        """First address after this point."""
        return self.address + self.count

    @property
    def span_start(self) -> int:
        """First register one read of this point needs (its scale-factor register included)."""
        return self.address if self.sf_address is None else min(self.address, self.sf_address)

    @property
    def span_end(self) -> int:
        """First address after the registers one read of this point needs."""
        return self.end if self.sf_address is None else max(self.end, self.sf_address + 1)


@dataclass(frozen=True, slots=True)
class Scaling:
    """Engineering value = (raw * mul + add) / div: ``raw * scale + offset`` computed exactly.

    A decimal scale such as 0.1 has no exact double, so ``97 * 0.1`` gives 9.700000000000001.
    When scale and offset are whole multiples of 1/10**k (k <= 9) the codec multiplies by the
    integer ``scale * 10**k``, adds the integer ``offset * 10**k`` (both exact for registers
    of up to 32 bits) and divides once by ``10**k``: one rounding, so the result is the double
    nearest to the decimal value (97 x 0.1 -> 9.7). Other scales keep ``div = 1``.
    """

    mul: float
    add: float
    div: float

    @property
    def identity(self) -> bool:
        return self.mul == 1.0 and self.add == 0.0 and self.div == 1.0

    def apply(self, raw: float) -> float:
        """One engineering value, by the same three operations as the block codec."""
        return (raw * self.mul + self.add) / self.div

    def raw_steps(self, value: float) -> float:
        """The raw value (not rounded) that gives ``value``: the inverse of :meth:`apply`."""
        return (value * self.div - self.add) / self.mul


def _whole(x: float) -> int | None:
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) and abs(r) < 2**53 else None


def scaling_of(scale: float, offset: float) -> Scaling:
    """The exact form of ``raw * scale + offset`` (see :class:`Scaling`)."""
    import math

    if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
        return Scaling(scale, offset, 1.0)
    for k in range(10):
        den = 10**k
        mul, add = _whole(scale * den), _whole(offset * den)
        if mul is not None and add is not None and mul != 0:
            return Scaling(float(mul), float(add), float(den))
    return Scaling(scale, offset, 1.0)
