"""Logins through a real asyncua client: remembered reconnects, lockout after wrong passwords,
and a bounded number of password hashes per second, so logins cannot stall the polling loop."""
from __future__ import annotations

import asyncio

from asyncua import Client, ua
from opcua_helpers import PASSWORDS

from edge.outputs.opcua.server import OpcUaServer
from edge.security.login_guard import LoginGuard


async def login(srv: OpcUaServer, user: str, password: str) -> bool:
    c = Client(srv.endpoint_url, timeout=5)
    c.set_user(user)
    c.set_password(password)
    try:
        await c.connect()
    except ua.UaStatusCodeError as e:
        assert e.code == ua.StatusCodes.BadUserAccessDenied
        return False
    await c.disconnect()
    return True


async def test_reconnect_is_remembered_and_costs_no_hash(running: OpcUaServer) -> None:
    guard = running.users.guard
    assert await login(running, "olga", PASSWORDS["olga"])
    assert await login(running, "olga", PASSWORDS["olga"])
    assert guard.stats.accepted == 2 and guard.stats.remembered == 1
    assert not await login(running, "olga", "a-wrong-password")  # remembered is per password
    assert guard.stats.refused == 1


async def test_wrong_passwords_lock_the_name_out(running: OpcUaServer) -> None:
    running.users.guard = guard = LoginGuard(max_failures=3, lockout_s=1.5)
    for _ in range(3):
        assert not await login(running, "olga", "guess-guess")
    assert guard.stats.refused == 3
    assert not await login(running, "olga", PASSWORDS["olga"])  # even the right one, while locked
    assert guard.stats.locked_out == 1
    assert await login(running, "victor", PASSWORDS["victor"])  # other users are not affected
    await asyncio.sleep(1.6)
    assert await login(running, "olga", PASSWORDS["olga"])


async def test_hash_budget_refuses_at_once_beyond_it(running: OpcUaServer) -> None:
    running.users.guard = guard = LoginGuard(hashes_per_s=0.01, burst=2, max_failures=100)
    results = [await login(running, "nobody", f"pw-{i}") for i in range(4)]
    assert results == [False] * 4
    assert guard.stats.refused == 2 and guard.stats.throttled == 2  # unknown names are hashed too
