"""Write rate limits: one token bucket per caller (``rate_per_min`` refill, ``burst`` capacity)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: int
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float | None = None) -> float:
        """0.0 if one write may go now (and take it), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """Buckets per caller name; at most ``max_callers`` kept (the oldest is forgotten first)."""

    def __init__(self, rate_per_min: int, burst: int, max_callers: int = 1000):
        self.rate_per_s = rate_per_min / 60.0
        self.burst = burst
        self.max_callers = max_callers
        self.buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    def take(self, caller: str) -> float:
        bucket = self.buckets.pop(caller, None) or TokenBucket(self.rate_per_s, self.burst)
        self.buckets[caller] = bucket  # most recent last
        while len(self.buckets) > self.max_callers:
            self.buckets.pop(next(iter(self.buckets)))
        wait = bucket.take()
        if wait:
            self.refused += 1
        return wait
