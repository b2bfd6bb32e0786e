"""``edge`` subcommands of the Modbus driver: scan a line, probe an undocumented value, print the plan.

They use the same lines, plans and codec as the running appliance, so what they show is what
the appliance will see. Registered through :meth:`drivers.modbus.driver.ModbusDriver.commands`.
"""
from __future__ import annotations

import argparse
import asyncio
import json

import yaml

from drivers.modbus.bus import Line
from drivers.modbus.client import (
    ModbusError,
    ModbusExceptionResponse,
    RtuOverTcpTransport,
    SerialParams,
    SerialTransport,
    TcpTransport,
)
from drivers.modbus.planner import describe
from drivers.modbus.points import Table
from drivers.modbus.probe import AMBIGUOUS_MARGIN, Interpretation, format_probe, probe
from drivers.modbus.resolve import config, device_plan
from drivers.modbus.timing import BusTiming, inter_frame_gap_s
from edge.cli.commands import CliError
from edge.config.checks import line_loads
from edge.config.loader import load_config
from edge.driver.protocol import Command


def _line_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="PATH", help="serial port of an RS-485 line")
    where.add_argument("--host", help="TCP host (Modbus TCP, or a gateway with --rtu-over-tcp)")
    p.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    p.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing through a serial gateway")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--parity", choices=["N", "E", "O"], default="N")
    p.add_argument("--stop-bits", type=int, choices=[1, 2], default=1)
    p.add_argument("--timeout-ms", type=int, default=200)
    p.add_argument("--table", choices=["holding", "input"], default="holding", help="register table (default holding)")


def _scan_arguments(p: argparse.ArgumentParser) -> None:
    _line_options(p)
    p.add_argument("--units", default="1-247", help="unit ids to try, e.g. 1-10 or 1,5,9 (default 1-247)")
    p.add_argument("--address", type=int, default=0, help="0-based address of the test read (default 0)")
    p.add_argument("--sunspec", action="store_true",
                   help="also list the SunSpec models each unit serves (marker at 40000, 0 or 50000)")


def _probe_arguments(p: argparse.ArgumentParser) -> None:
    _line_options(p)
    p.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    p.add_argument("--address", type=int, required=True, help="0-based protocol address of the first register")
    p.add_argument("--words", type=int, choices=[2, 4], default=2, help="2 (32-bit) or 4 (64-bit) registers")
    p.add_argument("--reads", type=int, default=5, help="successive reads to judge stability (default 5)")
    p.add_argument("--interval-ms", type=int, default=500, help="pause between reads (default 500)")
    p.add_argument("--range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="the range the value should be in (e.g. 200 260 for a mains voltage)")
    p.add_argument("--top", type=int, default=6, help="interpretations to show (default 6)")
    p.add_argument("--draft", metavar="FILE",
                   help="append a draft points.yaml entry for the best interpretation to FILE")
    p.add_argument("--json", action="store_true",
                   help="print the ranked candidates as a JSON array (type, order, value, values, score, "
                        "reasons), best first, and nothing else")


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--device", action="append", default=[], help="only this device (repeatable)")


def parse_units(text: str) -> list[int]:
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            units += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise CliError(f"--units takes ranges like 1-10 or 1,5,9, got {text!r}", 2) from None
    bad = [u for u in units if not 0 <= u <= 255]
    if bad:
        raise CliError(f"unit ids are 0-255, got {bad[0]}", 2)
    return units


def line_from_args(args: argparse.Namespace) -> Line:
    """A line from --serial/--host options (scan, probe): no configuration needed."""
    if args.serial:
        params = SerialParams(args.serial, args.baud, args.parity, 8, args.stop_bits)
        return Line(args.serial, SerialTransport(args.serial, params),
                    gap_s=inter_frame_gap_s(args.baud, args.parity, 8, args.stop_bits))
    if args.rtu_over_tcp:
        return Line("gateway", RtuOverTcpTransport(f"{args.host}:{args.port}", args.host, args.port))
    return Line("tcp", TcpTransport(f"{args.host}:{args.port}", args.host, args.port))


async def scan(args: argparse.Namespace) -> list[tuple[int, str]]:
    """Unit ids that answer a one-register read (an exception answer counts: the device is there).

    With ``--sunspec`` each answering unit's SunSpec model chain follows, one model per line."""
    line = line_from_args(args)
    found = []
    try:
        for unit in parse_units(args.units):
            try:
                await line.read(unit, Table(args.table), args.address, 1, args.timeout_ms / 1e3)
                found.append((unit, "answers"))
            except ModbusExceptionResponse as exc:
                found.append((unit, f"answers with {exc}"))
            except ModbusError:
                continue
            if getattr(args, "sunspec", False):
                found[-1] = (unit, found[-1][1] + "\n" + await sunspec_models(line, unit, args.timeout_ms / 1e3))
    finally:
        line.close()
    return found


async def sunspec_models(line: Line, unit: int, timeout_s: float) -> str:
    """The SunSpec models a unit serves, one per line (or why none were found)."""
    from drivers.modbus.sunspec.discovery import SunSpecNotFound, discover
    from drivers.modbus.sunspec.models import describe

    async def read(address: int, count: int) -> list[int]:
        return [int(v) for v in await line.read(unit, Table.HOLDING, address, count, timeout_s)]

    try:
        chain = await discover(read)
    except (SunSpecNotFound, ModbusError) as exc:
        return f"          no SunSpec models: {exc}"
    head = f"          SunSpec at {chain.base}: {len(chain.known)} model(s) known, {len(chain.unknown)} skipped"
    return "\n".join([head, *(f"          {text}" for text in describe(chain.models))])


async def probe_span(args: argparse.Namespace) -> list[list[int]]:
    """``--reads`` successive reads of the span, ``--interval-ms`` apart."""
    line = line_from_args(args)
    reads = []
    try:
        for i in range(args.reads):
            if i:
                await asyncio.sleep(args.interval_ms / 1e3)
            regs = await line.read(args.unit, Table(args.table), args.address, args.words, args.timeout_ms / 1e3)
            reads.append([int(r) for r in regs])
    except ModbusError as exc:
        raise CliError(f"read of {args.table} {args.address}+{args.words} at unit {args.unit} failed: {exc}") from None
    finally:
        line.close()
    return reads


def draft_entry(args: argparse.Namespace, ranked: list[Interpretation]) -> str:
    """A points.yaml entry (with comments saying where it came from) for the best interpretation."""
    best = ranked[0]
    where = args.serial or f"{args.host}:{args.port}"
    shown = ", ".join(repr(v) for v in best.values[:5])
    entry = {"name": f"{args.table}_{args.address}", "table": args.table, "address": args.address,
             "type": best.dtype, "order": best.order}
    if args.range:
        entry["range"] = [args.range[0], args.range[1]]
    entry["description"] = f"draft from edge probe: read {shown}"
    lines = [f"# edge probe {args.table} {args.address}..{args.address + args.words - 1} of unit {args.unit} at "
             f"{where}: best {best.dtype} {best.order} ({best.reason})",
             "# address is the protocol (0-based) address: in a plugin with address_base 1 write it + 1;",
             "# rename the point, add unit and scale from the datasheet, then: edge plugin check"]
    rival = next((r for r in ranked[1:] if r.values != best.values), None)
    if rival is not None and best.score - rival.score < AMBIGUOUS_MARGIN:
        lines.append(f"# AMBIGUOUS: {rival.dtype} {rival.order} scores nearly as well; probe again while the value changes")
    body = yaml.safe_dump([entry], default_flow_style=None, sort_keys=False, width=1000).strip()
    return "\n".join([*lines, body, ""])


def run_probe(args: argparse.Namespace) -> int:
    reads = asyncio.run(probe_span(args))
    low, high = args.range if args.range else (None, None)
    if args.json:
        ranked = probe(reads, low, high)
        if args.draft:
            with open(args.draft, "a", encoding="utf-8") as f:
                f.write(draft_entry(args, ranked))
        print(json.dumps([r.as_dict() for r in ranked], indent=1))
        return 0
    print(f"{args.table} {args.address}..{args.address + args.words - 1} of unit {args.unit}, "
          f"{len(reads)} reads: " + "; ".join(" ".join(f"{r:04x}" for r in read) for read in reads))
    ranked = probe(reads, low, high)
    print(format_probe(ranked, top=args.top))
    if args.draft:
        with open(args.draft, "a", encoding="utf-8") as f:
            f.write(draft_entry(args, ranked))
        print(f"draft points.yaml entry for {ranked[0].dtype} {ranked[0].order} appended to {args.draft}")
    return 0


def run_scan(args: argparse.Namespace) -> int:
    found = asyncio.run(scan(args))
    for unit, what in found:
        print(f"unit {unit:>3}: {what}")
    print(f"{len(found)} unit(s) answered")
    return 0 if found else 1


def run_plan(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for dev in loaded.devices:
        if (args.device and dev.name not in args.device) or dev.driver.name != "modbus":
            continue
        plan = device_plan(dev)
        timing = BusTiming.from_bus_config(dev.bus)
        pause_ms = config(dev).pause_between_requests_ms
        print(f"# {dev.name} (unit {config(dev).unit_id} on {dev.bus.name}, {dev.bus.type})")
        for group, poll_plan in plan.plans.items():
            print(describe(dev.name, group, plan.intervals_ms[group], poll_plan, timing, pause_ms))
        print(f"  line share: {100 * plan.busy_share(timing, pause_ms):.1f} %\n")
    for load in line_loads(loaded):
        print(f"line {load.line} (bus {load.bus}): {load.load_pct:.1f} % busy, {load.requests_per_s:.1f} requests/s")
    return 0


COMMANDS = [
    Command("plan", "print the request plan per device and the estimated bus time per cycle", _plan_arguments,
            run_plan),
    Command("scan", "find the unit ids that answer on a serial line or a TCP endpoint", _scan_arguments, run_scan),
    Command("probe", "read a 32/64-bit register span in every word order and rank the interpretations",
            _probe_arguments, run_probe),
]
