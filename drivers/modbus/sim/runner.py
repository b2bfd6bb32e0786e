"""Blocking entry point for ``edge simulate``: serve a plant until SIGINT or SIGTERM."""
from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .plant import SimPlant
from .spec import SimDeviceSpec


def describe(plant: SimPlant) -> list[str]:
    """One line per device: name, unit id, where it is served, how many points, update interval."""
    lines = []
    for spec in plant.specs:
        address = plant.address(spec.name)
        where = address if isinstance(address, str) else f"{spec.transport.kind} {address[0]}:{address[1]}"
        lines.append(
            f"{spec.name:<20} unit {spec.unit_id:<3} {where:<40} {len(spec.points):>5} points "
            f"every {spec.update_interval_ms} ms"
        )
    return lines


async def serve(
    specs: Iterable[SimDeviceSpec | dict[str, Any]],
    *,
    seed: int = 0,
    ready: Callable[[SimPlant], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a plant until ``stop`` is set or SIGINT/SIGTERM arrives; always shuts down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    plant = SimPlant(specs, seed=seed)
    try:
        await plant.start()
        if ready is not None:
            ready(plant)
        await stop.wait()
    finally:
        await plant.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_blocking(specs: Iterable[SimDeviceSpec | dict[str, Any]], *, seed: int = 0, out: TextIO = sys.stdout) -> int:
    """``edge simulate``: print where every device is served, run until Ctrl-C/SIGTERM, return 0.

    Raises ValueError (bad specs) or RuntimeError/OSError (a port in use, socat missing) for
    the CLI to print as one line.
    """

    def ready(plant: SimPlant) -> None:
        print(f"simulating {len(plant.specs)} devices on {len(plant.endpoints)} endpoints (Ctrl-C stops)", file=out)
        for line in describe(plant):
            print("  " + line, file=out)
        out.flush()

    asyncio.run(serve(specs, seed=seed, ready=ready))
    print("simulator stopped", file=out)
    return 0
