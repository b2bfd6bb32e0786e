"""Micro-benchmark: BlockCodec.decode of one 125-register mixed block vs a plain struct decode.

The baseline is what a straightforward implementation does: one ``struct.unpack_from`` per
point on the response bytes, word order fixed with a Python reorder, scale/offset and the
range check per value in Python, results appended to lists. Both run in this process on the
same registers; the RESULT line holds ``decode_us_per_block`` (BlockCodec, µs per block),
``baseline_us_per_block``, ``ratio`` (BlockCodec / baseline) and ``tags_per_s`` (BlockCodec).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.modbus.codec import BlockCodec, encode  # noqa: E402
from drivers.modbus.points import ORDERS, RegisterPoint, Table  # noqa: E402

TYPES = ("uint16", "int16", "float32", "int32", "uint32", "float64", "int64")
SIZES = {"uint16": 1, "int16": 1, "float32": 2, "int32": 2, "uint32": 2, "float64": 4, "int64": 4}
FMT = {"uint16": ">H", "int16": ">h", "float32": ">f", "int32": ">i", "uint32": ">I", "float64": ">d",
       "int64": ">q"}


def mixed_points(rng: random.Random) -> list[RegisterPoint]:
    """Points filling 125 registers: mixed types, orders, scales, ranges, some bits of a status word."""
    points, address = [], 0
    while True:
        dtype = rng.choice(TYPES)
        if address + SIZES[dtype] > 120:
            break
        scaled = rng.random() < 0.5
        points.append(RegisterPoint(
            tag_id=len(points), name=f"t{len(points)}", table=Table.HOLDING, address=address, dtype=dtype,
            order=rng.choice(ORDERS), scale=0.1 if scaled else 1.0, offset=-5.0 if scaled else 0.0,
            low=-1e9 if rng.random() < 0.5 else None, high=1e9, clamp=rng.random() < 0.2))
        address += SIZES[dtype]
    for bit in range(0, 16, 3):
        points.append(RegisterPoint(tag_id=len(points), name=f"b{bit}", table=Table.HOLDING, address=124,
                                    dtype="bool", bit=bit))
    return points


def fill(points: list[RegisterPoint], rng: random.Random) -> list[int]:
    regs = [0] * 125
    for p in points:
        if p.dtype == "bool":
            regs[p.address] = rng.randrange(0x10000)
        elif p.dtype.startswith("float"):
            regs[p.address:p.end] = encode(p, rng.uniform(-1000, 1000))
        else:
            regs[p.address:p.end] = encode(p, rng.randrange(0, 30000) * p.scale + p.offset)
    return regs


def struct_decode(points: list[RegisterPoint], registers: list[int]) -> tuple[list[float], list[int]]:
    """The plain-Python baseline: per point unpack, reorder, scale, range check."""
    wire = struct.pack(f">{len(registers)}H", *registers)
    values, quality = [], []
    for p in points:
        if p.dtype == "bool":
            v = float((registers[p.address] >> p.bit) & 1)
        else:
            n = SIZES[p.dtype]
            words = [wire[2 * (p.address + i): 2 * (p.address + i) + 2] for i in range(n)]
            if p.order in ("CDAB", "DCBA"):
                words.reverse()
            if p.order in ("BADC", "DCBA"):
                words = [w[::-1] for w in words]
            v = struct.unpack(FMT[p.dtype], b"".join(words))[0] * p.scale + p.offset
        low = -math.inf if p.low is None else p.low
        high = math.inf if p.high is None else p.high
        if p.clamp:
            v = min(max(v, low), high)
        ok = math.isfinite(v) and low <= v <= high
        values.append(v if ok else math.nan)
        quality.append(0 if ok else 5)
    return values, quality


def timed(fn, rounds: int) -> float:
    """Best of five runs of ``rounds`` calls, in seconds per call (the least disturbed run)."""
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - t0) / rounds)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="ten times more rounds")
    args = ap.parse_args()
    rounds = 20_000 if args.long else 2_000
    rng = random.Random(7)
    points = mixed_points(rng)
    regs = fill(points, rng)
    codec = BlockCodec(Table.HOLDING, 0, 125, points)
    values, quality = codec.decode(regs)
    base_values, base_quality = struct_decode(points, regs)
    np.testing.assert_allclose(values, base_values, rtol=1e-12)
    assert quality.tolist() == base_quality
    as_array = np.array(regs, dtype=np.uint16)
    t_list = timed(lambda: codec.decode(regs), rounds)
    t_array = timed(lambda: codec.decode(as_array), rounds)
    wire = np.frombuffer(as_array.astype(">u2").tobytes(), dtype=">u2")  # as a client can hand over a frame
    t_wire = timed(lambda: codec.decode(wire), rounds)
    t_batch = timed(lambda: codec.decode_batch("dev", 0, wire), rounds)
    t_base = timed(lambda: struct_decode(points, regs), rounds // 4)
    n = len(points)
    print(f"block: 125 registers, {n} points ({', '.join(TYPES)}, 6 bits), all four orders")
    print(f"BlockCodec.decode, registers as list:        {t_list * 1e6:8.1f} us/block")
    print(f"BlockCodec.decode, registers as uint16 array: {t_array * 1e6:8.1f} us/block")
    print(f"BlockCodec.decode, big-endian frame view:     {t_wire * 1e6:8.1f} us/block")
    print(f"BlockCodec.decode_batch (SampleBatch), frame: {t_batch * 1e6:8.1f} us/block")
    print(f"baseline struct decode (plain Python):        {t_base * 1e6:8.1f} us/block")
    print(f"ratio BlockCodec(list) / baseline: {t_list / t_base:.3f}")
    result = {"decode_us_per_block": round(t_list * 1e6, 2), "decode_array_us_per_block": round(t_array * 1e6, 2),
              "decode_frame_us_per_block": round(t_wire * 1e6, 2), "decode_batch_us_per_block": round(t_batch * 1e6, 2),
              "baseline_us_per_block": round(t_base * 1e6, 2), "ratio": round(t_list / t_base, 3),
              "points_per_block": n, "tags_per_s": round(n / t_list)}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
