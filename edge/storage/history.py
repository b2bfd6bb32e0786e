"""Local historian reads: the spool's stored poll batches of one tag over a time range.

With no InfluxDB configured the spool keeps every batch for ``retention_s`` (rows are stored
as already sent), with InfluxDB it keeps acknowledged rows for the same time, so both
``edge history CONFIG TAG --since 10m`` and the OPC UA history read from here.

A read scans the batches of one device in the time range (index ``(kind, source, ts_ns)``)
and picks the tag out of each batch's arrays; unsent rows are included.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from edge.core.model import Plant
from edge.storage.spool import history_from_conn

SPOOL_FILE = "spool.db"


def spool_file(spool_path: str | Path) -> Path:
    """The database file: ``spool_path`` itself, or ``spool.db`` inside it when it is a directory."""
    p = Path(spool_path)
    return p / SPOOL_FILE if p.is_dir() else p


def read_history(
    spool_path: str | Path, plant: Plant, tag_key: str, since_ns: int, until_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts_ns int64, values float64, quality uint8)`` of tag ``device.tag`` with since <= ts < until.

    Raises KeyError naming the known tags when ``tag_key`` is not in the plant, FileNotFoundError
    when there is no spool file. String tags return NaN values (see :func:`read_history_texts`).
    """
    tags = plant.tag_by_key()
    if tag_key not in tags:
        known = ", ".join(sorted(tags)[:20])
        raise KeyError(f"unknown tag {tag_key!r}: expected device.tag, e.g. {known}")
    path = spool_file(spool_path)
    if not path.exists():
        raise FileNotFoundError(f"no spool at {path}: the appliance has not stored any data there yet")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        return history_from_conn(conn, tags[tag_key].device, tag_key, since_ns, until_ns)
    finally:
        conn.close()


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> int:
    """Seconds in a duration like ``90s``, ``10m``, ``2h``, ``7d``, ``1w`` (for ``--since``)."""
    t = text.strip().lower()
    if len(t) >= 2 and t[-1] in _UNITS_S:
        try:
            n = float(t[:-1])
        except ValueError:
            n = -1
        if n > 0:
            return int(n * _UNITS_S[t[-1]])
    raise ValueError(f"duration {text!r}: expected a positive number and a unit s, m, h, d or w, e.g. 10m")


def format_history(ts: np.ndarray, values: np.ndarray, quality: np.ndarray) -> list[str]:
    """One line per sample for the CLI: ISO time (UTC, ms), value, quality name."""
    from edge.core.model import QUALITY_NAMES

    stamps = np.asarray(ts, "datetime64[ns]").astype("datetime64[ms]").astype(str)
    return [f"{t}Z  {v:.10g}  {QUALITY_NAMES.get(int(q), str(q))}"
            for t, v, q in zip(stamps, values.tolist(), quality.tolist(), strict=True)]
