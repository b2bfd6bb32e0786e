"""Technician commands that talk to field devices directly: read, write, scan (and probe).

They use the same lines, plans, codec and write path as the running appliance, so what they
show is what the appliance will see.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import dataclass

import numpy as np
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
from drivers.modbus.points import Table
from drivers.modbus.poller import DevicePoller
from drivers.modbus.probe import AMBIGUOUS_MARGIN, Interpretation, format_probe, probe
from drivers.modbus.timing import inter_frame_gap_s
from drivers.modbus.writer import write_point
from edge.cli.commands import CliError
from edge.config.loader import ResolvedDevice, load_config
from edge.core.derived import DerivedStage
from edge.core.model import QUALITY_NAMES, DeviceDiagnostics, Plant, Quality, SampleBatch, TagInfo
from edge.runtime.app import device_plan, line_gap_s, make_transport
from edge.storage.history import format_value


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("read", "write"):
        p.add_argument("config", help="site configuration (YAML)")
        p.add_argument("device", help="device name")
    if name == "read":
        p.add_argument("tag", nargs="*", help="only these tags (default: all)")
        p.add_argument("--json", action="store_true",
                       help="print a JSON array: one object per tag with tag, value, quality, unit, ts (ISO 8601 "
                            "UTC, ns), ts_ns, and text (enum state, set bits) or error where there is one")
    elif name == "write":
        p.add_argument("tag", help="tag name")
        p.add_argument("value", help="value in engineering units (true/false for bits, text for strings)")
    elif name in ("scan", "probe"):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--serial", metavar="PATH", help="serial port of an RS-485 line")
        where.add_argument("--host", help="TCP host (Modbus TCP, or a gateway with --rtu-over-tcp)")
        p.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
        p.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing through a serial gateway")
        p.add_argument("--baud", type=int, default=9600)
        p.add_argument("--parity", choices=["N", "E", "O"], default="N")
        p.add_argument("--stop-bits", type=int, choices=[1, 2], default=1)
        p.add_argument("--timeout-ms", type=int, default=200)
        p.add_argument("--table", choices=["holding", "input"], default="holding",
                       help="register table (default holding)")
    if name == "scan":
        p.add_argument("--units", default="1-247", help="unit ids to try, e.g. 1-10 or 1,5,9 (default 1-247)")
        p.add_argument("--address", type=int, default=0, help="0-based address of the test read (default 0)")
        p.add_argument("--sunspec", action="store_true",
                       help="also list the SunSpec models each unit serves (marker at 40000, 0 or 50000)")
    elif name == "probe":
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


def _open(dev: ResolvedDevice) -> Line:
    return Line(dev.name, make_transport(dev), gap_s=line_gap_s(dev))


@dataclass
class ReadRow:
    """One tag as ``edge read`` shows it."""

    tag: str
    value: float | str | None  # NaN for a bad sample; text for strings
    quality: Quality
    ts_ns: int
    info: TagInfo | None = None
    error: str = ""

    def shown(self) -> str:
        """Full precision (the shortest text that reads back to the same double), unit, state names."""
        if self.quality is not Quality.GOOD:
            return "-"
        dtype = self.info.dtype if self.info is not None else "float64"
        if isinstance(self.value, str):
            return self.value if dtype == "string" else repr(self.value)
        text = format_value(float(self.value if self.value is not None else math.nan), dtype)
        if self.info is not None and self.info.unit and dtype not in ("bool", "string"):
            text += f" {self.info.unit}"
        if self.info is not None and self.value is not None:
            names = self.info.text_of(float(self.value))
            if names is not None or self.info.enum is not None:
                text += f" ({names if names is not None else 'not a listed state'})"
        return text

    def as_dict(self) -> dict[str, object]:
        """``edge read --json``: tag, value (number, bool, text or null), quality, unit, ts (and ts_ns, text, error)."""
        dtype = self.info.dtype if self.info is not None else "float64"
        value: object = None
        if self.quality is Quality.GOOD and self.value is not None:
            if isinstance(self.value, str):
                value = self.value
            elif dtype == "bool":
                value = bool(self.value)
            elif dtype not in ("float32", "float64") and float(self.value).is_integer():
                value = int(self.value)
            elif math.isfinite(float(self.value)):
                value = float(self.value)
        out: dict[str, object] = {
            "tag": self.tag, "value": value, "quality": QUALITY_NAMES[self.quality],
            "unit": self.info.unit if self.info is not None else None,
            "ts": str(np.datetime64(self.ts_ns, "ns")) + "Z", "ts_ns": self.ts_ns}
        if self.info is not None and value is not None and not isinstance(value, (str, bool)):
            text = self.info.text_of(float(value))
            if text is not None:
                out["text"] = text
        if self.error:
            out["error"] = self.error
        return out


async def read_device(dev: ResolvedDevice, only: list[str], plant: Plant) -> list[ReadRow]:
    """Every tag of a device from one poll by the appliance's own poller: the same plan, the same
    hole learning (an illegal-address answer splits the block and the parts are read at once),
    the same decoding, and the plugin's derived tags through the same hooks."""
    plan = device_plan(dev)
    line = _open(dev)
    batches: list[SampleBatch] = []
    publish = batches.append
    infos = {t.id: t for t in plant.tags if t.device == dev.name}
    diag = DeviceDiagnostics(dev.name, dev.bus.name)
    if dev.hooks:
        ids = {t.name: t.id for t in infos.values()}
        publish = DerivedStage(dev.name, dev.hooks, ids, batches.append, diag).publish
    poller = DevicePoller(dev.name, dev.config.unit_id, line, plan, publish, diag, timeout_s=dev.timeout_ms() / 1e3,
                          retries=dev.retries(), pause_s=dev.config.pause_between_requests_ms / 1e3,
                          offline_after=10**9)
    try:
        for group in plan.groups():
            await poller.poll_group(group)
    finally:
        line.close()
    latest: dict[int, tuple[float | str, int, int]] = {}
    for batch in batches:
        texts = batch.texts or {}
        for tag_id, value, q in zip(batch.tag_ids.tolist(), batch.values.tolist(), batch.quality.tolist(), strict=True):
            latest[tag_id] = (texts.get(tag_id, value), q, batch.ts_ns)
    rows = []
    for tag_id, info in infos.items():
        if only and info.name not in only:
            continue
        value, q, ts = latest.get(tag_id, (math.nan, int(Quality.BAD_COMM_ERROR), 0))
        quality = Quality(q)
        error = "" if quality is Quality.GOOD else (diag.last_error if quality in _POLL_FAILURES else "")
        rows.append(ReadRow(info.name, value, quality, ts, info, error))
    return rows


_POLL_FAILURES = (Quality.BAD_COMM_ERROR, Quality.BAD_CONFIG_ERROR, Quality.BAD_NO_COMMUNICATION)


async def write_device(dev: ResolvedDevice, tag: str, value: str):
    point = next((p for p in dev.register_points if p.name == tag), None)
    if point is None:
        raise CliError(f"device {dev.name} has no tag {tag!r}; tags: {', '.join(p.name for p in dev.register_points)}")
    line = _open(dev)
    try:
        return await write_point(line, dev.config.unit_id, point, value, dev.timeout_ms() / 1e3)
    finally:
        line.close()


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


def run(args: argparse.Namespace) -> int:
    if args.command == "probe":
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
    if args.command == "scan":
        found = asyncio.run(scan(args))
        for unit, what in found:
            print(f"unit {unit:>3}: {what}")
        print(f"{len(found)} unit(s) answered")
        return 0 if found else 1
    loaded = load_config(args.config, discover=args.command == "read")
    try:
        dev = loaded.device(args.device)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if args.command == "read":
        rows = asyncio.run(read_device(dev, args.tag, loaded.plant))
        unknown = sorted(set(args.tag) - {r.tag for r in rows})
        if unknown:
            raise CliError(f"device {dev.name} has no tag {', '.join(map(repr, unknown))}")
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], indent=1))
        else:
            for r in rows:
                shown = r.shown() if r.quality is Quality.GOOD else (r.error or "-")
                print(f"{r.tag:<28} {shown:<32} {QUALITY_NAMES[r.quality]}")
        return 0 if rows and all(r.quality is Quality.GOOD for r in rows) else 1
    result = asyncio.run(write_device(dev, args.tag, args.value))
    print(f"{dev.name}.{args.tag} = {args.value}: {result.status.name}: {result.message}"
          + (f" (read back {result.read_back})" if result.read_back is not None else ""))
    return 0 if result.ok else 1
