"""Per-tag ring buffers and window statistics (Cython extension with a pure-Python twin)."""
