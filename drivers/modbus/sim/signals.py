"""Realistic signals for simulated points, computed for many points at once with numpy.

:func:`default_signal` picks a sensible :class:`SignalSpec` from a point's dtype, range and
name when the device spec gives none. :class:`SignalBank` holds the signal parameters of
every regenerated point of a plant in flat arrays and, per tick, computes all engineering
values in one vectorised pass, converts them to raw values and scatters the encoded words
into the plant memory (one assignment per dtype/order group).
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.modbus.points import RegisterPoint

from .encoding import encode_array, engineering_limits
from .image import DeviceImage
from .physics import PlantPhysics, gauss_array, key_of
from .spec import SIGNAL_KINDS, SignalSpec

_COUNTER = re.compile(r"count|total|energy|kwh|mwh|wh_|hours|runtime|volume|starts|pulses", re.I)
_STATUS = re.compile(r"status|state|flags|word|bits", re.I)
_ALARM = re.compile(r"alarm|fault|trip|error|fail", re.I)
KIND_CODES = {k: i for i, k in enumerate(SIGNAL_KINDS)}


def point_rng(seed: int, device: str, point: str) -> np.random.Generator:
    """A generator that gives a point the same signal on every run with the same seed."""
    return np.random.default_rng([seed, zlib.crc32(f"{device}/{point}".encode())])


def nominal_range(point: RegisterPoint) -> tuple[float, float]:
    """The range a default signal spans: the configured range, else a plausible one for the type."""
    lo, hi = engineering_limits(point)
    if point.low is not None and point.high is not None:
        return lo, hi
    if point.low is not None:
        return lo, min(hi, lo + 100.0)
    if point.high is not None:
        return max(lo, hi - 100.0), hi
    if point.dtype.startswith("uint") or lo >= 0:
        return max(lo, point.offset), min(hi, point.offset + 100.0)
    return max(lo, point.offset - 50.0), min(hi, point.offset + 50.0)


def default_signal(point: RegisterPoint, rng: np.random.Generator) -> SignalSpec:
    """A sensible signal for a point with no explicit spec (see module docs)."""
    name = point.name
    if point.dtype == "string":
        return SignalSpec(kind="constant", value=name)
    if point.dtype == "bool":
        if _ALARM.search(name):
            return SignalSpec(kind="toggle", period_s=float(rng.uniform(120, 600)), duty=0.1,
                              phase=float(rng.uniform(0, 1)))
        return SignalSpec(kind="toggle", period_s=float(rng.uniform(10, 60)), duty=0.5, phase=float(rng.uniform(0, 1)))
    lo, hi = nominal_range(point)
    if point.enum:
        return SignalSpec(kind="enum", levels=tuple(float(k) for k, _ in point.enum), period_s=float(rng.uniform(20, 90)))
    if point.writable:
        return SignalSpec(kind="constant", value=(lo + hi) / 2 if math.isfinite(lo + hi) else 0.0)
    if point.dtype in ("uint16", "int16") and point.scale == 1 and point.offset == 0 and _STATUS.search(name):
        return SignalSpec(kind="status_bits", bits=(0, 1, 2, 3), period_s=float(rng.uniform(5, 20)))
    if _COUNTER.search(name):
        start = min(max(lo, 0.0), hi)  # counters start at zero when the range allows it
        if point.dtype.startswith("float"):
            return SignalSpec(kind="counter", start=start, rate_per_s=max((hi - lo) / 1e5, 1e-3))
        step = abs(point.scale)  # at least one raw count per second, so the increase is visible
        return SignalSpec(kind="counter", start=start, rate_per_s=step * max(1, round((hi - lo) / step / 1e5)))
    span = hi - lo
    return SignalSpec(kind="sine", mean=lo + span / 2, amplitude=span / 4, noise=span / 200,
                      period_s=float(rng.uniform(30, 300)), phase=float(rng.uniform(0, 2 * math.pi)))


@dataclass(slots=True)
class BankEntry:
    """One regenerated point, as given to :class:`SignalBank`."""

    image: DeviceImage
    point: RegisterPoint
    signal: SignalSpec
    slot: int = -1  # kind "model": the output's position in PlantPhysics.sample()


class SignalBank:
    """The parameters of many signals in flat arrays, and the vectorised tick that writes them.

    Values are a pure function of ``t`` and the seed: the noise of a sine is hashed from
    (seed, point, t in milliseconds), model outputs come from ``physics`` (one
    :class:`PlantPhysics` shared by every bank of a plant).
    """

    def __init__(self, entries: Sequence[BankEntry], seed: int = 0, physics: PlantPhysics | None = None) -> None:
        n = len(entries)
        self.entries = list(entries)
        self.physics = physics
        self.noise_key = np.array([key_of(seed, i) for i in range(n)], dtype=np.uint64)
        self.slot = np.array([e.slot for e in entries], dtype=np.int64)
        if physics is None and (self.slot >= 0).any():
            raise ValueError("model signals need the plant's PlantPhysics")
        self.active = np.ones(n, dtype=bool)  # False once a point is pinned by set_value
        self.last_t = 0.0  # simulated time of the values the last tick wrote
        f = np.zeros
        self.kind = np.array([KIND_CODES[e.signal.kind] for e in entries], dtype=np.int8)
        self.mean, self.amp, self.noise = f(n), f(n), f(n)
        self.period, self.phase = np.ones(n), f(n)
        self.low, self.high, self.start, self.rate = f(n), f(n), f(n), f(n)
        self.duty, self.value, self.bitmask = f(n), f(n), np.zeros(n, dtype=np.int64)
        self.lim_lo, self.lim_hi = f(n), f(n)
        self.scale, self.offset = np.ones(n), f(n)
        max_levels = max([len(e.signal.levels) for e in entries] + [1])
        self.levels, self.nlevels = f((n, max_levels)), np.ones(n, dtype=np.int64)
        for i, e in enumerate(entries):
            s, p = e.signal, e.point
            self.mean[i], self.amp[i], self.noise[i] = s.mean, s.amplitude, s.noise
            self.period[i], self.phase[i], self.low[i], self.high[i] = s.period_s, s.phase, s.low, s.high
            self.start[i], self.rate[i], self.duty[i] = s.start, s.rate_per_s, s.duty
            self.value[i] = s.value if isinstance(s.value, float | int) else 0.0
            self.bitmask[i] = sum(1 << b for b in s.bits)
            if s.levels:
                self.levels[i, : len(s.levels)], self.nlevels[i] = s.levels, len(s.levels)
            self.lim_lo[i], self.lim_hi[i] = engineering_limits(p)
            self.scale[i], self.offset[i] = p.scale, p.offset
        self._build_groups()

    def _build_groups(self) -> None:
        """Index arrays per write pattern: (dtype, order) word groups, register bits, table bits."""
        words: dict[tuple[str, str], list[int]] = {}
        reg_bits: list[int] = []
        table_bits: list[int] = []
        for i, e in enumerate(self.entries):
            if e.point.table.is_bits:
                table_bits.append(i)
            elif e.point.dtype == "bool":
                reg_bits.append(i)
            else:
                words.setdefault((e.point.dtype, e.point.order), []).append(i)
        self.word_groups = []
        for (dtype, order), idx in words.items():
            sel = np.array(idx, dtype=np.int64)
            first = np.array([self._gidx(i) for i in idx], dtype=np.int64)
            count = self.entries[idx[0]].point.count
            self.word_groups.append((dtype, order, sel, first[:, None] + np.arange(count)))
        self.reg_bits = np.array(reg_bits, dtype=np.int64)
        self.reg_bit_index = np.array([self._gidx(i) for i in reg_bits], dtype=np.int64)
        self.reg_bit_mask = np.array([1 << (self.entries[i].point.bit or 0) for i in reg_bits], dtype=np.uint16)
        self.table_bits = np.array(table_bits, dtype=np.int64)
        self.table_bit_index = np.array([self._gidx(i) for i in table_bits], dtype=np.int64)

    def _gidx(self, i: int) -> int:
        e = self.entries[i]
        return e.image.global_index(e.point.table, e.point.address)

    def values(self, t: float) -> np.ndarray:
        """Engineering values of every signal at ``t`` seconds after the plant started."""
        k = self.kind
        cycles = t / self.period
        out = np.array(self.value, dtype=np.float64)
        m = k == KIND_CODES["sine"]
        if m.any():
            noise = gauss_array(self.noise_key[m], int(round(t * 1000.0))) * self.noise[m]
            out[m] = self.mean[m] + self.amp[m] * np.sin(2 * np.pi * cycles[m] + self.phase[m]) + noise
        m = k == KIND_CODES["ramp"]
        out[m] = self.low[m] + (self.high[m] - self.low[m]) * np.mod(cycles[m] + self.phase[m], 1.0)
        m = k == KIND_CODES["counter"]
        if m.any():
            span = self.lim_hi[m] - self.lim_lo[m]
            total = self.start[m] + self.rate[m] * t
            wrap = np.isfinite(span) & (span > 0)
            with np.errstate(invalid="ignore"):  # unbounded counters give NaN here; np.where drops them
                wrapped = self.lim_lo[m] + np.mod(total - self.lim_lo[m], np.where(wrap, span, 1.0))
            out[m] = np.where(wrap & (total > self.lim_hi[m]), wrapped, total)
        m = (k == KIND_CODES["step"]) | (k == KIND_CODES["enum"])
        if m.any():
            pos = np.mod(np.floor(cycles[m] + self.phase[m]).astype(np.int64), self.nlevels[m])
            out[m] = self.levels[m][np.arange(len(pos)), pos]
        m = k == KIND_CODES["toggle"]
        out[m] = (np.mod(cycles[m] + self.phase[m], 1.0) < self.duty[m]).astype(np.float64)
        m = k == KIND_CODES["status_bits"]
        if m.any():
            weights = 1 << np.arange(16, dtype=np.int64)
            flips = np.floor(cycles[m, None] / (np.arange(16) + 1)).astype(np.int64) & 1
            out[m] = ((flips * weights) & self.bitmask[m, None]).sum(axis=1).astype(np.float64)
        m = k == KIND_CODES["model"]
        if m.any():
            assert self.physics is not None
            out[m] = self.physics.sample(t)[self.slot[m]]
        return np.clip(out, self.lim_lo, self.lim_hi)

    def tick(self, t: float, regs: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Compute all values at ``t``, write the active ones into the plant memory, return them all."""
        eng = self.values(t)
        self.last_t = t
        if not len(eng):
            return eng
        raw = (eng - self.offset) / self.scale
        active = self.active
        all_active = bool(active.all())
        for dtype, order, sel, index in self.word_groups:
            if not all_active:
                keep = active[sel]
                sel, index = sel[keep], index[keep]
            if len(sel):
                regs[index] = encode_array(dtype, order, raw[sel])
        if len(self.reg_bits):
            keep = active[self.reg_bits]
            idx, mask = self.reg_bit_index[keep], self.reg_bit_mask[keep]
            on = raw[self.reg_bits][keep] != 0
            np.bitwise_and.at(regs, idx, ~mask)
            np.bitwise_or.at(regs, idx[on], mask[on])
        if len(self.table_bits):
            keep = active[self.table_bits]
            bits[self.table_bit_index[keep]] = raw[self.table_bits][keep] != 0
        return eng
