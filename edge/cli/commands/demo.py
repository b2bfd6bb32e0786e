"""``edge demo``: the simulated demo plant and the appliance polling it, in one command."""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge.cli.commands import CliError
from edge.cli.commands.run import run_appliance

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "provisioning" / "sites" / "demo" / "edge.yaml"


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=str(DEMO_CONFIG), help="site configuration (default: the demo plant)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--no-status", action="store_true", help="do not print the live status table")


def start_simulator(config: str, timeout_s: float = 30.0) -> subprocess.Popen:
    """Start ``edge simulate`` in its own process and wait until it says it is ready."""
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "simulate", config], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.monotonic() + timeout_s
    lines = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if "simulator ready" in line:
            # keep draining its output so a chatty simulator never blocks on a full pipe
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    proc.kill()
    raise CliError("the simulator did not start:\n" + "\n".join(lines[-20:]))


def run(args: argparse.Namespace) -> int:
    sim = start_simulator(args.config)
    try:
        asyncio.run(run_appliance(args.config, args.duration, not args.no_status,
                                  log_level="debug" if args.debug else args.log_level, log_json=args.log_json))
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    return 0
