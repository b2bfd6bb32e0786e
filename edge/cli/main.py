"""The ``edge`` command: one subcommand per job, one clear line per error, exit codes that mean something.

Errors print as one line and exit non-zero; ``--debug`` shows the traceback instead.
Subcommand implementations live in ``edge.cli.commands``; this module only parses and dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge.cli.commands import CliError
from edge.config.errors import ConfigError
from edge.driver import registry
from edge.driver.protocol import Command
from edge.runtime.logs import setup_logging

# name -> (module in edge.cli.commands, one-line description); the order is the help's order
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the appliance for a site configuration, with a live status table"),
    "demo": ("demo", "start the simulated demo plant and run the appliance against it"),
    "reload": ("reload", "check a configuration and make the running appliance load it without a restart"),
    "check": ("check", "validate a configuration without touching hardware; prints bus load per line"),
    "simulate": ("simulate", "serve every device of a configuration from its driver's simulator"),
    "read": ("field", "read a device's tags once (one poll) and print the decoded values"),
    "write": ("field", "write one tag of a device, read it back and print the result"),
    "plugin": ("plugin", "device plugins: new NAME (from plugins/_template), list, check NAME (simulated poll)"),
    "history": ("history", "print a tag's raw samples from the local spool (--since 10m)"),
    "provision": ("provision", "create the data, spool and PKI directories, certificates and users of a site"),
    "fleet": ("fleet", "render every appliance's configuration from a fleet inventory and check each one"),
    "doctor": ("doctor", "check the installation: packages, the aggregator extension, system tools"),
    "grafana": ("grafana", "dashboards from the configuration: build (files under grafana/) or push (Grafana API)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", description="Industrial edge appliance: field devices to OPC UA, InfluxDB, MQTT and Grafana.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                        help="log level (default: warning; `edge run` uses the configuration's)")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module, description) in COMMANDS.items():
        p = sub.add_parser(name, help=description, description=description)
        try:
            mod = importlib.import_module(f"edge.cli.commands.{module}")
        except Exception as exc:  # noqa: BLE001 - one broken command must not take the others down
            p.set_defaults(unavailable=f"{type(exc).__name__}: {exc}")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        mod.add_arguments(name, p)
    for command in driver_commands().values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
    return parser


def driver_commands() -> dict[str, Command]:
    """Subcommands the registered drivers add (``scan``, ``probe``, ``plan``...); core names win."""
    out: dict[str, Command] = {}
    for driver in registry.drivers().values():
        for command in driver.commands():
            if command.name not in COMMANDS and command.name not in out:
                out[command.name] = command
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging("debug" if args.debug else (args.log_level or "warning"), args.log_json)
    try:
        if getattr(args, "unavailable", None):
            raise CliError(f"this command cannot run on this installation: {args.unavailable}")
        if args.command not in COMMANDS:
            return int(driver_commands()[args.command].run(args) or 0)
        module = importlib.import_module(f"edge.cli.commands.{COMMANDS[args.command][0]}")
        return int(module.run(args) or 0)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        errors = sum(1 for i in exc.issues if i.severity == "error")
        print(f"{errors} error(s): configuration rejected", file=sys.stderr)
        return 1
    except CliError as exc:
        if args.debug:
            raise
        print(f"edge {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"edge {args.command}: error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
