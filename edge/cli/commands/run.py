"""``edge run CONFIG``: run the appliance with a live status table until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from edge.config.loader import load_config
from edge.core.model import QUALITY_NAMES, DeviceState, Quality
from edge.runtime.app import Appliance
from edge.runtime.logs import setup_logging
from edge.runtime.reload import reload_appliance
from edge.runtime.systemd import Notifier


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop by itself after S seconds (default: run until Ctrl-C)")
    p.add_argument("--no-status", action="store_true", help="do not print the live status table")


def format_value(value: float | str, unit: str | None, quality: Quality) -> str:
    if quality != Quality.GOOD:
        return QUALITY_NAMES[quality]
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "-"
    text = f"{value:.6g}"
    return f"{text} {unit}" if unit else text


def delivery_lines(delivery: dict) -> list[str]:
    """The store-and-forward rows of the status table: backlog, disk, drops, forwarder, degraded."""
    sp, fw = delivery["spool"], delivery["forwarder"]
    drops = ", ".join(f"{k} {v}" for k, v in sorted(sp["dropped_points"].items())) or "none"
    rows = [f"spool: {sp['unsent_points']} points unsent ({sp['unsent_bytes'] / 1024:.0f} KiB), oldest "
            f"{sp['oldest_unsent_age_s']:.0f} s; disk {sp['disk_bytes'] / 1024:.0f} of "
            f"{sp['disk_budget_bytes'] / 1024:.0f} KiB; dropped: {drops}"]
    if fw is not None:
        line = f"forwarder: {fw['state'].upper()} -> {fw['url']} ({fw['api']}), {fw['points_sent']} points sent"
        if fw["state"] != "ok" and fw["last_error"]:
            line += f"; {fw['last_error']}"
        rows.append(line)
    if delivery["thread_crashes"]:
        rows.append(f"threads: {delivery['thread_crashes']} crashes (restarted)")
    if delivery["degraded"]:
        rows.append(f"DEGRADED: {delivery['degraded']}")
    return rows


class StatusTable:
    """Renders one status table per interval: devices, state, polls/s, errors, a few values."""

    def __init__(self, app: Appliance, out: TextIO, values_per_device: int = 3):
        self.app = app
        self.out = out
        self.values_per_device = values_per_device
        self._last = {name: (rt.diag.polls_ok, time.monotonic()) for name, rt in app.devices.items()}

    def render(self) -> str:
        app = self.app
        rows = [f"{'device':<14} {'bus':<10} {'state':<11} {'polls/s':>7} {'errors':>6} {'p50 ms':>7}  values",
                "-" * 100]
        now = time.monotonic()
        for name, rt in app.devices.items():
            d = rt.diag
            prev_ok, prev_t = self._last[name]
            rate = (d.polls_ok - prev_ok) / max(now - prev_t, 1e-9)
            self._last[name] = (d.polls_ok, now)
            errors = d.polls_failed + sum(d.exceptions.values())
            values = []
            for tag_id in app.plant.device(name).tag_ids[: self.values_per_device]:
                tag = app.plant.tags[tag_id]
                value, quality, _ = app.store.get(tag_id)
                values.append(f"{tag.name}={format_value(value, tag.unit, quality)}")
            rows.append(f"{name:<14} {d.bus:<10} {DeviceState(d.state).name.lower():<11} {rate:>7.1f} {errors:>6} "
                        f"{d.latency_p50_ms:>7.1f}  {', '.join(values)}")
            if d.state != DeviceState.ONLINE and d.last_error:
                rows.append(f"{'':<14} last error: {d.last_error}")
            if d.holes:
                rows.append(f"{'':<14} holes (re-probed): {'; '.join(d.holes_detail)}")
        util = ", ".join(f"{k} {v:.0f}%" for k, v in app.line_utilisation().items())
        rows.append(f"lines: {util}")
        rows.append(f"samples: {app.pipeline.samples}  batches: {app.pipeline.batches}")
        outputs = getattr(app, "outputs", None)
        if outputs is not None:
            rows.extend(delivery_lines(outputs.delivery()))
        if app.last_reload is not None:
            at = time.strftime("%H:%M:%S", time.localtime(app.last_reload.ts_ns / 1e9))
            rows.append(f"last reload {at}: {app.last_reload.summary()}")
        return "\n".join(rows)

    def show(self) -> None:
        text = self.render()
        if self.out.isatty():
            self.out.write("\x1b[2J\x1b[H")
        self.out.write(text + "\n\n")
        self.out.flush()


async def run_appliance(config: str, duration_s: float | None, show_status: bool, out: TextIO = sys.stdout,
                        log_level: str | None = None, log_json: bool = False) -> None:
    loaded = load_config(config, strict_plugins=False, discover=True)  # SunSpec devices: ask them now
    runtime = loaded.config.runtime
    setup_logging(log_level or runtime.log_level, log_json or runtime.log_format == "json", runtime.log_levels)
    for issue in loaded.issues:
        print(issue, file=sys.stderr)
    app = Appliance(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    notifier = Notifier()

    def on_hup() -> None:
        notifier.reloading()
        task = asyncio.create_task(reload_config(app, config))
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(lambda _: notifier.ready())

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    pid_file = write_pid_file(loaded.data_dir)
    await app.start()
    notifier.ready()
    watchdog = asyncio.create_task(notifier.watchdog_loop(), name="watchdog")
    table = StatusTable(app, out)
    interval = loaded.config.runtime.status_interval_s
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set():
            timeout = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except TimeoutError:
                pass
            if show_status:
                table.show()
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        notifier.stopping()
        watchdog.cancel()
        await app.stop()
        pid_file.unlink(missing_ok=True)
        print("appliance stopped", file=out, flush=True)


def write_pid_file(data_dir: Path) -> Path:
    """``edge reload`` finds the running appliance of a configuration through this file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "edge.pid"
    path.write_text(f"{os.getpid()}\n")
    return path


async def reload_config(app: Appliance, config: str, source: str = "sighup") -> bool:
    """Check the configuration (the same path as ``edge reload``) and apply it whole, or refuse it whole."""
    return (await reload_appliance(app, config, source)).result == "applied"


def run(args: argparse.Namespace) -> int:
    level = "debug" if args.debug else args.log_level
    asyncio.run(run_appliance(args.config, args.duration, not args.no_status, log_level=level, log_json=args.log_json))
    return 0
