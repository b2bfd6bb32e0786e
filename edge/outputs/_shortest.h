// The text Python's repr(float) writes for a finite double, from the C++ standard library's
// shortest round-trip conversion (std::to_chars, libstdc++ >= 11: the Ryu algorithm).
//
// Why: CPython's own conversion (PyOS_double_to_string, David Gay's dtoa plus a malloc'd string
// per value) was most of the line-protocol encoder's time at 50,000 values/s. Both produce the
// shortest digit string that reads back to the same double (the closest one when several are as
// short); only the layout differs, and this function lays the digits out as repr does: positional
// when the decimal exponent is in [-4, 16), else d.ddde+XX with at least two exponent digits, and
// ".0" after a whole number. tests/outputs/test_lineproto_kernel.py compares it with repr() on
// millions of doubles (random bit patterns, float32 values, integers, powers of ten, subnormals).
#pragma once

#include <charconv>

// Writes repr(v) at out (at least 32 bytes of room), returns its length. v must be finite.
static inline int edge_repr_double(double v, char* out) {
    char sci[40];
    std::to_chars_result res = std::to_chars(sci, sci + sizeof(sci), v, std::chars_format::scientific);
    const char* p = sci;
    const char* end = res.ptr;
    int n = 0;
    if (*p == '-') {
        out[n++] = '-';
        ++p;
    }
    char digits[24];
    int nd = 0;
    digits[nd++] = *p++;
    if (*p == '.') {
        ++p;
        while (p < end && *p != 'e') digits[nd++] = *p++;
    }
    ++p;  // 'e'
    const bool neg_exp = (*p == '-');
    ++p;  // the exponent's sign
    int e = 0;
    while (p < end) e = e * 10 + (*p++ - '0');
    if (neg_exp) e = -e;
    const int decpt = e + 1;  // digits d1 d2 ... mean 0.d1d2... x 10^decpt
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {  // 0.000ddd
            out[n++] = '0';
            out[n++] = '.';
            for (int i = 0; i < -decpt; ++i) out[n++] = '0';
            for (int i = 0; i < nd; ++i) out[n++] = digits[i];
        } else if (decpt >= nd) {  // ddd000.0
            for (int i = 0; i < nd; ++i) out[n++] = digits[i];
            for (int i = nd; i < decpt; ++i) out[n++] = '0';
            out[n++] = '.';
            out[n++] = '0';
        } else {  // dd.ddd
            for (int i = 0; i < decpt; ++i) out[n++] = digits[i];
            out[n++] = '.';
            for (int i = decpt; i < nd; ++i) out[n++] = digits[i];
        }
        return n;
    }
    out[n++] = digits[0];  // d.ddde+XX
    if (nd > 1) {
        out[n++] = '.';
        for (int i = 1; i < nd; ++i) out[n++] = digits[i];
    }
    out[n++] = 'e';
    int x = decpt - 1;
    out[n++] = x < 0 ? '-' : '+';
    if (x < 0) x = -x;
    if (x >= 100) out[n++] = static_cast<char>('0' + x / 100);
    out[n++] = static_cast<char>('0' + (x / 10) % 10);
    out[n++] = static_cast<char>('0' + x % 10);
    return n;
}
