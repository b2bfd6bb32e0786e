# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled scatter of one sample batch into the latest-value arrays (see edge/core/store.py).

Three numpy fancy assignments and a test for bad samples cost about 4 us per batch; this loop
does the same in one pass: every tag gets its quality and timestamp, and only a Good sample
replaces the last value (a bad one keeps the last usable value visible, flagged by its quality).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef class LatestArrays:
    """Binds the store's three arrays once; ``consume`` writes one batch into them."""

    cdef double[::1] values
    cdef uint8_t[::1] quality
    cdef int64_t[::1] ts_ns
    cdef Py_ssize_t size

    def __init__(self, double[::1] values, uint8_t[::1] quality, int64_t[::1] ts_ns):
        if not values.shape[0] == quality.shape[0] == ts_ns.shape[0]:
            raise ValueError("the latest-value arrays must have the same length")
        self.values, self.quality, self.ts_ns = values, quality, ts_ns
        self.size = values.shape[0]

    def consume(self, const int32_t[::1] ids, const double[::1] values, const uint8_t[::1] quality,
                int64_t ts_ns):
        """Write one batch (tag ids, values, qualities, one timestamp); ids must be valid tag ids."""
        cdef Py_ssize_t i, n = ids.shape[0]
        cdef int32_t t
        if values.shape[0] != n or quality.shape[0] != n:
            raise ValueError("batch arrays must have the same length")
        for i in range(n):
            if not 0 <= ids[i] < self.size:
                raise IndexError(f"tag id {ids[i]} outside the store's {self.size} tags")
        with nogil:
            for i in range(n):
                t = ids[i]
                if quality[i] == 0:
                    self.values[t] = values[i]
                self.quality[t] = quality[i]
                self.ts_ns[t] = ts_ns
