"""Issue 15: a short fuzz of a running appliance (its own process), on the demo site and on a secure
site (Basic256Sha256 only, users, HTTPS, tokens): mutated OPC UA Hello, OpenSecureChannel and
service requests, garbage, truncated and oversized chunks, chunk floods and idle connections, with
schemathesis cases and raw malformed HTTP at the same time (bench/fuzz.py; its --long run gives the
figures). The appliance must stay up, keep answering a well-behaved client, answer no 5xx, keep
its memory bounded and keep >= 90 % of its poll rate."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 6.0
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fuzz as module  # bench/fuzz.py
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


@pytest.mark.parametrize("site", ["demo", "secure"])
def test_a_running_appliance_survives_a_short_fuzz(fuzz, site: str) -> None:
    # 6 s of fuzzing, longer if needed for 50 cases on each side (a loaded machine sends fewer per second)
    r = fuzz.fuzz_site(site, SECONDS, seed=15, minimum=50)
    summary = {k: r[k] for k in ("opcua_cases", "http_requests", "http_5xx", "http_5xx_examples", "http_thread_error",
                                  "crashes",
                                  "probe_failures", "rss_before_mb", "rss_peak_mb", "rss_growth_mb",
                                  "polls_per_s_before", "polls_per_s_during", "polls_per_s_after",
                                  "poll_rate_ratio")}
    assert r["crashes"] == 0 and r["probe_failures"] == 0, summary
    assert r["opcua_cases"] >= 50 and r["http_requests"] >= 50, summary
    assert r["http_5xx"] == 0, summary
    assert r["rss_growth_mb"] < 60, summary
    assert r["poll_rate_ratio"] >= 0.9, summary
    for case in ("60MB declared", "60MB chunked"):
        assert r["http_raw"][case].startswith("HTTP/1.1 413"), r["http_raw"]
