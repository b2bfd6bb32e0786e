"""Local historian reads: the spool's stored poll batches of one tag over a time range.

With no InfluxDB configured the spool keeps every batch for ``retention_s`` (rows are stored
as already sent), with InfluxDB it keeps acknowledged rows for the same time, so both
``edge history CONFIG TAG --since 10m`` and the OPC UA history read from here.

A read scans the batches of one device in the time range (index ``(kind, source, ts_ns)``)
and picks the tag out of each batch's arrays; unsent rows are included.
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.core.model import QUALITY_DTYPE, Plant
from edge.storage.spool import KIND_SAMPLES, PlantTags, Spool, _plant_tags, decode_samples

SPOOL_FILE = "spool.db"


def spool_file(spool_path: str | Path) -> Path:
    """The database file: ``spool_path`` itself, or ``spool.db`` inside it when it is a directory."""
    p = Path(spool_path)
    return p / SPOOL_FILE if p.is_dir() else p


def read_history(
    spool_path: str | Path, plant: Plant, tag_key: str, since_ns: int, until_ns: int,
    max_values: int = 0, newest_first: bool = False,
) -> HistoryArrays:
    """``(ts_ns int64, values float64, quality uint8, texts)`` of tag ``device.tag`` with since <= ts < until.

    ``texts`` is None for numeric tags; for a string tag it lists each sample's text (None where
    the sample had none) and ``values`` are NaN. ``max_values`` (0: all) caps the count, taken
    from the oldest end, or from the newest end with ``newest_first`` (then in that order).
    Raises KeyError naming the known tags when ``tag_key`` is not in the plant, FileNotFoundError
    when there is no spool file.
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
        return history_from_conn(conn, tags[tag_key].device, tag_key, since_ns, until_ns, max_values,
                                 newest_first, is_string=tags[tag_key].dtype == "string")
    finally:
        conn.close()


class HistoryArrays(NamedTuple):
    """One tag's raw history: parallel arrays, and the texts of a string tag (None otherwise)."""

    ts: np.ndarray  # int64 ns, source timestamps
    values: np.ndarray  # float64 (NaN for string tags and for samples without a value)
    quality: np.ndarray  # uint8 Quality
    texts: list[str | None] | None = None


def history_from_conn(
    conn: sqlite3.Connection, device: str, tag_key: str, since_ns: int, until_ns: int,
    max_values: int = 0, newest_first: bool = False, is_string: bool = False,
) -> HistoryArrays:
    """The same read on an open connection (the running spool's own reader for OPC UA history).

    Stops reading rows once ``max_values`` samples are found (0: no cap)."""
    plants: dict[int, PlantTags] = {}
    ids: dict[int, int | None] = {}
    ts_out: list[int] = []
    val_out: list[np.ndarray] = []
    q_out: list[np.ndarray] = []
    texts: list[str | None] | None = [] if is_string else None
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        "SELECT ts_ns, plant, blob FROM batches WHERE kind = ? AND source = ? AND ts_ns >= ? AND ts_ns < ? "
        f"ORDER BY ts_ns {order}, seq {order}", (KIND_SAMPLES, device, since_ns, until_ns))
    for ts, pid, blob in rows:
        if pid not in ids:
            site, tags_json = conn.execute("SELECT site, tags FROM plants WHERE id = ?", (pid,)).fetchone()
            plants[pid] = _plant_tags(pid, site, tags_json)
            ids[pid] = plants[pid].tag_id(tag_key)
        tid = ids[pid]
        if tid is None:
            continue
        d = decode_samples(blob)
        hit = np.flatnonzero(d.tag_ids == tid)
        if len(hit):
            if newest_first:
                hit = hit[::-1]
            ts_out.extend([ts] * len(hit))
            val_out.append(d.values[hit])
            q_out.append(d.quality[hit])
            if texts is not None:
                texts.extend((d.texts or {}).get(tid) for _ in hit)
            if max_values and len(ts_out) >= max_values:
                break
    if not ts_out:
        return HistoryArrays(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, QUALITY_DTYPE), texts)
    n = max_values or len(ts_out)
    return HistoryArrays(np.asarray(ts_out[:n], np.int64), np.concatenate(val_out)[:n], np.concatenate(q_out)[:n],
                         texts[:n] if texts is not None else None)


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


def format_history(ts: np.ndarray, values: np.ndarray, quality: np.ndarray,
                   texts: list[str | None] | None = None, dtype: str = "float64") -> list[str]:
    """One line per sample for the CLI: ISO time (UTC, ns), value in full precision, quality name.

    Numbers print as the shortest text that reads back to the same double (84.6, not
    84.60000000000001 nor a rounded 10 digits); unscaled integers and bools as integers;
    strings quoted as JSON strings."""
    from edge.core.model import QUALITY_NAMES

    stamps = np.asarray(ts, "datetime64[ns]").astype(str)
    out = []
    for i, (t, v, q) in enumerate(zip(stamps, values.tolist(), quality.tolist(), strict=True)):
        text = texts[i] if texts is not None else None
        out.append(f"{t}Z  {format_value(v, dtype, text)}  {QUALITY_NAMES.get(int(q), str(q))}")
    return out


def format_value(value: float, dtype: str, text: str | None = None) -> str:
    """A history value as text: see :func:`format_history`."""
    if dtype == "string":
        return json.dumps(text) if text is not None else "null"
    if value != value:
        return "nan"
    if dtype == "bool":
        return "true" if value else "false"
    if dtype not in ("float32", "float64") and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)


def history_json(tag_key: str, h: HistoryArrays, dtype: str,
                 text_of: Callable[[float], str | None] | None = None) -> list[dict[str, object]]:
    """``edge history --json``: one object per sample (ts_ns, time, value, quality; with ``text_of``,
    e.g. ``TagInfo.text_of``, also ``text``: the state name of an enumeration, the set bits' names)."""
    from edge.core.model import QUALITY_NAMES

    stamps = np.asarray(h.ts, "datetime64[ns]").astype(str)
    out: list[dict[str, object]] = []
    for i, (t, stamp, v, q) in enumerate(zip(h.ts.tolist(), stamps, h.values.tolist(), h.quality.tolist(),
                                             strict=True)):
        value: object
        if dtype == "string":
            value = h.texts[i] if h.texts is not None else None
        elif v != v:
            value = None
        elif dtype == "bool":
            value = bool(v)
        elif dtype not in ("float32", "float64") and v.is_integer():
            value = int(v)
        else:
            value = v
        row = {"tag": tag_key, "ts_ns": t, "time": stamp + "Z", "value": value,
               "quality": QUALITY_NAMES.get(int(q), str(q))}
        if text_of is not None:
            row["text"] = text_of(v) if v == v else None
        out.append(row)
    return out


def spool_history(spool: Spool, tag_key: str, since_ns: int, until_ns: int, max_values: int = 0,
                  newest_first: bool = False) -> HistoryArrays:
    """:class:`HistoryArrays` of one tag from a running spool (OPC UA and API history; blocking)."""
    tags = spool.plant.tag_by_key()
    if tag_key not in tags:
        raise KeyError(f"unknown tag {tag_key!r}")
    return history_from_conn(spool.reader(), tags[tag_key].device, tag_key, since_ns, until_ns, max_values,
                             newest_first, is_string=tags[tag_key].dtype == "string")
