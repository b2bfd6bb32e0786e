"""Password checks that cannot stall the event loop: remembered logins, lockout, a hash budget.

One scrypt verification costs about 50 ms of CPU, and asyncua asks the user manager
synchronously on the event loop that also polls the devices. Without a guard, a SCADA client
reconnecting in a loop, or somebody guessing passwords, would add that much poll jitter per
attempt. The guard therefore:

* remembers a successful login (an HMAC of user, password and stored hash under a key that
  lives only in this process) for ``remember_s``, so reconnects cost microseconds; a changed
  password changes the stored hash and so forgets the old one;
* locks a user name out for ``lockout_s`` after ``max_failures`` wrong passwords within
  ``failure_window_s`` (answered at once, without hashing);
* spends at most ``hashes_per_s`` scrypt verifications per second (burst ``burst``); beyond
  that a login is refused at once and counted as throttled: the client retries.

Unknown user names are hashed against a dummy entry, so timing does not tell which names exist.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.security.users import Role, UserEntry, hash_password

log = logging.getLogger("edge.login")


@dataclass
class LoginStats:
    accepted: int = 0
    remembered: int = 0  # accepted without hashing
    refused: int = 0  # wrong password or unknown user (hashed)
    locked_out: int = 0  # refused without hashing: too many failures for that name
    throttled: int = 0  # refused without hashing: the hash budget was spent


@dataclass
class LoginGuard:
    remember_s: float = 900.0
    max_failures: int = 5
    failure_window_s: float = 60.0
    lockout_s: float = 60.0
    hashes_per_s: float = 4.0
    burst: float = 8.0
    clock: Callable[[], float] = time.monotonic
    stats: LoginStats = field(default_factory=LoginStats)

    def __post_init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._remembered: dict[str, tuple[bytes, float]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._tokens = self.burst
        self._tokens_at = self.clock()
        self._dummy = UserEntry("", Role.VIEWER, hash_password(secrets.token_hex(16)))

    def check(self, username: str, password: str, entry: UserEntry | None) -> bool:
        """True if ``password`` is right for ``entry`` (None: no such user); cheap when refusing."""
        now = self.clock()
        if self._locked_until.get(username, 0.0) > now:
            self.stats.locked_out += 1
            return False
        mark = self._mark(username, password, entry)
        known = self._remembered.get(username)
        if known is not None and known[1] > now and hmac.compare_digest(known[0], mark):
            self.stats.accepted += 1
            self.stats.remembered += 1
            return True
        if not self._take_token(now):
            self.stats.throttled += 1
            if self.stats.throttled == 1 or self.stats.throttled % 100 == 0:
                log.warning("login attempts beyond %.0f/s are refused without checking (%d so far)",
                            self.hashes_per_s, self.stats.throttled)
            return False
        ok = (entry or self._dummy).check(password) and entry is not None
        if ok:
            self.stats.accepted += 1
            self._remembered[username] = (mark, now + self.remember_s)
            self._failures.pop(username, None)
        else:
            self.stats.refused += 1
            self._note_failure(username, now)
        return ok

    def _mark(self, username: str, password: str, entry: UserEntry | None) -> bytes:
        stored = entry.hashed if entry is not None else ""
        return hmac.new(self._key, f"{username}\0{password}\0{stored}".encode(), hashlib.sha256).digest()

    def _take_token(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._tokens_at) * self.hashes_per_s)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _note_failure(self, username: str, now: float) -> None:
        recent = self._failures.setdefault(username, deque(maxlen=self.max_failures))
        recent.append(now)
        if len(recent) >= self.max_failures and now - recent[0] <= self.failure_window_s:
            self._locked_until[username] = now + self.lockout_s
            recent.clear()
            log.warning("login for user %r locked for %.0f s after %d wrong passwords within %.0f s",
                        username, self.lockout_s, self.max_failures, self.failure_window_s)
        if len(self._failures) > 10_000:  # names an attacker makes up must not grow memory without bound
            self._failures.clear()
        if len(self._locked_until) > 10_000:
            self._locked_until = {n: t for n, t in self._locked_until.items() if t > now}
