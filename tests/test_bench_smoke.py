"""The benchmarks still run against the current code (tiny sizes, figures not asserted).

Speed is measured by the scripts under bench/, not by tests; but they reach into the
appliance's internals, and a bench that no longer runs is only noticed when somebody needs its
figures. Each smoke run uses real servers and clients, like the bench itself, and checks that
it finished, measured something and saw no errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def result_of(*args: str, timeout: float = 240) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1 and out.stdout.rstrip().endswith(lines[0]), out.stdout[-2000:]
    return json.loads(lines[0].removeprefix("RESULT "))


def test_poll_bench_runs():
    # a 250 ms answer timeout instead of the bench's 10 ms: the parallel suite's load must not count as errors
    r = result_of("bench/poll.py", "--devices", "2", "--tags", "150", "--seconds", "1", "--timeout-ms", "250")
    assert r["tags_per_s"] > 0 and r["cpu_ratio"] > 0 and r["errors"] == 0


def test_paced_poll_bench_runs():
    r = result_of("bench/poll.py", "--paced", "--devices", "4", "--tags", "10", "--seconds", "1")
    assert r["tags_per_s"] > 0 and r["baseline_tags_per_s"] > 0 and r["cpu_ratio"] > 0
    assert r["errors"] == 0 and r["baseline_errors"] == 0 and r["loop_iterations_per_s"] > 0


def test_history_bench_runs():
    r = result_of("bench/history.py", "--points", "400", "--reps", "1")
    assert 0 < r["m4_points"] <= 400 and r["minmaxlttb_points"] <= 400 and r["m4_ms"] > 0


def test_lineproto_bench_runs():
    r = result_of("bench/lineproto.py")
    assert r["identical_to_python"] and r["values"] > 0 and r["encode_us_per_value"] > 0 and r["format_ratio"] > 0


def test_health_bench_runs():
    r = result_of("bench/health.py", "--devices", "300", "--seconds", "0.05")
    assert r["identical"] and r["lines"] == 300 and r["loop_us_new"] > 0 and r["forwarder_us_new"] > 0


def test_e2e_bench_runs():
    r = result_of("bench/e2e.py", "--devices", "4", "--tags", "20", "--seconds", "5", "--warmup", "2")
    assert r["tags_per_s"] > 0 and r["checked_errors"] == 0 and r["markers_seen_opcua"] > 0
    assert r["tsdb_lines"] > 0 and r["opcua_poll_latency_p99_ms"] is not None
    for key in ("tags_per_s", "cpu_cores", "rss_mb", "jitter_p99_ms", "field_opcua_latency_p99_ms", "tsdb_latency_p99_s",
                "opcua_poll_latency_p99_ms", "us_per_tag", "poll_interval_ms"):
        assert key in r


async def test_opcua_bench_size_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import opcua as opcua_bench  # bench/opcua.py
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from edge.security.users import add_user

    users = tmp_path / "users"
    add_user(users, "bench", "viewer", "bench-password")
    results = await opcua_bench.run_size(500, 0.5, 0.3, users, handler=False, rounds=1)
    modes = {r["mode"]: r for r in results}
    assert set(modes) == {"fast", "baseline"}
    assert modes["fast"]["changes_s"] > 0 and modes["fast"]["size_totals"]["errors"] == 0


@pytest.mark.parametrize("script", ["codec.py", "spool.py"])
def test_other_benches_start(script):
    out = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout


def test_mqtt_bench_runs():
    r = result_of("bench/mqtt.py", "--devices", "4", "--tags", "10", "--seconds", "1")
    assert r["metrics_per_s"] > 0 and r["cpu_ratio"] > 0 and r["delivered_ratio"] > 0.9
    assert r["appliance"]["sink_errors"] == 0 and r["appliance"]["disconnects"] == 0
    for key in ("metrics_per_s", "cpu_cores", "cpu_ratio"):
        assert key in r


def test_wakeups_bench_runs():
    r = result_of("bench/wakeups.py", "--tasks", "20", "--seconds", "0.3")
    assert r["sleep_us_per_wake"] > 0 and r["grid_us_per_wake"] > 0 and r["tasks"] == 20
