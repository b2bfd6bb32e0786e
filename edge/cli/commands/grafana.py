"""``edge grafana build|push CONFIG``: dashboards generated from the site configuration.

``build`` writes the dashboards and provisioning files under ``--out`` (default ``grafana/``);
``push`` sends the folder, data source and dashboards to Grafana's HTTP API, with the token from
``$GRAFANA_TOKEN`` (or ``outputs.grafana.token``, itself normally ``${GRAFANA_TOKEN}``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from edge.cli.commands import CliError
from edge.config.loader import load_config
from edge.grafana.plantview import site_view
from edge.grafana.provisioning import build_site
from edge.grafana.push import DEFAULT_TIMEOUT_S, GrafanaPushError, push_site


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "push"], help="build: write files; push: send to Grafana's API")
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("--out", default="grafana", help="build: output folder (default: grafana/)")
    p.add_argument("--url", default=None, help="push: Grafana URL (default: outputs.grafana.url)")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="push: HTTP timeout per request")


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    view = site_view(loaded)
    influx = loaded.config.outputs.influxdb
    if args.action == "build":
        with_token = influx is not None and (influx.token is not None or influx.token_file is not None)
        result = build_site(view, Path(args.out), with_token)
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
        report = push_site(view, url, token, influx_token or None, timeout_s=args.timeout_s)
    except GrafanaPushError as exc:
        raise CliError(str(exc)) from exc
    print(f"pushed site {view.site} to {url}: {report.summary()}")
    return 0
