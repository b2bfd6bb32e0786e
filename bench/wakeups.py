"""Poller sleeps: ``asyncio.sleep`` per device vs the shared wake grid (edge.core.wakeups).

500 tasks wake on a 50 ms grid (as pollers of devices polled every second with a 20-step wake grid
do, here five times faster to get enough wake-ups), next to 500 unrelated timers in the loop's
heap (the lines' timeout timers). Prints CPU per wake-up of each and the ratio (grid / sleep).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

from edge.core.wakeups import sleep_until

STEP_S = 0.05
CYCLE_S = 0.2


async def device(i: int, n: int, mode: str, stop: float) -> int:
    deadline = math.ceil((time.monotonic() + i / n * CYCLE_S) / STEP_S) * STEP_S
    wakes = 0
    while time.monotonic() < stop:
        if mode == "sleep":
            wait = deadline - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            await sleep_until(deadline)
        wakes += 1
        deadline = math.ceil((deadline + CYCLE_S) / STEP_S - 1e-6) * STEP_S
    return wakes


async def run(mode: str, n: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    others = [loop.call_later(3600 + i, lambda: None) for i in range(n)]  # a heap as big as the app's
    stop = time.monotonic() + seconds
    cpu0 = time.process_time()
    wakes = sum(await asyncio.gather(*(device(i, n, mode, stop) for i in range(n))))
    cpu = time.process_time() - cpu0
    for h in others:
        h.cancel()
    return {"wakes": wakes, "us_per_wake": cpu / wakes * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--long", action="store_true", help="4 rounds of 10 s")
    args = parser.parse_args()
    rounds, seconds = (4, 10.0) if args.long else (2, args.seconds)
    sleep, grid = [], []
    for _ in range(rounds):  # alternating, in one process
        sleep.append(asyncio.run(run("sleep", args.tasks, seconds))["us_per_wake"])
        grid.append(asyncio.run(run("grid", args.tasks, seconds))["us_per_wake"])
    s, g = sorted(sleep)[len(sleep) // 2], sorted(grid)[len(grid) // 2]
    print(f"{args.tasks} tasks, {rounds} rounds of {seconds:.0f} s each way")
    print(f"  asyncio.sleep     {s:6.2f} us of CPU per wake-up  {[round(x, 2) for x in sleep]}")
    print(f"  shared wake grid  {g:6.2f} us of CPU per wake-up  {[round(x, 2) for x in grid]}")
    print(f"  ratio (grid / sleep) {g / s:.2f}")
    print("RESULT " + json.dumps({"sleep_us_per_wake": round(s, 2), "grid_us_per_wake": round(g, 2),
                                  "ratio": round(g / s, 3), "tasks": args.tasks}))


if __name__ == "__main__":
    main()
