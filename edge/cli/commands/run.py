"""``edge run CONFIG``: run the appliance with a live status table until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from edge.cli.commands import CliError
from edge.config.loader import load_config
from edge.core.model import QUALITY_NAMES, DeviceState, Quality
from edge.runtime.app import Appliance
from edge.runtime.logs import setup_logging
from edge.runtime.memory import LEDGER
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


class PollRate:
    """Polls per second of one device over a sliding window, timed by the polls' own timestamps.

    Counting polls between two refreshes gives 0, 1 or 2 for a device polled every second
    (a count per refresh); dividing the polls by the time between the first and the last of
    them (``last_ok_ns`` of the diagnostics) gives 1.0. When polls stop, the time since the
    last one counts too, so the rate falls to 0 within the window.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self.samples: deque[tuple[int, int, int]] = deque()  # (now_ns, polls_ok, last_ok_ns)

    def update(self, now_ns: int, polls_ok: int, last_ok_ns: int) -> float:
        """Record the device's counters at ``now_ns`` (wall clock) and return its rate."""
        samples = self.samples
        if samples and polls_ok < samples[-1][1]:
            samples.clear()  # counters restarted (a reload rebuilt the device)
        samples.append((now_ns, polls_ok, last_ok_ns))
        while len(samples) > 2 and now_ns - samples[1][0] >= self.window_ns:
            samples.popleft()
        first_now, first_polls, first_ok = samples[0]
        polls = polls_ok - first_polls
        if polls <= 0:
            return 0.0
        span_ns = last_ok_ns - first_ok
        if span_ns <= 0:
            return polls * 1e9 / max(now_ns - first_now, 1)
        silent_ns = now_ns - last_ok_ns
        if silent_ns > 2 * span_ns / polls:  # overdue: the wait since the last poll counts
            span_ns += silent_ns
        return polls * 1e9 / span_ns


class TerminalView:
    """Where the table goes: redrawn in place on a terminal, plain tables one after another when piped.

    On a terminal the table is drawn on the alternate screen (no scrollback fills up), each line
    cut to the width and the table to the height, cursor hidden; ``close`` restores the screen
    and prints the last table once, so it stays visible after the appliance stops.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.active = False
        self.last = ""

    def show(self, text: str) -> None:
        self.last = text
        if not self.tty:
            self.out.write(text + "\n\n")
            self.out.flush()
            return
        size = shutil.get_terminal_size((100, 40))
        lines = text.split("\n")
        if len(lines) > size.lines - 1:
            hidden = len(lines) - (size.lines - 2)
            lines = lines[: size.lines - 2] + [f"... {hidden} more line(s): a taller terminal shows them"]
        body = "".join(line[: size.columns] + "\x1b[K\n" for line in lines)
        start = "" if self.active else "\x1b[?1049h\x1b[?25l"  # alternate screen, no cursor
        self.active = True
        self.out.write(start + "\x1b[H" + body + "\x1b[J")
        self.out.flush()

    def close(self) -> None:
        if self.active:
            self.out.write("\x1b[?25h\x1b[?1049l" + self.last + "\n")  # back to the normal screen
            self.out.flush()
            self.active = False


class StatusTable:
    """One status table per interval: devices, state, polls/s, errors, latency, a few values, and a
    footer with the lines' load, the spool, the forwarder and the last reload."""

    def __init__(self, app: Appliance, out: TextIO, values_per_device: int = 3):
        self.app = app
        self.view = TerminalView(out)
        self.values_per_device = values_per_device
        self.rates: dict[str, PollRate] = {}

    def render(self) -> str:
        app = self.app
        now_ns = time.time_ns()
        rows = [f"{app.plant.site}  {time.strftime('%H:%M:%S', time.localtime(now_ns / 1e9))}  "
                f"{len(app.devices)} devices",
                f"{'device':<14} {'bus':<10} {'state':<11} {'polls/s':>7} {'errors':>6} {'p50 ms':>7}  values",
                "-" * 100]
        for name, rt in app.devices.items():
            d = rt.diag
            rate = self.rates.setdefault(name, PollRate()).update(now_ns, d.polls_ok, d.last_ok_ns)
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
        rows.append("-" * 100)
        util = ", ".join(f"{k} {v:.0f}%" for k, v in app.line_utilisation().items())
        rows.append(f"lines: {util}")
        rows.append(f"samples: {app.pipeline.samples}  batches: {app.pipeline.batches}")
        outputs = getattr(app, "outputs", None)
        if outputs is not None:
            delivery = outputs.delivery()
            rows.extend(delivery_lines(delivery))
            if delivery["forwarder"] is None:
                rows.append("forwarder: none configured (the spool is the local historian: edge history)")
            rows.extend(output_rows(outputs.status()))
        if app.last_reload is not None:
            at = time.strftime("%H:%M:%S", time.localtime(app.last_reload.ts_ns / 1e9))
            rows.append(f"last reload {at}: {app.last_reload.summary()}")
        return "\n".join(rows)

    def show(self) -> None:
        self.view.show(self.render())

    def close(self) -> None:
        self.view.close()


def output_rows(status: dict[str, dict]) -> list[str]:
    """One line per output that talks to a server: its state, and the last error while it is not up."""
    rows = []
    for name, st in status.items():
        state = str(st.get("state", ""))
        if name == "mqtt":
            line = (f"mqtt: {state}  {st['url']}  messages {st['messages']}  backlog {st['backlog_points']} points"
                    f"  reconnects {max(st['connects'] - 1, 0)}")
        else:
            line = f"{name}: {state}  points sent {st.get('points_sent', 0)}"
        rows.append(line)
        if state not in ("online", "connected", "idle", "sending") and st.get("last_error"):
            rows.append(f"{'':<6}last error: {st['last_error']}")
    return rows


async def run_appliance(config: str, duration_s: float | None, show_status: bool, out: TextIO = sys.stdout,
                        log_level: str | None = None, log_json: bool = False) -> None:
    LEDGER.mark("imports")
    loaded = load_config(config, strict_plugins=False, discover=True)  # SunSpec devices: ask them now
    LEDGER.mark("config")
    runtime = loaded.config.runtime
    setup_logging(log_level or runtime.log_level, log_json or runtime.log_format == "json", runtime.log_levels)
    for issue in loaded.issues:
        print(issue, file=sys.stderr)
    app = Appliance(loaded)
    LEDGER.mark("drivers_store")
    app.logging = (log_level, log_json)  # a reload applies the configuration's logging, these still win
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()
    started = asyncio.Event()
    one_at_a_time = asyncio.Lock()

    notifier = Notifier()

    async def reload_when_started() -> None:
        await started.wait()  # a SIGHUP during the start is served once the appliance runs
        async with one_at_a_time:  # SIGHUPs in a row: each reload sees the previous one finished
            await reload_config(app, config)

    def on_hup() -> None:
        notifier.reloading()
        task = asyncio.create_task(reload_when_started(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(lambda _: notifier.ready())

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await start_or_clean_up(app)
    # Only a started appliance has a pid file: `edge reload` must never signal a process that failed
    # to start (or a stranger that later got its pid).
    pid_file = write_pid_file(loaded.data_dir)
    started.set()
    notifier.ready()
    print(started_line(app), file=out, flush=True)
    watchdog = asyncio.create_task(notifier.watchdog_loop(), name="watchdog")
    table = StatusTable(app, out)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set():
            interval = app.loaded.config.runtime.status_interval_s  # a reload may change it
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
        table.close()
        notifier.stopping()
        watchdog.cancel()
        for task in list(reloads):
            task.cancel()
        await app.stop()
        remove_pid_file(pid_file)
        print("appliance stopped", file=out, flush=True)


def started_line(app: Appliance) -> str:
    """One line with where the appliance serves (the bound ports when the configuration asked for port 0)."""
    where = []
    if app.outputs is not None and app.outputs.opcua is not None:
        where.append(f"OPC UA at {app.outputs.opcua.endpoint_url}")
    if app.intelligence is not None and app.intelligence.url:
        where.append(f"API at {app.intelligence.url}")
    return "appliance started" + (": " + ", ".join(where) if where else "")


async def start_or_clean_up(app: Appliance) -> None:
    """Start the appliance; if that fails, stop what did start (threads, listeners) and re-raise
    (an OSError, such as a port in use or a missing certificate, as a one-line CliError)."""
    try:
        await app.start()
    except BaseException as exc:
        try:
            await app.stop()
        except Exception:  # noqa: BLE001 - the start failure is the error to report
            logging.getLogger("edge.run").exception("cleaning up after a failed start failed too")
        if isinstance(exc, OSError):
            raise CliError(f"the appliance did not start: {exc}") from exc
        raise


def write_pid_file(data_dir: Path) -> Path:
    """``edge reload`` finds the running appliance of a configuration through this file (written
    atomically: a reader sees the old content or the whole new one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "edge.pid"
    tmp = path.with_name(f".edge.pid.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)
    return path


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it is still this process's (another appliance may have replaced it)."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (OSError, ValueError):
        pass


async def reload_config(app: Appliance, config: str, source: str = "sighup") -> bool:
    """Check the configuration (the same path as ``edge reload``) and apply it whole, or refuse it whole."""
    return (await reload_appliance(app, config, source)).result == "applied"


def run(args: argparse.Namespace) -> int:
    level = "debug" if args.debug else args.log_level
    asyncio.run(run_appliance(args.config, args.duration, not args.no_status, log_level=level, log_json=args.log_json))
    return 0
