# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: nonecheck=False, embedsignature=True
"""Per-tag ring buffers, window statistics and visual downsampling (the compiled core).

``RingStore`` is the engine-independent core; ``edge.aggregate.pyring.RingStore`` is its
pure-Python twin with the same API and bit-identical results (same summation order, same
comparisons). The semantics are documented once, in ``edge/aggregate/pyring.py`` and
``docs/aggregator.md``; keep the two files in step.

Storage per tag: three C arrays (int64 timestamps, float64 values, uint8 qualities) of a
fixed capacity, written in arrival order, overwriting the oldest. The numeric loops run
without the GIL. A store is owned by one thread (the app's asyncio loop); it is not
safe to call it from two threads at once.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy


from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer

import numpy as np

_DTYPE_NAMES = {b"q": "int64", b"d": "float64", b"B": "uint8", b"i": "int32"}

cdef extern from *:
    """
    #define RB_INT64_MIN ((int64_t)(-9223372036854775807LL - 1))
    #define RB_INT64_MAX ((int64_t)9223372036854775807LL)
    """
    int64_t RB_INT64_MIN
    int64_t RB_INT64_MAX

cdef extern from "_kernels.h" nogil:
    void rb_window_stats(const int64_t* ts, const double* v, const uint8_t* q, int64_t n, int64_t we,
                         int basic, double* res)
    void rb_bin_extrema(const double* v, const uint8_t* q, int64_t a, int64_t b, int64_t* fi, int64_t* imn,
                        int64_t* imx, int64_t* li)
    int rb_any_q(const uint8_t* q, int64_t n)
    int rb_sorted(const int64_t* ts, int64_t n)
    int64_t rb_count_bad(const double* v, const uint8_t* q, int64_t n)
    int64_t rb_copy_sorted(const int64_t* ts, const double* v, int64_t c, int64_t prev, int64_t* dts, double* dv,
                           int* nan)
    int64_t rb_count_bad_q(const double* v, const uint8_t* q, int64_t n, int nan)
    int rb_set_isa(int isa)
    int rb_get_isa()

cdef enum:
    MAX_SPECS = 8
    N_STATS = 11


def set_isa(int isa=-1):
    """Pin the kernels to scalar (0), SSE2 (1) or AVX2 (2) if the CPU has it; -1: the best.

    For the parity tests: every instruction set must give the same bits. Returns the one in use.
    """
    return rb_set_isa(isa)


def get_isa():
    """The instruction set the kernels use: 0 scalar, 1 SSE2, 2 AVX2."""
    return rb_get_isa()

#: Statistic names, in the column order of the internal row buffer.
STAT_NAMES = ("count", "min", "max", "mean", "first", "last", "sum", "std", "twa", "good_ratio", "bad_count")
BASIC_STATS = ("count", "min", "max", "mean", "sum", "good_ratio", "bad_count")
_INT_STATS = ("count", "bad_count")


cdef struct Ring:
    int64_t* ts
    double* v
    uint8_t* q
    int64_t cap
    int64_t head          # sequence number of the next sample (= samples stored so far)
    int64_t widx          # physical write index (head % cap)
    int64_t max_ts        # largest timestamp stored so far
    int64_t disorder_seq  # sequence number of the last sample older than max_ts (-1: none)
    int64_t watermark     # samples older than this are late (their windows were emitted)
    int64_t grace_ns
    int64_t late
    int64_t bad
    int64_t unwindowed    # samples overwritten before their window closed (summed over lengths)
    int32_t tag_id
    uint32_t spec_mask
    int64_t done_ns[MAX_SPECS]  # windows ending at or before this were emitted
    int64_t pos[MAX_SPECS]      # first sequence number that may still hold unemitted samples


cdef struct OutBuf:
    int32_t* tag
    int64_t* start
    double* rows   # N_STATS per row
    Py_ssize_t n
    Py_ssize_t cap


cdef int get_buffer(object obj, Py_buffer* view, const char* kind, Py_ssize_t itemsize, str name) except -1:
    """Acquire a C-contiguous 1-D buffer of the given element kind, with a clear error otherwise.

    Cheaper per call than a typed memoryview (this is the per-poll path). ``kind`` is the
    struct code: q int64, d float64, B uint8, i int32 (native byte order).
    """
    PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    cdef const char* f = view.format
    cdef bint ok = view.itemsize == itemsize and view.ndim <= 1
    if ok:
        if f[0] == b"@" or f[0] == b"=" or f[0] == b"<":
            f += 1
        if kind[0] == b"q":
            ok = (f[0] == b"q" or f[0] == b"l") and f[1] == 0
        elif kind[0] == b"i":
            ok = (f[0] == b"i" or f[0] == b"l") and f[1] == 0
        else:
            ok = f[0] == kind[0] and f[1] == 0
    if not ok:
        got = (<bytes>view.format).decode("ascii", "replace")
        size = view.itemsize
        PyBuffer_Release(view)
        raise ValueError(f"Buffer dtype mismatch: {name} must be a 1-D {_DTYPE_NAMES[<bytes>kind[:1]]} array, "
                         f"got format {got!r} with {size}-byte items")
    return 0


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t d = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        d -= 1
    return d


cdef inline int64_t bin_edge(int64_t t0, int64_t span, int64_t nb, int64_t k) noexcept nogil:
    """Edge k of nb equal time bins over [t0, t0 + span), exact integer arithmetic."""
    return t0 + (span // nb) * k + ((span % nb) * k) // nb


cdef inline bint is_good(uint8_t q, double x) noexcept nogil:
    return q == 0 and x == x


cdef inline void push_one(Ring* r, int64_t ts, double x, uint8_t q) noexcept nogil:
    if ts < r.watermark:
        r.late += 1
        return
    if ts < r.max_ts:
        r.disorder_seq = r.head
    else:
        r.max_ts = ts
    cdef int64_t w = r.widx
    r.ts[w] = ts
    r.v[w] = x
    r.q[w] = q
    if not (q == 0 and x == x):
        r.bad += 1
    r.head += 1
    w += 1
    if w == r.cap:
        w = 0
    r.widx = w


cdef Py_ssize_t push_block(Ring* r, const int64_t* ts, const double* v, const uint8_t* q,
                           Py_ssize_t n) noexcept nogil:
    """Copy the leading time-ordered, not-late part of a block straight into the ring.

    Returns how many samples it stored (0..n); the caller pushes the rest one by one. The
    end state is the same as pushing every sample one by one.
    """
    cdef Py_ssize_t j0, c, p, first, done
    cdef int nan = 0
    if ts[0] < r.watermark or ts[0] < r.max_ts:
        return 0
    if n > r.cap:  # only the last `cap` samples survive: check all, copy the tail
        if not rb_sorted(ts, n):
            return 0
        j0 = n - r.cap
        c = r.cap
        p = (r.widx + j0) % r.cap
        first = r.cap - p
        memcpy(r.ts + p, ts + j0, first * sizeof(int64_t))
        memcpy(r.v + p, v + j0, first * sizeof(double))
        memcpy(r.ts, ts + j0 + first, (c - first) * sizeof(int64_t))
        memcpy(r.v, v + j0 + first, (c - first) * sizeof(double))
        memcpy(r.q + p, q + j0, first * sizeof(uint8_t))
        memcpy(r.q, q + j0 + first, (c - first) * sizeof(uint8_t))
        r.bad += rb_count_bad(v, q, n)
        done = n
    else:
        p = r.widx
        first = n if n < r.cap - p else r.cap - p
        done = rb_copy_sorted(ts, v, first, r.max_ts, r.ts + p, r.v + p, &nan)
        if done == first and first < n:
            done += rb_copy_sorted(ts + first, v + first, n - first, ts[first - 1], r.ts, r.v, &nan)
        if done == 0:
            return 0
        c = done if done < first else first
        memcpy(r.q + p, q, c * sizeof(uint8_t))
        if done > c:
            memcpy(r.q, q + c, (done - c) * sizeof(uint8_t))
        r.bad += rb_count_bad_q(v, q, done, nan)
    r.max_ts = ts[done - 1]
    r.head += done
    r.widx = (r.widx + done) % r.cap
    return done


cdef inline Py_ssize_t lower_bound(const int64_t* ts, Py_ssize_t a, Py_ssize_t n, int64_t key) noexcept nogil:
    """First index in [a, n) whose timestamp is >= key (ts sorted), by galloping from a."""
    cdef Py_ssize_t lo = a, hi, step = 1, mid
    if a >= n or ts[a] >= key:
        return a
    # invariant: ts[lo] < key
    hi = a + 1
    while hi < n and ts[hi] < key:
        lo = hi
        step <<= 1
        hi = a + step
    if hi > n:
        hi = n
    # ts[lo] < key, and hi == n or ts[hi] >= key
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if ts[mid] < key:
            lo = mid
        else:
            hi = mid
    return hi


cdef int out_grow(OutBuf* o) noexcept nogil:
    cdef Py_ssize_t cap = o.cap * 2 if o.cap else 64
    cdef int32_t* t = <int32_t*>realloc(o.tag, cap * sizeof(int32_t))
    if t == NULL:
        return -1
    o.tag = t
    cdef int64_t* s = <int64_t*>realloc(o.start, cap * sizeof(int64_t))
    if s == NULL:
        return -1
    o.start = s
    cdef double* r = <double*>realloc(o.rows, cap * N_STATS * sizeof(double))
    if r == NULL:
        return -1
    o.rows = r
    o.cap = cap
    return 0


cdef int split_windows(const int64_t* ts, const double* v, const uint8_t* q, Py_ssize_t n,
                       int64_t w, int32_t tag_id, bint basic, OutBuf* o) noexcept nogil:
    """Cut a time-sorted segment into aligned windows of ``w`` ns and append one row each."""
    cdef Py_ssize_t a = 0, b, g, last = 0
    cdef int64_t ws, we
    while a < n:
        ws = floor_div(ts[a], w) * w
        we = ws + w
        # regular sampling: the window usually holds as many samples as the previous one
        g = a + last
        if last > 0 and g < n and ts[g - 1] < we and ts[g] >= we:
            b = g
        elif last > 0 and g >= n and ts[n - 1] < we:
            b = n
        else:
            b = lower_bound(ts, a, n, we)
        last = b - a
        if o.n == o.cap and out_grow(o) < 0:
            return -1
        o.tag[o.n] = tag_id
        o.start[o.n] = ws
        rb_window_stats(ts + a, v + a, q + a, b - a, we, basic, o.rows + o.n * N_STATS)
        o.n += 1
        a = b
    return 0


cdef Py_ssize_t m4_select(const int64_t* ts, const double* v, const uint8_t* q, Py_ssize_t n,
                          int64_t t0, int64_t span, int64_t nb, int64_t* out) noexcept nogil:
    """M4: per time bin the first, min, max and last good sample; indices in time order."""
    cdef Py_ssize_t a = 0, b, m = 0, j
    cdef int64_t k, fi, imn, imx, li
    cdef int64_t tmp4[4]
    for k in range(nb):
        b = lower_bound(ts, a, n, bin_edge(t0, span, nb, k + 1))
        rb_bin_extrema(v, q, a, b, &fi, &imn, &imx, &li)
        if fi >= 0:
            tmp4[0] = fi
            tmp4[1] = imn if imn < imx else imx
            tmp4[2] = imx if imn < imx else imn
            tmp4[3] = li
            for j in range(4):
                if m == 0 or out[m - 1] != tmp4[j]:
                    out[m] = tmp4[j]
                    m += 1
        a = b
    return m


cdef Py_ssize_t minmax_select(const int64_t* ts, const double* v, const uint8_t* q, Py_ssize_t n,
                              int64_t t0, int64_t span, int64_t nb, int64_t* out) noexcept nogil:
    """MinMax preselection: per time bin the min and max good sample, in time order."""
    cdef Py_ssize_t a = 0, b, m = 0
    cdef int64_t k, fi, imn, imx, li
    for k in range(nb):
        b = lower_bound(ts, a, n, bin_edge(t0, span, nb, k + 1))
        rb_bin_extrema(v, q, a, b, &fi, &imn, &imx, &li)
        if fi >= 0:
            if imn == imx:
                out[m] = imn
                m += 1
            elif imn < imx:
                out[m] = imn
                out[m + 1] = imx
                m += 2
            else:
                out[m] = imx
                out[m + 1] = imn
                m += 2
        a = b
    return m


cdef Py_ssize_t lttb_select(const int64_t* ts, const double* v, const int64_t* p, Py_ssize_t m,
                            int64_t t0, Py_ssize_t n_out, int64_t* out) noexcept nogil:
    """Largest-Triangle-Three-Buckets over the preselected indices p[0..m) (m > n_out >= 3)."""
    cdef Py_ssize_t i, j, lo, hi, nlo, nhi, best, a
    cdef double ax, ay, nx, ny, x, y, area, best_area
    cdef Py_ssize_t inner = m - 2, nbk = n_out - 2
    out[0] = p[0]
    a = 0
    for i in range(nbk):
        lo = 1 + (i * inner) // nbk
        hi = 1 + ((i + 1) * inner) // nbk
        if i + 1 < nbk:
            nlo = hi
            nhi = 1 + ((i + 2) * inner) // nbk
            nx = 0.0
            ny = 0.0
            for j in range(nlo, nhi):
                nx += <double>(ts[p[j]] - t0)
                ny += v[p[j]]
            nx = nx / <double>(nhi - nlo)
            ny = ny / <double>(nhi - nlo)
        else:
            nx = <double>(ts[p[m - 1]] - t0)
            ny = v[p[m - 1]]
        ax = <double>(ts[p[a]] - t0)
        ay = v[p[a]]
        best = lo
        best_area = -1.0
        for j in range(lo, hi):
            x = <double>(ts[p[j]] - t0)
            y = v[p[j]]
            area = (ax - nx) * (y - ay) - (ax - x) * (ny - ay)
            if area < 0:
                area = -area
            if area > best_area:
                best_area = area
                best = j
        out[i + 1] = p[best]
        a = best
    out[n_out - 1] = p[m - 1]
    return n_out


cdef class RingStore:
    """Ring buffers for many tags, keyed by the global tag id (``TagInfo.id``).

    Construct once, ``add_tag`` per aggregated tag, then from the app's loop: ``consume``
    each poll's batch, ``collect(now_ns)`` about once per second, ``read_range`` and
    ``downsample`` on demand. See ``edge.aggregate`` for the full contract.
    """

    cdef Ring* rings
    cdef Py_ssize_t n_rings
    cdef Py_ssize_t rings_cap
    cdef int32_t* slot_of
    cdef Py_ssize_t slot_len
    cdef int64_t spec_ns[MAX_SPECS]
    cdef int n_specs
    cdef readonly int64_t ignored
    cdef readonly bint basic

    def __cinit__(self, bint basic=False):
        self.rings = NULL
        self.n_rings = 0
        self.rings_cap = 0
        self.slot_of = NULL
        self.slot_len = 0
        self.n_specs = 0
        self.ignored = 0
        self.basic = basic

    def __dealloc__(self):
        cdef Py_ssize_t k
        for k in range(self.n_rings):
            free(self.rings[k].ts)
            free(self.rings[k].v)
            free(self.rings[k].q)
        free(self.rings)
        free(self.slot_of)

    @property
    def stat_names(self):
        """Names of the statistics ``collect`` returns (basic or full set)."""
        return BASIC_STATS if self.basic else STAT_NAMES

    @property
    def window_lengths_ns(self):
        """Window lengths registered so far, in registration order."""
        return tuple(self.spec_ns[s] for s in range(self.n_specs))

    def add_tag(self, int32_t tag_id, int64_t capacity, windows_ns=(), int64_t grace_ns=0):
        """Give ``tag_id`` a ring of ``capacity`` samples and the given window lengths (ns)."""
        if tag_id < 0:
            raise ValueError(f"tag_id must be >= 0, got {tag_id}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity}")
        if grace_ns < 0:
            raise ValueError(f"grace_ns must be >= 0, got {grace_ns}")
        if tag_id < self.slot_len and self.slot_of[tag_id] >= 0:
            raise ValueError(f"tag {tag_id} already has a ring")
        cdef uint32_t mask = 0
        cdef int s
        for w in windows_ns:
            if w <= 0:
                raise ValueError(f"window lengths must be > 0 ns, got {w}")
            for s in range(self.n_specs):
                if self.spec_ns[s] == w:
                    break
            else:
                if self.n_specs == MAX_SPECS:
                    raise ValueError(f"at most {MAX_SPECS} distinct window lengths per store")
                self.spec_ns[self.n_specs] = w
                s = self.n_specs
                self.n_specs += 1
            mask |= (1u << s)
        cdef Py_ssize_t new_len, i
        cdef int32_t* so
        if tag_id >= self.slot_len:
            new_len = max(tag_id + 1, self.slot_len * 2, 64)
            so = <int32_t*>realloc(self.slot_of, new_len * sizeof(int32_t))
            if so == NULL:
                raise MemoryError()
            for i in range(self.slot_len, new_len):
                so[i] = -1
            self.slot_of = so
            self.slot_len = new_len
        cdef Ring* rs
        if self.n_rings == self.rings_cap:
            new_len = max(self.rings_cap * 2, 16)
            rs = <Ring*>realloc(self.rings, new_len * sizeof(Ring))
            if rs == NULL:
                raise MemoryError()
            self.rings = rs
            self.rings_cap = new_len
        cdef Ring* r = &self.rings[self.n_rings]
        r.ts = <int64_t*>malloc(capacity * sizeof(int64_t))
        r.v = <double*>malloc(capacity * sizeof(double))
        r.q = <uint8_t*>malloc(capacity * sizeof(uint8_t))
        if r.ts == NULL or r.v == NULL or r.q == NULL:
            free(r.ts)
            free(r.v)
            free(r.q)
            raise MemoryError(f"cannot allocate a ring of {capacity} samples")
        r.cap = capacity
        r.head = 0
        r.widx = 0
        r.max_ts = RB_INT64_MIN
        r.disorder_seq = -1
        r.watermark = RB_INT64_MIN
        r.grace_ns = grace_ns
        r.late = 0
        r.bad = 0
        r.unwindowed = 0
        r.tag_id = tag_id
        r.spec_mask = mask
        for s in range(MAX_SPECS):
            r.done_ns[s] = RB_INT64_MIN
            r.pos[s] = 0
        self.slot_of[tag_id] = <int32_t>self.n_rings
        self.n_rings += 1

    cdef Ring* ring(self, int32_t tag_id) except NULL:
        if tag_id < 0 or tag_id >= self.slot_len or self.slot_of[tag_id] < 0:
            raise KeyError(f"tag {tag_id} has no ring (not configured for aggregation)")
        return &self.rings[self.slot_of[tag_id]]

    def __contains__(self, int32_t tag_id):
        return 0 <= tag_id < self.slot_len and self.slot_of[tag_id] >= 0

    def __len__(self):
        return self.n_rings

    def push(self, int32_t tag_id, int64_t ts_ns, double value, uint8_t quality=0):
        """Store one sample (the thin per-value path; prefer ``consume``/``push_many``)."""
        if tag_id < 0 or tag_id >= self.slot_len or self.slot_of[tag_id] < 0:
            raise KeyError(f"tag {tag_id} has no ring (not configured for aggregation)")
        push_one(&self.rings[self.slot_of[tag_id]], ts_ns, value, quality)

    def push_many(self, int32_t tag_id, ts_ns, values, quality):
        """Store a block of samples of one tag (a burst), in arrival order.

        ``ts_ns`` int64, ``values`` float64, ``quality`` uint8: C-contiguous arrays (numpy
        arrays or any buffer) of the same length.
        """
        cdef Ring* r = self.ring(tag_id)
        cdef Py_buffer bt, bv, bq
        cdef Py_ssize_t i, n
        cdef const int64_t* t
        cdef const double* v
        cdef const uint8_t* q
        get_buffer(ts_ns, &bt, b"q", 8, "ts_ns")
        try:
            get_buffer(values, &bv, b"d", 8, "values")
            try:
                get_buffer(quality, &bq, b"B", 1, "quality")
                try:
                    n = bt.len // 8
                    if bv.len // 8 != n or bq.len != n:
                        raise ValueError(f"ts_ns, values and quality must have the same length "
                                         f"(got {n}, {bv.len // 8}, {bq.len})")
                    t = <const int64_t*>bt.buf
                    v = <const double*>bv.buf
                    q = <const uint8_t*>bq.buf
                    if n > 0:
                        with nogil:
                            i = push_block(r, t, v, q, n)
                            while i < n:
                                push_one(r, t[i], v[i], q[i])
                                i += 1
                finally:
                    PyBuffer_Release(&bq)
            finally:
                PyBuffer_Release(&bv)
        finally:
            PyBuffer_Release(&bt)

    def consume(self, tag_ids, int64_t ts_ns, values, quality):
        """Store one poll: sample i is (tag_ids[i], ts_ns, values[i], quality[i]).

        ``tag_ids`` int32, ``values`` float64, ``quality`` uint8: C-contiguous arrays of the
        same length. Tags without a ring are skipped and counted in ``ignored``.
        """
        cdef Py_buffer bt, bv, bq
        cdef Py_ssize_t i, n
        cdef int32_t t, s
        cdef int64_t skipped = 0
        cdef const int32_t* ids
        cdef const double* v
        cdef const uint8_t* q
        get_buffer(tag_ids, &bt, b"i", 4, "tag_ids")
        try:
            get_buffer(values, &bv, b"d", 8, "values")
            try:
                get_buffer(quality, &bq, b"B", 1, "quality")
                try:
                    n = bt.len // 4
                    if bv.len // 8 != n or bq.len != n:
                        raise ValueError(f"tag_ids, values and quality must have the same length "
                                         f"(got {n}, {bv.len // 8}, {bq.len})")
                    ids = <const int32_t*>bt.buf
                    v = <const double*>bv.buf
                    q = <const uint8_t*>bq.buf
                    with nogil:
                        for i in range(n):
                            t = ids[i]
                            if t < 0 or t >= self.slot_len:
                                skipped += 1
                                continue
                            s = self.slot_of[t]
                            if s < 0:
                                skipped += 1
                                continue
                            push_one(&self.rings[s], ts_ns, v[i], q[i])
                finally:
                    PyBuffer_Release(&bq)
            finally:
                PyBuffer_Release(&bv)
        finally:
            PyBuffer_Release(&bt)
        self.ignored += skipped

    cdef tuple segment(self, Ring* r, int64_t lo, int64_t hi):
        """Copy the samples with sequence numbers [lo, hi) into new arrays (arrival order)."""
        cdef Py_ssize_t n = hi - lo, p = lo % r.cap, first = min(n, r.cap - p)
        ts = np.empty(n, dtype=np.int64)
        vs = np.empty(n, dtype=np.float64)
        qs = np.empty(n, dtype=np.uint8)
        cdef int64_t[::1] tv = ts
        cdef double[::1] vv = vs
        cdef uint8_t[::1] qv = qs
        if n > 0:
            memcpy(&tv[0], r.ts + p, first * sizeof(int64_t))
            memcpy(&vv[0], r.v + p, first * sizeof(double))
            memcpy(&qv[0], r.q + p, first * sizeof(uint8_t))
            if first < n:
                memcpy(&tv[first], r.ts, (n - first) * sizeof(int64_t))
                memcpy(&vv[first], r.v, (n - first) * sizeof(double))
                memcpy(&qv[first], r.q, (n - first) * sizeof(uint8_t))
        return ts, vs, qs

    cdef int64_t oldest(self, Ring* r) noexcept:
        return r.head - r.cap if r.head > r.cap else 0

    cdef int64_t seq_lower_bound(self, Ring* r, int64_t lo, int64_t hi, int64_t key) noexcept:
        """First sequence number in [lo, hi) with ts >= key, for a time-sorted stretch."""
        cdef int64_t a = lo, b = hi, mid
        while a < b:
            mid = a + (b - a) // 2
            if r.ts[mid % r.cap] < key:
                a = mid + 1
            else:
                b = mid
        return a

    cdef tuple sorted_range(self, Ring* r, int64_t t0, int64_t t1):
        """Contiguous (ts, values, quality) of the samples with t0 <= ts < t1, in time order.

        Returns views into the ring when the stretch is sorted and does not wrap, else copies
        (stable sort by time, ties in arrival order).
        """
        cdef int64_t lo = self.oldest(r), hi = r.head, a, b, p
        if r.disorder_seq <= lo:
            a = self.seq_lower_bound(r, lo, hi, t0)
            b = self.seq_lower_bound(r, a, hi, t1)
            p = a % r.cap
            if b <= a:
                return self.segment(r, a, a)
            if p + (b - a) <= r.cap:
                return (np.asarray(<int64_t[:b - a]>(r.ts + p)), np.asarray(<double[:b - a]>(r.v + p)),
                        np.asarray(<uint8_t[:b - a]>(r.q + p)))
            return self.segment(r, a, b)
        ts, vs, qs = self.segment(r, lo, hi)
        keep = (ts >= t0) & (ts < t1)
        ts, vs, qs = ts[keep], vs[keep], qs[keep]
        order = np.argsort(ts, kind="stable")
        return ts[order], vs[order], qs[order]

    def read_range(self, int32_t tag_id, int64_t t0_ns, int64_t t1_ns):
        """Copies of the stored samples with t0_ns <= ts < t1_ns, in time order."""
        cdef Ring* r = self.ring(tag_id)
        ts, vs, qs = self.sorted_range(r, t0_ns, t1_ns)
        return np.array(ts), np.array(vs), np.array(qs)

    def collect(self, int64_t now_ns):
        """Close every window that ended at or before ``now_ns - grace``.

        Returns a list of ``(window_ns, tag_ids, start_ns, stats)`` per window length with
        at least one closed window; ``stats`` maps each name in ``stat_names`` to an array.
        """
        cdef int s
        cdef Py_ssize_t k
        cdef int64_t w, close
        cdef Ring* r
        cdef OutBuf o
        out = []
        for s in range(self.n_specs):
            w = self.spec_ns[s]
            o.tag = NULL
            o.start = NULL
            o.rows = NULL
            o.n = 0
            o.cap = 0
            try:
                for k in range(self.n_rings):
                    r = &self.rings[k]
                    if not (r.spec_mask & (1u << s)):
                        continue
                    close = floor_div(now_ns - r.grace_ns, w) * w
                    if close <= r.done_ns[s]:
                        continue
                    self.close_windows(r, s, w, close, &o)
                    r.done_ns[s] = close
                    if close > r.watermark:
                        r.watermark = close
                if o.n:
                    out.append(self.export(w, &o))
            finally:
                free(o.tag)
                free(o.start)
                free(o.rows)
        return out

    cdef int close_windows(self, Ring* r, int s, int64_t w, int64_t close, OutBuf* o) except -1:
        cdef int64_t lo = r.pos[s], hi = r.head, a, b, p, first_open
        cdef int64_t done = r.done_ns[s]
        cdef int rc
        cdef const int64_t[::1] tv
        cdef const double[::1] vv
        cdef const uint8_t[::1] qv
        if lo < self.oldest(r):
            r.unwindowed += self.oldest(r) - lo
            lo = self.oldest(r)
        if lo >= hi:
            r.pos[s] = hi
            return 0
        if r.disorder_seq <= lo:
            a = self.seq_lower_bound(r, lo, hi, done)
            b = self.seq_lower_bound(r, a, hi, close)
            r.pos[s] = b
            if b <= a:
                return 0
            p = a % r.cap
            if p + (b - a) <= r.cap:
                with nogil:
                    rc = split_windows(r.ts + p, r.v + p, r.q + p, b - a, w, r.tag_id, self.basic, o)
            else:
                ts, vs, qs = self.segment(r, a, b)
                tv = ts
                vv = vs
                qv = qs
                with nogil:
                    rc = split_windows(&tv[0], &vv[0], &qv[0], b - a, w, r.tag_id, self.basic, o)
        else:
            ts, vs, qs = self.segment(r, lo, hi)
            pending = np.flatnonzero(ts >= close)
            r.pos[s] = lo + (pending[0] if len(pending) else hi - lo)
            keep = (ts >= done) & (ts < close)
            ts, vs, qs = ts[keep], vs[keep], qs[keep]
            if len(ts) == 0:
                return 0
            order = np.argsort(ts, kind="stable")
            ts, vs, qs = ts[order], vs[order], qs[order]
            tv = ts
            vv = vs
            qv = qs
            with nogil:
                rc = split_windows(&tv[0], &vv[0], &qv[0], tv.shape[0], w, r.tag_id, self.basic, o)
        if rc < 0:
            raise MemoryError("cannot grow the window output buffer")
        return 0

    cdef object export(self, int64_t w, OutBuf* o):
        cdef Py_ssize_t n = o.n
        tags = np.empty(n, dtype=np.int32)
        starts = np.empty(n, dtype=np.int64)
        rows = np.empty((n, N_STATS), dtype=np.float64)
        cdef int32_t[::1] tv = tags
        cdef int64_t[::1] sv = starts
        cdef double[:, ::1] rv = rows
        memcpy(&tv[0], o.tag, n * sizeof(int32_t))
        memcpy(&sv[0], o.start, n * sizeof(int64_t))
        memcpy(&rv[0, 0], o.rows, n * N_STATS * sizeof(double))
        stats = {}
        for col, name in enumerate(STAT_NAMES):
            if name not in self.stat_names:
                continue
            column = np.ascontiguousarray(rows[:, col])
            stats[name] = column.astype(np.int64) if name in _INT_STATS else column
        return (w, tags, starts, stats)

    def downsample(self, int32_t tag_id, int64_t t0_ns, int64_t t1_ns, Py_ssize_t n_out,
                   str method="m4", int minmax_ratio=4):
        """Select at most about ``n_out`` good samples in [t0_ns, t1_ns) for plotting.

        ``m4``: per time bin (n_out // 4 equal bins) the first, min, max and last sample.
        ``minmaxlttb``: min/max preselection in n_out * minmax_ratio // 2 bins, then LTTB
        down to n_out points. Returns copies (ts, values, quality) in time order.
        """
        cdef Ring* r = self.ring(tag_id)
        if t1_ns <= t0_ns:
            raise ValueError(f"empty time range: t0_ns={t0_ns} >= t1_ns={t1_ns}")
        if method not in ("m4", "minmaxlttb"):
            raise ValueError(f"unknown downsampling method {method!r}; allowed: 'm4', 'minmaxlttb'")
        if n_out < 4:
            raise ValueError(f"n_out must be >= 4, got {n_out}")
        if minmax_ratio < 1:
            raise ValueError(f"minmax_ratio must be >= 1, got {minmax_ratio}")
        ts, vs, qs = self.sorted_range(r, t0_ns, t1_ns)
        idx = _select(ts, vs, qs, t0_ns, t1_ns, n_out, method, minmax_ratio)
        return ts[idx], vs[idx], qs[idx]

    def counters(self, int32_t tag_id):
        """Diagnostics of one tag's ring: stored, held, overwritten, late and bad samples."""
        cdef Ring* r = self.ring(tag_id)
        return {
            "stored": r.head,
            "held": min(r.head, r.cap),
            "capacity": r.cap,
            "overwritten": max(r.head - r.cap, 0),
            "late": r.late,
            "bad": r.bad,
            "unwindowed": r.unwindowed,
        }

    def totals(self):
        """Sums of the counters over all tags, plus ``ignored`` (samples of tags without a ring)."""
        cdef int64_t stored = 0, over = 0, late = 0, bad = 0, unw = 0
        cdef Py_ssize_t k
        for k in range(self.n_rings):
            stored += self.rings[k].head
            over += max(self.rings[k].head - self.rings[k].cap, 0)
            late += self.rings[k].late
            bad += self.rings[k].bad
            unw += self.rings[k].unwindowed
        return {"tags": self.n_rings, "stored": stored, "overwritten": over, "late": late, "bad": bad,
                "unwindowed": unw, "ignored": self.ignored}

    def memory_bytes(self):
        """Bytes allocated by the store: sample arrays plus per-tag bookkeeping."""
        cdef int64_t total = self.rings_cap * sizeof(Ring) + self.slot_len * sizeof(int32_t)
        cdef Py_ssize_t k
        for k in range(self.n_rings):
            total += self.rings[k].cap * (sizeof(int64_t) + sizeof(double) + sizeof(uint8_t))
        return total


cdef object _select(const int64_t[::1] ts, const double[::1] vs, const uint8_t[::1] qs,
                    int64_t t0, int64_t t1, Py_ssize_t n_out, str method, int ratio):
    cdef Py_ssize_t n = ts.shape[0], m, i, first, last
    cdef int64_t nb
    cdef int64_t[::1] ov
    cdef const int64_t[::1] gv
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if method == "m4":
        nb = n_out // 4
        out = np.empty(4 * nb, dtype=np.int64)
        ov = out
        with nogil:
            m = m4_select(&ts[0], &vs[0], &qs[0], n, t0, t1 - t0, nb, &ov[0])
        return out[:m]
    if n <= n_out:
        return np.flatnonzero((np.asarray(qs) == 0) & (np.asarray(vs) == np.asarray(vs)))
    first = 0
    while first < n and not (qs[first] == 0 and vs[first] == vs[first]):
        first += 1
    if first == n:
        return np.empty(0, dtype=np.int64)
    last = n - 1
    while not (qs[last] == 0 and vs[last] == vs[last]):
        last -= 1
    nb = max(<int64_t>1, <int64_t>(n_out * ratio // 2))
    pre = np.empty(2 * nb + 2, dtype=np.int64)
    ov = pre
    ov[0] = first
    m = 1
    if last - first > 1:
        with nogil:
            m += minmax_select(&ts[first + 1], &vs[first + 1], &qs[first + 1], last - first - 1,
                               ts[first], ts[last] - ts[first] + 1, nb, &ov[1])
        for i in range(1, m):
            ov[i] += first + 1
    if last != first:
        ov[m] = last
        m += 1
    if m <= n_out:
        return pre[:m]
    sel = np.empty(n_out, dtype=np.int64)
    gv = pre
    ov = sel
    with nogil:
        lttb_select(&ts[0], &vs[0], &gv[0], m, t0, n_out, &ov[0])
    return sel


def downsample_arrays(ts_ns, values, quality, int64_t t0_ns, int64_t t1_ns, Py_ssize_t n_out,
                      str method="m4", int minmax_ratio=4):
    """``RingStore.downsample`` for samples held anywhere (the spool's history, a test's arrays).

    ``ts_ns`` int64, ``values`` float64, ``quality`` uint8 of one tag, any order (sorted by
    time here when they are not, ties kept in order); samples outside [t0_ns, t1_ns) are
    ignored. Returns copies (ts, values, quality) of at most ``n_out`` good samples in time
    order: ``m4`` keeps, per each of n_out // 4 equal time bins, the first, min, max and last
    good sample, so every bin's min and max are the raw data's.
    """
    if t1_ns <= t0_ns:
        raise ValueError(f"empty time range: t0_ns={t0_ns} >= t1_ns={t1_ns}")
    if method not in ("m4", "minmaxlttb"):
        raise ValueError(f"unknown downsampling method {method!r}; allowed: 'm4', 'minmaxlttb'")
    if n_out < 4:
        raise ValueError(f"n_out must be >= 4, got {n_out}")
    if minmax_ratio < 1:
        raise ValueError(f"minmax_ratio must be >= 1, got {minmax_ratio}")
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    vs = np.ascontiguousarray(values, dtype=np.float64)
    qs = np.ascontiguousarray(quality, dtype=np.uint8)
    if not (ts.shape[0] == vs.shape[0] == qs.shape[0]):
        raise ValueError(f"ts_ns, values and quality differ in length: {ts.shape[0]}, {vs.shape[0]}, {qs.shape[0]}")
    cdef const int64_t[::1] tv = ts
    if ts.shape[0] and not rb_sorted(&tv[0], ts.shape[0]):
        order = np.argsort(ts, kind="stable")
        ts, vs, qs = ts[order], vs[order], qs[order]
    if ts.shape[0] and (ts[0] < t0_ns or ts[ts.shape[0] - 1] >= t1_ns):
        a, b = np.searchsorted(ts, [t0_ns, t1_ns], side="left")
        ts, vs, qs = ts[a:b], vs[a:b], qs[a:b]
    idx = _select(ts, vs, qs, t0_ns, t1_ns, n_out, method, minmax_ratio)
    return ts[idx], vs[idx], qs[idx]
