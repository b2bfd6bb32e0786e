"""The simulator's two encoders agree with each other and with struct, for every dtype and order."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.points import ORDERS, RegisterPoint, Table
from drivers.modbus.sim.encoding import decode_value, encode_array, encode_value, to_raw
from tests.drivers.modbus.sim.wire import LIMITS, STRUCT, struct_decode


def sample_value(dtype: str, draw: float) -> float | int:
    if dtype.startswith("float"):
        return draw * 1e4
    lim = LIMITS[dtype]
    lo = -lim if dtype.startswith("int") else 0
    hi = lim - 1 if dtype.startswith("int") else lim - 1
    return int(lo + (hi - lo) * abs(draw) % (hi - lo)) if draw else lo


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", list(STRUCT))
@settings(max_examples=40, deadline=None)
@given(draw=st.floats(-1.0, 1.0, allow_nan=False))
def test_pymodbus_and_numpy_encoders_match_struct(dtype: str, order: str, draw: float) -> None:
    point = RegisterPoint(0, "x", Table.HOLDING, 0, dtype, order)
    value = sample_value(dtype, draw)
    scalar = encode_value(point, value)
    vector = encode_array(dtype, order, np.array([float(to_raw(point, value))]))[0].tolist()
    decoded = struct_decode(scalar, dtype, order)
    if dtype == "float32":
        assert decoded == pytest.approx(value, rel=1e-6, abs=1e-30)
    else:
        assert decoded == value
    if dtype in ("int64", "uint64") and abs(value) > 2**53:
        assert struct_decode(vector, dtype, order) == pytest.approx(value, rel=1e-15)  # float64 path
    else:
        assert vector == scalar
    assert decode_value(point, scalar) == pytest.approx(decoded)


def test_scale_offset_round_to_nearest_raw_and_clip() -> None:
    point = RegisterPoint(0, "t", Table.INPUT, 0, "int16", scale=0.1, offset=-40.0)
    assert encode_value(point, 21.5) == [615]
    assert decode_value(point, [615]) == pytest.approx(21.5)
    assert encode_value(point, 1e9) == [32767]  # clipped to the type, not wrapped
    assert encode_array("int16", "ABCD", np.array([-1e9]))[0].tolist() == [32768]  # -32768 as a register


def test_strings_swap_bytes_only_and_pad_with_nul() -> None:
    abcd = RegisterPoint(0, "s", Table.HOLDING, 0, "string", "ABCD", length=3)
    badc = RegisterPoint(0, "s", Table.HOLDING, 0, "string", "BADC", length=3)
    cdab = RegisterPoint(0, "s", Table.HOLDING, 0, "string", "CDAB", length=3)
    assert encode_value(abcd, "ABC") == [0x4142, 0x4300, 0]
    assert encode_value(badc, "ABC") == [0x4241, 0x0043, 0]
    assert encode_value(cdab, "ABC") == [0x4142, 0x4300, 0]
    assert encode_value(abcd, "TOO LONG") == [0x544F, 0x4F20, 0x4C4F]
    assert decode_value(badc, encode_value(badc, "ABC")) == "ABC"


def test_nan_into_an_integer_is_a_clear_error() -> None:
    point = RegisterPoint(0, "n", Table.HOLDING, 0, "uint16")
    with pytest.raises(ValueError, match="cannot be stored in uint16"):
        encode_value(point, float("nan"))
