"""``edge history CONFIG TAG --since 10m``: a tag's raw samples from the local spool (historian)."""
from __future__ import annotations

import argparse
import json
import time

from edge.cli.commands import CliError
from edge.config.loader import load_config
from edge.storage.history import format_history, history_json, parse_since, read_history


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("tag", help="DEVICE.TAG")
    p.add_argument("--since", default="10m", help="how far back: 90s, 10m, 2h, 7d (default 10m)")
    p.add_argument("--until", default=None, help="stop this long before now (default: now)")
    p.add_argument("--limit", type=int, default=0, help="print only the newest N samples")
    p.add_argument("--json", action="store_true",
                   help="print a JSON array of {tag, ts_ns, time, value, quality} (values in full precision)")


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, strict_plugins=False)
    try:
        now = time.time_ns()
        since = now - parse_since(args.since) * 1_000_000_000
        until = now - (parse_since(args.until) * 1_000_000_000 if args.until else 0) + 1
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    spool = loaded.config.outputs.spool.path  # absolute: edge.config.paths
    try:
        h = read_history(spool, loaded.plant, args.tag, since, until)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    except FileNotFoundError:
        raise CliError(f"no spool at {spool}: has the appliance run with this configuration?") from None
    dtype = loaded.plant.tag_by_key()[args.tag].dtype
    if args.json:
        rows = history_json(args.tag, h, dtype)
        print(json.dumps(rows[-args.limit:] if args.limit else rows))
        return 0
    lines = format_history(h.ts, h.values, h.quality, h.texts, dtype)
    if args.limit:
        lines = lines[-args.limit:]
    for line in lines:
        print(line)
    print(f"{len(h.ts)} sample(s) of {args.tag} since {args.since} ago")
    return 0
