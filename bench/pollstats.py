"""Latency and jitter percentiles of every device, once per status interval: per device vs shared.

The baseline is the refresh every poller did for itself until issue 21's last round (a sort of
its float64 latency ring, a time-window mask of its jitter ring, a sort of that, per device);
the new path is :class:`drivers.modbus.pollstats.PollStats`, one pass over rows of shared float32
matrices. Both see the same samples (full rings, as after a few minutes of polling). Prints CPU
per device per refresh of each and the ratio (shared / per device).

    .venv/bin/python bench/pollstats.py            # 500 devices, ~10 s
    .venv/bin/python bench/pollstats.py --long     # 2000 devices, more rounds
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from drivers.modbus.pollstats import WINDOW, PollStats
from edge.core.model import DeviceDiagnostics


class PerDevice:
    """The former per-poller refresh (drivers/modbus/poller.py before this change), kept as the baseline."""

    def __init__(self, diag: DeviceDiagnostics, latency: np.ndarray, jitter: np.ndarray, jitter_at: np.ndarray):
        self.diag = diag
        self._latency, self._latency_n = latency.astype(np.float64), 10 * WINDOW
        self._jitter, self._jitter_at, self._jitter_n = jitter.astype(np.float64), jitter_at.copy(), 10 * WINDOW
        self.stats_window_s = 60.0

    def update_latency_stats(self, now: float) -> None:
        n = min(self._latency_n, WINDOW)
        if n:
            ordered = np.sort(self._latency[:n])
            self.diag.latency_p50_ms = float(ordered[(n - 1) // 2]) * 1e3
            self.diag.latency_p99_ms = float(ordered[int(0.99 * (n - 1))]) * 1e3
        k = min(self._jitter_n, WINDOW)
        keep = self._jitter_at[:k] >= now - self.stats_window_s
        recent = self._jitter[:k][keep] * 1e3
        if len(recent):
            recent.sort()
            self.diag.jitter_p99_ms = float(recent[int(0.99 * (len(recent) - 1))])


def setup(devices: int, now: float) -> tuple[list[PerDevice], PollStats, list[DeviceDiagnostics]]:
    rng = np.random.default_rng(1)
    baseline, shared, diags = [], PollStats(), []
    for i in range(devices):
        latency = rng.exponential(0.003, WINDOW).astype(np.float32)
        jitter = rng.exponential(0.002, WINDOW).astype(np.float32)
        jitter_at = now - 256.0 + np.arange(WINDOW) * 0.5  # two cycles a second: the last 60 s are recent
        baseline.append(PerDevice(DeviceDiagnostics(f"b{i}", "line"), latency, jitter, jitter_at))
        diag = DeviceDiagnostics(f"s{i}", "line")
        row = shared.row(diag, 60.0)
        row.latency[:] = latency
        row.jitter[:] = jitter
        row.jitter_at[:] = jitter_at
        diags.append(diag)
    return baseline, shared, diags


def cpu_per_refresh(fn, rounds: int) -> float:
    fn()  # warm
    t0 = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t0) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--long", action="store_true", help="2000 devices, 1000 rounds")
    args = parser.parse_args()
    if args.long:
        args.devices, args.rounds = 2000, 1000
    now = 10_000.0
    baseline, shared, diags = setup(args.devices, now)

    def per_device() -> None:
        for p in baseline:
            p.update_latency_stats(now)

    before = cpu_per_refresh(per_device, args.rounds)
    after = cpu_per_refresh(lambda: shared.refresh(now), args.rounds)
    for b, s in zip(baseline, diags, strict=True):  # both computed the same figures
        assert abs(b.diag.latency_p99_ms - s.latency_p99_ms) < 1e-6 * max(1.0, b.diag.latency_p99_ms)
        assert abs(b.diag.jitter_p99_ms - s.jitter_p99_ms) < 1e-6 * max(1.0, b.diag.jitter_p99_ms)
    us_before, us_after = before / args.devices * 1e6, after / args.devices * 1e6
    print(f"{args.devices} devices, rings of {WINDOW}, {args.rounds} refreshes each")
    print(f"  per device (baseline)   {us_before:7.2f} us CPU per device per refresh ({before * 1e3:.2f} ms per refresh)")
    print(f"  shared pass (PollStats) {us_after:7.2f} us CPU per device per refresh ({after * 1e3:.2f} ms per refresh)")
    print(f"  ratio shared / per device {us_after / us_before:.3f}")
    print("RESULT " + json.dumps({
        "devices": args.devices, "rounds": args.rounds, "per_device_us": round(us_before, 3),
        "shared_us": round(us_after, 3), "ratio": round(us_after / us_before, 3),
        "cores_at_1s_interval_before": round(before, 5), "cores_at_1s_interval_after": round(after, 5)}))


if __name__ == "__main__":
    main()
