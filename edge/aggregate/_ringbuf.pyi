"""Type stub of the compiled ring buffers (edge/aggregate/_ringbuf.pyx), for mypy: the same interface
as the pure-Python twin edge.aggregate.pyring (tests/aggregate/test_parity.py holds them equal)."""
from edge.aggregate.pyring import RingStore as RingStore
from edge.aggregate.pyring import downsample_arrays as downsample_arrays

def set_isa(isa: int = ...) -> int: ...
def get_isa() -> int: ...
