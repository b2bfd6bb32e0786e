"""``edge history CONFIG TAG [TAG...] --since 10m``: raw samples from the local spool (historian)."""
from __future__ import annotations

import argparse
import json
import time

from edge.cli.commands import CliError
from edge.config.loader import load_config
from edge.storage.history import format_history, history_json, parse_since, read_history


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="site configuration (YAML)")
    p.add_argument("tag", nargs="+", metavar="TAG", help="DEVICE.TAG; several tags are printed one after the other")
    p.add_argument("--since", default="10m", help="how far back: 90s, 10m, 2h, 7d (default 10m)")
    p.add_argument("--until", default=None, help="stop this long before now (default: now)")
    p.add_argument("--limit", type=int, default=0, help="print only the newest N samples (of each tag)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON array of {tag, ts_ns, time, value, quality} (values in full precision; "
                   "enumerations and named bits also 'text')")


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, strict_plugins=False)
    try:
        now = time.time_ns()
        since = now - parse_since(args.since) * 1_000_000_000
        until = now - (parse_since(args.until) * 1_000_000_000 if args.until else 0) + 1
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    spool = loaded.config.outputs.spool.path  # absolute: edge.config.paths
    tags = loaded.plant.tag_by_key()
    rows: list[dict[str, object]] = []
    for key in args.tag:
        try:
            h = read_history(spool, loaded.plant, key, since, until)
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        except FileNotFoundError:
            raise CliError(f"no spool at {spool}: has the appliance run with this configuration?") from None
        tag = tags[key]
        if args.json:
            named = tag.enum is not None or tag.bits is not None
            found = history_json(key, h, tag.dtype, tag.text_of if named else None)
            rows += found[-args.limit:] if args.limit else found
            continue
        lines = format_history(h.ts, h.values, h.quality, h.texts, tag.dtype)
        if args.limit:
            lines = lines[-args.limit:]
        for line in lines:
            print(line)
        print(f"{len(h.ts)} sample(s) of {key} since {args.since} ago")
    if args.json:
        print(json.dumps(rows))
    return 0
