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
