"""The clients of tests/test_loop_debug.py, in their own process: an OPC UA client subscribed to every
tag and an HTTP client reading the status, the tags and a tag's history, until stdin closes.

A process of their own so that the test's slow-callback measure sees the appliance alone: in a thread
of the test process they competed with the appliance's loop for the GIL, and a thread holding the
GIL while the kernel ran something else stalled the loop for no fault of its own.

    python tests/loop_debug_clients.py OPCUA_URL API_URL KEYS_JSON   # prints RESULT {json} at the end
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading

import httpx
from asyncua import Client

MAX_ROUNDS = 200  # bounded: the test closes stdin long before (0.3 s per round)


class Counts:
    notifications = 0
    answers = 0

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's handler API
        self.notifications += 1


async def run(opcua_url: str, api_url: str, keys: list[str], stop: threading.Event, counts: Counts) -> None:
    # the library's 1 s watchdog probe would disconnect a client starved of CPU (see tests/conftest.py)
    async with Client(opcua_url, timeout=10, watchdog_intervall=30) as opcua, \
            httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        ns = await opcua.get_namespace_index("urn:edge:demo")
        sub = await opcua.create_subscription(100, counts)
        await sub.subscribe_data_change([opcua.get_node(f"ns={ns};s={key}") for key in keys])
        print("READY", flush=True)
        for _ in range(MAX_ROUNDS):
            if stop.is_set():
                break
            for path in ("/api/status", "/api/tags", f"/api/tags/{keys[0]}/history"):
                r = await http.get(path)
                if r.status_code != 200:
                    raise AssertionError(f"{path}: {r.status_code} {r.text[:200]}")
                counts.answers += 1
            await asyncio.sleep(0.3)


def main() -> None:
    opcua_url, api_url, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    stop, counts = threading.Event(), Counts()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    error = None
    try:
        asyncio.run(run(opcua_url, api_url, keys, stop, counts))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        error = repr(exc)
    print("RESULT " + json.dumps({"notifications": counts.notifications, "answers": counts.answers,
                                  "error": error}), flush=True)


if __name__ == "__main__":
    main()
