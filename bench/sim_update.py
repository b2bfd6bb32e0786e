"""Simulator benchmark: vectorised signal update of the whole plant vs pymodbus's per-point encoder.

A thin entry point so that every benchmark lives under bench/; the work is in
drivers/modbus/sim/benchmark.py, which prints the figures and the ``RESULT {json}`` line.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.modbus.sim.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()  # prints RESULT {json}
