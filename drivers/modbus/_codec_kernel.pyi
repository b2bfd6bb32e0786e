"""Type stub of the compiled block decoder (drivers/modbus/_codec_kernel.pyx), for mypy."""
from typing import Any

import numpy as np
import numpy.typing as npt

KINDS: tuple[str, ...]

class ShortResponse(ValueError): ...

class RegisterKernel:
    def __init__(self, kind: Any, pos: Any, pos_start: Any, shift: Any, mul: Any, add: Any, div: Any, low: Any,
                 high: Any, clip_low: Any, clip_high: Any, scaled: bool, clamps: bool, out_of_range: int,
                 min_bytes: int, invalid: Any, inv_start: Any, sf_pos: Any, sensor: int, pow10: Any) -> None: ...
    def decode(self, registers: Any, values: npt.NDArray[np.float64] | None = ...,
               quality: npt.NDArray[np.uint8] | None = ...) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]] | None: ...
