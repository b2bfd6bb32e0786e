"""``edge grafana build|push CONFIG``: dashboards generated from the site configuration.

``build`` writes the dashboards and provisioning files under ``--out`` (default ``grafana/``);
``push`` sends the folder, data source and dashboards to Grafana's HTTP API, with the token from
``$GRAFANA_TOKEN`` (or ``outputs.grafana.token``, itself normally ``${GRAFANA_TOKEN}``).

Both build dashboards with ``grafana-foundation-sdk``, an optional dependency (``pip install
'ot-edge-appliance[grafana]'``); without it the command fails with one line that says so.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import ModuleType

from edge.cli.commands import CliError
from edge.config.loader import load_config

DEFAULT_TIMEOUT_S = 10.0  # edge.grafana.push.DEFAULT_TIMEOUT_S; not imported, so --help works without the SDK
SDK = "grafana_foundation_sdk"
INSTALL_HINT = "pip install 'ot-edge-appliance[grafana]'"


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "push"], help="build: write files; push: send to Grafana's API")
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--out", default="grafana", help="build: output folder (default: grafana/)")
    p.add_argument("--url", default=None, help="push: Grafana URL (default: outputs.grafana.url)")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="push: HTTP timeout per request")


def tooling(action: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """(plantview, provisioning, push) modules, or a one-line CliError when the Grafana extra is missing."""
    try:
        from edge.grafana import plantview, provisioning, push
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != SDK:
            raise
        raise CliError(f"edge grafana {action} needs grafana-foundation-sdk, which is not installed "
                       f"(the Grafana tooling is optional): {INSTALL_HINT}") from None
    return plantview, provisioning, push


def run(args: argparse.Namespace) -> int:
    plantview, provisioning, push = tooling(args.action)
    loaded = load_config(args.config)
    view = plantview.site_view(loaded)
    influx = loaded.config.outputs.influxdb
    if args.action == "build":
        with_token = influx is not None and (influx.token is not None or influx.token_file is not None)
        result = provisioning.build_site(view, Path(args.out), with_token)
        for path in result.written:
            print(f"{'written ' if path in result.changed else 'same    '} {path}")
        for path in result.removed:
            print(f"removed  {path}")
        print(f"{len(result.written)} file(s) for site {view.site}, {len(result.changed)} changed")
        return 0
    url = args.url or view.grafana.url
    token = os.environ.get("GRAFANA_TOKEN") or view.grafana.token
    if not token:
        raise CliError("no Grafana token: set GRAFANA_TOKEN to a service-account token (Editor role)")
    influx_token = influx.resolved_token() if influx is not None else None
    try:
        report = push.push_site(view, url, token, influx_token or None, timeout_s=args.timeout_s)
    except push.GrafanaPushError as exc:
        raise CliError(str(exc)) from exc
    print(f"pushed site {view.site} to {url}: {report.summary()}")
    return 0
