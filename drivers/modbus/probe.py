"""Guessing the type and byte/word order of an undocumented 32- or 64-bit value (``edge probe``).

Given several successive reads of the same 2- or 4-register span, decode each read as every
candidate type (int32, uint32, float32; or int64, uint64, float64) in all four orders and rank
the interpretations by plausibility. A physical value read a few times in a row is finite,
of moderate magnitude, inside the range the technician expects, and changes little between
reads; a wrong order usually breaks one of these (a small float read word-swapped becomes a
denormal or a huge number; the low word of a slowly changing integer ends up in the high
word and makes it jump). The score is a sum of such evidence; the reason lists it.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.modbus.codec import decode_point
from drivers.modbus.points import ORDERS, RegisterPoint, Table

CANDIDATES: dict[int, tuple[str, ...]] = {2: ("float32", "int32", "uint32"), 4: ("float64", "int64", "uint64")}
_TINY = {"float32": float(np.finfo(np.float32).tiny), "float64": float(np.finfo(np.float64).tiny)}
HUGE = 1e9
AMBIGUOUS_MARGIN = 5.0
#: Tie-breakers only: ABCD is the Modbus standard, CDAB the most common deviation.
_ORDER_PRIOR = {"ABCD": 0.5, "CDAB": 0.25, "BADC": 0.0, "DCBA": 0.0}


@dataclass(frozen=True, slots=True)
class Interpretation:
    """One way to read the span: type, order, the decoded value of each read, and why it ranks so."""

    dtype: str
    order: str
    values: tuple[float | int, ...]
    score: float
    reason: str


def _check_reads(reads: Sequence[Sequence[int]], low: float | None, high: float | None) -> int:
    if not reads:
        raise ValueError("probe needs at least one read of the register span")
    sizes = {len(r) for r in reads}
    if len(sizes) != 1 or next(iter(sizes)) not in CANDIDATES:
        raise ValueError(f"every read must hold 2 registers (32-bit) or 4 (64-bit), got lengths {sorted(sizes)}")
    if any(not 0 <= int(v) <= 0xFFFF for r in reads for v in r):
        raise ValueError("register values must be 0..65535")
    if low is not None and high is not None and low > high:
        raise ValueError(f"range low {low} is above high {high}")
    return next(iter(sizes))


def _evidence(dtype: str, values: Sequence[float | int], low: float | None, high: float | None) -> tuple[float, list[str]]:
    """Score and reasons for one candidate's decoded values."""
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        return -100.0, ["NaN or infinite"]
    score, why = 0.0, []
    magnitude = max(abs(v) for v in floats)
    smallest = min((abs(v) for v in floats if v != 0), default=0.0)
    if dtype in _TINY and 0 < smallest < _TINY[dtype]:
        score -= 60
        why.append("denormal")
    elif dtype in _TINY and 0 < smallest < 1e-6:
        score -= 20
        why.append("tiny (below 1e-6)")
    elif dtype in _TINY and 0 < smallest < 1e-3:
        score -= 2 * (-3 - math.log10(smallest))
    if magnitude > 1e6:  # the bit pattern of a float32 read as an integer is about 1e9
        score -= 10 * (min(math.log10(magnitude), 9) - 6)
    if magnitude > HUGE:
        score -= 30 + 5 * (math.log10(magnitude) - math.log10(HUGE))
        why.append(f"huge ({magnitude:.3g})")
    elif magnitude > 1e6:
        why.append(f"large ({magnitude:.3g})")
    if low is not None or high is not None:
        lo = -math.inf if low is None else low
        hi = math.inf if high is None else high
        if all(lo <= v <= hi for v in floats):
            score += 30
            why.append(f"inside [{low}, {high}]")
        else:
            score -= 30
            why.append(f"outside [{low}, {high}]")
    if len(floats) > 1:
        score += _stability(floats, why)
    if not why:
        why.append("finite, moderate")
    return score, why


def _stability(values: Sequence[float], why: list[str]) -> float:
    """+8 per decade of relative variation below 1 % (at most +8), -8 per decade above (at most -40).

    The bonus stops at 0.1 %: below that, sensor noise says nothing about the order, and a
    wrong reading that moves the varying bytes lower in the number looks even more stable."""
    spread = max(values) - min(values)
    rel = spread / max(abs(statistics.median(values)), 1e-300)
    if spread == 0:
        why.append("stable")
    elif rel <= 0.01:
        why.append(f"stable (varies {100 * rel:.2g} %)")
    elif rel <= 0.1:
        why.append(f"steady (varies {100 * rel:.2g} %)")
    else:
        why.append(f"jumps ({100 * rel:.3g} % between reads)")
    return max(-40.0, min(8.0, -8 * math.log10(max(rel, 1e-3) / 1e-2)))


def probe(reads: Sequence[Sequence[int]], low: float | None = None, high: float | None = None,
          dtypes: Sequence[str] | None = None) -> list[Interpretation]:
    """Rank every (type, order) reading of successive reads of one span, most plausible first.

    ``reads``: each a list of the span's registers in address order (2 or 4). ``low``/``high``:
    the range the value should be in, if known. ``dtypes``: restrict the candidate types.
    """
    size = _check_reads(reads, low, high)
    types = CANDIDATES[size] if dtypes is None else tuple(dtypes)
    wrong = [t for t in types if t not in CANDIDATES[size]]
    if wrong:
        raise ValueError(f"types {wrong} do not span {size} registers; allowed: {', '.join(CANDIDATES[size])}")
    out = []
    for dtype in types:
        for order in ORDERS:
            point = RegisterPoint(tag_id=0, name="probe", table=Table.HOLDING, address=0, dtype=dtype, order=order)
            values = tuple(decode_point(point, [int(v) for v in r]) for r in reads)
            score, why = _evidence(dtype, values, low, high)
            out.append(Interpretation(dtype, order, values, round(score + _ORDER_PRIOR[order], 3), "; ".join(why)))
    out.sort(key=lambda i: -i.score)
    return out


def format_probe(results: Sequence[Interpretation], top: int | None = None) -> str:
    """A table for the technician: rank, type, order, values, score, reason."""
    lines = [f"{'#':>2}  {'type':<8} {'order':<5} {'score':>8}  values  (reason)"]
    for rank, r in enumerate(results[:top] if top else results, start=1):
        shown = ", ".join(f"{v:.7g}" if isinstance(v, float) else str(v) for v in r.values[:5])
        more = f", ... ({len(r.values)} reads)" if len(r.values) > 5 else ""
        lines.append(f"{rank:>2}  {r.dtype:<8} {r.order:<5} {r.score:>8.1f}  {shown}{more}  ({r.reason})")
    rival = next((r for r in results[1:] if r.values != results[0].values), None)
    if rival is not None and results[0].score - rival.score < AMBIGUOUS_MARGIN:
        lines.append(f"note: {rival.dtype} {rival.order} reads other values and scores within "
                     f"{AMBIGUOUS_MARGIN:g} points: read again while the value changes, or give the expected range")
    return "\n".join(lines)
