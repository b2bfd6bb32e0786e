# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled line-protocol encoding of one spooled sample batch (see edge/outputs/influx.py).

The Python encoder formatted each value with an f-string and ``repr`` and joined a list per
line: ~1 us per value, the forwarder's largest cost at 50,000 tags/s. This writes the same
bytes in one pass into one buffer: the field keys come prepared per tag (``name=``,
``q_name=``), each float as ``repr(float)`` writes it (the shortest text that reads back to the
same double, laid out as repr does: ``_shortest.h``, from the C++ library's ``std::to_chars``;
CPython's own conversion, ``PyOS_double_to_string``, cost several times more per value), each
quality as an integer field. Batches with string values stay on the Python path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport isfinite
from libc.stdint cimport int32_t, uint8_t
from libc.string cimport memcpy, strlen


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int *type) except NULL
    int Py_DTSF_ADD_DOT_0


cdef extern from "_shortest.h":
    int edge_repr_double(double v, char* out) noexcept nogil

cdef enum:
    REPR_ROOM = 32  # the longest repr of a double is 24 characters ("-2.2250738585072014e-308")


cdef inline Py_ssize_t _put(char* buf, Py_ssize_t o, bytes b):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(buf + o, PyBytes_AS_STRING(b), n)
    return o + n


def encode_samples(bytes prefix, list fields, list qfields, const int32_t[::1] ids, const double[::1] values,
                   const uint8_t[::1] quality, bytes timestamp):
    """``prefix`` + ``name=value`` (finite values only) and ``q_name=<q>i`` per sample, joined by commas,
    + `` `` + ``timestamp``; b"" for an empty batch. ``fields``/``qfields``: bytes per tag id."""
    cdef Py_ssize_t i, n = ids.shape[0], o = 0, size
    cdef int32_t t
    cdef char* buf
    cdef bytes fk, qk
    cdef int q
    if values.shape[0] != n or quality.shape[0] != n:
        raise ValueError("batch arrays must have the same length")
    if n == 0:
        return b""
    size = PyBytes_GET_SIZE(prefix) + PyBytes_GET_SIZE(timestamp) + 2
    for i in range(n):
        t = ids[i]
        if t < 0 or t >= len(fields):
            raise IndexError(f"tag id {t} outside the layout's {len(fields)} tags")
        size += PyBytes_GET_SIZE(<bytes>fields[t]) + PyBytes_GET_SIZE(<bytes>qfields[t]) + REPR_ROOM + 8
    buf = <char*>PyMem_Malloc(size)
    if buf == NULL:
        raise MemoryError()
    try:
        o = _put(buf, 0, prefix)
        for i in range(n):
            t = ids[i]
            if i:
                buf[o] = 44  # ','
                o += 1
            if isfinite(values[i]):
                o = _put(buf, o, <bytes>fields[t])
                o += edge_repr_double(values[i], buf + o)
                buf[o] = 44
                o += 1
            o = _put(buf, o, <bytes>qfields[t])
            q = quality[i]
            if q >= 100:
                buf[o] = 48 + q // 100
                o += 1
            if q >= 10:
                buf[o] = 48 + (q // 10) % 10
                o += 1
            buf[o] = 48 + q % 10
            buf[o + 1] = 105  # 'i'
            o += 2
        buf[o] = 32  # ' '
        o += 1
        o = _put(buf, o, timestamp)
        return PyBytes_FromStringAndSize(buf, o)
    finally:
        PyMem_Free(buf)


def repr_doubles(const double[::1] values, bytes sep=b"\n", bint cpython=False):
    """``sep.join(repr(v).encode() for v in values)`` for finite values, by the encoder's own
    formatter (what the tests compare with ``repr`` over millions of doubles), or with ``cpython``
    by CPython's conversion, the one the encoder used before (bench/lineproto.py's baseline)."""
    cdef Py_ssize_t i, n = values.shape[0], o = 0, ns = PyBytes_GET_SIZE(sep)
    cdef const char* s = PyBytes_AS_STRING(sep)
    cdef char* buf
    cdef char* text
    cdef Py_ssize_t k
    for i in range(n):
        if not isfinite(values[i]):
            raise ValueError(f"value {i} is not finite: {values[i]!r}")
    buf = <char*>PyMem_Malloc(n * (REPR_ROOM + ns) + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            if i:
                memcpy(buf + o, s, ns)
                o += ns
            if cpython:
                text = PyOS_double_to_string(values[i], b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
                k = strlen(text)
                memcpy(buf + o, text, k)
                PyMem_Free(text)
                o += k
            else:
                o += edge_repr_double(values[i], buf + o)
        return PyBytes_FromStringAndSize(buf, o)
    finally:
        PyMem_Free(buf)


def encode_health(bytes prefix, list sources, list keys, const double[:, ::1] values, bytes timestamp):
    """The ``edge_health`` lines of a health table (edge/storage/spool.py ``HealthTable``), joined by
    newlines: per source (row of ``values``) ``prefix`` + its escaped name + `` `` + ``key=value``
    for its finite cells in column order, joined by commas, + `` `` + ``timestamp``; no line for a
    source without a finite cell. ``sources``/``keys``: bytes, escaped (``keys`` end with ``=``)."""
    cdef Py_ssize_t i, j, n = values.shape[0], k = values.shape[1], o = 0, size, start, fields
    cdef char* buf
    if len(sources) != n or len(keys) != k:
        raise ValueError(f"{len(sources)} sources x {len(keys)} keys for a {n} x {k} matrix")
    size = 0
    for j in range(k):
        size += PyBytes_GET_SIZE(<bytes>keys[j]) + REPR_ROOM + 1
    size = size * n + 1
    for i in range(n):
        size += PyBytes_GET_SIZE(prefix) + PyBytes_GET_SIZE(<bytes>sources[i]) + PyBytes_GET_SIZE(timestamp) + 3
    buf = <char*>PyMem_Malloc(size)
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            start = o
            if o:
                buf[o] = 10  # '\n'
                o += 1
            o = _put(buf, o, prefix)
            o = _put(buf, o, <bytes>sources[i])
            buf[o] = 32  # ' '
            o += 1
            fields = 0
            for j in range(k):
                if isfinite(values[i, j]):
                    if fields:
                        buf[o] = 44  # ','
                        o += 1
                    o = _put(buf, o, <bytes>keys[j])
                    o += edge_repr_double(values[i, j], buf + o)
                    fields += 1
            if fields == 0:
                o = start  # nothing to say about this source
                continue
            buf[o] = 32
            o += 1
            o = _put(buf, o, timestamp)
        return PyBytes_FromStringAndSize(buf, o)
    finally:
        PyMem_Free(buf)
