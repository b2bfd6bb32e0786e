"""Helpers of the plugin tool tests: run the real ``edge`` command in a child process."""
from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"


async def edge(*args: str, cwd: Path = REPO, timeout_s: float = 90) -> tuple[int, str]:
    """Run ``python -m edge.cli.main ARGS``; exit code and combined output."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", *args, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()


ROW = re.compile(r"^  (?P<tag>[A-Za-z_][\w-]*) +(?P<value>.*?) +(?P<quality>Good|Bad_\w+|Uncertain_\w+)"
                 r" +(?P<kind>\w+)(?: +(?P<at>.*))?$")


def tag_lines(output: str) -> dict[str, tuple[str, str, str, str]]:
    """``edge plugin check`` value rows: tag name -> (value, quality name, type or 'derived', where)."""
    rows = {}
    for line in output.splitlines():
        m = ROW.match(line)
        if m:
            rows[m["tag"]] = (m["value"].strip(), m["quality"], m["kind"], (m["at"] or "").strip())
    return rows


def copy_plugin(src: str, dst_dir: Path, name: str | None = None) -> Path:
    """A copy of a shipped plugin under another folder (and id, if ``name`` is given)."""
    name = name or src
    dst = dst_dir / name
    shutil.copytree(PLUGINS / src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = dst / "manifest.yaml"
    manifest.write_text(re.sub(r"^id: .*$", f"id: {name}", manifest.read_text(), count=1, flags=re.M))
    return dst
