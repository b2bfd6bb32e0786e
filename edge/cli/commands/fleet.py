"""``edge fleet render INVENTORY --out DIR``: every appliance's configuration from the fleet inventory,
each checked like ``edge check``; exit 1 if any appliance's configuration has an error."""
from __future__ import annotations

import argparse
import sys

from edge.cli.commands import CliError
from edge.config.fleet import render_fleet


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["render"], help="render: write and check every appliance's configuration")
    p.add_argument("inventory", help="fleet inventory (YAML): template and appliances with their overrides")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: DIR/<appliance>/edge.yaml")


def run(args: argparse.Namespace) -> int:
    results = render_fleet(args.inventory, args.out)
    failed = 0
    for r in results:
        if r.ok:
            assert r.loaded is not None
            print(f"{r.name:<20} OK     {r.path}: {len(r.loaded.devices)} devices, {len(r.loaded.plant.tags)} tags")
        else:
            failed += 1
            print(f"{r.name:<20} FAILED {r.path}")
            for issue in r.issues:
                print(f"  {issue}", file=sys.stderr)
    if failed:
        raise CliError(f"{failed} of {len(results)} appliance configuration(s) have errors (listed above)")
    print(f"{len(results)} appliance configuration(s) rendered and checked")
    return 0
