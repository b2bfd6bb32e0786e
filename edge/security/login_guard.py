"""Password checks that cannot stall the event loop, and a lockout nobody can turn against the operator.

One scrypt verification costs about 50 ms of CPU, and asyncua asks the user manager
synchronously on the event loop that also polls the devices. Without a guard, a SCADA client
reconnecting in a loop, or somebody guessing passwords, would add that much poll jitter per
attempt. And a lockout per user name alone lets anyone on the plant network lock the operator
out by sending wrong passwords for her name. The guard therefore:

* remembers a successful login (an HMAC of user, password and stored hash under a key that
  lives only in this process) for ``remember_s``, so reconnects cost microseconds; a changed
  password changes the stored hash and so forgets the old one;
* locks a user name out **from one source address** for ``lockout_s`` after ``max_failures``
  wrong passwords from that address within ``failure_window_s`` (answered at once, without
  hashing); the same name from another address is not affected, so a flood from one machine
  does not lock the operator out at her console;
* spends at most ``source_hashes_per_s`` scrypt verifications per second for one source
  address (burst ``source_burst``) and ``hashes_per_s`` in all (burst ``burst``); beyond that a
  login is refused at once and counted as throttled: the client retries. One address can
  therefore never take the whole budget.

Unknown user names are hashed against a dummy entry, so timing does not tell which names exist.
Memory is bounded: at most ``max_entries`` failure records and source buckets are kept (an
attacker making up names or addresses empties the oldest, never grows the process).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edge.security.users import Role, UserEntry, hash_password

log = logging.getLogger("edge.login")


@dataclass
class LoginStats:
    """Counters of the guard (``opcua_logins_*`` in ``edge_health``, ``edge_opcua_logins_total`` in /metrics)."""

    accepted: int = 0
    remembered: int = 0  # accepted without hashing
    refused: int = 0  # wrong password or unknown user (hashed)
    locked_out: int = 0  # refused without hashing: too many failures for that name from that address
    throttled: int = 0  # refused without hashing: the overall hash budget was spent
    source_throttled: int = 0  # refused without hashing: that address's hash budget was spent
    lockouts: int = 0  # lockouts started (one per user name and address that crossed max_failures)


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at

    def take(self, now: float, rate: float, burst: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class LoginGuard:
    remember_s: float = 900.0
    max_failures: int = 5
    failure_window_s: float = 60.0
    lockout_s: float = 60.0
    hashes_per_s: float = 4.0
    burst: float = 8.0
    source_hashes_per_s: float = 1.0
    source_burst: float = 4.0
    max_entries: int = 10_000
    clock: Callable[[], float] = time.monotonic
    stats: LoginStats = field(default_factory=LoginStats)

    def __post_init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._remembered: dict[str, tuple[bytes, float]] = {}
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._locked_until: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(self.burst, self.clock())
        self._dummy = UserEntry("", Role.VIEWER, hash_password(secrets.token_hex(16)))

    def check(self, username: str, password: str, entry: UserEntry | None, source: str = "") -> bool:
        """True if ``password`` is right for ``entry`` (None: no such user); cheap when refusing.

        ``source`` is the client's address (host only: a reconnect comes from a new port).
        """
        now = self.clock()
        key = (username, source)
        if self._locked_until.get(key, 0.0) > now:
            self.stats.locked_out += 1
            return False
        mark = self._mark(username, password, entry)
        known = self._remembered.get(username)
        if known is not None and known[1] > now and hmac.compare_digest(known[0], mark):
            self.stats.accepted += 1
            self.stats.remembered += 1
            return True
        if not self._take_source_token(source, now):
            self.stats.source_throttled += 1
            self._warn_throttled(f"from {source or 'an unknown address'} beyond {self.source_hashes_per_s:g}/s")
            return False
        if not self._global.take(now, self.hashes_per_s, self.burst):
            self.stats.throttled += 1
            self._warn_throttled(f"beyond {self.hashes_per_s:g}/s in all")
            return False
        ok = (entry or self._dummy).check(password) and entry is not None
        if ok:
            self.stats.accepted += 1
            self._remembered[username] = (mark, now + self.remember_s)
            self._failures.pop(key, None)
            if len(self._remembered) > self.max_entries:
                self._remembered = {n: v for n, v in self._remembered.items() if v[1] > now}
        else:
            self.stats.refused += 1
            self._note_failure(key, now)
        return ok

    def policy(self) -> dict[str, float]:
        """The configured policy, as shown by the API and docs/security.md."""
        return {"remember_s": self.remember_s, "max_failures": self.max_failures,
                "failure_window_s": self.failure_window_s, "lockout_s": self.lockout_s,
                "hashes_per_s": self.hashes_per_s, "burst": self.burst,
                "source_hashes_per_s": self.source_hashes_per_s, "source_burst": self.source_burst}

    def snapshot(self) -> dict[str, object]:
        """Policy, counters and the lockouts in force now (user name and address)."""
        now = self.clock()
        locked = [{"user": u, "source": s, "remaining_s": round(t - now, 1)}
                  for (u, s), t in self._locked_until.items() if t > now]
        return {"policy": self.policy(), "counters": asdict(self.stats), "locked": locked[:100],
                "locked_count": len(locked)}

    def _warn_throttled(self, what: str) -> None:
        n = self.stats.throttled + self.stats.source_throttled
        if n == 1 or n % 100 == 0:
            log.warning("login attempts %s are refused without checking (%d so far)", what, n)

    def _mark(self, username: str, password: str, entry: UserEntry | None) -> bytes:
        stored = entry.hashed if entry is not None else ""
        return hmac.new(self._key, f"{username}\0{password}\0{stored}".encode(), hashlib.sha256).digest()

    def _take_source_token(self, source: str, now: float) -> bool:
        bucket = self._sources.pop(source, None) or _Bucket(self.source_burst, now)
        self._sources[source] = bucket  # most recent last
        while len(self._sources) > self.max_entries:
            self._sources.popitem(last=False)
        return bucket.take(now, self.source_hashes_per_s, self.source_burst)

    def _note_failure(self, key: tuple[str, str], now: float) -> None:
        recent = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
        self._failures[key] = recent
        recent.append(now)
        if len(recent) >= self.max_failures and now - recent[0] <= self.failure_window_s:
            self._locked_until.pop(key, None)
            self._locked_until[key] = now + self.lockout_s
            self.stats.lockouts += 1
            recent.clear()
            log.warning("login for user %r from %s locked for %.0f s after %d wrong passwords within %.0f s",
                        key[0], key[1] or "an unknown address", self.lockout_s, self.max_failures,
                        self.failure_window_s)
        while len(self._failures) > self.max_entries:  # names an attacker makes up must not grow memory
            self._failures.popitem(last=False)
        if len(self._locked_until) > self.max_entries:
            self._locked_until = OrderedDict((k, t) for k, t in self._locked_until.items() if t > now)
            while len(self._locked_until) > self.max_entries:
                self._locked_until.popitem(last=False)
