"""Pure-Python twin of the compiled ring store (``edge.aggregate._ringbuf.RingStore``).

Same API, bit-identical results: every floating-point operation happens in the same order
as in the extension (four accumulator lanes by sample position, combined pairwise), and
only exact operations (copies, comparisons, integer arithmetic, stable sorts) use numpy.
It is used when the extension is not built, and as the reference in the parity tests.

Semantics (shared by both implementations):

* A tag's ring holds ``capacity`` samples (ts int64 ns, value float64, quality uint8) in
  arrival order; when full the oldest is overwritten (``overwritten`` counter).
* A sample is *good* when its quality is 0 (Good) and its value is not NaN. Statistics use
  good samples only; ``bad_count`` counts the rest of the window's samples.
* Windows are aligned to the Unix epoch: a sample at ``ts`` belongs to the window starting
  at ``floor(ts / w) * w``. ``collect(now)`` closes the windows ending at or before
  ``now - grace``. Only windows that received at least one sample are emitted.
* A sample older than the end of the newest window already emitted for its tag is *late*:
  it is counted and not stored (it would otherwise change a window already sent).
"""
from __future__ import annotations

import math

import numpy as np

STAT_NAMES = ("count", "min", "max", "mean", "first", "last", "sum", "std", "twa", "good_ratio", "bad_count")
BASIC_STATS = ("count", "min", "max", "mean", "sum", "good_ratio", "bad_count")
_INT_STATS = ("count", "bad_count")
MAX_SPECS = 8
LANES = 8
INT64_MIN = -(2**63)
NAN = float("nan")
INF = float("inf")
_I64 = np.int64


def _floor_div(a: int, b: int) -> int:
    return a // b  # Python's // already floors, like the extension's floor_div


def _bin_edge(t0: int, span: int, nb: int, k: int) -> int:
    return t0 + (span // nb) * k + ((span % nb) * k) // nb


def _lower_bound(ts: np.ndarray, a: int, n: int, key: int) -> int:
    """First index in [a, n) with ts >= key (ts sorted)."""
    return a + int(np.searchsorted(ts[a:n], key, side="left"))


def _min2(a: float, b: float) -> float:
    return b if b < a else a


def _max2(a: float, b: float) -> float:
    return b if b > a else a


def _lane_min(m: list[float]) -> float:
    return _min2(_min2(_min2(m[0], m[1]), _min2(m[2], m[3])), _min2(_min2(m[4], m[5]), _min2(m[6], m[7])))


def _lane_max(m: list[float]) -> float:
    return _max2(_max2(_max2(m[0], m[1]), _max2(m[2], m[3])), _max2(_max2(m[4], m[5]), _max2(m[6], m[7])))


def _lane_sum(s: list[float]) -> float:
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def window_stats(ts: list[int], v: list[float], q: list[int], we: int, basic: bool) -> list[float]:
    """Statistics of one window; the same definitions and operation order as the extension.

    Every accumulator has eight lanes (sample i goes to lane i & 7), combined as
    ((l0 op l1) op (l2 op l3)) op ((l4 op l5) op (l6 op l7)): the extension's SIMD layout.
    """
    n = len(v)
    mn = [INF] * LANES
    mx = [-INF] * LANES
    s = [0.0] * LANES
    tw = [0.0] * LANES
    cnt = 0
    den = 0
    fi = li = -1
    for i in range(n):
        x = v[i]
        if q[i] == 0 and x == x:
            g = i & 7
            cnt += 1
            mn[g] = x if x < mn[g] else mn[g]
            mx[g] = x if x > mx[g] else mx[g]
            s[g] += x
            if not basic:
                if fi < 0:
                    fi = i
                li = i
                dt = (ts[i + 1] if i + 1 < n else we) - ts[i]
                den += dt
                tw[g] += x * float(dt)
    total = _lane_sum(s)
    res = [NAN] * 11
    res[0] = float(cnt)
    res[6] = total
    res[9] = cnt / n if n > 0 else NAN
    res[10] = float(n - cnt)
    if cnt == 0:
        return res
    mean = total / cnt
    res[1] = _lane_min(mn)
    res[2] = _lane_max(mx)
    res[3] = mean
    if basic:
        return res
    res[4] = v[fi]
    res[5] = v[li]
    s = [0.0] * LANES
    for i in range(fi, li + 1):
        x = v[i]
        if q[i] == 0 and x == x:
            d = x - mean
            s[i & 7] += d * d
    res[7] = math.sqrt(_lane_sum(s) / cnt)
    res[8] = _lane_sum(tw) / den if den > 0 else NAN
    return res


def split_windows(ts: np.ndarray, vs: np.ndarray, qs: np.ndarray, w: int, tag_id: int, basic: bool,
                  rows: list[tuple[int, int, list[float]]]) -> None:
    """Cut a time-sorted segment into aligned windows of ``w`` ns; append (tag, start, stats)."""
    n = len(ts)
    tl, vl, ql = ts.tolist(), vs.tolist(), qs.tolist()
    a = 0
    while a < n:
        ws = _floor_div(tl[a], w) * w
        we = ws + w
        b = _lower_bound(ts, a, n, we)
        rows.append((tag_id, ws, window_stats(tl[a:b], vl[a:b], ql[a:b], we, basic)))
        a = b


def _best(vl: list[float], ql: list[int], a: int, b: int) -> tuple[int, int, int, int]:
    """(first, argmin, argmax, last) of the good samples in [a, b); -1s when there is none."""
    fi = li = imn = imx = -1
    mn = INF
    mx = -INF
    for i in range(a, b):
        x = vl[i]
        if ql[i] == 0 and x == x:
            if fi < 0:
                fi = imn = imx = i
                mn = mx = x
            else:
                if x < mn:
                    mn = x
                    imn = i
                if x > mx:
                    mx = x
                    imx = i
            li = i
    return fi, imn, imx, li


def m4_select(ts: np.ndarray, vs: np.ndarray, qs: np.ndarray, t0: int, span: int, nb: int) -> list[int]:
    vl, ql = vs.tolist(), qs.tolist()
    n = len(ts)
    out: list[int] = []
    a = 0
    for k in range(nb):
        b = _lower_bound(ts, a, n, _bin_edge(t0, span, nb, k + 1))
        fi, imn, imx, li = _best(vl, ql, a, b)
        if fi >= 0:
            for j in (fi, min(imn, imx), max(imn, imx), li):
                if not out or out[-1] != j:
                    out.append(j)
        a = b
    return out


def minmax_select(ts: np.ndarray, vs: np.ndarray, qs: np.ndarray, t0: int, span: int, nb: int) -> list[int]:
    vl, ql = vs.tolist(), qs.tolist()
    n = len(ts)
    out: list[int] = []
    a = 0
    for k in range(nb):
        b = _lower_bound(ts, a, n, _bin_edge(t0, span, nb, k + 1))
        fi, imn, imx, _ = _best(vl, ql, a, b)
        if fi >= 0:
            if imn == imx:
                out.append(imn)
            else:
                out.extend((min(imn, imx), max(imn, imx)))
        a = b
    return out


def lttb_select(ts: np.ndarray, vs: np.ndarray, p: list[int], t0: int, n_out: int) -> list[int]:
    """Largest-Triangle-Three-Buckets over preselected indices p (len(p) > n_out >= 3)."""
    m = len(p)
    inner = m - 2
    nbk = n_out - 2
    tl = [float(ts[j] - t0) for j in p]
    yl = [float(vs[j]) for j in p]
    out = [p[0]]
    a = 0
    for i in range(nbk):
        lo = 1 + (i * inner) // nbk
        hi = 1 + ((i + 1) * inner) // nbk
        if i + 1 < nbk:
            nlo, nhi = hi, 1 + ((i + 2) * inner) // nbk
            nx = ny = 0.0
            for j in range(nlo, nhi):
                nx += tl[j]
                ny += yl[j]
            nx = nx / (nhi - nlo)
            ny = ny / (nhi - nlo)
        else:
            nx, ny = tl[m - 1], yl[m - 1]
        ax, ay = tl[a], yl[a]
        best, best_area = lo, -1.0
        for j in range(lo, hi):
            area = (ax - nx) * (yl[j] - ay) - (ax - tl[j]) * (ny - ay)
            if area < 0:
                area = -area
            if area > best_area:
                best_area = area
                best = j
        out.append(p[best])
        a = best
    out.append(p[m - 1])
    return out


class _Ring:
    __slots__ = ("ts", "v", "q", "cap", "head", "widx", "max_ts", "disorder_seq", "watermark", "grace_ns",
                 "late", "bad", "unwindowed", "tag_id", "specs", "done_ns", "pos")

    def __init__(self, tag_id: int, capacity: int, specs: set[int], grace_ns: int) -> None:
        self.ts = np.zeros(capacity, dtype=np.int64)
        self.v = np.zeros(capacity, dtype=np.float64)
        self.q = np.zeros(capacity, dtype=np.uint8)
        self.cap = capacity
        self.head = 0
        self.widx = 0
        self.max_ts = INT64_MIN
        self.disorder_seq = -1
        self.watermark = INT64_MIN
        self.grace_ns = grace_ns
        self.late = 0
        self.bad = 0
        self.unwindowed = 0
        self.tag_id = tag_id
        self.specs = specs
        self.done_ns = [INT64_MIN] * MAX_SPECS
        self.pos = [0] * MAX_SPECS

    def push(self, ts: int, x: float, q: int) -> None:
        if ts < self.watermark:
            self.late += 1
            return
        if ts < self.max_ts:
            self.disorder_seq = self.head
        else:
            self.max_ts = ts
        w = self.widx
        self.ts[w] = ts
        self.v[w] = x
        self.q[w] = q
        if not (q == 0 and x == x):
            self.bad += 1
        self.head += 1
        self.widx = 0 if w + 1 == self.cap else w + 1

    def oldest(self) -> int:
        return self.head - self.cap if self.head > self.cap else 0

    def segment(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.arange(lo, hi, dtype=np.int64) % self.cap
        return self.ts[idx], self.v[idx], self.q[idx]

    def seq_lower_bound(self, lo: int, hi: int, key: int) -> int:
        a, b = lo, hi
        while a < b:
            mid = a + (b - a) // 2
            if int(self.ts[mid % self.cap]) < key:
                a = mid + 1
            else:
                b = mid
        return a


class RingStore:
    """Ring buffers for many tags (pure Python). See ``edge.aggregate`` for the contract."""

    def __init__(self, basic: bool = False) -> None:
        self.basic = bool(basic)
        self.ignored = 0
        self._rings: list[_Ring] = []
        self._slot: dict[int, int] = {}
        self._specs: list[int] = []

    @property
    def stat_names(self) -> tuple[str, ...]:
        return BASIC_STATS if self.basic else STAT_NAMES

    @property
    def window_lengths_ns(self) -> tuple[int, ...]:
        return tuple(self._specs)

    def add_tag(self, tag_id: int, capacity: int, windows_ns=(), grace_ns: int = 0) -> None:
        tag_id, capacity, grace_ns = int(tag_id), int(capacity), int(grace_ns)
        if tag_id < 0:
            raise ValueError(f"tag_id must be >= 0, got {tag_id}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity}")
        if grace_ns < 0:
            raise ValueError(f"grace_ns must be >= 0, got {grace_ns}")
        if tag_id in self._slot:
            raise ValueError(f"tag {tag_id} already has a ring")
        specs: set[int] = set()
        for w in windows_ns:
            w = int(w)
            if w <= 0:
                raise ValueError(f"window lengths must be > 0 ns, got {w}")
            if w not in self._specs:
                if len(self._specs) == MAX_SPECS:
                    raise ValueError(f"at most {MAX_SPECS} distinct window lengths per store")
                self._specs.append(w)
            specs.add(self._specs.index(w))
        self._slot[tag_id] = len(self._rings)
        self._rings.append(_Ring(tag_id, capacity, specs, grace_ns))

    def _ring(self, tag_id: int) -> _Ring:
        try:
            return self._rings[self._slot[int(tag_id)]]
        except KeyError:
            raise KeyError(f"tag {tag_id} has no ring (not configured for aggregation)") from None

    def __contains__(self, tag_id: int) -> bool:
        return int(tag_id) in self._slot

    def __len__(self) -> int:
        return len(self._rings)

    def push(self, tag_id: int, ts_ns: int, value: float, quality: int = 0) -> None:
        if not 0 <= quality <= 255:
            raise OverflowError(f"quality must fit in uint8, got {quality}")
        self._ring(tag_id).push(int(ts_ns), float(value), int(quality))

    def push_many(self, tag_id: int, ts_ns, values, quality) -> None:
        r = self._ring(tag_id)
        ts_ns, values, quality = _arrays(ts_ns, values, quality, "ts_ns")
        for t, x, q in zip(ts_ns.tolist(), values.tolist(), quality.tolist(), strict=True):
            r.push(t, x, q)

    def consume(self, tag_ids, ts_ns: int, values, quality) -> None:
        tag_ids = np.asarray(tag_ids)
        if tag_ids.dtype != np.int32:
            raise ValueError(f"Buffer dtype mismatch: tag_ids must be int32, got {tag_ids.dtype}")
        _, values, quality = _arrays(np.zeros(len(tag_ids), np.int64), values, quality, "tag_ids")
        ts = int(ts_ns)
        slot = self._slot
        for t, x, q in zip(tag_ids.tolist(), values.tolist(), quality.tolist(), strict=True):
            k = slot.get(t)
            if k is None:
                self.ignored += 1
            else:
                self._rings[k].push(ts, x, q)

    def _sorted_range(self, r: _Ring, t0: int, t1: int):
        lo, hi = r.oldest(), r.head
        if r.disorder_seq <= lo:
            a = r.seq_lower_bound(lo, hi, t0)
            b = r.seq_lower_bound(a, hi, t1)
            return r.segment(a, max(a, b))
        ts, vs, qs = r.segment(lo, hi)
        keep = (ts >= t0) & (ts < t1)
        ts, vs, qs = ts[keep], vs[keep], qs[keep]
        order = np.argsort(ts, kind="stable")
        return ts[order], vs[order], qs[order]

    def read_range(self, tag_id: int, t0_ns: int, t1_ns: int):
        ts, vs, qs = self._sorted_range(self._ring(tag_id), int(t0_ns), int(t1_ns))
        return np.array(ts), np.array(vs), np.array(qs)

    def collect(self, now_ns: int):
        now_ns = int(now_ns)
        out = []
        for s, w in enumerate(self._specs):
            rows: list[tuple[int, int, list[float]]] = []
            for r in self._rings:
                if s not in r.specs:
                    continue
                close = _floor_div(now_ns - r.grace_ns, w) * w
                if close <= r.done_ns[s]:
                    continue
                self._close_windows(r, s, w, close, rows)
                r.done_ns[s] = close
                if close > r.watermark:
                    r.watermark = close
            if rows:
                out.append(self._export(w, rows))
        return out

    def _close_windows(self, r: _Ring, s: int, w: int, close: int, rows: list) -> None:
        lo, hi, done = r.pos[s], r.head, r.done_ns[s]
        if lo < r.oldest():
            r.unwindowed += r.oldest() - lo
            lo = r.oldest()
        if lo >= hi:
            r.pos[s] = hi
            return
        if r.disorder_seq <= lo:
            a = r.seq_lower_bound(lo, hi, done)
            b = r.seq_lower_bound(a, hi, close)
            r.pos[s] = b
            if b > a:
                split_windows(*r.segment(a, b), w, r.tag_id, self.basic, rows)
            return
        ts, vs, qs = r.segment(lo, hi)
        pending = np.flatnonzero(ts >= close)
        r.pos[s] = lo + (int(pending[0]) if len(pending) else hi - lo)
        keep = (ts >= done) & (ts < close)
        ts, vs, qs = ts[keep], vs[keep], qs[keep]
        if len(ts):
            order = np.argsort(ts, kind="stable")
            split_windows(ts[order], vs[order], qs[order], w, r.tag_id, self.basic, rows)

    def _export(self, w: int, rows: list):
        tags = np.array([r[0] for r in rows], dtype=np.int32)
        starts = np.array([r[1] for r in rows], dtype=np.int64)
        table = np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), len(STAT_NAMES))
        stats = {}
        for col, name in enumerate(STAT_NAMES):
            if name in self.stat_names:
                column = np.ascontiguousarray(table[:, col])
                stats[name] = column.astype(np.int64) if name in _INT_STATS else column
        return (w, tags, starts, stats)

    def downsample(self, tag_id: int, t0_ns: int, t1_ns: int, n_out: int, method: str = "m4",
                   minmax_ratio: int = 4):
        r = self._ring(tag_id)
        t0, t1, n_out = int(t0_ns), int(t1_ns), int(n_out)
        if t1 <= t0:
            raise ValueError(f"empty time range: t0_ns={t0} >= t1_ns={t1}")
        if method not in ("m4", "minmaxlttb"):
            raise ValueError(f"unknown downsampling method {method!r}; allowed: 'm4', 'minmaxlttb'")
        if n_out < 4:
            raise ValueError(f"n_out must be >= 4, got {n_out}")
        if minmax_ratio < 1:
            raise ValueError(f"minmax_ratio must be >= 1, got {minmax_ratio}")
        ts, vs, qs = self._sorted_range(r, t0, t1)
        idx = np.asarray(self._select(ts, vs, qs, t0, t1, n_out, method, int(minmax_ratio)), dtype=np.int64)
        return ts[idx], vs[idx], qs[idx]

    @staticmethod
    def _select(ts, vs, qs, t0: int, t1: int, n_out: int, method: str, ratio: int):
        if len(ts) == 0:
            return []
        if method == "m4":
            return m4_select(ts, vs, qs, t0, t1 - t0, n_out // 4)
        good = np.flatnonzero((qs == 0) & (vs == vs))
        if len(ts) <= n_out:
            return good
        if len(good) == 0:
            return []
        first, last = int(good[0]), int(good[-1])
        nb = max(1, n_out * ratio // 2)
        pre = [first]
        if last - first > 1:
            sl = slice(first + 1, last)
            inner = minmax_select(ts[sl], vs[sl], qs[sl], int(ts[first]), int(ts[last] - ts[first]) + 1, nb)
            pre.extend(i + first + 1 for i in inner)
        if last != first:
            pre.append(last)
        if len(pre) <= n_out:
            return pre
        return lttb_select(ts, vs, pre, t0, n_out)

    def counters(self, tag_id: int) -> dict[str, int]:
        r = self._ring(tag_id)
        return {"stored": r.head, "held": min(r.head, r.cap), "capacity": r.cap,
                "overwritten": max(r.head - r.cap, 0), "late": r.late, "bad": r.bad,
                "unwindowed": r.unwindowed}

    def totals(self) -> dict[str, int]:
        rings = self._rings
        return {"tags": len(rings), "stored": sum(r.head for r in rings),
                "overwritten": sum(max(r.head - r.cap, 0) for r in rings),
                "late": sum(r.late for r in rings), "bad": sum(r.bad for r in rings),
                "unwindowed": sum(r.unwindowed for r in rings), "ignored": self.ignored}

    def memory_bytes(self) -> int:
        return sum(r.ts.nbytes + r.v.nbytes + r.q.nbytes for r in self._rings)


def downsample_arrays(ts_ns, values, quality, t0_ns: int, t1_ns: int, n_out: int, method: str = "m4",
                      minmax_ratio: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``RingStore.downsample`` for samples held anywhere (the twin of the compiled function).

    Any order in (sorted by time, ties kept); samples outside [t0_ns, t1_ns) ignored; at most
    ``n_out`` good samples out, in time order (``m4``: each bin's first, min, max, last).
    """
    t0, t1, n_out = int(t0_ns), int(t1_ns), int(n_out)
    if t1 <= t0:
        raise ValueError(f"empty time range: t0_ns={t0} >= t1_ns={t1}")
    if method not in ("m4", "minmaxlttb"):
        raise ValueError(f"unknown downsampling method {method!r}; allowed: 'm4', 'minmaxlttb'")
    if n_out < 4:
        raise ValueError(f"n_out must be >= 4, got {n_out}")
    if minmax_ratio < 1:
        raise ValueError(f"minmax_ratio must be >= 1, got {minmax_ratio}")
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    vs = np.ascontiguousarray(values, dtype=np.float64)
    qs = np.ascontiguousarray(quality, dtype=np.uint8)
    if not len(ts) == len(vs) == len(qs):
        raise ValueError(f"ts_ns, values and quality differ in length: {len(ts)}, {len(vs)}, {len(qs)}")
    if len(ts) and (np.diff(ts) < 0).any():
        order = np.argsort(ts, kind="stable")
        ts, vs, qs = ts[order], vs[order], qs[order]
    a, b = np.searchsorted(ts, [t0, t1], side="left")
    ts, vs, qs = ts[a:b], vs[a:b], qs[a:b]
    idx = np.asarray(RingStore._select(ts, vs, qs, t0, t1, n_out, method, int(minmax_ratio)), dtype=np.int64)
    return ts[idx], vs[idx], qs[idx]


def _arrays(ts, values, quality, first: str):
    """The three per-sample arrays with the extension's dtype and length checks."""
    ts, values, quality = np.asarray(ts), np.asarray(values), np.asarray(quality)
    for arr, dtype, name in ((ts, np.int64, first), (values, np.float64, "values"), (quality, np.uint8, "quality")):
        if first == "ts_ns" or name != first:
            if arr.dtype != dtype:
                raise ValueError(f"Buffer dtype mismatch: {name} must be {np.dtype(dtype)}, got {arr.dtype}")
    if not (len(ts) == len(values) == len(quality)):
        raise ValueError(f"{first}, values and quality must have the same length "
                         f"(got {len(ts)}, {len(values)}, {len(quality)})")
    return ts, values, quality
