"""The extension builds from a fresh clone with pip, and the built module is the compiled one."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pip_builds_the_extension_from_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(clone)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("edge/aggregate/_ringbuf") and n.endswith(".so") for n in names), names
    assert any(n.startswith("drivers/modbus/_codec_kernel") and n.endswith(".so") for n in names), names
    assert any(n.startswith("edge/core/_latest") and n.endswith(".so") for n in names), names
    assert "edge/aggregate/pyring.py" in names
