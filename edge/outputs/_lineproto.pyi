"""Type stub of the compiled line-protocol encoder of sample batches (edge/outputs/_lineproto.pyx), for mypy."""
import numpy as np
import numpy.typing as npt

def encode_samples(prefix: bytes, fields: list[bytes], qfields: list[bytes], ids: npt.NDArray[np.int32],
                   values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8], timestamp: bytes) -> bytes: ...
def repr_doubles(values: npt.NDArray[np.float64], sep: bytes = b"\n", cpython: bool = False) -> bytes: ...
