"""Shared helpers of the aggregator tests: both implementations and exact comparisons."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.aggregate import pyring  # noqa: E402

try:
    from edge.aggregate import _ringbuf
except ImportError:  # the parity tests need the extension: build it first, never skip silently
    _ringbuf = None


@pytest.fixture(scope="session")
def cyring():
    if _ringbuf is None:
        pytest.fail("edge.aggregate._ringbuf is not built: run `python setup.py build_ext --inplace`")
    return _ringbuf


IMPLS = ["cython", "python"]


@pytest.fixture(params=IMPLS)
def store_cls(request, cyring):
    """Each test taking ``store_cls`` runs against both implementations."""
    return cyring.RingStore if request.param == "cython" else pyring.RingStore
