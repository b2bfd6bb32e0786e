"""The compiled line-protocol encoder (edge/outputs/_lineproto.pyx) writes the bytes of the Python one."""
from __future__ import annotations

import numpy as np
import pytest

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.core.model import Quality, SampleBatch
from edge.outputs import influx
from edge.storage.spool import Spool
from tests.outputs.test_line_protocol import odd_plant

pytestmark = pytest.mark.skipif(influx.encode_samples_compiled is None, reason="extension not built")


def test_compiled_samples_equal_python_encoding(tmp_path):
    """Random values (tiny, huge, negative, integral, NaN, infinities) and every quality: identical
    text, escaped names included; a batch with a string value takes the Python path, same text."""
    plant = odd_plant()
    sp = Spool(tmp_path / "s.db", plant, SpoolConfig(retention_s=0))
    sp.start()
    rng = np.random.default_rng(7)
    try:
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, 1.7976931348623157e308, 0.1 + 0.2,
                             123456789.0, 2.0**60, -5.5e-7, 1e16, 1e22])
        for k in range(200):
            vals = np.concatenate([rng.normal(0, 10.0 ** rng.integers(-8, 12), 2), rng.choice(specials, 1)])
            q = rng.integers(0, len(Quality), 3).astype(np.uint8)
            order = rng.permutation([0, 1, 3])
            sp.append_samples(SampleBatch("pump 1" if k % 2 else "meter", 1_700_000_000_000_000_000 + k, order.astype(np.int32),
                                          vals, q))
        sp.append_samples(SampleBatch("pump 1", 1_700_000_001_000_000_000, np.array([0, 2], np.int32),
                                      np.array([1.5, np.nan]), np.zeros(2, np.uint8), {2: 'SN "7", x\\y'}))
        assert sp.flush()
        enc = influx.LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge"))
        rows = sp.unsent(0, None, 10_000)
        assert len(rows) == 201
        for r in rows:
            assert enc.encode_bytes(r) == enc.encode(r).encode(), r.seq
    finally:
        sp.close()


def _doubles_to_check() -> np.ndarray:
    """Random bit patterns (every exponent), float32 values as the codec widens them, integers up to
    2^60, powers of ten, their neighbours, subnormals, the extremes and signed zeros."""
    rng = np.random.default_rng(21)
    bits = rng.integers(0, 2**64, 300_000, dtype=np.uint64).view(np.float64)
    f32 = rng.normal(0, 10.0 ** rng.integers(-12, 12, 300_000), 300_000).astype(np.float32).astype(np.float64)
    ints = rng.integers(-(2**60), 2**60, 50_000).astype(np.float64)
    p10 = np.array([10.0**k for k in range(-323, 309)] + [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                                                          0.0, 0.1, 0.2, 0.3, 1 / 3, 9007199254740993.0, 1e16,
                                                          9999999999999998.0, 0.0001, 0.00009999999999999999])
    with np.errstate(over="ignore"):
        near = np.concatenate([np.nextafter(p10, np.inf), np.nextafter(p10, -np.inf)])
    values = np.concatenate([bits, f32, ints, p10, -p10, near, -near])
    return np.ascontiguousarray(values[np.isfinite(values)])


def test_float_text_is_pythons_repr():
    """The encoder's own float formatter (std::to_chars laid out as repr) writes repr(v) for every
    double checked: the same digits (shortest round trip) and the same layout (positional in
    [1e-4, 1e16), else an exponent of at least two digits; '.0' after whole numbers; '-0.0')."""
    from edge.outputs._lineproto import repr_doubles

    values = _doubles_to_check()
    got = repr_doubles(values, b"\n").decode().split("\n")
    expected = [repr(v) for v in values.tolist()]
    wrong = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
    assert not wrong, wrong[:10]
    assert repr_doubles(values, b"\n", cpython=True).decode().split("\n") == expected  # the bench's baseline too
    back = np.array([float(t) for t in got])
    assert np.array_equal(back.view(np.uint64), values.view(np.uint64))  # round trip, -0.0 included


def test_float_formatter_refuses_non_finite():
    from edge.outputs._lineproto import repr_doubles

    with pytest.raises(ValueError, match="not finite"):
        repr_doubles(np.array([1.0, np.nan]))
