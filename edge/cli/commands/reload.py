"""``edge reload CONFIG``: check a configuration, then ask the running appliance to load it (SIGHUP)."""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from edge.cli.commands import CliError
from edge.runtime.reload import check_config


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML) of the running appliance")


def run(args: argparse.Namespace) -> int:
    loaded = check_config(args.config)  # the appliance's own reload check: errors printed, nothing sent
    pid_file = loaded.data_dir / "edge.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise CliError(f"no running appliance for this configuration ({pid_file} not found)") from None
    if not is_edge_appliance(pid):
        raise CliError(f"pid {pid} in {pid_file} is not a running edge appliance (a stale pid file?); "
                       "nothing was signalled")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"the appliance with pid {pid} ({pid_file}) is not running") from None
    print(f"configuration OK; reload requested from pid {pid}")
    return 0


def is_edge_appliance(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether ``pid`` runs ``edge run`` or ``edge demo`` (from its command line in /proc).

    SIGHUP ends most programs: a pid file left by a crash must not make ``edge reload`` signal
    whatever process got that pid later. Where /proc is missing, the pid is trusted."""
    if not proc.is_dir():
        return True
    try:
        args = [a.decode(errors="replace") for a in (proc / str(pid) / "cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    edge_at = next((i for i, a in enumerate(args) if Path(a).name == "edge" or a == "edge.cli.main"), None)
    return edge_at is not None and any(a in ("run", "demo") for a in args[edge_at + 1:])

