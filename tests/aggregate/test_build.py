"""The extension builds from a fresh clone with pip, and the built module is the compiled one."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_pip_builds_the_extension_from_a_fresh_clone(fresh_clone_wheel: Path):
    wheel = fresh_clone_wheel  # `pip wheel --no-deps --no-build-isolation CLONE` (tests/conftest.py)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("edge/aggregate/_ringbuf") and n.endswith(".so") for n in names), names
    assert any(n.startswith("drivers/modbus/_codec_kernel") and n.endswith(".so") for n in names), names
    assert any(n.startswith("edge/core/_latest") and n.endswith(".so") for n in names), names
    assert "edge/aggregate/pyring.py" in names
