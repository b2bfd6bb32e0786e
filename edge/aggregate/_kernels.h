/* Numeric kernels of the ring-buffer aggregator (included by _ringbuf.pyx).
 *
 * Every accumulator has RB_LANES = 8 lanes: sample i of a window goes to lane i & 7. The
 * lanes are combined as ((l0 op l1) op (l2 op l3)) op ((l4 op l5) op (l6 op l7)). The AVX2,
 * SSE2 and scalar versions perform the same IEEE operations per lane in the same order, so
 * they (and the pure-Python twin, edge/aggregate/pyring.py) give bit-identical results.
 * min is "x < m ? x : m" and max is "x > m ? x : m" (exactly MINPD/MAXPD semantics).
 * Build without -ffast-math and with -ffp-contract=off (no FMA contraction).
 */
#ifndef RB_KERNELS_H
#define RB_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RB_X86 1
#endif

#define RB_LANES 8
#define RB_TWO52 4503599627370496.0 /* 2**52: int64 -> double by the exponent trick */

typedef struct {
    double mn[RB_LANES], mx[RB_LANES], s[RB_LANES], tw[RB_LANES];
} rb_lanes;

static inline void rb_lanes_init(rb_lanes *L) {
    for (int k = 0; k < RB_LANES; k++) {
        L->mn[k] = INFINITY;
        L->mx[k] = -INFINITY;
        L->s[k] = 0.0;
        L->tw[k] = 0.0;
    }
}

static inline double rb_min2(double a, double b) { return b < a ? b : a; }
static inline double rb_max2(double a, double b) { return b > a ? b : a; }

static inline double rb_lane_min(const double *m) {
    return rb_min2(rb_min2(rb_min2(m[0], m[1]), rb_min2(m[2], m[3])),
                   rb_min2(rb_min2(m[4], m[5]), rb_min2(m[6], m[7])));
}
static inline double rb_lane_max(const double *m) {
    return rb_max2(rb_max2(rb_max2(m[0], m[1]), rb_max2(m[2], m[3])),
                   rb_max2(rb_max2(m[4], m[5]), rb_max2(m[6], m[7])));
}
static inline double rb_lane_sum(const double *s) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* ---------------------------------------------------------------- all-good accumulation */

/* One sample into its lane (scalar reference for the vector loops). */
static inline void rb_acc1(rb_lanes *L, int64_t i, double x) {
    int g = (int)(i & 7);
    L->mn[g] = x < L->mn[g] ? x : L->mn[g];
    L->mx[g] = x > L->mx[g] ? x : L->mx[g];
    L->s[g] += x;
}

/* min/max/sum of v[0..n) (all samples counted) and, when ts != NULL, the time-weighted
 * terms v[i] * (t_next - t_i) with t_next = ts[i+1] or we for the last sample.
 * `vec_tw` is 0 when a step might not fit the exponent trick (then tw is scalar). */
static void rb_acc_scalar(const int64_t *ts, const double *v, int64_t n, int64_t we, rb_lanes *L) {
    for (int64_t i = 0; i < n; i++) rb_acc1(L, i, v[i]);
    if (ts)
        for (int64_t i = 0; i < n; i++)
            L->tw[i & 7] += v[i] * (double)((i + 1 < n ? ts[i + 1] : we) - ts[i]);
}

#ifdef RB_X86
static void rb_acc_sse2(const int64_t *ts, const double *v, int64_t n, int64_t we, int vec_tw, rb_lanes *L) {
    __m128d mn[4], mx[4], s[4], tw[4];
    for (int k = 0; k < 4; k++) {
        mn[k] = _mm_loadu_pd(L->mn + 2 * k);
        mx[k] = _mm_loadu_pd(L->mx + 2 * k);
        s[k] = _mm_loadu_pd(L->s + 2 * k);
        tw[k] = _mm_loadu_pd(L->tw + 2 * k);
    }
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8) {
        for (int k = 0; k < 4; k++) {
            __m128d x = _mm_loadu_pd(v + i + 2 * k);
            mn[k] = _mm_min_pd(x, mn[k]);
            mx[k] = _mm_max_pd(x, mx[k]);
            s[k] = _mm_add_pd(s[k], x);
        }
    }
    int64_t t8 = 0;
    if (ts && vec_tw) {
        const __m128i magic_i = _mm_set1_epi64x(0x4330000000000000LL);
        const __m128d magic_d = _mm_set1_pd(RB_TWO52);
        t8 = (n - 1) & ~(int64_t)7;
        for (int64_t j = 0; j < t8; j += 8) {
            for (int k = 0; k < 4; k++) {
                __m128i a = _mm_loadu_si128((const __m128i *)(ts + j + 2 * k));
                __m128i b = _mm_loadu_si128((const __m128i *)(ts + j + 2 * k + 1));
                __m128d dt = _mm_sub_pd(_mm_castsi128_pd(_mm_or_si128(_mm_sub_epi64(b, a), magic_i)), magic_d);
                tw[k] = _mm_add_pd(tw[k], _mm_mul_pd(_mm_loadu_pd(v + j + 2 * k), dt));
            }
        }
    }
    for (int k = 0; k < 4; k++) {
        _mm_storeu_pd(L->mn + 2 * k, mn[k]);
        _mm_storeu_pd(L->mx + 2 * k, mx[k]);
        _mm_storeu_pd(L->s + 2 * k, s[k]);
        _mm_storeu_pd(L->tw + 2 * k, tw[k]);
    }
    for (; i < n; i++) rb_acc1(L, i, v[i]);
    if (ts)
        for (int64_t j = t8; j < n; j++)
            L->tw[j & 7] += v[j] * (double)((j + 1 < n ? ts[j + 1] : we) - ts[j]);
}

__attribute__((target("avx2"))) static void rb_acc_avx2(const int64_t *ts, const double *v, int64_t n,
                                                        int64_t we, int vec_tw, rb_lanes *L) {
    __m256d mn0 = _mm256_loadu_pd(L->mn), mn1 = _mm256_loadu_pd(L->mn + 4);
    __m256d mx0 = _mm256_loadu_pd(L->mx), mx1 = _mm256_loadu_pd(L->mx + 4);
    __m256d s0 = _mm256_loadu_pd(L->s), s1 = _mm256_loadu_pd(L->s + 4);
    __m256d tw0 = _mm256_loadu_pd(L->tw), tw1 = _mm256_loadu_pd(L->tw + 4);
    int64_t n8 = n & ~(int64_t)7, i;
    int64_t t8 = (ts && vec_tw) ? ((n - 1) & ~(int64_t)7) : 0;
    if (t8) {
        const __m256i magic_i = _mm256_set1_epi64x(0x4330000000000000LL);
        const __m256d magic_d = _mm256_set1_pd(RB_TWO52);
        for (i = 0; i < t8; i += 8) {
            __m256d x0 = _mm256_loadu_pd(v + i), x1 = _mm256_loadu_pd(v + i + 4);
            mn0 = _mm256_min_pd(x0, mn0);
            mn1 = _mm256_min_pd(x1, mn1);
            mx0 = _mm256_max_pd(x0, mx0);
            mx1 = _mm256_max_pd(x1, mx1);
            s0 = _mm256_add_pd(s0, x0);
            s1 = _mm256_add_pd(s1, x1);
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(ts + i));
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(ts + i + 1));
            __m256i a1 = _mm256_loadu_si256((const __m256i *)(ts + i + 4));
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(ts + i + 5));
            __m256d d0 = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_sub_epi64(b0, a0), magic_i)),
                                       magic_d);
            __m256d d1 = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_sub_epi64(b1, a1), magic_i)),
                                       magic_d);
            tw0 = _mm256_add_pd(tw0, _mm256_mul_pd(x0, d0));
            tw1 = _mm256_add_pd(tw1, _mm256_mul_pd(x1, d1));
        }
    } else {
        i = 0;
    }
    for (; i < n8; i += 8) {
        __m256d x0 = _mm256_loadu_pd(v + i), x1 = _mm256_loadu_pd(v + i + 4);
        mn0 = _mm256_min_pd(x0, mn0);
        mn1 = _mm256_min_pd(x1, mn1);
        mx0 = _mm256_max_pd(x0, mx0);
        mx1 = _mm256_max_pd(x1, mx1);
        s0 = _mm256_add_pd(s0, x0);
        s1 = _mm256_add_pd(s1, x1);
    }
    _mm256_storeu_pd(L->mn, mn0);
    _mm256_storeu_pd(L->mn + 4, mn1);
    _mm256_storeu_pd(L->mx, mx0);
    _mm256_storeu_pd(L->mx + 4, mx1);
    _mm256_storeu_pd(L->s, s0);
    _mm256_storeu_pd(L->s + 4, s1);
    _mm256_storeu_pd(L->tw, tw0);
    _mm256_storeu_pd(L->tw + 4, tw1);
    for (; i < n; i++) rb_acc1(L, i, v[i]);
    if (ts)
        for (int64_t j = t8; j < n; j++)
            L->tw[j & 7] += v[j] * (double)((j + 1 < n ? ts[j + 1] : we) - ts[j]);
}

/* sum over lanes of (v[i] - mean)^2 */
static void rb_sq_sse2(const double *v, int64_t n, double mean, double *s) {
    __m128d acc[4], m = _mm_set1_pd(mean);
    for (int k = 0; k < 4; k++) acc[k] = _mm_loadu_pd(s + 2 * k);
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8)
        for (int k = 0; k < 4; k++) {
            __m128d d = _mm_sub_pd(_mm_loadu_pd(v + i + 2 * k), m);
            acc[k] = _mm_add_pd(acc[k], _mm_mul_pd(d, d));
        }
    for (int k = 0; k < 4; k++) _mm_storeu_pd(s + 2 * k, acc[k]);
    for (; i < n; i++) {
        double d = v[i] - mean;
        s[i & 7] += d * d;
    }
}

__attribute__((target("avx2"))) static void rb_sq_avx2(const double *v, int64_t n, double mean, double *s) {
    __m256d a0 = _mm256_loadu_pd(s), a1 = _mm256_loadu_pd(s + 4), m = _mm256_set1_pd(mean);
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8) {
        __m256d d0 = _mm256_sub_pd(_mm256_loadu_pd(v + i), m);
        __m256d d1 = _mm256_sub_pd(_mm256_loadu_pd(v + i + 4), m);
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(d0, d0));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(d1, d1));
    }
    _mm256_storeu_pd(s, a0);
    _mm256_storeu_pd(s + 4, a1);
    for (; i < n; i++) {
        double d = v[i] - mean;
        s[i & 7] += d * d;
    }
}
#endif

static int rb_isa = -1; /* 0 scalar, 1 sse2, 2 avx2; RB_FORCE_ISA may pin it for tests */

static inline int rb_get_isa(void) {
    if (rb_isa < 0) {
#ifdef RB_X86
        __builtin_cpu_init();
        rb_isa = __builtin_cpu_supports("avx2") ? 2 : 1;
#else
        rb_isa = 0;
#endif
    }
    return rb_isa;
}

static int rb_set_isa(int isa) {
    int best = -1;
    rb_isa = -1;
    best = rb_get_isa();
    rb_isa = (isa >= 0 && isa < best) ? isa : best;
    return rb_isa;
}

static void rb_acc(const int64_t *ts, const double *v, int64_t n, int64_t we, rb_lanes *L) {
    int vec_tw = ts && n > 0 && (we - ts[0]) >= 0 && (we - ts[0]) < (int64_t)1 << 52;
#ifdef RB_X86
    int isa = rb_get_isa();
    if (isa == 2) { rb_acc_avx2(ts, v, n, we, vec_tw, L); return; }
    if (isa == 1) { rb_acc_sse2(ts, v, n, we, vec_tw, L); return; }
#endif
    (void)vec_tw;
    rb_acc_scalar(ts, v, n, we, L);
}

static void rb_sq(const double *v, int64_t n, double mean, double *s) {
#ifdef RB_X86
    int isa = rb_get_isa();
    if (isa == 2) { rb_sq_avx2(v, n, mean, s); return; }
    if (isa == 1) { rb_sq_sse2(v, n, mean, s); return; }
#endif
    for (int64_t i = 0; i < n; i++) {
        double d = v[i] - mean;
        s[i & 7] += d * d;
    }
}

static inline int rb_any_q(const uint8_t *q, int64_t n) {
    uint8_t any = 0;
    for (int64_t i = 0; i < n; i++) any |= q[i];
    return any != 0;
}

/* ---------------------------------------------------------------- window statistics */

enum { RB_COUNT, RB_MIN, RB_MAX, RB_MEAN, RB_FIRST, RB_LAST, RB_SUM, RB_STD, RB_TWA, RB_GOOD_RATIO,
       RB_BAD_COUNT, RB_NSTATS };

/* Statistics of one window: samples sorted by time, all inside [.., we). A sample is good
 * when its quality is 0 and its value is not NaN; statistics use good samples only. */
/* The checked (scalar) accumulation over samples [a, n): good samples only. */
static void rb_checked(const int64_t *ts, const double *v, const uint8_t *q, int64_t a, int64_t n, int64_t we,
                       int basic, rb_lanes *L, int64_t *cnt, int64_t *den) {
    for (int64_t i = a; i < n; i++) {
        double x = v[i];
        if (q[i] == 0 && x == x) {
            int g = (int)(i & 7);
            (*cnt)++;
            L->mn[g] = x < L->mn[g] ? x : L->mn[g];
            L->mx[g] = x > L->mx[g] ? x : L->mx[g];
            L->s[g] += x;
            if (!basic) {
                int64_t dt = (i + 1 < n ? ts[i + 1] : we) - ts[i];
                *den += dt;
                L->tw[g] += x * (double)dt;
            }
        }
    }
}

#ifdef RB_X86
/* Good-sample mask of 4 samples: quality byte 0 and value not NaN. */
__attribute__((target("avx2"))) static inline __m256d rb_good4(const uint8_t *q, __m256d x) {
    int32_t qq;
    memcpy(&qq, q, 4);
    __m256i q64 = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(qq));
    __m256d qok = _mm256_castsi256_pd(_mm256_cmpeq_epi64(q64, _mm256_setzero_si256()));
    return _mm256_and_pd(qok, _mm256_cmp_pd(x, x, _CMP_ORD_Q));
}

/* rb_checked with AVX2 masks: a bad sample contributes +inf to min, -inf to max and +0.0 to
 * the sums, which leaves every lane exactly as the scalar loop leaves it (a lane sum starts
 * at +0.0 and can never become -0.0, so adding +0.0 is the identity). */
__attribute__((target("avx2"))) static void rb_checked_avx2(const int64_t *ts, const double *v, const uint8_t *q,
                                                            int64_t n, int64_t we, int basic, int vec_tw,
                                                            rb_lanes *L, int64_t *cnt, int64_t *den) {
    const __m256d pinf = _mm256_set1_pd(INFINITY), ninf = _mm256_set1_pd(-INFINITY);
    const __m256i magic_i = _mm256_set1_epi64x(0x4330000000000000LL);
    const __m256d magic_d = _mm256_set1_pd(RB_TWO52);
    __m256d mn0 = _mm256_loadu_pd(L->mn), mn1 = _mm256_loadu_pd(L->mn + 4);
    __m256d mx0 = _mm256_loadu_pd(L->mx), mx1 = _mm256_loadu_pd(L->mx + 4);
    __m256d s0 = _mm256_loadu_pd(L->s), s1 = _mm256_loadu_pd(L->s + 4);
    __m256d tw0 = _mm256_loadu_pd(L->tw), tw1 = _mm256_loadu_pd(L->tw + 4);
    __m256i dsum = _mm256_setzero_si256();
    int64_t c = 0, i;
    int64_t end = basic ? (n & ~(int64_t)7) : (vec_tw ? ((n - 1) & ~(int64_t)7) : 0);
    for (i = 0; i < end; i += 8) {
        __m256d x0 = _mm256_loadu_pd(v + i), x1 = _mm256_loadu_pd(v + i + 4);
        __m256d g0 = rb_good4(q + i, x0), g1 = rb_good4(q + i + 4, x1);
        c += __builtin_popcount((unsigned)_mm256_movemask_pd(g0)) +
             __builtin_popcount((unsigned)_mm256_movemask_pd(g1));
        mn0 = _mm256_min_pd(_mm256_blendv_pd(pinf, x0, g0), mn0);
        mn1 = _mm256_min_pd(_mm256_blendv_pd(pinf, x1, g1), mn1);
        mx0 = _mm256_max_pd(_mm256_blendv_pd(ninf, x0, g0), mx0);
        mx1 = _mm256_max_pd(_mm256_blendv_pd(ninf, x1, g1), mx1);
        s0 = _mm256_add_pd(s0, _mm256_and_pd(x0, g0));
        s1 = _mm256_add_pd(s1, _mm256_and_pd(x1, g1));
        if (!basic) {
            __m256i d0 = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(ts + i + 1)),
                                          _mm256_loadu_si256((const __m256i *)(ts + i)));
            __m256i d1 = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(ts + i + 5)),
                                          _mm256_loadu_si256((const __m256i *)(ts + i + 4)));
            dsum = _mm256_add_epi64(dsum, _mm256_and_si256(d0, _mm256_castpd_si256(g0)));
            dsum = _mm256_add_epi64(dsum, _mm256_and_si256(d1, _mm256_castpd_si256(g1)));
            __m256d f0 = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(d0, magic_i)), magic_d);
            __m256d f1 = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(d1, magic_i)), magic_d);
            tw0 = _mm256_add_pd(tw0, _mm256_and_pd(_mm256_mul_pd(x0, f0), g0));
            tw1 = _mm256_add_pd(tw1, _mm256_and_pd(_mm256_mul_pd(x1, f1), g1));
        }
    }
    _mm256_storeu_pd(L->mn, mn0);
    _mm256_storeu_pd(L->mn + 4, mn1);
    _mm256_storeu_pd(L->mx, mx0);
    _mm256_storeu_pd(L->mx + 4, mx1);
    _mm256_storeu_pd(L->s, s0);
    _mm256_storeu_pd(L->s + 4, s1);
    _mm256_storeu_pd(L->tw, tw0);
    _mm256_storeu_pd(L->tw + 4, tw1);
    int64_t d[4];
    _mm256_storeu_si256((__m256i *)d, dsum);
    *den += (d[0] + d[1]) + (d[2] + d[3]);
    *cnt += c;
    rb_checked(ts, v, q, i, n, we, basic, L, cnt, den);
}

__attribute__((target("avx2"))) static void rb_sq_checked_avx2(const double *v, const uint8_t *q, int64_t n,
                                                               double mean, double *s) {
    __m256d a0 = _mm256_loadu_pd(s), a1 = _mm256_loadu_pd(s + 4), m = _mm256_set1_pd(mean);
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8) {
        __m256d x0 = _mm256_loadu_pd(v + i), x1 = _mm256_loadu_pd(v + i + 4);
        __m256d g0 = rb_good4(q + i, x0), g1 = rb_good4(q + i + 4, x1);
        __m256d d0 = _mm256_sub_pd(x0, m), d1 = _mm256_sub_pd(x1, m);
        a0 = _mm256_add_pd(a0, _mm256_and_pd(_mm256_mul_pd(d0, d0), g0));
        a1 = _mm256_add_pd(a1, _mm256_and_pd(_mm256_mul_pd(d1, d1), g1));
    }
    _mm256_storeu_pd(s, a0);
    _mm256_storeu_pd(s + 4, a1);
    for (; i < n; i++) {
        double x = v[i];
        if (q[i] == 0 && x == x) {
            double dd = x - mean;
            s[i & 7] += dd * dd;
        }
    }
}
#endif

static void rb_window_stats(const int64_t *ts, const double *v, const uint8_t *q, int64_t n, int64_t we,
                            int basic, double *res) {
    rb_lanes L;
    int64_t cnt = 0, fi = -1, li = -1, den = 0;
    double total = 0.0;
    int vec_tw = !basic && n > 0 && (we - ts[0]) >= 0 && (we - ts[0]) < (int64_t)1 << 52;
    rb_lanes_init(&L);
    if (n > 0 && !rb_any_q(q, n)) {
        rb_acc(basic ? NULL : ts, v, n, we, &L);
        total = rb_lane_sum(L.s);
        if (total == total) { /* no NaN among the values: every sample is good */
            cnt = n;
            den = we - ts[0];
        } else {
            rb_lanes_init(&L);
        }
    }
    if (cnt == 0) {
#ifdef RB_X86
        if (rb_get_isa() == 2)
            rb_checked_avx2(ts, v, q, n, we, basic, vec_tw, &L, &cnt, &den);
        else
#endif
            rb_checked(ts, v, q, 0, n, we, basic, &L, &cnt, &den);
        total = rb_lane_sum(L.s);
    }
    res[RB_COUNT] = (double)cnt;
    res[RB_SUM] = total;
    res[RB_GOOD_RATIO] = n > 0 ? (double)cnt / (double)n : NAN;
    res[RB_BAD_COUNT] = (double)(n - cnt);
    res[RB_MIN] = res[RB_MAX] = res[RB_MEAN] = res[RB_FIRST] = res[RB_LAST] = res[RB_STD] = res[RB_TWA] = NAN;
    if (cnt == 0) return;
    double mean = total / (double)cnt;
    res[RB_MIN] = rb_lane_min(L.mn);
    res[RB_MAX] = rb_lane_max(L.mx);
    res[RB_MEAN] = mean;
    if (basic) return;
    for (fi = 0; !(q[fi] == 0 && v[fi] == v[fi]); fi++) {}
    for (li = n - 1; !(q[li] == 0 && v[li] == v[li]); li--) {}
    res[RB_FIRST] = v[fi];
    res[RB_LAST] = v[li];
    double sq[RB_LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    if (cnt == n) {
        rb_sq(v, n, mean, sq);
    } else {
#ifdef RB_X86
        if (rb_get_isa() == 2)
            rb_sq_checked_avx2(v, q, n, mean, sq);
        else
#endif
            for (int64_t i = fi; i <= li; i++) {
                double x = v[i];
                if (q[i] == 0 && x == x) {
                    double d = x - mean;
                    sq[i & 7] += d * d;
                }
            }
    }
    res[RB_STD] = sqrt(rb_lane_sum(sq) / (double)cnt);
    res[RB_TWA] = den > 0 ? rb_lane_sum(L.tw) / (double)den : NAN;
}

/* ---------------------------------------------------------------- downsampling bins */

#ifdef RB_X86
__attribute__((target("avx2"))) static void rb_minmax_avx2(const double *v, int64_t n, double *mn, double *mx) {
    __m256d a0 = _mm256_set1_pd(INFINITY), a1 = a0, b0 = _mm256_set1_pd(-INFINITY), b1 = b0;
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8) {
        __m256d x0 = _mm256_loadu_pd(v + i), x1 = _mm256_loadu_pd(v + i + 4);
        a0 = _mm256_min_pd(x0, a0);
        a1 = _mm256_min_pd(x1, a1);
        b0 = _mm256_max_pd(x0, b0);
        b1 = _mm256_max_pd(x1, b1);
    }
    double t[8], u[8];
    _mm256_storeu_pd(t, a0);
    _mm256_storeu_pd(t + 4, a1);
    _mm256_storeu_pd(u, b0);
    _mm256_storeu_pd(u + 4, b1);
    for (; i < n; i++) {
        t[i & 7] = v[i] < t[i & 7] ? v[i] : t[i & 7];
        u[i & 7] = v[i] > u[i & 7] ? v[i] : u[i & 7];
    }
    *mn = rb_lane_min(t);
    *mx = rb_lane_max(u);
}

static void rb_minmax_sse2(const double *v, int64_t n, double *mn, double *mx) {
    __m128d a[4], b[4];
    for (int k = 0; k < 4; k++) {
        a[k] = _mm_set1_pd(INFINITY);
        b[k] = _mm_set1_pd(-INFINITY);
    }
    int64_t n8 = n & ~(int64_t)7, i;
    for (i = 0; i < n8; i += 8)
        for (int k = 0; k < 4; k++) {
            __m128d x = _mm_loadu_pd(v + i + 2 * k);
            a[k] = _mm_min_pd(x, a[k]);
            b[k] = _mm_max_pd(x, b[k]);
        }
    double t[8], u[8];
    for (int k = 0; k < 4; k++) {
        _mm_storeu_pd(t + 2 * k, a[k]);
        _mm_storeu_pd(u + 2 * k, b[k]);
    }
    for (; i < n; i++) {
        t[i & 7] = v[i] < t[i & 7] ? v[i] : t[i & 7];
        u[i & 7] = v[i] > u[i & 7] ? v[i] : u[i & 7];
    }
    *mn = rb_lane_min(t);
    *mx = rb_lane_max(u);
}
#endif

/* Extreme values of v[0..n), NaN ignored (a NaN never wins a comparison); mn > mx when none. */
static void rb_minmax(const double *v, int64_t n, double *mn, double *mx) {
#ifdef RB_X86
    int isa = rb_get_isa();
    if (isa == 2) { rb_minmax_avx2(v, n, mn, mx); return; }
    if (isa == 1) { rb_minmax_sse2(v, n, mn, mx); return; }
#endif
    double a = INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        a = v[i] < a ? v[i] : a;
        b = v[i] > b ? v[i] : b;
    }
    *mn = a;
    *mx = b;
}

#define RB_BLOCK 512

/* First index i in [a, b) with v[i] == x (the caller knows there is one). */
static inline int64_t rb_find(const double *v, int64_t a, double x) {
    while (v[a] != x) a++;
    return a;
}

/* First good sample, first minimum, first maximum and last good sample of [a, b) (indices,
 * -1 when the bin has no good sample). The minimum is the first index whose value equals
 * the smallest good value; likewise the maximum. All-Good bins are scanned once with SIMD in
 * blocks, remembering the block where the extreme last improved, then searched in that block. */
static void rb_bin_extrema(const double *v, const uint8_t *q, int64_t a, int64_t b, int64_t *fi, int64_t *imn,
                           int64_t *imx, int64_t *li) {
    *fi = *imn = *imx = *li = -1;
    if (b <= a) return;
    if (!rb_any_q(q + a, b - a)) {
        double mn = INFINITY, mx = -INFINITY, bmn, bmx;
        int64_t amn = -1, amx = -1;
        for (int64_t s = a; s < b; s += RB_BLOCK) {
            int64_t e = s + RB_BLOCK < b ? s + RB_BLOCK : b;
            rb_minmax(v + s, e - s, &bmn, &bmx);
            if (bmn < mn || (amn < 0 && bmn <= bmx)) { mn = bmn; amn = s; }
            if (bmx > mx || (amx < 0 && bmn <= bmx)) { mx = bmx; amx = s; }
        }
        if (amn < 0) return; /* all NaN */
        int64_t i = a;
        while (v[i] != v[i]) i++;
        *fi = i;
        i = b - 1;
        while (v[i] != v[i]) i--;
        *li = i;
        *imn = rb_find(v, amn, mn);
        *imx = rb_find(v, amx, mx);
        return;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (int64_t i = a; i < b; i++) {
        double x = v[i];
        if (q[i] == 0 && x == x) {
            if (*fi < 0) {
                *fi = *imn = *imx = i;
                mn = mx = x;
            } else {
                if (x < mn) { mn = x; *imn = i; }
                if (x > mx) { mx = x; *imx = i; }
            }
            *li = i;
        }
    }
}

/* ---------------------------------------------------------------- block push checks */

/* 1 when ts[0..n) is non-decreasing. */
__attribute__((target_clones("avx2", "default"))) static int rb_sorted(const int64_t *ts, int64_t n) {
    int unsorted = 0;
    for (int64_t i = 1; i < n; i++) unsorted |= ts[i] < ts[i - 1];
    return !unsorted;
}

/* Samples that are not good: quality != 0 or value NaN. */
__attribute__((target_clones("avx2", "default"))) static int64_t rb_count_bad(const double *v, const uint8_t *q,
                                                                                int64_t n) {
    int64_t nq = 0, bad = 0;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) nq += q[i] != 0;
    for (int64_t i = 0; i < n; i++) nan |= v[i] != v[i];
    if (!nan) return nq;
    for (int64_t i = 0; i < n; i++) bad += (q[i] != 0) | (v[i] != v[i]);
    return bad;
}

/* Copy c samples into ring slots (dts, dv, dq) while checking that timestamps do not go
 * back (ts[0] against `prev`, then each against its predecessor). Stops before the first
 * group of samples that is out of order and returns how many were copied; *nan is set when
 * a copied value is NaN. Groups are checked before they are stored, so nothing past the
 * returned count is written. */
static int64_t rb_copy_sorted_scalar(const int64_t *ts, const double *v, int64_t c, int64_t prev, int64_t *dts,
                                     double *dv, int *nan) {
    int64_t i;
    int isnan_ = 0;
    for (i = 0; i < c; i++) {
        if (ts[i] < prev) break;
        prev = ts[i];
        dts[i] = ts[i];
        dv[i] = v[i];
        isnan_ |= v[i] != v[i];
    }
    *nan |= isnan_;
    return i;
}

#ifdef RB_X86
__attribute__((target("avx2"))) static int64_t rb_copy_sorted_avx2(const int64_t *ts, const double *v, int64_t c,
                                                                   int64_t prev, int64_t *dts, double *dv,
                                                                   int *nan) {
    int64_t i = 0, c4 = c & ~(int64_t)3;
    __m256d nanacc = _mm256_setzero_pd();
    if (c4 > 0 && ts[0] >= prev) {
        __m256i p = _mm256_set_epi64x(ts[2], ts[1], ts[0], prev);
        for (;;) {
            __m256i t = _mm256_loadu_si256((const __m256i *)(ts + i));
            if (!_mm256_testz_si256(_mm256_cmpgt_epi64(p, t), _mm256_cmpgt_epi64(p, t))) break;
            __m256d x = _mm256_loadu_pd(v + i);
            _mm256_storeu_si256((__m256i *)(dts + i), t);
            _mm256_storeu_pd(dv + i, x);
            nanacc = _mm256_or_pd(nanacc, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
            i += 4;
            if (i >= c4) break;
            p = _mm256_loadu_si256((const __m256i *)(ts + i - 1));
        }
        if (_mm256_movemask_pd(nanacc)) *nan = 1;
        if (i > 0) prev = ts[i - 1];
    }
    return i + rb_copy_sorted_scalar(ts + i, v + i, c - i, prev, dts + i, dv + i, nan);
}
#endif

static int64_t rb_copy_sorted(const int64_t *ts, const double *v, int64_t c, int64_t prev, int64_t *dts, double *dv,
                              int *nan) {
#ifdef RB_X86
    if (rb_get_isa() == 2) return rb_copy_sorted_avx2(ts, v, c, prev, dts, dv, nan);
#endif
    return rb_copy_sorted_scalar(ts, v, c, prev, dts, dv, nan);
}

/* Samples with quality != 0, or (when `nan`) quality != 0 or value NaN. */
__attribute__((target_clones("avx2", "default"))) static int64_t rb_count_bad_q(const double *v, const uint8_t *q,
                                                                                  int64_t n, int nan) {
    int64_t bad = 0;
    if (!nan) {
        for (int64_t i = 0; i < n; i++) bad += q[i] != 0;
        return bad;
    }
    for (int64_t i = 0; i < n; i++) bad += (q[i] != 0) | (v[i] != v[i]);
    return bad;
}

#endif /* RB_KERNELS_H */
