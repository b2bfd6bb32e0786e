"""``edge plan CONFIG``: the request plan per device and poll group, with estimated bus time."""
from __future__ import annotations

import argparse

from drivers.modbus.planner import describe
from drivers.modbus.timing import BusTiming
from edge.config.checks import bus_loads
from edge.config.loader import load_config
from edge.runtime.app import device_plan


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--device", action="append", default=[], help="only this device (repeatable)")


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for dev in loaded.devices:
        if args.device and dev.name not in args.device:
            continue
        plan = device_plan(dev)
        timing = BusTiming.from_bus_config(dev.bus)
        print(f"# {dev.name} (unit {dev.config.unit_id} on {dev.bus.name}, {dev.bus.type})")
        for group, poll_plan in plan.plans.items():
            print(describe(dev.name, group, plan.intervals_ms[group], poll_plan, timing,
                           dev.config.pause_between_requests_ms))
        print(f"  line share: {100 * plan.busy_share(timing, dev.config.pause_between_requests_ms):.1f} %\n")
    for load in bus_loads(loaded):
        print(f"line {load.line} (bus {load.bus}): {load.load_pct:.1f} % busy, {load.requests_per_s:.1f} requests/s")
    return 0
