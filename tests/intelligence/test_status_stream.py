"""GET /api/status/stream (issue 20): the status page's data pushed as server-sent events, read here
with httpx's streaming client as a browser's fetch reads it."""
from __future__ import annotations

import asyncio
import json
import time

from room_site import room_config


async def events(response, count: int, timeout_s: float = 10.0) -> list[tuple[str, dict, float]]:
    """The next ``count`` events (name, data, arrival time), bounded in time."""
    out: list[tuple[str, dict, float]] = []
    buffer = ""

    async def read() -> None:
        nonlocal buffer
        async for chunk in response.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "data" in fields:
                    out.append((fields.get("event", "message"), json.loads(fields["data"]), time.monotonic()))
                if len(out) >= count:
                    return

    await asyncio.wait_for(read(), timeout_s)
    return out


async def test_status_stream_pushes_status_events_and_ends_when_the_appliance_stops(make_room):
    room = await make_room(room_config(rules=False))
    async with room.client(room.viewer) as v:
        async with v.stream("GET", "/api/status/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            got = await events(r, 3)
            assert [name for name, _, _ in got] == ["status"] * 3
            first = got[0][1]
            assert first["site"] == "plant1" and first["caller"] == {"name": "view", "role": "viewer"}
            plain = (await v.get("/api/status")).json()
            assert set(first) == set(plain) and {t["key"] for t in first["tags"]} == {t["key"] for t in plain["tags"]}
            gaps = [b[2] - a[2] for a, b in zip(got, got[1:], strict=False)]
            assert all(0.5 < g < 3.0 for g in gaps), gaps  # one event per status_refresh_ms (1 s)
            assert got[2][1]["time_ns"] > got[0][1]["time_ns"]
            t0 = time.monotonic()
            await room.intel.stop()  # a connected page must not hold the appliance's shutdown
            assert time.monotonic() - t0 < 3.0


async def test_status_stream_needs_a_token(make_room):
    room = await make_room(room_config(rules=False))
    async with room.client(None) as v:
        r = await v.get("/api/status/stream")
        assert r.status_code == 401 and "token" in r.json()["detail"]
