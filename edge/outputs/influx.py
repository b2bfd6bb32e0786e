"""InfluxDB export: line-protocol encoding of spooled batches and the forwarder that sends them.

Schema (docs/influx-schema.md): one line per poll batch,
``<device|plugin>,site=S,bus=B,device=D[,plugin=P] <tag>=<value>,q_<tag>=<quality>i <ts_ns>``;
closed windows go to ``edge_window`` (tag ``window``), health records to ``edge_health``.

:class:`InfluxForwarder` owns one thread that reads unsent rows from the :class:`~edge.storage.spool.Spool`,
encodes them, and writes them with influxdb-client's synchronous v2 write API (gzip). Only
rows the server acknowledged (2xx) are acked in the spool. Network errors, 5xx and 429 are
retried with capped exponential back-off, each retry a small probe (at most ``PROBE_POINTS``)
until one succeeds; 401/403/404 (wrong token, org, bucket or URL
path) are reported in ``stats()`` and retried only after ``client_error_retry_ms``, the data
staying in the spool; 400/422 (data refused) are bisected down to the offending rows, which
are marked rejected in the spool and counted; 413 halves the batch.

Rows appended within ``live_window_ms`` are live and go first; older rows (the backlog after
an outage or a restart) are added to each request at ``backfill_points_per_s``.

Write API: ``api: auto`` asks ``/ping`` once (and again after a 404): a server whose
``X-Influxdb-Version`` is 1.x gets ``/write?db=&rp=&precision=ns`` (user and password as
HTTP basic auth), any other the v2 endpoint. A server that is down is probed at most every
``retry_max_ms`` (10 s) and the spool drains as soon as it answers.

State (``stats()['state']``): ``ok`` (writing, or nothing to write), ``retrying`` (the server
is down: connection refused, timeout, 5xx, 429), ``refused`` (a 4xx that retrying will not
fix: token, database, bucket, URL path), ``stopped``. ``last_error`` says why in words and
names the URL. The sending thread is supervised (:mod:`edge.core.supervise`).
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, compress
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import urllib3

try:  # Intel ISA-L's deflate: the same gzip stream at ~3x zlib's speed (docs/decisions.md)
    from isal import isal_zlib as _deflate

    def _compressobj(level: int) -> Any:
        return _deflate.compressobj(_isal_level(level), _deflate.DEFLATED, 31)
except ImportError:  # a platform without an isal wheel: zlib, same format
    import zlib as _deflate  # type: ignore[no-redef]

    def _compressobj(level: int) -> Any:
        return _deflate.compressobj(level, _deflate.DEFLATED, 31)

try:  # compiled line protocol of sample batches (edge/outputs/_lineproto.pyx); LineEncoder.samples otherwise
    from edge.outputs._lineproto import encode_health as encode_health_compiled
    from edge.outputs._lineproto import encode_samples as encode_samples_compiled
except ImportError as exc:  # pragma: no cover - the extension is built by setup.py
    encode_samples_compiled = None  # type: ignore[assignment]
    encode_health_compiled = None  # type: ignore[assignment]
    warnings.warn(f"edge.outputs.influx: compiled line protocol encoder not available ({exc}); formatting every "
                  "point in Python. Build with `pip install .`.", RuntimeWarning, stacklevel=2)

from edge.config.storage import InfluxConfig, SpoolConfig
from edge.core.model import DeviceDiagnostics, Plant
from edge.core.supervise import SupervisedThread
from edge.storage.spool import (
    HEALTH_MANY,
    KIND_ALARM,
    KIND_HEALTH,
    KIND_SAMPLES,
    KIND_WINDOWS,
    HealthTable,
    PlantTags,
    Row,
    Spool,
    decode_alarm,
    decode_health,
    decode_health_many,
    decode_health_table,
    decode_samples,
    decode_windows,
    is_health_table,
    key_order,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- line protocol


def escape_key(s: str) -> str:
    """Escape a measurement, tag key/value or field key for line protocol (newlines become spaces)."""
    return s.replace("\n", " ").replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def escape_str(s: str) -> str:
    """A string field value, quoted."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class _Layout:
    """Per plant version: the line prefix of each device and each tag's field keys."""

    prefix: dict[str, str]  # device -> "meas,site=..,bus=..,device=..[,plugin=..] "
    window_prefix: dict[str, str]  # device -> "edge_window,site=..,bus=..,device=..[,plugin=..]"
    field: list[str]  # tag id -> "name="
    qfield: list[str]  # tag id -> "q_name="
    is_string: list[bool]
    prefix_b: dict[str, bytes]  # the same as UTF-8, for the compiled encoder
    field_b: list[bytes]
    qfield_b: list[bytes]


class LineEncoder:
    """Turns spooled rows into line protocol (bytes), one line per poll batch.

    NaN and infinite values have no line-protocol form: their value field is left out, the
    ``q_<tag>`` field still says why (a Bad quality). Values are float fields, quality codes
    integer fields, string tags string fields.
    """

    def __init__(self, spool: Spool, config: InfluxConfig) -> None:
        self.spool = spool
        self.config = config
        self._layouts: dict[int, _Layout] = {}
        self._health_prefix = f"{escape_key(config.health_measurement)},site="
        self._keys: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._sources_b: dict[str, bytes] = {}

    def layout(self, plant_id: int) -> _Layout:
        lay = self._layouts.get(plant_id)
        if lay is None:
            lay = self._layouts[plant_id] = self._build(self.spool.plant_tags(plant_id))
        return lay

    def _build(self, pt: PlantTags) -> _Layout:
        prefix: dict[str, str] = {}
        wprefix: dict[str, str] = {}
        for dev, bus, plugin in zip(pt.device, pt.bus, pt.plugin, strict=True):
            if dev in prefix:
                continue
            meas = plugin if (self.config.measurement == "plugin" and plugin) else dev
            tags = f"site={escape_key(pt.site)},bus={escape_key(bus)},device={escape_key(dev)}"
            if plugin:
                tags += f",plugin={escape_key(plugin)}"
            prefix[dev] = f"{escape_key(meas)},{tags} "
            wprefix[dev] = f"{escape_key(self.config.window_measurement)},{tags}"
        field = [escape_key(n) + "=" for n in pt.name]
        qfield = ["q_" + escape_key(n) + "=" for n in pt.name]
        return _Layout(
            prefix=prefix,
            window_prefix=wprefix,
            field=field,
            qfield=qfield,
            is_string=[d == "string" for d in pt.dtype],
            prefix_b={k: v.encode() for k, v in prefix.items()},
            field_b=[f.encode() for f in field],
            qfield_b=[f.encode() for f in qfield],
        )

    def encode(self, row: Row) -> str:
        """Line protocol for one spooled row ('' if it holds nothing encodable)."""
        if row.kind == KIND_SAMPLES:
            return self.samples(row)
        return self._other(row)

    def encode_bytes(self, row: Row) -> bytes:
        """:meth:`encode` as UTF-8 bytes; sample rows without strings go through the compiled encoder."""
        if row.kind == KIND_SAMPLES and encode_samples_compiled is not None:
            d = decode_samples(row.blob)
            if not d.texts:
                lay = self.layout(row.plant)
                return encode_samples_compiled(lay.prefix_b[row.source], lay.field_b, lay.qfield_b, d.tag_ids,
                                               d.values, d.quality, str(row.ts_ns).encode())
        if (row.kind == KIND_HEALTH and row.source == HEALTH_MANY and encode_health_compiled is not None
                and is_health_table(row.blob)):
            t = decode_health_table(row.blob)
            site = self.spool.plant_tags(row.plant).site
            return encode_health_compiled(f"{self._health_prefix}{escape_key(site)},source=".encode(),
                                          list(map(self._source_b, t.sources)),
                                          [(self._key(k) + "=").encode() for k in t.keys], t.values,
                                          str(row.ts_ns).encode())
        return self.encode(row).encode()

    def _other(self, row: Row) -> str:
        if row.kind == KIND_WINDOWS:
            return self.windows(row)
        if row.kind == KIND_HEALTH:
            return self.health(row)
        if row.kind == KIND_ALARM:
            return self.alarm(row)
        raise ValueError(f"unknown spool row kind {row.kind} (seq {row.seq})")

    def samples(self, row: Row) -> str:
        d = decode_samples(row.blob)
        lay = self.layout(row.plant)
        fk, qk, iss = lay.field, lay.qfield, lay.is_string
        ids = d.tag_ids.tolist()
        vals = d.values.tolist()
        finite = np.isfinite(d.values).tolist()
        parts = []
        for i, v, ok, q in zip(ids, vals, finite, d.quality.tolist(), strict=True):
            if ok:
                parts.append(f"{fk[i]}{v!r}")
            elif iss[i] and d.texts and i in d.texts:
                parts.append(fk[i] + escape_str(d.texts[i]))
            parts.append(f"{qk[i]}{q}i")
        if not parts:
            return ""
        return f"{lay.prefix[row.source]}{','.join(parts)} {row.ts_ns}"

    def windows(self, row: Row) -> str:
        wb = decode_windows(row.blob, row.source)
        lay = self.layout(row.plant)
        pt = self.spool.plant_tags(row.plant)
        window_tag = ",window=" + escape_key(row.source) + " "
        names = list(wb.stats)
        cols = [wb.stats[k].tolist() for k in names]
        lines: dict[tuple[str, int], list[str]] = {}
        for j, (tid, start) in enumerate(zip(wb.tag_ids.tolist(), wb.start_ns.tolist(), strict=True)):
            fields = lines.setdefault((pt.device[tid], start), [])
            base = lay.field[tid][:-1]
            for k, col in zip(names, cols, strict=True):
                v = col[j]
                if math.isfinite(v):
                    fields.append(f"{base}_{k}={v!r}")
        return "\n".join(f"{lay.window_prefix[dev]}{window_tag}{','.join(f)} {start}"
                         for (dev, start), f in lines.items() if f)

    def health(self, row: Row) -> str:
        """``edge_health`` lines: one for a source's row, one per source for a HEALTH_MANY row."""
        prefix = f"{self._health_prefix}{escape_key(self.spool.plant_tags(row.plant).site)},source="
        if row.source == HEALTH_MANY and is_health_table(row.blob):
            return self.health_table(decode_health_table(row.blob), prefix, row.ts_ns)
        records = decode_health_many(row.blob) if row.source == HEALTH_MANY else [(row.source, decode_health(row.blob))]
        lines = []
        for source, fields in records:
            body = ",".join(f"{self._key(k)}={v!r}" for k, v in fields.items() if math.isfinite(v))
            if body:
                lines.append(f"{prefix}{escape_key(source)} {body} {row.ts_ns}")
        return "\n".join(lines)

    def health_table(self, table: HealthTable, prefix: str, ts_ns: int) -> str:
        """The lines of a health table: the same bytes as its records' dicts give in :meth:`health`
        (``key=repr(value)`` in key order, NaN and infinite values left out, no line without fields).
        Every cell becomes its ``key=value`` text in two C-level maps; a source's line joins its
        finite cells (all of them when the row has no NaN, the common case)."""
        n, k = table.values.shape
        if n == 0 or k == 0:
            return ""
        cells = list(map(str.__add__, [self._key(key) + "=" for key in table.keys] * n,
                         map(float.__repr__, table.values.ravel().tolist())))
        finite = np.isfinite(table.values)
        tail = f" {ts_ns}"
        names = list(map(self._source, table.sources))
        if finite.all():
            return "\n".join([f"{prefix}{names[i]} {','.join(cells[i * k:i * k + k])}{tail}" for i in range(n)])
        lines = []
        for i, ok in enumerate(finite.tolist()):
            body = ",".join(compress(cells[i * k:i * k + k], ok))
            if body:
                lines.append(f"{prefix}{names[i]} {body}{tail}")
        return "\n".join(lines)

    def _source_b(self, source: str) -> bytes:
        """:meth:`_source` as UTF-8 (the compiled encoder's input), cached the same way."""
        out = self._sources_b.get(source)
        if out is None:
            out = self._source(source).encode()
            if len(self._sources_b) < 65536:
                self._sources_b[source] = out
        return out

    def _source(self, source: str) -> str:
        """A source name escaped once (the same devices every health tick)."""
        return _escaped_once(self._sources, source, 65536)

    def _key(self, key: str) -> str:
        """A field key escaped once (health records repeat the same few dozen keys)."""
        return _escaped_once(self._keys, key, 4096)

    def alarm(self, row: Row) -> str:
        """One ``edge_alarms`` line: tags ``ALARM_TAGS`` (when set), every other key a field (docs/influx-schema.md)."""
        rec = decode_alarm(row.blob)
        site = self.spool.plant_tags(row.plant).site
        tags = f"{ALARM_MEASUREMENT},site={escape_key(site)},alarm={escape_key(row.source)}"
        tags += "".join(f",{k}={escape_key(str(rec[k]))}" for k in ALARM_TAGS if rec.get(k) not in (None, ""))
        fields = []
        for k, v in rec.items():
            if k in ALARM_TAGS or k == "alarm" or v is None:
                continue
            if isinstance(v, bool):
                fields.append(f"{escape_key(k)}={int(v)}i")
            elif isinstance(v, int):
                fields.append(f"{escape_key(k)}={v}i")
            elif isinstance(v, float):
                if math.isfinite(v):
                    fields.append(f"{escape_key(k)}={v!r}")
            else:
                fields.append(f"{escape_key(k)}={escape_str(str(v))}")
        return f"{tags} {','.join(fields)} {row.ts_ns}" if fields else ""


def _escaped_once(cache: dict[str, str], text: str, limit: int) -> str:
    """``escape_key(text)``, kept in ``cache`` (up to ``limit`` entries) for the next time."""
    out = cache.get(text)
    if out is None:
        out = escape_key(text)
        if len(cache) < limit:
            cache[text] = out
    return out


#: Measurement and tag keys of alarm records (the other keys of a record are fields).
ALARM_MEASUREMENT = "edge_alarms"
ALARM_TAGS = ("device", "tag", "kind", "priority")


def health_fields(stats: dict[str, object], prefix: str = "") -> dict[str, float]:
    """The numeric entries of a ``stats()`` dict, flattened (``dropped_points.max_bytes``)."""
    out: dict[str, float] = {}
    for k, v in stats.items():
        if isinstance(v, bool):
            out[prefix + k] = float(v)
        elif isinstance(v, int | float):
            out[prefix + k] = float(v)
        elif isinstance(v, dict):
            out.update(health_fields(v, f"{prefix}{k}."))
    return out


def diagnostics_fields(diag: DeviceDiagnostics) -> dict[str, float]:
    """``edge_health`` fields of one device (its poll latency, errors and state), for ``append_health``."""
    fields = {
        "state": float(int(diag.state)), "polls_ok": diag.polls_ok, "polls_failed": diag.polls_failed,
        "requests": diag.requests, "timeouts": diag.timeouts, "crc_errors": diag.crc_errors,
        "overruns": diag.overruns, "latency_p50_ms": diag.latency_p50_ms, "latency_p99_ms": diag.latency_p99_ms,
        "jitter_p99_ms": diag.jitter_p99_ms, "hook_errors": diag.hook_errors, "holes": diag.holes,
        "unreadable_points": diag.unreadable_points, "holes_healed": diag.holes_healed,
        "exceptions": sum(diag.exceptions.values()),
    }
    fields.update({f"exception_{code}": n for code, n in diag.exceptions.items()})
    return {k: float(v) for k, v in fields.items()}


#: The fields of every device read straight from DeviceDiagnostics, in diagnostics_fields' order;
#: ``exceptions`` (their sum) and the ``exception_<code>`` fields follow them.
DIAGNOSTICS_KEYS = ("state", "polls_ok", "polls_failed", "requests", "timeouts", "crc_errors", "overruns",
                    "latency_p50_ms", "latency_p99_ms", "jitter_p99_ms", "hook_errors", "holes",
                    "unreadable_points", "holes_healed")
_diagnostics_state = attrgetter("state")
_diagnostics_values = attrgetter(*DIAGNOSTICS_KEYS[1:])  # ints and floats (numpy converts an IntEnum slowly)


def diagnostics_table(diags: Sequence[DeviceDiagnostics]) -> HealthTable | None:
    """The ``diagnostics_fields`` of every device as one table, without a dict per device: the
    fixed fields in one ``np.fromiter`` over attribute tuples, ``exception_<code>`` columns for the
    codes any device has (NaN for the others). None if the devices' codes have no common order
    (then each device's dict is needed to keep its line's field order: ``append_health_many``)."""
    n, k = len(diags), len(DIAGNOSTICS_KEYS)
    excs = [d.exceptions for d in diags]
    codes = key_order(e for e in excs if e)
    if codes is None:
        return None
    values = np.empty((n, k + 1 + len(codes)))
    values[:, 0] = list(map(int, map(_diagnostics_state, diags)))
    values[:, 1:k] = np.fromiter(chain.from_iterable(map(_diagnostics_values, diags)), np.float64,
                                 n * (k - 1)).reshape(n, k - 1)
    values[:, k] = 0.0
    values[:, k + 1:] = np.nan
    for i, e in enumerate(excs):
        if e:
            row = values[i]
            row[k] = sum(e.values())
            for code, count in e.items():
                row[k + 1 + codes[code]] = count
    return HealthTable([*DIAGNOSTICS_KEYS, "exceptions", *(f"exception_{c}" for c in codes)],
                       [d.name for d in diags], values)


def append_diagnostics(spool: Spool, ts_ns: int, diags: Sequence[DeviceDiagnostics]) -> bool:
    """Queue every device's ``edge_health`` record of one tick: as health tables (no dict per device),
    or, when the devices' exception codes have no common order, as dicts (``append_health_many``
    then keeps each line's field order by writing JSON rows)."""
    if not diags:
        return True
    table = diagnostics_table(diags)
    if table is not None:
        return spool.append_health_table(ts_ns, table)
    return spool.append_health_many(ts_ns, [(d.name, diagnostics_fields(d)) for d in diags])


# ----------------------------------------------------------------------------- the forwarder

PROBE_POINTS = 1000  # at most this many points per request while the server is down (see _pick)

CONFIG_ERRORS = {401: "token refused (401)", 403: "token lacks write permission (403)",
                 404: "org, bucket or URL path not found (404)"}
CONFIG_ERRORS_V1 = {401: "user or password refused (401)", 403: "user lacks write permission (403)",
                    404: "database or retention policy not found, or no /write on this server (404)"}
STATES = ("starting", "ok", "retrying", "refused", "stopped")


USER_AGENT = "ot-edge-appliance-forwarder"


class HttpStatusError(Exception):
    """The server answered a write with a status outside 2xx (``body``: the start of its answer)."""

    def __init__(self, status: int, reason: str, body: str = "", headers: Any = None) -> None:
        super().__init__(f"HTTP {status}: {body or reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers or {}


class ServerRejected(Exception):
    """The server refused a request with a 4xx that retrying will not fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(slots=True)
class ForwarderCounters:
    requests: int = 0
    points_sent: int = 0
    rows_sent: int = 0
    bytes_sent: int = 0  # uncompressed line protocol
    retries: int = 0
    server_down: int = 0  # connection errors, timeouts, 5xx, 429
    config_errors: int = 0  # 401/403/404: reported, data kept
    rejected_rows: int = 0  # 400/422: data refused, kept in the spool marked rejected
    backfill_points: int = 0
    undecodable_rows: int = 0  # rows whose blob or tag table cannot be encoded: marked rejected
    internal_errors: int = 0  # bugs or unexpected data: logged with a traceback, retried
    state: str = "starting"  # one of STATES
    activity: str = "idle"  # idle or sending (while ok)
    last_error: str = ""  # in words, naming the URL
    last_error_status: int = 0
    last_ok_ns: int = 0
    down_since_ns: int = 0  # first failed attempt of the current outage (0: not down)


class InfluxForwarder:
    """Sends the spool's unsent rows to InfluxDB from one thread; acks only what the server took.

    ``start()`` from the app (any thread); ``await stop()`` on the loop finishes or abandons
    the request in flight within the timeout (its rows stay unsent) and stops the thread.
    ``clock`` (monotonic seconds) and ``wall_ns`` are injectable for tests.
    """

    def __init__(
        self,
        spool: Spool,
        config: InfluxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.spool = spool
        self.config = config
        self.encoder = LineEncoder(spool, config)
        self.clock = clock
        self.wall_ns = wall_ns
        self.c = ForwarderCounters()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marks: deque[tuple[float, int]] = deque()  # (monotonic time, spool.last_seq)
        self._live_after = 0  # rows with seq > this are live
        self._tokens = 0.0
        self._tokens_t = 0.0
        self._max_points = config.batch_max_points
        self._probing = False  # the last attempt found the server down: send small requests until one succeeds
        self._api: str | None = None if config.api == "auto" else config.api
        self._server_version = ""
        self._http: urllib3.PoolManager | None = None
        self._supervisor: SupervisedThread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Create the client and start the sending thread; rows already spooled are the backlog."""
        cfg = self.config
        # both write APIs are plain HTTP POSTs through urllib3 (no influxdb-client: docs/decisions/spool.md)
        self._http = urllib3.PoolManager(num_pools=2, maxsize=1, retries=False,
                                         timeout=urllib3.Timeout(total=cfg.timeout_ms / 1000))
        self._live_after = self.spool.last_seq
        self._tokens_t = self.clock()
        self._supervisor = SupervisedThread("influx-forwarder", self._run, stopping=self._stop.is_set,
                                            sleep=self._stop.wait)
        self._supervisor.start()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the thread (bounded by ``timeout_s``); True when it stopped in time."""
        self._stop.set()
        self.spool.new_data.set()
        ok = True
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
            ok = not self._supervisor.is_alive()
        if ok and self._http is not None:
            self._http.clear()
        self.c.state = "stopped"
        return ok

    async def stop(self, timeout_s: float = 10.0) -> bool:
        import asyncio

        return await asyncio.to_thread(self.close, timeout_s)

    def stats(self) -> dict[str, Any]:  # a status document: numbers, words, nested documents
        c = self.c
        return {
            "state": c.state, "requests": c.requests, "points_sent": c.points_sent, "rows_sent": c.rows_sent,
            "bytes_sent": c.bytes_sent, "retries": c.retries, "server_down": c.server_down,
            "config_errors": c.config_errors, "rejected_rows": c.rejected_rows,
            "backfill_points": c.backfill_points, "internal_errors": c.internal_errors,
            "undecodable_rows": c.undecodable_rows, "last_error": c.last_error,
            "last_error_status": c.last_error_status, "last_ok_ns": c.last_ok_ns,
            "down_since_ns": c.down_since_ns, "activity": c.activity, "url": self.config.url,
            "api": self._api or "auto", "server_version": self._server_version,
            "thread": self._supervisor.health.as_dict() if self._supervisor else {"state": "new", "crashes": 0},
        }

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        backoff = self.config.retry_initial_ms / 1000
        while not self._stop.is_set():
            self.spool.new_data.clear()
            rows, n_backlog = self._pick()
            if not rows:
                self.c.activity = "idle"
                if self.c.state == "starting":
                    self.c.state = "ok"
                self.spool.new_data.wait(max(self.config.batch_max_age_ms / 1000, 0.05))
                continue
            wait = self._age_wait(rows, n_backlog)
            if wait > 0:
                self._stop.wait(wait)
                continue
            self.c.activity = "sending"
            backfilled = sum(r.n for r in rows[:n_backlog])
            outcome, pause = self._attempt(rows, backoff)
            rows = []  # a failed attempt's rows are not held through the pause
            if outcome == "ok":
                backoff = self.config.retry_initial_ms / 1000
                self._probing = False
                self.c.backfill_points += backfilled
                if self.c.state != "ok":
                    log.warning("influx: %s takes data again (%s api); %d points waiting in the spool",
                                self.config.url, self._api, self.spool.stats()["unsent_points"])
                self.c.state, self.c.down_since_ns = "ok", 0
                continue
            if outcome == "down":
                backoff = min(backoff * 2, self.config.retry_max_ms / 1000)
                self._probing = True
            self._stop.wait(pause)

    def _attempt(self, rows: list[Row], backoff: float) -> tuple[str, float]:
        """Send ``rows``: ("ok", 0), or ("down" | "config", seconds to pause before the next attempt).

        The exception of a failed attempt is reduced to counters and text here, and its traceback
        is cleared (:func:`_release`): urllib3's frames and the exception reference each other, so
        without that every failed attempt's request (rows, line protocol, gzip body) stayed in
        memory until the garbage collector's next pass, which the app's settled thresholds make rare.
        """
        try:
            self._send(rows)
        except ServerRejected as e:
            _release(e)
            if e.status == 404 and self.config.api == "auto" and self._redetect():
                return "down", 0.0  # the server speaks the other write API: try again at once
            return "config", self._config_error(e)
        except (HttpStatusError, urllib3.exceptions.HTTPError, OSError) as e:
            _release(e)
            return "down", self._server_down(e, backoff)
        except Exception as e:  # noqa: BLE001 - contained: counted, reported, retried with back-off
            self.c.internal_errors += 1
            log.exception("influx: internal error while sending")
            _release(e)
            return "down", self._server_down(e, backoff)
        return "ok", 0.0

    def _pick(self) -> tuple[list[Row], int]:
        """Live rows first, then backlog rows as far as the backfill rate allows."""
        now = self.clock()
        self._marks.append((now, self.spool.last_seq))
        live_s = self.config.live_window_ms / 1000
        while self._marks and now - self._marks[0][0] >= live_s:
            self._live_after = max(self._live_after, self._marks.popleft()[1])
        # while the server is down, each retry is a small probe; full requests once one succeeds
        limit = min(self._max_points, PROBE_POINTS) if self._probing else self._max_points
        live = self.spool.unsent(self._live_after, None, limit)
        room = limit - sum(r.n for r in live)
        backlog: list[Row] = []
        rate = self.config.backfill_points_per_s
        if rate > 0:
            self._tokens = min(self._tokens + (now - self._tokens_t) * rate, max(rate, self._max_points))
        self._tokens_t = now
        allow = room if rate <= 0 else min(room, int(self._tokens))
        if allow > 0 or (not live and (rate <= 0 or self._tokens >= 1)):
            backlog = self.spool.unsent(0, self._live_after, max(allow, 1))
            if rate > 0:
                self._tokens -= sum(r.n for r in backlog)
        return backlog + live, len(backlog)

    def _age_wait(self, rows: list[Row], n_backlog: int) -> float:
        """Seconds to wait for a fuller batch (0: send now)."""
        full = min(self._max_points, PROBE_POINTS) if self._probing else self._max_points
        if n_backlog or sum(r.n for r in rows) >= full or self._stop.is_set():
            return 0.0
        age_s = (self.wall_ns() - rows[0].ts_ns) / 1e9
        return max(0.0, min(self.config.batch_max_age_ms / 1000 - age_s, self.config.batch_max_age_ms / 1000))

    def _detect(self) -> str:
        """Which write API the server has: v1 when ``/ping`` names a 1.x version, else v2."""
        assert self._http is not None
        r = self._http.request("GET", f"{self.config.url}/ping")
        version = r.headers.get("X-Influxdb-Version", "") or ""
        self._server_version = version
        api = "v1" if version.lstrip("v").startswith("1.") else "v2"
        log.info("influx: %s is %s (version %s): writing through the %s API", self.config.url,
                 "InfluxDB 1.x" if api == "v1" else "a v2-compatible server", version or "not given", api)
        return api

    def _redetect(self) -> bool:
        """After a 404: ask ``/ping`` again; True when the server now needs the other API."""
        old = self._api
        try:
            self._api = self._detect()
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        return self._api != old

    def _send(self, rows: list[Row]) -> None:
        """Write rows in requests bounded by ``batch_max_bytes``; ack each request's rows on success."""
        if self._api is None:
            self._api = self._detect()
        chunk: list[Row] = []
        body = self._body()
        for r in rows:
            try:
                text = self.encoder.encode_bytes(r)
            except Exception as e:  # noqa: BLE001 - one undecodable row must not block the queue
                self._undecodable(r, e)
                continue
            if chunk and body.nbytes + 1 + len(text) > self.config.batch_max_bytes:
                self._write(chunk, body)
                chunk, body = [], self._body()
            chunk.append(r)
            if text:
                body.add(text)
        if chunk:
            self._write(chunk, body)

    def _body(self) -> _Body:
        return _Body(self.config.gzip_level if self.config.gzip else 0)

    def _write(self, rows: list[Row], body: _Body) -> None:
        """One request; on 400/422 bisect to find the refused rows; on 413 halve the batch."""
        nbytes = body.nbytes
        try:
            if nbytes:
                self.c.requests += 1
                self._post(body.finish())
        except HttpStatusError as e:
            status = int(e.status or 0)
            if status in (400, 422) or (status == 413 and len(rows) > 1):
                if status == 413:
                    self._max_points = max(1, self._max_points // 2)
                self._bisect(rows, status, _reason(e))
                return
            if 400 <= status < 500 and status not in (408, 429):
                known = CONFIG_ERRORS_V1 if self._api == "v1" else CONFIG_ERRORS
                raise ServerRejected(status, known.get(status, _reason(e))) from e
            raise
        self.spool.ack(rows)
        self.c.rows_sent += len(rows)
        self.c.points_sent += sum(r.n for r in rows)
        self.c.bytes_sent += nbytes
        self.c.last_ok_ns = self.wall_ns()

    def _post(self, data: bytes) -> None:
        """One synchronous request to the server's write endpoint (precision ns): ``POST
        /api/v2/write?org=&bucket=`` (token auth) or, for InfluxDB 1.x, ``POST /write?db=&rp=``
        (basic auth when a user is set, else the token). A non-2xx answer raises HttpStatusError."""
        assert self._http is not None
        cfg = self.config
        headers = {"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT}
        if cfg.gzip:
            headers["Content-Encoding"] = "gzip"
        token: str | None = cfg.resolved_token()
        if self._api == "v1":
            db, rp = cfg.v1_target()
            url = f"{cfg.url}/write?" + urlencode({"db": db, "precision": "ns"} | ({"rp": rp} if rp else {}))
            if cfg.username is not None:
                headers.update(urllib3.make_headers(basic_auth=f"{cfg.username}:{cfg.password or ''}"))
                token = None
        else:
            url = f"{cfg.url}/api/v2/write?" + urlencode({"org": cfg.org or "-", "bucket": cfg.bucket,
                                                          "precision": "ns"})
        if token:
            headers["Authorization"] = f"Token {token}"
        r = self._http.request("POST", url, body=data, headers=headers)
        if r.status >= 300:
            raise HttpStatusError(r.status, r.reason or "", r.data.decode("utf-8", "replace")[:300], r.headers)

    def _bisect(self, rows: list[Row], status: int, reason: str) -> None:
        if len(rows) == 1:
            self.c.rejected_rows += 1
            self.c.last_error, self.c.last_error_status = f"HTTP {status}: {reason} (seq {rows[0].seq})", status
            log.error("influx: server refused spool row %d: %s", rows[0].seq, self.c.last_error)
            self.spool.ack(rows, rejected=True)
            return
        mid = len(rows) // 2
        for part in (rows[:mid], rows[mid:]):
            body = self._body()
            for r in part:
                text = self.encoder.encode_bytes(r)
                if text:
                    body.add(text)
            self._write(part, body)

    def _undecodable(self, row: Row, e: Exception) -> None:
        """A row that cannot be encoded: kept in the spool marked rejected, counted, logged; never re-sent."""
        self.c.undecodable_rows += 1
        self.c.last_error = f"spool row {row.seq} cannot be encoded: {type(e).__name__}: {e}"[:300]
        log.error("influx: %s", self.c.last_error)
        self.spool.ack([row], rejected=True)

    def _config_error(self, e: ServerRejected) -> float:
        """Count and report a 4xx; the pause before the next attempt."""
        cfg = self.config
        self.c.config_errors += 1
        self.c.state = "refused"
        self.c.down_since_ns = self.c.down_since_ns or self.wall_ns()
        if self._api == "v1":
            db, rp = cfg.v1_target()
            where = f"database {db!r}, retention policy {rp or 'default'!r}"
        else:
            where = f"org {cfg.org!r}, bucket {cfg.bucket!r}"
        self.c.last_error, self.c.last_error_status = f"{cfg.url} refused the write: {e} ({where}); data kept " \
            f"in the spool, next try in {cfg.client_error_retry_ms / 1000:.0f} s", e.status
        log.error("influx: %s", self.c.last_error)
        return cfg.client_error_retry_ms / 1000

    def _server_down(self, e: Exception, backoff: float) -> float:
        """Count and report a failed attempt; the pause before the next one (at most ``retry_max_ms``)."""
        self.c.server_down += 1
        self.c.retries += 1
        status = int(getattr(e, "status", 0) or 0)
        retry_after = _retry_after(e)
        text = f"{self.config.url} not reachable: {describe_error(e, self.config.timeout_ms)}"[:300]
        changed = self.c.state != "retrying" or text != self.c.last_error
        self.c.state = "retrying"
        self.c.down_since_ns = self.c.down_since_ns or self.wall_ns()
        self.c.last_error, self.c.last_error_status = text, status
        pause = max(backoff, min(retry_after, self.config.retry_max_ms / 1000))
        if changed:
            log.warning("influx: %s; data kept in the spool, probing every %.0f s at most", text,
                        self.config.retry_max_ms / 1000)
        else:
            log.debug("influx: %s; retry in %.1f s", text, pause)
        return pause


class _Body:
    """One request's line protocol, compressed line by line as it is built (gzip, when ``level`` > 0).

    A request never exists as a list of lines, a joined string and a bytes copy at once: for a
    50,000-point backfill request that was 4.3 MB of transient memory above the rows themselves
    (0.5 MB now), and what a peak takes the allocator tends to keep.
    """

    __slots__ = ("nbytes", "_z", "_parts")

    def __init__(self, level: int) -> None:
        self.nbytes = 0  # uncompressed line protocol, newlines between lines included
        self._z = _compressobj(level) if level else None  # wbits 31: gzip format
        self._parts: list[bytes] = []

    def add(self, line: str | bytes) -> None:
        raw = line.encode() if isinstance(line, str) else line
        data = b"\n" + raw if self.nbytes else raw
        self.nbytes += len(data)
        if self._z is None:
            self._parts.append(data)
        else:
            out = self._z.compress(data)
            if out:
                self._parts.append(out)

    def finish(self) -> bytes:
        if self._z is not None:
            self._parts.append(self._z.flush())
            self._z = None
        return b"".join(self._parts)


def _isal_level(level: int) -> int:
    """zlib's levels 1-9 on ISA-L's 1-3 (1-3 -> 1, 4-6 -> 2, 7-9 -> 3); ISA-L's 1 compresses line
    protocol better than zlib's 1 (3.7x against 3.4x) at a third of its CPU."""
    return min(3, (level - 1) // 3 + 1)


def _release(e: BaseException) -> None:
    """Clear the frames of a handled exception's traceback (and of its causes and contexts).

    The frames hold the failed request's locals (rows, line protocol, gzip body), and urllib3
    keeps the exception in a local of one of those frames: a reference cycle that only the
    garbage collector can free. Cleared frames drop their locals, which breaks the cycle, so
    the memory goes back as soon as the exception is no longer referenced.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo and len(seen) < 32:  # an exception chain is short; bounded anyway
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        traceback.clear_frames(x.__traceback__)  # frames still executing (this thread's) are skipped
        todo += [x.__cause__, x.__context__]


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>:?\s*")


def describe_error(e: BaseException, timeout_ms: int = 0) -> str:
    """What went wrong with a request, in words: 'connection refused', 'no answer within 10 s',
    'HTTP 503: ...' (never an object's repr such as ``<urllib3.connection.HTTPConnection ...>``)."""
    reason = getattr(e, "reason", None)
    if isinstance(e, urllib3.exceptions.MaxRetryError) and isinstance(reason, BaseException):
        return describe_error(reason, timeout_ms)
    if isinstance(e, HttpStatusError) and e.status:
        return f"HTTP {e.status}: {_reason(e)}"
    if isinstance(e, urllib3.exceptions.NameResolutionError):
        return "host name not resolved"
    text = _OBJECT_REPR.sub("", str(e)).strip()
    # urllib3's NewConnectionError is a ConnectTimeoutError: read what it says before calling it a timeout
    if isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) and "refused" not in text.lower():
        return f"no answer within {timeout_ms / 1000:g} s" if timeout_ms else "timed out"
    low = text.lower()
    for needle, words in (("connection refused", "connection refused"), ("timed out", "timed out"),
                          ("connection reset", "connection reset by the server"),
                          ("no route to host", "no route to host"), ("remote end closed", "connection closed")):
        if needle in low:
            return words
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _reason(e: Exception) -> str:
    body = getattr(e, "body", None)
    if body:
        return str(body)[:300]
    return str(getattr(e, "reason", None) or e)[:300]


def _retry_after(e: Exception) -> float:
    headers = getattr(e, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0))
    except (TypeError, ValueError):
        return 0.0


def open_storage(
    plant: Plant, spool: SpoolConfig | None, influx: InfluxConfig | None
) -> tuple[Spool, InfluxForwarder | None]:
    """Build the spool (and the forwarder when InfluxDB is configured) from the site config.

    Not started: the app calls ``spool.start()`` then ``forwarder.start()``, and on shutdown
    ``await forwarder.stop()`` then ``await spool.stop()``. Without InfluxDB the spool is the
    local historian (rows stored as already sent, kept for ``retention_s``).
    """
    cfg = spool or SpoolConfig()
    sp = Spool(Path(cfg.path), plant, cfg, forwarding=influx is not None)  # absolute once loaded (edge.config.paths)
    return sp, (InfluxForwarder(sp, influx) if influx is not None else None)
