"""Configuration models of the on-disk spool (``outputs.spool``) and the InfluxDB exporter
(``outputs.influxdb``).

The lead's site-config loader validates the raw ``outputs.spool`` / ``outputs.influxdb``
mappings with :class:`SpoolConfig` and :class:`InfluxConfig`; ``${ENV}`` references are
substituted before validation. Units are in the key names. Unknown keys are errors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config.paths import ConfigPath, DataPath


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SpoolConfig(_Model):
    """The durable on-disk spool: every batch lands here before anything is sent.

    With no InfluxDB configured the spool is the appliance's local historian: rows are kept
    for ``retention_s`` and ``edge history`` reads them.
    """

    path: DataPath = Field(Path("spool.db"), description="SQLite file, relative to runtime.data_dir, or absolute")
    commit_interval_ms: Annotated[int, Field(ge=1, le=10_000)] = Field(
        200, description="appends are buffered in RAM at most this long: what a power cut can lose")
    synchronous: Literal["full", "normal"] = Field(
        "full", description="full: fsync the WAL at every commit (survives a power cut); "
        "normal: survives a process crash, a power cut may lose the last commits")
    max_bytes: Annotated[int, Field(ge=64 << 10)] = Field(
        1 << 30, description="disk budget: database pages in use + WAL + journal (at least 64 KiB: an empty "
        "spool database with its indexes takes ~30 KiB); beyond it the oldest batches are dropped and counted")
    max_age_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="unsent batches older than this are dropped and counted (None: no age limit)")
    over_budget: Literal["drop_oldest", "thin"] = Field(
        "drop_oldest", description="beyond max_bytes: drop the oldest unsent batches, or first replace them "
        "by window statistics (count/min/max/mean/bad_count per tag and thin_window_s) and drop only if "
        "that is not enough; both are counted in stats()")
    thin_window_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    retention_s: Annotated[float, Field(ge=0)] = Field(
        7 * 86400.0, description="acknowledged batches are kept this long as local history (0: delete on ack)")
    rejected_retention_s: Annotated[float, Field(ge=0)] = Field(
        30 * 86400.0, description="rows the server refused (4xx on their data) or that cannot be encoded are "
        "kept this long for inspection, never re-sent")
    max_pending_bytes: Annotated[int, Field(ge=65536)] = Field(
        64 << 20, description="RAM bound for batches waiting for the writer thread; beyond it appends are "
        "refused and counted as drops (reason 'pending_overflow')")
    trim_interval_ms: Annotated[int, Field(ge=10, le=600_000)] = Field(
        1000, description="how often the budget and retention are enforced")


class InfluxConfig(_Model):
    """Where and how the forwarder writes: the v2 write API (``/api/v2/write``: InfluxDB 2.x, 3.x,
    1.8+, cloud, VictoriaMetrics) or the 1.x one (``/write``: InfluxDB 1.x, which has no v2 endpoint
    before 1.8). ``api: auto`` asks the server's ``/ping`` (header ``X-Influxdb-Version``)."""

    url: str = Field(description="http(s)://host:port of InfluxDB 1.x/2.x/3.x/cloud or a compatible server")
    api: Literal["auto", "v1", "v2"] = Field(
        "auto", description="auto: v1 when /ping says version 1.x, else v2; v1: /write?db=&rp=; v2: /api/v2/write")
    token: str | None = Field(None, description="API token (use ${INFLUX_TOKEN}); or token_file")
    token_file: ConfigPath | None = Field(None, description="file holding the token (first line); relative to the "
                                         "configuration's folder")
    org: str = Field("", description="organisation (ignored by InfluxDB 1.x)")
    bucket: str | None = Field(None, min_length=1, description="bucket (v2); on 1.x 'database/retention-policy' "
                               "is the default for database and retention_policy")
    database: str | None = Field(None, min_length=1, description="1.x: the database (default: bucket's first part)")
    retention_policy: str | None = Field(None, min_length=1, description="1.x: the retention policy (default: "
                                         "bucket's second part, else the database's default)")
    username: str | None = Field(None, description="1.x: user (use ${INFLUX_USER}); sent as HTTP basic auth")
    password: str | None = Field(None, description="1.x: password (use ${INFLUX_PASSWORD})")
    measurement: Literal["device", "plugin"] = Field(
        "device", description="one measurement per device (its name) or per plugin (the plugin id)")
    window_measurement: str = Field("edge_window", min_length=1)
    health_measurement: str = Field("edge_health", min_length=1)
    timeout_ms: Annotated[int, Field(ge=100, le=300_000)] = 10_000
    gzip: bool = True
    gzip_level: Annotated[int, Field(ge=1, le=9)] = Field(
        1, description="zlib's scale; compressed by ISA-L, whose levels 1-3 take 1-3, 4-6 and 7-9: 1 compresses "
        "line protocol ~3.7x at a third of zlib's level-1 CPU")
    batch_max_points: Annotated[int, Field(ge=1, le=1_000_000)] = 50_000
    batch_max_bytes: Annotated[int, Field(ge=1024, le=256 << 20)] = Field(
        8 << 20, description="bound on one request's uncompressed line protocol")
    batch_max_age_ms: Annotated[int, Field(ge=0, le=600_000)] = Field(
        0, description="live data wait at most this long (from their poll) for a fuller batch; 0: each spool "
        "commit is sent as soon as it is on disk (the spool's commit_interval_ms already batches)")
    backfill_points_per_s: Annotated[float, Field(ge=0)] = Field(
        100_000.0, description="rate for the backlog after an outage, on top of live data (0: unlimited)")
    live_window_ms: Annotated[int, Field(ge=0, le=3_600_000)] = Field(
        5000, description="batches appended within this time count as live and go before the backlog")
    retry_initial_ms: Annotated[int, Field(ge=10, le=600_000)] = 500
    retry_max_ms: Annotated[int, Field(ge=10, le=3_600_000)] = Field(
        10_000, description="a server that is down is probed at most this far apart; it drains as soon as it answers")
    client_error_retry_ms: Annotated[int, Field(ge=1000, le=86_400_000)] = Field(
        300_000, description="after a 4xx (bad token, org, bucket, data) the forwarder reports it and "
        "tries again only after this pause; the data stay in the spool")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"url must look like http://host:8086 or https://host, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> InfluxConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set either token or token_file, not both")
        if self.retry_max_ms < self.retry_initial_ms:
            raise ValueError("retry_max_ms must be >= retry_initial_ms")
        if self.bucket is None and self.database is None:
            raise ValueError("set bucket (InfluxDB 2.x/3.x, or 'database/retention-policy' on 1.x) or database (1.x)")
        if self.api == "v2" and self.bucket is None:
            raise ValueError("api v2 writes to a bucket: set bucket")
        return self

    def v1_target(self) -> tuple[str, str | None]:
        """(database, retention policy) for the 1.x write API."""
        db, _, rp = (self.bucket or "").partition("/")
        return self.database or db, self.retention_policy or (rp or None)

    def resolved_token(self) -> str:
        """The token from ``token``, the first line of ``token_file``, else $INFLUX_TOKEN ('' if unset)."""
        if self.token_file is not None:
            lines = Path(self.token_file).read_text(encoding="utf-8").strip().splitlines()
            if not lines:
                raise ValueError(f"token_file {self.token_file!r} is empty")
            return lines[0].strip()
        if self.token is not None:
            return self.token
        return os.environ.get("INFLUX_TOKEN", "")
