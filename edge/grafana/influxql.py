"""InfluxQL queries as grafana-foundation-sdk data queries, and Grafana's interpolation of them.

The SDK ships query types for Prometheus, Loki and others but none for InfluxDB; it documents
custom data queries as classes implementing ``cog.variants.Dataquery`` (``to_json``/``from_json``)
registered with the runtime, so that ``Dashboard.from_json`` decodes them back. That is what
:class:`InfluxQLQuery` is. :func:`interpolate` does what Grafana does to a raw InfluxQL query before
sending it (``$timeFilter``, ``$__interval``, template variables), so the tests can run every
panel's query against a real InfluxDB exactly as Grafana would.
"""
from __future__ import annotations

import re
import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE_TYPE = "influxdb"
ResultFormat = typing.Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of a panel (Grafana's InfluxDB data source, query language InfluxQL)."""

    def __init__(self, query: str = "", ref_id: str = "", alias: str | None = None,
                 result_format: ResultFormat = "time_series", datasource: DataSourceRef | None = None,
                 hide: bool | None = None) -> None:
        self.query = query
        self.ref_id = ref_id
        self.alias = alias
        self.result_format = result_format
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"refId": self.ref_id, "query": self.query, "rawQuery": True,
                                  "resultFormat": self.result_format}
        if self.alias is not None:
            out["alias"] = self.alias
        if self.datasource is not None:
            out["datasource"] = self.datasource.to_json()
        if self.hide is not None:
            out["hide"] = self.hide
        return out

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> InfluxQLQuery:
        unknown = set(data) - {"refId", "query", "rawQuery", "resultFormat", "alias", "datasource", "hide"}
        if unknown:
            raise ValueError(f"unknown keys in an InfluxQL target: {sorted(unknown)}")
        if data.get("rawQuery") is not True:
            raise ValueError("an InfluxQL target must be a raw query (rawQuery: true)")
        if data.get("resultFormat", "time_series") not in ("time_series", "table"):
            raise ValueError(f"resultFormat must be time_series or table, got {data.get('resultFormat')!r}")
        ds = data.get("datasource")
        return cls(query=data["query"], ref_id=data.get("refId", ""), alias=data.get("alias"),
                   result_format=data.get("resultFormat", "time_series"),
                   datasource=DataSourceRef.from_json(ds) if ds is not None else None, hide=data.get("hide"))


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder in the SDK's style: ``InfluxQL('SELECT ...').ref_id('A').alias('flow')``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def alias(self, alias: str) -> typing.Self:
        self._internal.alias = alias
        return self

    def table(self) -> typing.Self:
        self._internal.result_format = "table"
        return self

    def datasource(self, ref: DataSourceRef) -> typing.Self:
        self._internal.datasource = ref
        return self


def register() -> None:
    """Make ``Dashboard.from_json`` decode InfluxDB targets as :class:`InfluxQLQuery` (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json))


# ----------------------------------------------------------------------------- quoting


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, field or tag key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal (tag values in WHERE)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ----------------------------------------------------------------------------- Grafana's interpolation

_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def interpolate(query: str, t0_ns: int, t1_ns: int, interval: str, variables: dict[str, str]) -> str:
    """The query as Grafana's InfluxQL data source sends it for this time range and variable values.

    ``$timeFilter`` becomes ``time >= t0 AND time <= t1``, ``$__interval`` the interval, other
    ``$name`` / ``${name}`` / ``${name:regex}`` the variable's value (single values only, as the
    generated dashboards use). An unknown variable is an error, not left in the text.
    """
    builtins = {"timeFilter": f"time >= {t0_ns}ns AND time <= {t1_ns}ns", "__interval": interval,
                "interval": interval}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise KeyError(f"query uses ${name}, which is neither a Grafana macro nor one of the "
                           f"dashboard's variables ({', '.join(sorted(variables)) or 'none'})")
        value = variables[name]
        return re.escape(value) if fmt == "regex" else value

    return _VAR.sub(sub, query)
