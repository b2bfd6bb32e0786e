"""The short soak and fault suite (bench/soak.py, 90 s): the demo plant with faults on a schedule must
end with no crash, no lost or re-sent sample, flat memory and every fault visible while it lasted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_soak_with_faults(tmp_path):
    report = tmp_path / "soak.md"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--duration", "90", "--report",
                           str(report)], capture_output=True, text=True, timeout=420, cwd=REPO)
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert proc.returncode == 0 and result["ok"], proc.stdout[-4000:] + proc.stderr[-2000:]
    assert result["spooled_points"] > 5000 and result["lost_points"] == 0 and result["duplicated_points"] == 0
    # as deployed, VictoriaMetrics keeps one sample per series and millisecond (docs/decisions.md)
    assert result["server_points"] == result["spooled_points"] - result["same_ms_points"]
    text = report.read_text()
    for fault in ("meter_silent", "plc_busy", "drive_garbage", "rs485_unplugged", "tsdb_down", "appliance_killed",
                  "bad_reload"):
        assert f"| visible:{fault} | yes |" in text
