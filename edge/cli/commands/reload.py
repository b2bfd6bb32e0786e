"""``edge reload CONFIG``: check a configuration, then ask the running appliance to load it (SIGHUP)."""
from __future__ import annotations

import argparse
import os
import signal

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
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"the appliance with pid {pid} ({pid_file}) is not running") from None
    print(f"configuration OK; reload requested from pid {pid}")
    return 0
