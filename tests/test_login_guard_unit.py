"""LoginGuard on its own, with a hand-driven clock: expiry of remembered logins and lockouts."""
from __future__ import annotations

from edge.security.login_guard import LoginGuard
from edge.security.users import Role, UserEntry, hash_password


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def entry(password: str) -> UserEntry:
    return UserEntry("olga", Role.OPERATOR, hash_password(password, n=2**10))


def test_remembered_login_expires_and_follows_password_changes():
    clock = Clock()
    guard = LoginGuard(remember_s=10, clock=clock)
    old = entry("first-password")
    assert guard.check("olga", "first-password", old) and guard.check("olga", "first-password", old)
    assert guard.stats.remembered == 1
    clock.t += 11
    assert guard.check("olga", "first-password", old) and guard.stats.remembered == 1  # hashed again
    new = entry("second-password")  # the users file changed: the remembered login no longer fits
    assert not guard.check("olga", "first-password", new)
    assert guard.check("olga", "second-password", new)


def test_lockout_needs_the_failures_within_the_window_and_ends():
    clock = Clock()
    guard = LoginGuard(max_failures=3, failure_window_s=60, lockout_s=30, clock=clock)
    e = entry("right-password")
    for _ in range(2):
        assert not guard.check("olga", "wrong", e)
    clock.t += 61  # the first two are now too old to count together with the next one
    assert not guard.check("olga", "wrong", e)
    assert guard.check("olga", "right-password", e)  # not locked: the failures were spread out
    for _ in range(3):
        assert not guard.check("olga", "wrong", e)
    assert not guard.check("olga", "right-password", e) and guard.stats.locked_out == 1
    clock.t += 31
    assert guard.check("olga", "right-password", e)


def test_budget_refills_with_time():
    clock = Clock()
    guard = LoginGuard(hashes_per_s=1, burst=1, max_failures=100, clock=clock)
    assert not guard.check("x", "pw", None)
    assert not guard.check("x", "pw", None) and guard.stats.throttled == 1
    clock.t += 1.0
    assert not guard.check("x", "pw", None) and guard.stats.refused == 2
