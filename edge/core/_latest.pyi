"""Type stub of the compiled latest-value scatter (edge/core/_latest.pyx), for mypy."""
import numpy as np
import numpy.typing as npt

class LatestArrays:
    def __init__(self, values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8],
                 ts_ns: npt.NDArray[np.int64]) -> None: ...
    def consume(self, ids: npt.NDArray[np.int32], values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8],
                ts_ns: int) -> None: ...
