"""Guessing the type and byte/word order of an undocumented 32- or 64-bit value (``edge probe``).

Given several successive reads of the same 2- or 4-register span, decode each read as every
candidate type (int32, uint32, float32; or int64, uint64, float64) in all four orders and rank
the interpretations by plausibility. The score is a sum of evidence; ``reasons`` lists it.

Evidence for a float reading: finite, of moderate magnitude (a physical quantity is neither
1e-28 nor 1e30: a tiny or denormal float is what an integer's bytes look like when read as a
float), inside the expected range, stable between reads (a float read in the wrong order
jumps, because the word that varies lands in the exponent).

Evidence for an integer reading: a plausible magnitude (a 64-bit counter stays far below 1e15;
a float's bit pattern read as an integer is about 1e9 and its own float reading is moderate),
and over several reads the behaviour of a counter: rising steadily, never below zero, its
least significant byte moving (an integer read with its bytes or words misplaced moves only
above the low byte). Among readings that give the same numbers, a 32-bit counter is read as
uint32 (accumulators need the top bit) and a 64-bit one as int64 (it never reaches 2**63 and
meters' maps declare int64); ABCD, then CDAB, break remaining ties.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from drivers.modbus.codec import decode_point
from drivers.modbus.points import ORDERS, RegisterPoint, Table

CANDIDATES: dict[int, tuple[str, ...]] = {2: ("float32", "int32", "uint32"), 4: ("float64", "int64", "uint64")}
_FLOAT_OF = {2: "float32", 4: "float64"}
_TINY = {"float32": float(np.finfo(np.float32).tiny), "float64": float(np.finfo(np.float64).tiny)}
HUGE = 1e9
AMBIGUOUS_MARGIN = 5.0
#: Tie-breakers only: ABCD is the Modbus standard, CDAB the most common deviation.
_ORDER_PRIOR = {"ABCD": 0.5, "CDAB": 0.25, "BADC": 0.0, "DCBA": 0.0}
#: Tie-breakers between readings that give the same numbers (see the module docstring).
_TYPE_PRIOR = {"int64": 0.2}
#: A float reading between these magnitudes is a plausible physical value.
_MODERATE = (1e-3, 1e10)
#: A 64-bit counter (Wh, pulses, seconds) stays far below this.
_COUNTER64_MAX = 1e15


@dataclass(frozen=True, slots=True)
class Interpretation:
    """One way to read the span: type, order, the decoded value of each read, and why it ranks so."""

    dtype: str
    order: str
    values: tuple[float | int, ...]
    score: float
    reason: str
    reasons: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        """For ``edge probe --json``: type, order, the last value, every value, score, reasons."""
        return {"type": self.dtype, "order": self.order, "value": _json_number(self.values[-1]),
                "values": [_json_number(v) for v in self.values], "score": self.score,
                "reasons": list(self.reasons)}


def _json_number(v: float | int) -> float | int | str:
    """JSON has no NaN or infinity: those become their names."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


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


def _decode(dtype: str, order: str, read: Sequence[int]) -> float | int:
    point = RegisterPoint(tag_id=0, name="probe", table=Table.HOLDING, address=0, dtype=dtype, order=order)
    return decode_point(point, [int(v) for v in read])  # type: ignore[return-value]


def _float_evidence(dtype: str, floats: Sequence[float], why: list[str]) -> float:
    """Magnitude evidence of a float reading: tiny and denormal values are integers' bytes."""
    score = 0.0
    magnitude = max(abs(v) for v in floats)
    smallest = min((abs(v) for v in floats if v != 0), default=0.0)
    if 0 < smallest < _TINY[dtype]:
        score -= 80
        why.append("denormal")
    elif 0 < smallest < 1e-6:
        score -= 50
        why.append(f"tiny ({smallest:.3g})")
    elif 0 < smallest < _MODERATE[0]:
        score -= 2 * (math.log10(_MODERATE[0]) - math.log10(smallest))
    if magnitude > 1e12:
        score -= 40 + 5 * (math.log10(magnitude) - 12)
        why.append(f"huge ({magnitude:.3g})")
    elif magnitude > 1e7:
        score -= 2 * (math.log10(magnitude) - 7)
        why.append(f"large ({magnitude:.3g})")
    return score


def _integer_evidence(dtype: str, order: str, ints: Sequence[int], float_twins: Mapping[str, Sequence[float]],
                      why: list[str]) -> float:
    """Magnitude and counter evidence of an integer reading (``float_twins``: the same bytes as a
    float in each order; the integer's own order is tried first)."""
    score = 0.0
    magnitude = max(abs(v) for v in ints)
    wide = dtype.endswith("64")
    if wide and magnitude > _COUNTER64_MAX:
        score -= 40 + 5 * (math.log10(magnitude) - math.log10(_COUNTER64_MAX))
        why.append(f"huge for a 64-bit value ({magnitude:.3g})")
    elif magnitude > 1e6:
        score -= 2 * (math.log10(magnitude) - 6)  # smaller readings are likelier; a tie-breaker
        why.append(f"large ({magnitude:.3g})")
    if magnitude >= 1e8:
        for twin_order in (order, *(o for o in ORDERS if o != order)):
            twin = float_twins[twin_order]
            if all(math.isfinite(f) and _MODERATE[0] <= abs(f) <= _MODERATE[1] for f in twin) and _steady(twin):
                score -= 40
                why.append(f"the bit pattern of a float ({'float32' if dtype.endswith('32') else 'float64'} "
                           f"{twin_order} reads {twin[-1]:.7g})")
                break
    score += _counter_evidence(dtype, ints, why)
    return score


def _counter_evidence(dtype: str, ints: Sequence[int], why: list[str]) -> float:
    """Over several reads: a steady rise, never below zero, the low byte moving."""
    deltas = [b - a for a, b in zip(ints, ints[1:], strict=False)]
    moving = [d for d in deltas if d != 0]
    if not moving:
        return 0.0
    score = 0.0
    if len(moving) >= 2 and all(d % 256 == 0 for d in moving):
        score -= 25
        why.append("changes only above its low byte (bytes or words misplaced)")
    if all(d >= 0 for d in deltas) and min(ints) < 0:
        why.append("rises, but below zero: not a counter")
    elif all(d >= 0 for d in deltas):
        score += 6
        why.append("rises like a counter")
        if all(d < 1 << 16 for d in deltas):
            score += 4
            why.append("in small steps")
        if dtype == "uint32":
            score += 0.2  # int32 reads the same numbers: 32-bit counters (accumulators) are unsigned
    return score


def _range_evidence(floats: Sequence[float], low: float | None, high: float | None, why: list[str]) -> float:
    if low is None and high is None:
        return 0.0
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    if all(lo <= v <= hi for v in floats):
        why.append(f"inside [{low}, {high}]")
        return 30.0
    why.append(f"outside [{low}, {high}]")
    return -30.0


def _evidence(dtype: str, order: str, values: Sequence[float | int], float_twins: Mapping[str, Sequence[float]],
              low: float | None, high: float | None) -> tuple[float, list[str]]:
    """Score and reasons for one candidate's decoded values."""
    floats = [float(v) for v in values]
    if not all(math.isfinite(v) for v in floats):
        return -100.0, ["NaN or infinite"]
    why: list[str] = []
    if dtype.startswith("float"):
        score = _float_evidence(dtype, floats, why)
    else:
        score = _integer_evidence(dtype, order, [int(v) for v in values], float_twins, why)
    score += _range_evidence(floats, low, high, why)
    if len(floats) > 1:
        # an integer that varies within one register's span is steady, however close to zero it is
        score += _stability(floats, why, 0.0 if dtype.startswith("float") else float(1 << 16))
    if not why:
        why.append("finite, moderate")
    return score, why


def _steady(values: Sequence[float]) -> bool:
    """Varies by at most 10 % between reads (not jumping)."""
    return max(values) - min(values) <= 0.1 * abs(statistics.median(values))


def _stability(values: Sequence[float], why: list[str], floor: float = 0.0) -> float:
    """+8 per decade of relative variation below 1 % (at most +8), -8 per decade above (at most -40).

    Variation is relative to the median's magnitude, or to ``floor`` if that is larger. The
    bonus stops at 0.1 %: below that, sensor noise says nothing about the order, and a wrong
    reading that moves the varying bytes lower in the number looks even more stable."""
    spread = max(values) - min(values)
    rel = spread / max(abs(statistics.median(values)), floor, 1e-300)
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
    twins = {order: tuple(float(_decode(_FLOAT_OF[size], order, r)) for r in reads) for order in ORDERS}
    out = []
    for dtype in types:
        for order in ORDERS:
            values = tuple(_decode(dtype, order, r) for r in reads)
            score, why = _evidence(dtype, order, values, twins, low, high)
            score += _ORDER_PRIOR[order] + _TYPE_PRIOR.get(dtype, 0.0) * (score > -50)
            out.append(Interpretation(dtype, order, values, round(score, 3), "; ".join(why), tuple(why)))
    out.sort(key=lambda i: -i.score)
    return out


def format_probe(results: Sequence[Interpretation], top: int | None = None) -> str:
    """A table for the technician: rank, type, order, values, score, reason."""
    lines = [f"{'#':>2}  {'type':<8} {'order':<5} {'score':>8}  values  (reason)"]
    for rank, r in enumerate(results[:top] if top else results, start=1):
        shown = ", ".join(_shown(v) for v in r.values[:5])
        more = f", ... ({len(r.values)} reads)" if len(r.values) > 5 else ""
        lines.append(f"{rank:>2}  {r.dtype:<8} {r.order:<5} {r.score:>8.1f}  {shown}{more}  ({r.reason})")
    rival = next((r for r in results[1:] if r.values != results[0].values), None)
    if rival is not None and results[0].score - rival.score < AMBIGUOUS_MARGIN:
        lines.append(f"note: {rival.dtype} {rival.order} reads other values and scores within "
                     f"{AMBIGUOUS_MARGIN:g} points: read again while the value changes, or give the expected range")
    return "\n".join(lines)


def _shown(v: float | int) -> str:
    """Full precision: the shortest text that reads back as the same number."""
    return repr(v) if isinstance(v, float) else str(v)
