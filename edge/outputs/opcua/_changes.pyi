"""Type stub of the compiled change detection of the OPC UA publisher (edge/outputs/opcua/_changes.pyx), for mypy."""
import numpy as np
import numpy.typing as npt

def detect_and_store(ids: npt.NDArray[np.int32], values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8],
                     last_v: npt.NDArray[np.float64], last_q: npt.NDArray[np.uint8], last_src: npt.NDArray[np.int64],
                     last_srv: npt.NDArray[np.int64], deadband: npt.NDArray[np.float64], use_deadband: bool,
                     int_kind: npt.NDArray[np.uint8], ts_ns: int, srv_ns: int,
                     changed: npt.NDArray[np.int64]) -> tuple[int, int]: ...
def mark_pending(item_of: npt.NDArray[np.int64], ids: npt.NDArray[np.int32], changed: npt.NDArray[np.int64], n: int,
                 pending: npt.NDArray[np.uint8]) -> int: ...
