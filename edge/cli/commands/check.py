"""``edge check CONFIG``: every configuration check, no hardware touched; exit 0 or 1."""
from __future__ import annotations

import argparse

from edge.config.checks import line_loads
from edge.config.loader import load_config


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for issue in loaded.issues:
        print(issue)
    print(f"{loaded.path}: site {loaded.site!r}: {len(loaded.config.buses)} buses, {len(loaded.devices)} devices, "
          f"{len(loaded.plant.tags)} tags")
    print(f"{'bus':<16} {'line':<40} {'load':>7} {'requests/s':>11}")
    for load in line_loads(loaded):
        print(f"{load.bus:<16} {load.line:<40} {load.load_pct:>6.1f}% {load.requests_per_s:>11.1f}")
    print("configuration OK")
    return 0
