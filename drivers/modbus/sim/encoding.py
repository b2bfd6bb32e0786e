"""Register encoding for the simulator, independent of the appliance's codec.

Two encoders that the tests cross-check against each other (and against ``struct`` in the
tests): a scalar one built on pymodbus's own ``convert_to_registers`` (used for set_value,
initial values and client-visible reads), and a vectorised numpy one used by the signal
update on the hot path (a whole plant's values per tick). Both produce the ABCD (big-endian,
high word first) words and then apply the same word/byte permutation:

* ABCD: as is; CDAB: words reversed; BADC: bytes swapped inside each word; DCBA: both.
* Strings: two ASCII characters per register; BADC/DCBA swap the characters in each
  register, word order is not applied (it has no meaning for text).

Engineering value -> raw: ``(value - offset) / scale``, rounded and clipped to the type's
range for integers.
"""
from __future__ import annotations

import decimal
import math
from collections.abc import Sequence

import numpy as np
from pymodbus.client.mixin import ModbusClientMixin

from drivers.modbus.points import REGISTER_COUNT, RegisterPoint

_DT = ModbusClientMixin.DATATYPE
PYMODBUS_TYPES: dict[str, ModbusClientMixin.DATATYPE] = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "int64": _DT.INT64,
    "uint64": _DT.UINT64,
    "float32": _DT.FLOAT32,
    "float64": _DT.FLOAT64,
}
#: Big-endian numpy dtypes whose bytes are the ABCD wire image.
NUMPY_TYPES: dict[str, str] = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "int64": ">i8",
    "uint64": ">u8",
    "float32": ">f4",
    "float64": ">f8",
}
INT_LIMITS: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
#: Largest float64 values that convert to the 64-bit integer types without overflow.
_FLOAT_SAFE_MAX = {"int64": 2.0**63 - 1024, "uint64": 2.0**64 - 2048}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_integer_type(dtype: str) -> bool:
    return dtype in INT_LIMITS


def raw_limits(dtype: str) -> tuple[float, float]:
    """The representable raw range of a numeric dtype (bool: 0..1)."""
    if dtype == "bool":
        return 0.0, 1.0
    if dtype in INT_LIMITS:
        lo, hi = INT_LIMITS[dtype]
        return float(lo), min(float(hi), _FLOAT_SAFE_MAX.get(dtype, float(hi)))
    if dtype == "float32":
        return -_FLOAT32_MAX, _FLOAT32_MAX
    return -math.inf, math.inf


def engineering_limits(point: RegisterPoint) -> tuple[float, float]:
    """The engineering range a point can represent: its configured range within the type's range."""
    lo_raw, hi_raw = raw_limits(point.dtype)
    a, b = lo_raw * point.scale + point.offset, hi_raw * point.scale + point.offset
    lo, hi = min(a, b), max(a, b)
    if point.low is not None:
        lo = max(lo, point.low)
    if point.high is not None:
        hi = min(hi, point.high)
    return lo, hi


def to_raw(point: RegisterPoint, value: float | int) -> int | float:
    """Engineering value -> raw register value, rounded and clipped for integer types.

    Raises ValueError for a value the type cannot represent (NaN into an integer).
    """
    if isinstance(value, int) and point.scale == 1 and point.offset == 0 and point.dtype in INT_LIMITS:
        lo, hi = INT_LIMITS[point.dtype]
        return max(lo, min(hi, value))  # exact, also for 64-bit values beyond float precision
    raw = (float(value) - point.offset) / point.scale
    if point.dtype in INT_LIMITS:
        if not math.isfinite(raw):
            raise ValueError(f"point {point.name!r}: {value!r} cannot be stored in {point.dtype}")
        lo, hi = INT_LIMITS[point.dtype]
        return max(lo, min(hi, round(raw)))
    if point.dtype == "float32" and math.isfinite(raw):
        return max(-_FLOAT32_MAX, min(_FLOAT32_MAX, raw))
    return raw


def permute(words: list[int], order: str, *, is_string: bool = False) -> list[int]:
    """Turn ABCD words into the wire words of ``order`` (the permutation is its own inverse)."""
    if order in ("CDAB", "DCBA") and not is_string:
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return list(words)


def encode_value(point: RegisterPoint, value: float | str) -> list[int]:
    """Registers holding ``value`` (engineering units) for a register-table point, via pymodbus.

    bool points with a bit are not handled here (they share a register; see image.py).
    """
    if point.dtype == "string":
        text = str(value).encode("ascii", errors="replace")[: 2 * point.length]
        text = text.ljust(2 * point.length, b"\x00")
        words = ModbusClientMixin.convert_to_registers(text.decode("latin-1"), _DT.STRING, string_encoding="latin-1")
        return permute(words[: point.length], point.order, is_string=True)
    raw = to_raw(point, value if isinstance(value, int) and not isinstance(value, bool) else float(value))
    if point.dtype in INT_LIMITS:
        raw = int(raw)
    return permute(ModbusClientMixin.convert_to_registers(raw, PYMODBUS_TYPES[point.dtype]), point.order)


def decode_value(point: RegisterPoint, words: Sequence[int]) -> float | int | str:
    """Engineering value of a register-table point from its wire registers, via pymodbus."""
    words = [int(w) for w in words]
    if point.dtype == "string":
        abcd = permute(words, point.order, is_string=True)
        text = ModbusClientMixin.convert_from_registers(abcd, _DT.STRING, string_encoding="latin-1")
        return str(text).rstrip("\x00")
    if point.dtype == "bool":
        abcd = permute(words, point.order) if len(words) > 1 else words[:1]
        word = int.from_bytes(b"".join(w.to_bytes(2, "big") for w in abcd), "big")
        return float((word >> (point.bit or 0)) & 1)
    raw = ModbusClientMixin.convert_from_registers(permute(words, point.order), PYMODBUS_TYPES[point.dtype])
    if isinstance(raw, int) and point.scale == 1 and point.offset == 0:
        return raw  # exact, also for 64-bit values beyond float precision
    if not isinstance(raw, int | float):
        raise TypeError(f"{point.dtype} registers decoded to {type(raw).__name__}, not a number")
    return float(raw) * point.scale + point.offset


_EXACT = decimal.Context(prec=80)  # wide enough for any int64 x scale + offset without rounding


def exact_engineering(point: RegisterPoint, raw: float | int) -> float:
    """The double nearest to ``raw * scale + offset`` computed exactly, scale and offset as written
    (97 x 0.1 -> 9.7, not 97 * 0.1 = 9.700000000000001): what a register *means*, independent of
    how any decoder computes it."""
    if point.scale == 1 and point.offset == 0:
        return float(raw)
    exact = _EXACT.add(_EXACT.multiply(decimal.Decimal(raw), decimal.Decimal(repr(point.scale))),
                       decimal.Decimal(repr(point.offset)))
    return float(exact)


def held_value(point: RegisterPoint, value: float) -> float:
    """The engineering value a point's registers hold once the signal update has stored ``value``.

    The same steps as :meth:`SignalBank.tick` and :func:`encode_array` (raw = (value - offset) /
    scale, rounded half to even and clipped for integers, rounded to float32, a bit set when raw
    is not 0), then the registers' meaning by :func:`exact_engineering`.
    """
    raw = (float(value) - point.offset) / point.scale
    if point.table.is_bits or point.dtype == "bool":
        return 1.0 if raw != 0 else 0.0
    if point.dtype in INT_LIMITS:
        if not math.isfinite(raw):
            raise ValueError(f"point {point.name!r}: {value!r} cannot be stored in {point.dtype}")
        lo, hi = raw_limits(point.dtype)
        return exact_engineering(point, int(min(max(round(raw), lo), hi)))
    if point.dtype == "float32":
        raw = float(np.float32(min(max(raw, -_FLOAT32_MAX), _FLOAT32_MAX)))
    return exact_engineering(point, raw)


def held_text(point: RegisterPoint, value: object) -> str:
    """The text a string point's registers hold once :func:`encode_value` stored ``value``."""
    text = str(value).encode("ascii", errors="replace")[: 2 * point.length]
    return text.decode("latin-1").rstrip("\x00")


def decode_exact(point: RegisterPoint, words: Sequence[int]) -> float | str:
    """Like :func:`decode_value`, with scaled values by :func:`exact_engineering`."""
    if point.dtype in ("string", "bool"):
        return decode_value(point, words)
    raw = ModbusClientMixin.convert_from_registers(permute([int(w) for w in words], point.order),
                                                   PYMODBUS_TYPES[point.dtype])
    return exact_engineering(point, raw)  # type: ignore[arg-type]


def encode_array(dtype: str, order: str, raw: np.ndarray) -> np.ndarray:
    """Vectorised encoder: raw values (float64) -> wire words, shape (n, registers), uint16.

    Integer types are rounded and clipped to their range; the same permutation as
    :func:`permute` is applied.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if dtype in INT_LIMITS:
        lo, hi = raw_limits(dtype)
        raw = np.clip(np.rint(raw), lo, hi)
    elif dtype == "float32":
        raw = np.clip(raw, -_FLOAT32_MAX, _FLOAT32_MAX)
    nwords = REGISTER_COUNT[dtype]
    words = raw.astype(NUMPY_TYPES[dtype]).view(">u2").reshape(len(raw), nwords).astype(np.uint16)
    if order in ("CDAB", "DCBA"):
        words = words[:, ::-1]
    if order in ("BADC", "DCBA"):
        words = words.byteswap()
    return np.ascontiguousarray(words)
