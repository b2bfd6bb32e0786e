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
    guard = LoginGuard(max_failures=3, failure_window_s=60, lockout_s=30, source_burst=100, clock=clock)
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


def test_lockout_and_hash_budget_are_per_source_address():
    """Issue 15: five wrong passwords locked a user name for every address, so anyone could lock
    the operator out; and one address could spend the whole hash budget."""
    clock = Clock()
    guard = LoginGuard(max_failures=5, lockout_s=60, hashes_per_s=4, burst=8, source_hashes_per_s=1,
                       source_burst=4, clock=clock)
    e = entry("right-password")
    for _ in range(40):  # a flood from one address, 10 per second for 4 s
        guard.check("olga", "wrong", e, source="10.0.0.66")
        clock.t += 0.1
    assert guard.stats.lockouts == 1 and guard.stats.refused == 5
    assert guard.stats.source_throttled > 0 and guard.stats.throttled == 0  # the global budget was never spent
    assert guard.check("olga", "right-password", e, source="10.0.0.7")  # the operator, at her console
    assert not guard.check("olga", "right-password", e, source="10.0.0.66")  # locked there
    snap = guard.snapshot()
    assert [(x["user"], x["source"]) for x in snap["locked"]] == [("olga", "10.0.0.66")]
    assert snap["policy"]["source_hashes_per_s"] == 1 and snap["counters"]["lockouts"] == 1


def test_made_up_names_and_addresses_do_not_grow_memory():
    clock = Clock()
    guard = LoginGuard(max_failures=1, max_entries=50, hashes_per_s=1e9, burst=1e9, source_hashes_per_s=1e9,
                       source_burst=1e9, clock=clock)
    guard._dummy = entry("x")  # a cheap hash for this test
    for i in range(300):
        guard.check(f"user{i}", "wrong", None, source=f"10.0.{i // 250}.{i % 250}")
    assert len(guard._failures) <= 50 and len(guard._locked_until) <= 50 and len(guard._sources) <= 50
