"""Reference decoding for the simulator tests, written independently of drivers.modbus.sim.encoding."""
from __future__ import annotations

import struct

STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
          "float32": "f", "float64": "d"}
LIMITS = {"int16": 2**15, "uint16": 2**16, "int32": 2**31, "uint32": 2**32, "int64": 2**63, "uint64": 2**64}


def struct_decode(words: list[int], dtype: str, order: str) -> float:
    """Reference decoder written independently of drivers.modbus.sim.encoding."""
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    data = b"".join(w.to_bytes(2, "big") for w in words)
    if order in ("BADC", "DCBA"):
        data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
    return struct.unpack(">" + STRUCT[dtype], data)[0]
