"""Issue 15: a short fuzz of a running appliance (its own process), on the demo site and on a secure
site (Basic256Sha256 only, users, HTTPS, tokens): mutated OPC UA Hello, OpenSecureChannel and
service requests, garbage, truncated and oversized chunks, chunk floods and idle connections, with
schemathesis cases and raw malformed HTTP at the same time (bench/fuzz.py; its --long run gives the
figures). The appliance must stay up, keep answering a well-behaved client, answer no 5xx, keep
its memory bounded, and keep >= 90 % of its scheduled poll cycles with no device knocked offline.

The poll measure was once a rate over a few seconds against the rate before and after: a dozen poll
groups made such a rate move by +-5 % with where the window fell in their intervals, and a CI run
failed at 0.862 with no way to tell skipped polls from counting. The share of scheduled cycles
that read their device (bench/fuzz.py ``polls_kept``) has neither problem and names what was lost."""
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
                                  "poll_rate_ratio", "poll_kept_ratio", "poll_deltas", "devices_left_online")}
    assert r["crashes"] == 0 and r["probe_failures"] == 0, summary
    assert r["opcua_cases"] >= 50 and r["http_requests"] >= 50, summary
    assert r["http_5xx"] == 0, summary
    assert r["rss_growth_mb"] < 60, summary
    assert r["poll_kept_ratio"] >= 0.9 and not r["devices_left_online"], summary
    assert r["poll_deltas"]["polls_ok"] > 0, summary
    for case in ("60MB declared", "60MB chunked"):
        assert r["http_raw"][case].startswith("HTTP/1.1 413"), r["http_raw"]


def test_the_kept_share_counts_failed_and_skipped_cycles_and_names_a_device_gone_offline(fuzz) -> None:
    def counters(state: str, ok: int, failed: int, overruns: int) -> dict:
        return {"state": state, "polls_ok": ok, "polls_failed": failed, "overruns": overruns, "timeouts": failed}

    start = {"a": counters("ONLINE", 100, 0, 0), "b": counters("ONLINE", 50, 1, 2)}
    end = {"a": counters("ONLINE", 170, 10, 20), "b": counters("OFFLINE", 53, 4, 2)}
    r = fuzz.polls_kept(start, end)
    assert r["poll_deltas"] == {"polls_ok": 73, "polls_failed": 13, "overruns": 20, "timeouts": 13}
    assert r["poll_kept_ratio"] == round(73 / (73 + 13 + 20), 3)
    assert r["devices_left_online"] == ["b"]
    assert fuzz.polls_kept(start, None)["poll_kept_ratio"] == 0.0  # no answer is not a pass
