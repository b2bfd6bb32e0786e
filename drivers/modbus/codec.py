"""Modbus value codec: registers to engineering values and back.

The hot path is :class:`BlockCodec`: compiled once per read block, it turns the registers of
one response into a float64 value array and a uint8 quality array with a handful of numpy
operations for the whole block (one gather per data type, one scale/offset pass, one range
pass). The scalar helpers (:func:`decode_point`, :func:`encode`, :func:`encode_bit`) serve
writes and the technician commands; the tests prove that both paths agree and that encoding
and decoding are exact inverses.

Byte and word orders (see ``drivers.modbus.points.ORDERS``): value bytes A (most significant)
.. H. ``ABCD`` is big-endian, high word first. ``CDAB`` reverses the order of the words,
``BADC`` swaps the two bytes inside every word, ``DCBA`` does both. One-register types honour
the byte swap (``BADC``/``DCBA``); strings honour only the byte swap (their registers are
always read in address order); a bool taken from bit N of a register ignores the order (the
bit is counted in the register's value as the protocol delivers it).
"""
from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from drivers.modbus.points import (
    BIT_WORDS,
    DTYPES,
    ORDERS,
    REGISTER_COUNT,
    SCALE_FACTOR_LIMIT,
    SCALE_FACTOR_SENTINEL,
    RegisterPoint,
    Scaling,
    Table,
)
from edge.core.model import QUALITY_DTYPE, TAG_ID_DTYPE, VALUE_DTYPE, Quality, SampleBatch

#: Big-endian numpy dtype of every fixed-size type (the gathered bytes are always A..H).
_NP_DTYPE: dict[str, str] = {
    "int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4",
    "int64": ">i8", "uint64": ">u8", "float32": ">f4", "float64": ">f8",
}
_STRUCT: dict[str, str] = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}
INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}
FLOAT_TYPES = ("float32", "float64")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OUT_OF_RANGE = np.uint8(Quality.BAD_OUT_OF_RANGE)
_SENSOR = np.uint8(Quality.BAD_SENSOR_FAILURE)
#: Unsigned big-endian views of each width (value bytes A.. as one integer: the raw pattern).
_UNSIGNED = {2: ">u2", 4: ">u4", 8: ">u8"}
#: Exact powers of ten for scale factors: raw * 10**sf, or raw / 10**-sf for a negative sf
#: (one rounding: the double nearest to the decimal value).
POW10 = np.array([10.0**k for k in range(SCALE_FACTOR_LIMIT + 1)], dtype=np.float64)
_IDENTITY = Scaling(1.0, 0.0, 1.0)
_TRUE_WORDS = {"1", "true", "on", "yes"}
_FALSE_WORDS = {"0", "false", "off", "no"}

if TYPE_CHECKING:
    from drivers.modbus._codec_kernel import RegisterKernel as _Kernel

_kernel_class: type[_Kernel] | None = None  # the compiled decoder, where it is built
try:  # the compiled block decoder (drivers/modbus/_codec_kernel.pyx); the numpy path is its reference
    from drivers.modbus._codec_kernel import KINDS as _KERNEL_KINDS
    from drivers.modbus._codec_kernel import RegisterKernel, ShortResponse

    _kernel_class = RegisterKernel
    DECODER = "compiled"
except ImportError as exc:  # not built: every block decodes through numpy (same results, slower)
    DECODER = "numpy"
    warnings.warn(f"drivers.modbus.codec: compiled block decoder not available ({exc}); decoding with numpy, "
                  "which costs several times the CPU. Build with `pip install .`.", RuntimeWarning, stacklevel=2)

Value = bool | int | float | str
Registers = Sequence[int] | np.ndarray | bytes | bytearray | memoryview


class CodecError(ValueError):
    """A point the codec cannot handle (wrong type, order, bit, length, scale)."""


class EncodeError(ValueError):
    """A value that cannot be written to a point; the message says what is allowed."""


class EncodeRangeError(EncodeError):
    """The value has a usable type but lies outside what the point or its data type accepts
    (range, integer width, float32 limits, enum states, string length): Bad_OutOfRange."""


class DecodeError(ValueError):
    """A response that does not fit the block it answers (too short)."""


# ----------------------------------------------------------------------------- point checks


def check_point(point: RegisterPoint) -> None:
    """Raise :class:`CodecError` if the codec cannot decode ``point`` (names the allowed values)."""
    where = f"point {point.name!r}"
    if point.dtype not in DTYPES:
        raise CodecError(f"{where}: type {point.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")
    if point.order not in ORDERS:
        raise CodecError(f"{where}: order {point.order!r} is unknown; allowed: {', '.join(ORDERS)}")
    if point.table.is_bits and point.dtype != "bool":
        raise CodecError(f"{where}: a {point.table} holds one bit: type must be bool, not {point.dtype}")
    if point.word is not None and (point.dtype != "bool" or point.table.is_bits or point.word not in BIT_WORDS):
        raise CodecError(f"{where}: word {point.word!r} is for a bool in a register: one of {', '.join(BIT_WORDS)}")
    width = BIT_WORDS[point.bit_word]
    if not point.table.is_bits and point.dtype == "bool" and (point.bit is None or not 0 <= point.bit < width):
        raise CodecError(f"{where}: a bool in a {point.bit_word} needs bit 0-{width - 1}, got {point.bit}")
    _check_sentinels(point, where)
    if point.sf_address is not None and (point.dtype in ("bool", "string") or point.table.is_bits
                                         or not 0 <= point.sf_address <= 0xFFFF):
        raise CodecError(f"{where}: a scale-factor register (0..65535) is for numbers in registers, "
                         f"not {point.dtype} at {point.sf_address}")
    if point.dtype == "string" and not 1 <= point.length <= 125:
        raise CodecError(f"{where}: a string needs length 1-125 registers, got {point.length}")
    if point.scale == 0 or not math.isfinite(point.scale) or not math.isfinite(point.offset):
        raise CodecError(f"{where}: scale must be finite and not 0 and offset finite, "
                         f"got scale={point.scale} offset={point.offset}")


def _check_sentinels(point: RegisterPoint, where: str) -> None:
    if point.nul_invalid and point.dtype != "string":
        raise CodecError(f"{where}: 'all NUL' marks strings only, not {point.dtype}")
    if not point.invalid:
        return
    if point.dtype == "string" or point.table.is_bits:
        raise CodecError(f"{where}: invalid raw values are for numbers and register bits; strings use 'all NUL'")
    bits = 16 * point.count
    bad = [v for v in point.invalid if not 0 <= v < 1 << bits]
    if bad:
        raise CodecError(f"{where}: invalid raw value {bad[0]} does not fit {bits} bits (give it as the "
                         f"unsigned pattern 0..{(1 << bits) - 1:#x})")


def _swaps(order: str) -> tuple[bool, bool]:
    """(word order reversed, bytes swapped inside each word) for an order name."""
    return order in ("CDAB", "DCBA"), order in ("BADC", "DCBA")


def _wire_byte_index(order: str, words: int) -> np.ndarray:
    """For value bytes A.. (most significant first), their positions in the point's wire bytes."""
    word_swap, byte_swap = _swaps(order)
    k = np.arange(2 * words)
    word = k // 2
    if word_swap:
        word = words - 1 - word
    byte = k % 2
    if byte_swap:
        byte = 1 - byte
    return 2 * word + byte


def _as_wire_bytes(registers: Registers) -> np.ndarray:
    """The registers as a uint8 array of wire bytes (high byte of each register first)."""
    if isinstance(registers, (bytes, bytearray, memoryview)):
        return np.frombuffer(registers, dtype=np.uint8)
    if isinstance(registers, np.ndarray):
        if registers.dtype == np.dtype(">u2") and registers.flags.c_contiguous:
            return registers.view(np.uint8)
        if registers.dtype == np.uint8:  # already wire bytes (as the compiled decoder takes them)
            return registers
        return registers.astype(">u2").view(np.uint8)
    return np.array(registers, dtype=">u2").view(np.uint8)


# ----------------------------------------------------------------------------- block decoding


@dataclass(frozen=True, slots=True)
class _Slice:
    """Values of one kind (a fixed-size type, or register bits of one word width): a slice of
    the gathered bytes and of the staging arrays."""

    kind: str  # a fixed-size type, or "bit16"/"bit32"/"bit64"
    np_dtype: np.dtype
    unsigned: np.dtype  # the same bytes as an unsigned integer (the raw pattern)
    byte_start: int
    byte_stop: int
    stage_start: int
    stage_stop: int


_FMAX = float(np.finfo(np.float64).max)


def _value_bytes(point: RegisterPoint) -> np.ndarray:
    """Wire positions (relative to the point) of the value bytes A.. of a register point.

    A bit of a 16-bit word is taken as the protocol delivers the register (order ignored);
    wider words follow the point's order like any 32/64-bit value.
    """
    if point.dtype == "bool":
        words = REGISTER_COUNT[point.bit_word]
        return _wire_byte_index("ABCD" if words == 1 else point.order, words)
    return _wire_byte_index(point.order, REGISTER_COUNT[point.dtype])


def _kind(point: RegisterPoint) -> str:
    if point.dtype == "bool":
        return f"bit{BIT_WORDS[point.bit_word]}"
    return point.dtype


class BlockCodec:
    """Decodes one read block (``count`` registers or bits from ``start``) for its points.

    Built once per block of a poll plan; :meth:`decode` then costs about a dozen numpy
    operations per response whatever the number of points: one gather of every value byte,
    one conversion per data type into a staging array, one permutation into the points'
    order, one scale/offset pass and one range pass. Output arrays follow ``points`` (and
    ``tag_ids``). Quality rules, strongest first: a raw value the point declares invalid (a
    sentinel), or a string of NULs where that means "absent", is Bad_SensorFailure with value
    NaN; so is a value whose scale-factor register holds the not-implemented -32768, while a
    factor outside -10..10 makes it Bad_OutOfRange; outside ``low``/``high`` Bad_OutOfRange with
    value NaN, unless the point clamps (value clamped, Good); else Good. A NaN from the device
    is Bad_OutOfRange (a clamp does not apply); +-inf is outside every range: clamped to the
    bound when the point clamps and has that bound, Bad_OutOfRange otherwise. Strings carry
    NaN and their text in :meth:`decode_texts`; enums keep the raw number (the name is
    metadata). A codec keeps staging arrays: use each instance from one thread (the asyncio loop).

    Engineering value: raw, times 10**sf when the point has a scale-factor register (the
    factor comes from the same response), then ``(x * mul + add) / div`` (see ``Scaling``).

    Register blocks decode through the compiled kernel when it is built (``compiled=False``
    forces the numpy path, which the parity tests compare it with); bit tables and inputs that
    are not wire bytes (lists of ints) always take the numpy path.
    """

    def __init__(self, table: Table, start: int, count: int, points: Sequence[RegisterPoint], compiled: bool = True):
        self.table = Table(table)
        self.start = start
        self.count = count
        self.points = tuple(points)
        for p in self.points:
            check_point(p)
            if p.table != self.table:
                raise CodecError(f"point {p.name!r} is in table {p.table}, the block reads {self.table}")
            if p.span_start < start or p.span_end > start + count:
                what = "" if p.sf_address is None else f" with its scale factor at {p.sf_address}"
                raise CodecError(f"point {p.name!r} spans {p.address}..{p.end - 1}{what}, outside the block "
                                 f"{start}..{start + count - 1}")
        self.tag_ids = np.array([p.tag_id for p in self.points], dtype=TAG_ID_DTYPE)
        self._strings = [(i, p) for i, p in enumerate(self.points) if p.dtype == "string"]
        self.has_strings = bool(self._strings)
        self._string_pos = np.array([i for i, _ in self._strings], dtype=np.intp)
        self._nul_strings = [(i, 2 * (p.address - start), 2 * (p.end - start))
                             for i, p in self._strings if p.nul_invalid]
        if self.table.is_bits:
            self._bit_addr = np.array([p.address - start for p in self.points], dtype=np.intp)
        else:
            self._compile_registers()
            self._compile_checks()
        self._compile_scaling()
        self._kernel = self._compile_kernel() if compiled and _kernel_class is not None else None

    def _compile_kernel(self) -> _Kernel | None:
        """The compiled decoder's arrays: per point its kind, the wire positions of bytes A..,
        bit shift, sentinel patterns and the position of its scale factor."""
        if self.table.is_bits or _kernel_class is None:
            return None
        kinds: list[int] = []
        positions: list[int] = []
        starts, shifts = [0], []
        invalid: list[int] = []
        inv_starts, sf_pos = [0], []
        for p in self.points:
            base = 2 * (p.address - self.start)
            if p.dtype in _NP_DTYPE:
                kinds.append(_KERNEL_KINDS.index(p.dtype))
                positions.extend((base + _value_bytes(p)).tolist())
            elif p.dtype == "bool":
                kinds.append(_KERNEL_KINDS.index("bit"))
                positions.extend((base + _value_bytes(p)).tolist())
            else:
                kinds.append(_KERNEL_KINDS.index("string"))
            shifts.append(p.bit if p.dtype == "bool" else 0)
            starts.append(len(positions))
            invalid.extend(p.invalid)
            inv_starts.append(len(invalid))
            sf_pos.append(-1 if p.sf_address is None else 2 * (p.sf_address - self.start))
        return _kernel_class(kinds, positions, starts, shifts, self._mul, self._add, self._div, self._low, self._high,
                             self._clip_low, self._clip_high, self._scaled, self._clamps, int(_OUT_OF_RANGE),
                             2 * self.count, np.array(invalid, dtype=np.uint64), inv_starts, sf_pos, int(_SENSOR),
                             POW10)

    def _compile_registers(self) -> None:
        """Lay out the staging array: fixed-size types grouped by type, then bits by word width,
        then one NaN (for strings)."""
        perm = np.zeros(len(self.points), dtype=np.intp)
        byte_index: list[np.ndarray] = []
        self._slices: list[_Slice] = []
        stage = nbytes = 0
        kinds = [*_NP_DTYPE, *(f"bit{w}" for w in BIT_WORDS.values())]
        shifts = []
        for kind in kinds:
            members = [(i, p) for i, p in enumerate(self.points) if p.dtype != "string" and _kind(p) == kind]
            if not members:
                continue
            size = 2 * members[0][1].count
            for k, (i, p) in enumerate(members):
                perm[i] = stage + k
                byte_index.append(2 * (p.address - self.start) + _value_bytes(p))
                if kind.startswith("bit"):
                    shifts.append(p.bit)
            np_dtype = _UNSIGNED[size] if kind.startswith("bit") else _NP_DTYPE[kind]
            self._slices.append(_Slice(kind, np.dtype(np_dtype), np.dtype(_UNSIGNED[size]), nbytes,
                                       nbytes + size * len(members), stage, stage + len(members)))
            stage += len(members)
            nbytes += size * len(members)
        self._bit_shift = np.array(shifts, dtype=np.uint64)
        perm[self._string_pos] = stage
        self._perm = perm
        self._byte_index = np.concatenate(byte_index) if byte_index else np.zeros(0, dtype=np.intp)
        self._stage = np.full(stage + 1, np.nan, dtype=VALUE_DTYPE)
        self._stage_u = np.zeros(stage + 1, dtype=np.uint64)

    def _compile_checks(self) -> None:
        """Sentinel patterns (point index, pattern) and scale-factor positions of the block."""
        pairs = [(i, v) for i, p in enumerate(self.points) for v in p.invalid]
        self._inv_point = np.array([i for i, _ in pairs], dtype=np.intp)
        self._inv_value = np.array([v for _, v in pairs], dtype=np.uint64)
        has_sf = [(i, 2 * (p.sf_address - self.start)) for i, p in enumerate(self.points) if p.sf_address is not None]
        self._sf_point = np.array([i for i, _ in has_sf], dtype=np.intp)
        self._sf_bytes = np.array([[b, b + 1] for _, b in has_sf], dtype=np.intp).reshape(-1)

    def _compile_scaling(self) -> None:
        numeric = [p.dtype not in ("bool", "string") for p in self.points]
        forms = [p.scaling if num else _IDENTITY for p, num in zip(self.points, numeric, strict=True)]
        self._mul = np.array([f.mul for f in forms], dtype=VALUE_DTYPE)
        self._add = np.array([f.add for f in forms], dtype=VALUE_DTYPE)
        self._div = np.array([f.div for f in forms], dtype=VALUE_DTYPE)
        self._scaled = not all(f.identity for f in forms)
        # Clamp bounds may be infinite; check bounds are finite so that one pair of comparisons
        # also rejects NaN and +-inf.
        low = np.array([-np.inf if p.low is None else p.low for p in self.points], dtype=VALUE_DTYPE)
        high = np.array([np.inf if p.high is None else p.high for p in self.points], dtype=VALUE_DTYPE)
        self._low = np.maximum(low, -_FMAX)
        self._high = np.minimum(high, _FMAX)
        clamp = np.array([p.clamp for p in self.points], dtype=bool)
        self._clamps = bool(clamp.any())
        self._clip_low = np.where(clamp, low, -np.inf)
        self._clip_high = np.where(clamp, high, np.inf)

    def __len__(self) -> int:
        return len(self.points)

    def decode(self, registers: Registers, out_values: np.ndarray | None = None,
               out_quality: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode one response: registers (list of ints, uint16 array or the wire bytes) or bits.

        Writes into ``out_values``/``out_quality`` (e.g. slices of a whole poll's arrays) when
        given. Raises :class:`DecodeError` if the response is shorter than the block.
        """
        if self._kernel is not None:
            try:
                decoded = self._kernel.decode(registers, out_values, out_quality)
            except ShortResponse as exc:
                raise DecodeError(str(exc)) from None
            if decoded is not None:
                if self._nul_strings:
                    self._absent_strings(_as_wire_bytes(registers), decoded[0], decoded[1])
                return decoded
        n = len(self.points)
        values = np.empty(n, dtype=VALUE_DTYPE) if out_values is None else out_values
        quality = np.empty(n, dtype=QUALITY_DTYPE) if out_quality is None else out_quality
        if self.table.is_bits:
            bits = np.asarray(registers, dtype=bool)
            if len(bits) < self.count:
                raise DecodeError(f"response has {len(bits)} bits, the block needs {self.count}")
            values[:] = bits[self._bit_addr]
            quality.fill(Quality.GOOD)
            return values, quality
        wire = _as_wire_bytes(registers)
        if len(wire) < 2 * self.count:
            raise DecodeError(f"response has {len(wire) // 2} registers, the block needs {self.count}")
        stage, stage_u = self._stage, self._stage_u
        gathered = wire[self._byte_index]
        shift_at = 0
        for s in self._slices:
            raw = gathered[s.byte_start:s.byte_stop]
            if s.kind.startswith("bit"):
                word = raw.view(s.unsigned).astype(np.uint64)
                shifts = self._bit_shift[shift_at:shift_at + len(word)]
                shift_at += len(word)
                stage[s.stage_start:s.stage_stop] = (word >> shifts) & np.uint64(1)
            else:
                stage[s.stage_start:s.stage_stop] = raw.view(s.np_dtype)
            if len(self._inv_point):
                stage_u[s.stage_start:s.stage_stop] = raw.view(s.unsigned)
        np.take(stage, self._perm, out=values)
        sf = self._apply_scale_factors(wire, values)
        if self._scaled:  # (raw * mul + add) / div: decimal scales give the nearest double
            np.multiply(values, self._mul, out=values)
            np.add(values, self._add, out=values)
            np.divide(values, self._div, out=values)
        self._apply_range(values, quality)
        if sf is not None:
            self._mark(values, quality, self._sf_point[(sf < -SCALE_FACTOR_LIMIT) | (sf > SCALE_FACTOR_LIMIT)],
                       _OUT_OF_RANGE)
            self._mark(values, quality, self._sf_point[sf == SCALE_FACTOR_SENTINEL], _SENSOR)
        if len(self._inv_point):
            pattern = stage_u[self._perm]
            self._mark(values, quality, self._inv_point[pattern[self._inv_point] == self._inv_value], _SENSOR)
        if self._nul_strings:
            self._absent_strings(wire, values, quality)
        return values, quality

    def _apply_scale_factors(self, wire: np.ndarray, values: np.ndarray) -> np.ndarray | None:
        """values *= 10**sf (or /= 10**-sf) for the points with a scale-factor register; the factors."""
        if not len(self._sf_point):
            return None
        sf = wire[self._sf_bytes].view(">i2").astype(np.int64)
        usable = np.clip(sf, -SCALE_FACTOR_LIMIT, SCALE_FACTOR_LIMIT)
        up, down = usable >= 0, usable < 0
        values[self._sf_point[up]] = values[self._sf_point[up]] * POW10[usable[up]]
        values[self._sf_point[down]] = values[self._sf_point[down]] / POW10[-usable[down]]
        return sf

    @staticmethod
    def _mark(values: np.ndarray, quality: np.ndarray, where: np.ndarray, code: np.uint8) -> None:
        if len(where):
            values[where] = np.nan
            quality[where] = code

    def _absent_strings(self, wire: np.ndarray, values: np.ndarray, quality: np.ndarray) -> None:
        """Strings whose registers are all NUL where the point says that means absent."""
        for i, a, b in self._nul_strings:
            if not wire[a:b].any():
                values[i] = np.nan
                quality[i] = _SENSOR

    def _apply_range(self, values: np.ndarray, quality: np.ndarray) -> None:
        if self._clamps:
            np.clip(values, self._clip_low, self._clip_high, out=values)
        ok = np.greater_equal(values, self._low)
        ok &= np.less_equal(values, self._high)  # False for NaN, and for inf (bounds are finite)
        np.logical_not(ok, out=ok)
        np.multiply(ok, _OUT_OF_RANGE, out=quality)
        np.putmask(values, ok, np.nan)
        if self.has_strings:
            quality[self._string_pos] = Quality.GOOD

    def decode_texts(self, registers: Registers) -> dict[int, str]:
        """Tag id -> text for the block's string points (empty when it has none).

        Ids come from :attr:`tag_ids`, which a configuration reload may renumber in place.
        """
        if not self._strings:
            return {}
        wire = _as_wire_bytes(registers).tobytes()
        return {int(self.tag_ids[i]): _bytes_to_text(wire[2 * (p.address - self.start): 2 * (p.end - self.start)],
                                                     p.order)
                for i, p in self._strings}

    def decode_batch(self, device: str, ts_ns: int, registers: Registers) -> SampleBatch:
        """A whole :class:`SampleBatch` for this block alone (texts included)."""
        values, quality = self.decode(registers)
        texts = self.decode_texts(registers) if self.has_strings else None
        return SampleBatch(device=device, ts_ns=ts_ns, tag_ids=self.tag_ids.copy(), values=values,
                           quality=quality, texts=texts)



# ----------------------------------------------------------------------------- scalar decoding


def _bytes_to_text(raw: bytes, order: str) -> str:
    if _swaps(order)[1]:
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    return raw.rstrip(b"\x00").decode("ascii", errors="replace")


def _point_wire_bytes(point: RegisterPoint, registers: Registers) -> bytes:
    wire = _as_wire_bytes(registers)
    if len(wire) < 2 * point.count:
        raise DecodeError(f"point {point.name!r} needs {point.count} registers, got {len(wire) // 2}")
    return wire[: 2 * point.count].tobytes()


def raw_value(point: RegisterPoint, registers: Registers) -> bool | int | float | str:
    """The value as the device holds it (before scale and offset); registers start at the point."""
    check_point(point)
    if point.table.is_bits:
        if len(registers) < 1:
            raise DecodeError(f"point {point.name!r} needs one bit")
        return bool(registers[0])
    if point.dtype == "bool":
        wire = _point_wire_bytes(point, registers)
        word = int.from_bytes(bytes(wire[i] for i in _value_bytes(point)), "big")
        return bool((word >> (point.bit or 0)) & 1)  # check_point: a register bool has its bit
    wire = _point_wire_bytes(point, registers)
    if point.dtype == "string":
        return _bytes_to_text(wire, point.order)
    ordered = bytes(wire[i] for i in _wire_byte_index(point.order, point.count))
    return struct.unpack(_STRUCT[point.dtype], ordered)[0]


def raw_pattern(point: RegisterPoint, registers: Registers) -> int:
    """The value bytes A.. of a register point as one unsigned integer (what ``invalid`` lists)."""
    wire = _point_wire_bytes(point, registers)
    return int.from_bytes(bytes(wire[i] for i in _value_bytes(point)), "big")


def is_sentinel(point: RegisterPoint, registers: Registers) -> bool:
    """True if the registers hold a value the point declares invalid (or an all-NUL absent string)."""
    if point.dtype == "string":
        return point.nul_invalid and not any(_point_wire_bytes(point, registers))
    return bool(point.invalid) and raw_pattern(point, registers) in point.invalid


def check_scale_factor(point: RegisterPoint, sf: int | None) -> int:
    """The usable power of ten of a point with a scale-factor register, or :class:`DecodeError`."""
    if sf is None:
        raise DecodeError(f"point {point.name!r} needs its scale factor (register {point.sf_address})")
    if sf == SCALE_FACTOR_SENTINEL:
        raise DecodeError(f"point {point.name!r}: its scale factor is not implemented (-32768)")
    if not -SCALE_FACTOR_LIMIT <= sf <= SCALE_FACTOR_LIMIT:
        raise DecodeError(f"point {point.name!r}: scale factor {sf} is outside -{SCALE_FACTOR_LIMIT}.."
                          f"{SCALE_FACTOR_LIMIT}")
    return sf


def apply_scale_factor(raw: float, sf: int) -> float:
    """raw * 10**sf as the block codec computes it (one rounding)."""
    return raw * float(POW10[sf]) if sf >= 0 else raw / float(POW10[-sf])


def decode_point(point: RegisterPoint, registers: Registers, sf: int | None = None) -> bool | int | float | str:
    """Engineering value of one point from its registers (or bits), no range or sentinel handling.

    Integers with scale 1 and offset 0 and no scale factor stay exact Python ints (also 64-bit
    ones, which the float64 block arrays cannot hold exactly beyond 2**53); scaled values are
    floats. ``sf``: the value of the point's scale-factor register, when it has one.
    """
    raw = raw_value(point, registers)
    if isinstance(raw, (bool, str)):
        return raw
    if point.sf_address is not None:
        raw = apply_scale_factor(float(raw), check_scale_factor(point, sf))
    scaling = point.scaling
    if scaling.identity:
        return raw
    return scaling.apply(raw)


def evaluate(point: RegisterPoint, value: float) -> tuple[float, Quality]:
    """Apply the point's range rules to one engineering value (as :class:`BlockCodec` does)."""
    v = float(value)
    low = -math.inf if point.low is None else point.low
    high = math.inf if point.high is None else point.high
    if point.clamp and not math.isnan(v):
        v = min(max(v, low), high)
    if not math.isfinite(v) or v < low or v > high:
        return math.nan, Quality.BAD_OUT_OF_RANGE
    return v, Quality.GOOD


def enum_name(point: RegisterPoint, value: float | int) -> str | None:
    """The state name of an enum point's value, or None if the value is not a known state."""
    if point.enum is None:
        return None
    return dict(point.enum).get(int(value)) if float(value).is_integer() else None


# ----------------------------------------------------------------------------- encoding


def _parse(point: RegisterPoint, value: object) -> object:
    """Turn text from the CLI into a number or bool; enum names into their raw number."""
    if not isinstance(value, str) or point.dtype == "string":
        return value
    text = value.strip()
    if point.dtype == "bool":
        if text.lower() in _TRUE_WORDS:
            return True
        if text.lower() in _FALSE_WORDS:
            return False
        raise EncodeError(f"point {point.name!r} is a bool: give one of "
                          f"{', '.join(sorted(_TRUE_WORDS | _FALSE_WORDS))}, not {value!r}")
    if point.enum is not None:
        by_name = {name: raw for raw, name in point.enum}
        if text in by_name:
            return point.scaling.apply(by_name[text])
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        allowed = "a number" if point.enum is None else f"a number or one of {', '.join(n for _, n in point.enum)}"
        raise EncodeError(f"point {point.name!r} ({point.dtype}) takes {allowed}, not {value!r}") from None


def _check_range(point: RegisterPoint, value: float) -> None:
    low, high = point.low, point.high
    if (low is not None or high is not None) and math.isnan(value):
        raise EncodeRangeError(f"point {point.name!r}: NaN is outside the range [{low}, {high}]")
    if (low is not None and value < low) or (high is not None and value > high):
        raise EncodeRangeError(f"point {point.name!r}: {value} is outside the range [{low}, {high}]")


def _to_raw_int(point: RegisterPoint, value: int | float) -> int:
    lo, hi = INT_RANGES[point.dtype]
    scaling = point.scaling
    if scaling.identity:
        if isinstance(value, float) and not value.is_integer():
            raise EncodeError(f"point {point.name!r} ({point.dtype}) takes whole numbers, not {value}")
        raw = int(value)
    else:
        raw = _on_grid(point, scaling, value)
    if not lo <= raw <= hi:
        ends = sorted((scaling.apply(lo), scaling.apply(hi)))
        raise EncodeRangeError(f"point {point.name!r}: {value} does not fit {point.dtype}; allowed "
                          f"{ends[0]:g} .. {ends[1]:g}")
    if point.enum is not None and raw not in dict(point.enum):
        states = ", ".join(f"{r}={n}" for r, n in point.enum)
        raise EncodeRangeError(f"point {point.name!r}: {value} is not one of its states ({states})")
    return raw


class EncodeResolutionError(EncodeRangeError):
    """A value between two steps of a scaled integer point: refused, never silently rounded."""


def _on_grid(point: RegisterPoint, scaling: Scaling, value: int | float) -> int:
    """The raw integer for ``value`` if it lies on the point's resolution grid, else refuse it."""
    steps = scaling.raw_steps(float(value))
    raw = round(steps)
    if not math.isfinite(steps) or abs(steps - raw) > 1e-6 + 1e-12 * abs(steps):
        step = abs(point.scale)
        below = scaling.apply(math.floor(steps))
        above = scaling.apply(math.ceil(steps))
        low, high = sorted((below, above))
        raise EncodeResolutionError(
            f"point {point.name!r}: {value!r} is not a multiple of its resolution {step!r}"
            f"{'' if point.offset == 0 else f' (offset {point.offset!r})'}; nearest values {low!r} and {high!r}")
    return int(raw)


def _to_raw_float(point: RegisterPoint, value: float) -> float:
    raw = value if point.scaling.identity else point.scaling.raw_steps(value)
    if point.dtype == "float32" and math.isfinite(raw) and abs(raw) > _FLOAT32_MAX:
        raise EncodeRangeError(f"point {point.name!r}: {value} does not fit float32 (at most +-{_FLOAT32_MAX:.6g})")
    return raw


def _order_words(point: RegisterPoint, value_bytes: bytes) -> list[int]:
    """Put value bytes A.. on the wire in the point's order; return the registers."""
    wire = bytearray(len(value_bytes))
    for k, pos in enumerate(_wire_byte_index(point.order, len(value_bytes) // 2)):
        wire[pos] = value_bytes[k]
    return [int.from_bytes(wire[i: i + 2], "big") for i in range(0, len(wire), 2)]


def _encode_string(point: RegisterPoint, value: object) -> list[int]:
    if not isinstance(value, str):
        raise EncodeError(f"point {point.name!r} is a string: give text, not {type(value).__name__}")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"point {point.name!r}: only ASCII text can be written, got {value!r}") from None
    if len(raw) > 2 * point.length:
        raise EncodeRangeError(f"point {point.name!r}: {len(raw)} characters do not fit "
                          f"{point.length} registers (at most {2 * point.length})")
    if raw.endswith(b"\x00"):
        raise EncodeError(f"point {point.name!r}: text must not end with NUL (it pads the field)")
    raw = raw.ljust(2 * point.length, b"\x00")
    if _swaps(point.order)[1]:
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    return [int.from_bytes(raw[i: i + 2], "big") for i in range(0, len(raw), 2)]


def _as_bool(point: RegisterPoint, value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    raise EncodeError(f"point {point.name!r} is a bool: give true/false or 1/0, not {value!r}")


def with_scale_factor(point: RegisterPoint, sf: int | None) -> RegisterPoint:
    """The point with its scale factor folded into ``scale`` (for writes: the inverse applies)."""
    if point.sf_address is None:
        return point
    try:
        k = check_scale_factor(point, sf)
    except DecodeError as exc:
        raise EncodeError(f"cannot write: {exc}") from None
    from dataclasses import replace

    factor = 10.0**k if k >= 0 else 1.0 / 10.0**-k
    return replace(point, scale=point.scale * factor, sf_address=None)


def encode(point: RegisterPoint, value: object, sf: int | None = None) -> list[int] | list[bool]:
    """Registers (or one coil) to write for ``value``: the exact inverse of :func:`decode_point`.

    Checks the type and the range (writes are never clamped), rounds scaled integers to the
    nearest step of their scale, and raises :class:`EncodeError` saying what is allowed.
    A bool in a register needs the register's current value: use :func:`encode_bits`. ``sf``:
    the current value of the point's scale-factor register, when it has one (the factor is
    applied inversely: 230.5 V with sf -1 is raw 2305).
    """
    check_point(point)
    if not point.table.writable:
        raise EncodeError(f"point {point.name!r} is in the {point.table} table, which Modbus cannot write")
    point = with_scale_factor(point, sf)
    value = _parse(point, value)
    if point.table.is_bits:
        return [_as_bool(point, value)]
    if point.dtype == "bool":
        raise EncodeError(f"point {point.name!r} is bit {point.bit} of a register: "
                          "it needs a read-modify-write (encode_bit)")
    if point.dtype == "string":
        return _encode_string(point, value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EncodeError(f"point {point.name!r} ({point.dtype}) takes a number, not {type(value).__name__}")
    number = int(value) if isinstance(value, (int, np.integer)) else float(value)
    _check_range(point, float(number))
    if point.dtype in INT_RANGES:
        if isinstance(number, float) and not math.isfinite(number):
            raise EncodeError(f"point {point.name!r} ({point.dtype}) takes a finite number, not {number}")
        packed = struct.pack(_STRUCT[point.dtype], _to_raw_int(point, number))
    else:
        packed = struct.pack(_STRUCT[point.dtype], _to_raw_float(point, float(number)))
    return _order_words(point, packed)


def encode_bit(point: RegisterPoint, current_register: int, value: object) -> int:
    """The register to write so that bit ``point.bit`` of a 16-bit word becomes ``value``."""
    return encode_bits(point, [current_register], value)[0]


def encode_bits(point: RegisterPoint, current: Sequence[int], value: object) -> list[int]:
    """The registers to write so that bit ``point.bit`` of the point's word becomes ``value``,
    other bits unchanged (``current``: the word's registers as read, in address order)."""
    check_point(point)
    if point.table.is_bits or point.dtype != "bool":
        raise EncodeError(f"point {point.name!r} is not a bit of a register")
    if not point.table.writable:
        raise EncodeError(f"point {point.name!r} is in the {point.table} table, which Modbus cannot write")
    if len(current) != point.count or not all(0 <= int(r) <= 0xFFFF for r in current):
        raise EncodeError(f"current registers {list(current)}: need {point.count}, each 0..65535")
    on = _as_bool(point, _parse(point, value))
    word = raw_pattern(point, [int(r) for r in current])
    mask = 1 << (point.bit or 0)
    word = (word | mask) if on else (word & ~mask)
    value_bytes = word.to_bytes(2 * point.count, "big")
    wire = bytearray(len(value_bytes))
    for k, pos in enumerate(_value_bytes(point)):
        wire[pos] = value_bytes[k]
    return [int.from_bytes(wire[i: i + 2], "big") for i in range(0, len(wire), 2)]
