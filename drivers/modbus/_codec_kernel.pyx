# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled block decoder: one C loop per response instead of a dozen numpy calls.

:class:`drivers.modbus.codec.BlockCodec` compiles each register block into flat arrays (kind,
wire byte positions, bit shift, sentinel patterns, scale-factor position, exact scaling (mul,
add, div), bounds) and hands them to a :class:`RegisterKernel`. ``decode`` then reads the wire
bytes once per point and writes the value and quality arrays in the same pass. The numpy path
in ``codec.py`` is the reference and the fallback where this extension is not built; both
follow the same rules step by step (convert, apply the scale factor, multiply, add, divide,
clip like ``numpy.clip``, range check; then scale-factor problems and sentinels override), so
the parity tests can require identical arrays.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from libc.math cimport NAN, isnan
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import sys

import numpy as np

cdef bint _LITTLE = sys.byteorder == "little"
_empty = np.empty
_F64 = np.float64
_U8 = np.uint8

# Point kinds: the fixed-size types in the order of codec._NP_DTYPE, then a bit of an integer
# word (its 2, 4 or 8 value bytes; the shift is 0..63), then a string (value NaN, quality Good:
# its text is decoded separately).
cdef enum:
    K_INT16 = 0
    K_UINT16 = 1
    K_INT32 = 2
    K_UINT32 = 3
    K_INT64 = 4
    K_UINT64 = 5
    K_FLOAT32 = 6
    K_FLOAT64 = 7
    K_BIT = 8
    K_STRING = 9

class ShortResponse(ValueError):
    """The response has fewer bytes than the block reads."""


KINDS = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bit", "string")


cdef inline bint _wire_format(const char* fmt):
    """True for a buffer whose raw bytes are the wire bytes: bytes, or big-endian uint16."""
    if fmt == NULL:
        return True
    if fmt[0] == b"B" and fmt[1] == 0:
        return True
    if (fmt[0] == b">" or fmt[0] == b"!") and fmt[1] == b"H" and fmt[2] == 0:
        return True
    return not _LITTLE and fmt[0] == b"H" and fmt[1] == 0


cdef inline bint _get_wire(object registers, Py_buffer* view) except -1:
    """Borrow the wire bytes of ``registers``; False (nothing borrowed) if they are something else."""
    if not PyObject_CheckBuffer(registers):
        return False
    try:
        PyObject_GetBuffer(registers, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except BufferError:
        return False
    if not _wire_format(view.format):
        PyBuffer_Release(view)
        return False
    return True


cdef class RegisterKernel:
    """The compiled form of one register block; immutable after construction."""

    cdef Py_ssize_t n
    cdef Py_ssize_t min_bytes
    cdef bint scaled
    cdef bint clamps
    cdef uint8_t out_of_range
    cdef uint8_t sensor
    cdef const uint64_t[::1] invalid
    cdef const int32_t[::1] inv_start
    cdef const int32_t[::1] sf_pos
    cdef const double[::1] pow10
    cdef const int8_t[::1] kind
    cdef const int32_t[::1] pos
    cdef const int32_t[::1] pos_start
    cdef const uint8_t[::1] shift
    cdef const double[::1] mul
    cdef const double[::1] add
    cdef const double[::1] div
    cdef const double[::1] low
    cdef const double[::1] high
    cdef const double[::1] clip_low
    cdef const double[::1] clip_high

    def __init__(self, kind, pos, pos_start, shift, mul, add, div, low, high, clip_low, clip_high,
                 bint scaled, bint clamps, int out_of_range, Py_ssize_t min_bytes, invalid, inv_start, sf_pos,
                 int sensor, pow10):
        self.kind = np.ascontiguousarray(kind, dtype=np.int8)
        self.pos = np.ascontiguousarray(pos, dtype=np.int32)
        self.pos_start = np.ascontiguousarray(pos_start, dtype=np.int32)
        self.shift = np.ascontiguousarray(shift, dtype=np.uint8)
        self.mul = np.ascontiguousarray(mul, dtype=np.float64)
        self.add = np.ascontiguousarray(add, dtype=np.float64)
        self.div = np.ascontiguousarray(div, dtype=np.float64)
        self.low = np.ascontiguousarray(low, dtype=np.float64)
        self.high = np.ascontiguousarray(high, dtype=np.float64)
        self.clip_low = np.ascontiguousarray(clip_low, dtype=np.float64)
        self.clip_high = np.ascontiguousarray(clip_high, dtype=np.float64)
        self.invalid = np.ascontiguousarray(invalid, dtype=np.uint64)
        self.inv_start = np.ascontiguousarray(inv_start, dtype=np.int32)
        self.sf_pos = np.ascontiguousarray(sf_pos, dtype=np.int32)
        self.pow10 = np.ascontiguousarray(pow10, dtype=np.float64)
        self.n = self.kind.shape[0]
        if not (self.pos_start.shape[0] == self.n + 1 and self.shift.shape[0] == self.n
                and self.mul.shape[0] == self.n and self.add.shape[0] == self.n and self.div.shape[0] == self.n
                and self.low.shape[0] == self.n and self.high.shape[0] == self.n
                and self.clip_low.shape[0] == self.n and self.clip_high.shape[0] == self.n
                and self.inv_start.shape[0] == self.n + 1 and self.sf_pos.shape[0] == self.n):
            raise ValueError("kernel arrays must have one entry per point (pos_start, inv_start one more)")
        if self.n and (self.inv_start[0] != 0 or self.inv_start[self.n] != self.invalid.shape[0]):
            raise ValueError("inv_start must cover invalid exactly")
        if self.pow10.shape[0] < 1:
            raise ValueError("pow10 needs at least 10**0")
        cdef Py_ssize_t i, j
        for i in range(self.n):
            if not 0 <= self.kind[i] <= K_STRING:
                raise ValueError(f"unknown point kind {self.kind[i]}")
            if self.pos_start[i] > self.pos_start[i + 1] or self.pos_start[i + 1] - self.pos_start[i] > 8:
                raise ValueError("a point spans 0 to 8 value bytes")
            if self.inv_start[i] > self.inv_start[i + 1] or self.shift[i] > 63:
                raise ValueError("bad sentinel index or bit shift")
            if not (self.sf_pos[i] == -1 or 0 <= self.sf_pos[i] <= min_bytes - 2):
                raise ValueError("a scale-factor position lies outside the block")
        if self.n and (self.pos_start[0] != 0 or self.pos_start[self.n] != self.pos.shape[0]):
            raise ValueError("pos_start must cover pos exactly")
        for j in range(self.pos.shape[0]):
            if not 0 <= self.pos[j] < min_bytes:
                raise ValueError("a byte position lies outside the block")
        self.scaled = scaled
        self.clamps = clamps
        self.out_of_range = out_of_range
        self.sensor = sensor
        self.min_bytes = min_bytes

    def decode(self, registers, values=None, quality=None):
        """Decode one response into (values float64, quality uint8); None if ``registers`` is not wire bytes.

        ``registers``: bytes-like wire bytes or a contiguous big-endian uint16 array (anything
        else, or strided output arrays, give None: the numpy path handles those). Raises
        :class:`ShortResponse` if it is shorter than the block.
        """
        cdef Py_buffer view
        if not _get_wire(registers, &view):
            return None
        cdef double[::1] out_v
        cdef uint8_t[::1] out_q
        try:
            if values is None:
                values = _empty(self.n, _F64)
            if quality is None:
                quality = _empty(self.n, _U8)
            try:
                out_v = values
                out_q = quality
            except (ValueError, TypeError):  # strided or not float64/uint8: the numpy path handles it
                return None
            if out_v.shape[0] != self.n or out_q.shape[0] != self.n:
                raise ValueError("output arrays must have one entry per point")
            if view.len < self.min_bytes:
                raise ShortResponse(f"response has {view.len // 2} registers, the block needs {self.min_bytes // 2}")
            with nogil:
                self._run(<const uint8_t*>view.buf, &out_v[0] if self.n else NULL,
                          &out_q[0] if self.n else NULL)
        finally:
            PyBuffer_Release(&view)
        return values, quality

    cdef void _run(self, const uint8_t* wire, double* out_v, uint8_t* out_q) noexcept nogil:
        cdef Py_ssize_t i, j, limit = self.pow10.shape[0] - 1
        cdef uint64_t u
        cdef uint32_t u32
        cdef float f32
        cdef double v, lo, hi
        cdef int8_t k
        cdef int sf
        cdef bint sentinel
        for i in range(self.n):
            k = self.kind[i]
            if k == K_STRING:
                out_v[i] = NAN
                out_q[i] = 0
                continue
            u = 0
            for j in range(self.pos_start[i], self.pos_start[i + 1]):
                u = (u << 8) | wire[self.pos[j]]
            sentinel = False
            for j in range(self.inv_start[i], self.inv_start[i + 1]):
                if u == self.invalid[j]:
                    sentinel = True
            if sentinel:  # the device's own "no valid value": strongest of all rules
                out_v[i] = NAN
                out_q[i] = self.sensor
                continue
            if k == K_INT16:
                v = <double>(<int16_t>(<uint16_t>u))
            elif k == K_UINT16:
                v = <double>(<uint16_t>u)
            elif k == K_INT32:
                v = <double>(<int32_t>(<uint32_t>u))
            elif k == K_UINT32:
                v = <double>(<uint32_t>u)
            elif k == K_INT64:
                v = <double>(<int64_t>u)
            elif k == K_UINT64:
                v = <double>u
            elif k == K_FLOAT32:
                u32 = <uint32_t>u
                memcpy(&f32, &u32, 4)
                v = <double>f32
            elif k == K_FLOAT64:
                memcpy(&v, &u, 8)
            else:  # K_BIT: u is the whole word that holds the bit
                v = <double>((u >> self.shift[i]) & 1)
            if self.sf_pos[i] >= 0:  # raw * 10**sf from the same response
                sf = <int16_t>((<uint16_t>wire[self.sf_pos[i]] << 8) | wire[self.sf_pos[i] + 1])
                if sf == -32768:  # the factor itself is "not implemented"
                    out_v[i] = NAN
                    out_q[i] = self.sensor
                    continue
                if sf < -limit or sf > limit:
                    out_v[i] = NAN
                    out_q[i] = self.out_of_range
                    continue
                if sf >= 0:
                    v = v * self.pow10[sf]
                else:
                    v = v / self.pow10[-sf]
            if self.scaled:  # (raw * mul + add) / div, as the numpy path
                v = v * self.mul[i]
                v = v + self.add[i]
                v = v / self.div[i]
            if self.clamps and not isnan(v):  # numpy.clip: max with the low bound, then min with the high
                lo = self.clip_low[i]
                hi = self.clip_high[i]
                v = v if v > lo else lo
                v = v if v < hi else hi
            if v >= self.low[i] and v <= self.high[i]:  # False for NaN and inf (bounds are finite)
                out_v[i] = v
                out_q[i] = 0
            else:
                out_v[i] = NAN
                out_q[i] = self.out_of_range
