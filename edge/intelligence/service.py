"""Edge intelligence wired onto a running appliance: alarms, rules, the HTTP API and status page.

The one object the app builds: ``intel = Intelligence(app)``, then ``await intel.start()`` on
the app's loop after ``app.start()``, ``await intel.reload(loaded)`` after ``app.reload``,
``await intel.stop()`` before ``app.stop()``. It adds the alarm engine as a pipeline sink,
runs alarms' delays and rules every ``TICK_S``, sends every alarm state change to the
OPC UA server (condition events of :mod:`edge.outputs.opcua.conditions`, whose Acknowledge,
Confirm and shelving methods act on the same engine), the spool (``edge_alarms``) and the API's
event log, and serves the API with uvicorn as a task on the same loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from edge.api.ratelimit import RateLimiter
from edge.api.tokens import TokenTable, load_tokens
from edge.config.intelligence import ApiConfig
from edge.config.loader import LoadedConfig
from edge.core.model import DeviceState
from edge.intelligence.alarms import AlarmEngine, AlarmEvent
from edge.intelligence.rules import TICK_S, RuleEngine
from edge.outputs.opcua.conditions import OpcUaConditions

if TYPE_CHECKING:
    from edge.api.server import ApiServer
    from edge.runtime.app import Appliance

log = logging.getLogger("edge.intelligence.service")
EVENT_LOG_SIZE = 1000


def _slow_heads() -> dict[str, int]:
    from edge.api.server import HeadTimeoutH11

    return {"slow_request_head": HeadTimeoutH11.closed_slow} if HeadTimeoutH11.closed_slow else {}


#: Settings of the API's listener: a change restarts the API server on reload (the others apply in place).
API_SERVER_KEYS = ("enabled", "host", "port", "tls_cert_file", "tls_key_file", "max_connections")


def _server_settings(cfg: ApiConfig) -> tuple:
    return tuple(getattr(cfg, k) for k in API_SERVER_KEYS)


def alarm_record(e: AlarmEvent) -> dict[str, object]:
    """The spool record of one alarm state change (tags and fields of ``edge_alarms``, docs/influx-schema.md)."""
    return {"device": e.device, "tag": e.tag, "kind": e.kind, "priority": e.priority,
            "transition": e.transition, "state": e.state, "active": e.active, "acked": e.acked,
            "shelved": e.shelved, "severity": e.severity, "level": e.level, "value": e.value,
            "message": e.message, "user": e.user or None, "comment": e.comment or None}


class Intelligence:
    """Alarms, rules and the HTTP API of one appliance (see the module docstring for the call order)."""

    def __init__(self, app: Appliance):
        self.app = app
        self.loaded: LoadedConfig = app.loaded
        self.config: ApiConfig = self.loaded.config.api or ApiConfig(enabled=False)
        self.events: deque[AlarmEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self.api_counters: dict[str, int] = {}
        self.alarms = self._alarm_engine_without_listeners(self.loaded)
        self.opcua_events = OpcUaConditions(lambda: self.alarms, self._audit)
        self.alarms.listeners = self._listeners()
        self.refused: dict[str, int] = {}  # why -> API requests refused (body too large, no token, role...)
        self.rules = RuleEngine(app.plant, self.loaded.config.rules or [], lambda: self.app.store, app.writes)
        self.limiter = RateLimiter(self.config.write_rate_per_min, self.config.write_burst)
        self.tokens = self._tokens(self.loaded, self.config)
        self.api: ApiServer | None = None
        self._served: ApiConfig = self.config  # the settings the running API server was started with
        self._task: asyncio.Task | None = None
        self.started = False

    # ------------------------------------------------------------------ building

    def _alarm_engine_without_listeners(self, loaded: LoadedConfig) -> AlarmEngine:
        return AlarmEngine(loaded.plant, loaded.config.alarms or [], self._device_state, self._backlog_age)

    def _backlog_age(self) -> float | None:
        """Age of the oldest point not yet sent to the time-series server (None without a forwarder)."""
        outputs = getattr(self.app, "outputs", None)
        if outputs is None or outputs.forwarder is None:
            return None
        return float(outputs.spool.stats()["oldest_unsent_age_s"])

    def _listeners(self) -> list:
        return [self.events.append, self._spool_alarm, self.opcua_events.put]

    def _audit(self, entry: dict) -> None:
        """Alarm actions from OPC UA go to the audit log of writes (one log of who did what)."""
        audit = self.app.writes.audit
        if audit is not None:
            audit.append(entry)

    @staticmethod
    def _tokens(loaded: LoadedConfig, config: ApiConfig) -> TokenTable:
        if not config.tokens_file:
            return TokenTable({})
        path = Path(config.tokens_file)
        if not path.exists():  # edge check warns: no token is accepted until 'edge provision token' makes one
            return TokenTable({})
        return TokenTable(load_tokens(path))

    def _device_state(self, name: str) -> DeviceState | None:
        rt = self.app.devices.get(name)
        return rt.diag.state if rt is not None else None

    def _spool_alarm(self, e: AlarmEvent) -> None:
        outputs = self.app.outputs
        if outputs is not None:
            outputs.spool.append_alarm(e.alarm, e.ts_ns, alarm_record(e))

    def count(self, key: str) -> None:
        self.api_counters[key] = self.api_counters.get(key, 0) + 1

    def count_refused(self, reason: str) -> None:
        """One API request refused before it did anything (``edge_api_refused_total{reason}``)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def security_snapshot(self) -> dict[str, object]:
        """Policies and counters of the appliance's security (``GET /api/security``, docs/security.md)."""
        cfg = self.config
        out: dict[str, object] = {"api": {
            "policy": {"tls": cfg.tls, "max_body_bytes": cfg.max_body_bytes, "max_connections": cfg.max_connections,
                       "anonymous_role": cfg.anonymous_role, "metrics_public": cfg.metrics_public,
                       "write_rate_per_min": cfg.write_rate_per_min, "write_burst": cfg.write_burst,
                       "tokens": len(self.tokens.entries)},
            "refused": dict(self.refused) | _slow_heads()}}
        outputs = self.app.outputs
        if outputs is not None and outputs.opcua is not None:
            from edge.outputs.opcua.security import snapshot

            out["opcua"] = snapshot(outputs.opcua.security)
        return out

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Add the alarm sink, start the tick task, the OPC UA event sender and the API server."""
        self.app.pipeline.add("alarms", self.alarms)
        outputs = self.app.outputs
        if outputs is not None and outputs.opcua is not None:
            self.opcua_events.start(outputs.opcua)
        self._task = asyncio.create_task(self._tick_loop(), name="intelligence")
        if self.config.enabled:
            self.api = await self._start_api(self.config)
        self._served = self.config
        self.started = True

    async def _start_api(self, cfg: ApiConfig) -> ApiServer:
        """A new API server for ``cfg``, listening (raises OSError when its address cannot be bound)."""
        from edge.api.app import create_app
        from edge.api.server import ApiServer

        tls = (Path(cfg.tls_cert_file), Path(cfg.tls_key_file)) if cfg.tls_cert_file and cfg.tls_key_file else None
        api = ApiServer(create_app(self), cfg.host, cfg.port, tls=tls, max_connections=cfg.max_connections)
        await api.start()
        return api

    async def reload_api(self, loaded: LoadedConfig) -> str | None:
        """Restart the API server when a setting of its listener changed (``API_SERVER_KEYS``).

        Called first in a reload, before anything else changes: when the new address cannot be
        bound this raises OSError and the old server still serves. A new address is bound before
        the old server stops; the same address (TLS or connection limit changed) is released first
        and, should the new server fail, the old settings are served again. Polling never stops:
        the API is a task of its own. Returns the new URL, "stopped" (API disabled) or None (no change).
        """
        new = loaded.config.api or ApiConfig(enabled=False)
        old = self._served
        if not self.started or _server_settings(new) == _server_settings(old):
            return None
        running = self.api
        same_address = running is not None and new.enabled and new.port != 0 and (new.host, new.port) == (
            old.host, old.port)
        if same_address and running is not None:
            await running.stop()
            self.api = None
        try:
            server = await self._start_api(new) if new.enabled else None
        except BaseException:
            if same_address:
                try:
                    self.api = await self._start_api(old)
                except OSError:
                    log.exception("the API could not be started again on %s:%s", old.host, old.port)
            raise
        if running is not None and not same_address:
            await running.stop()
        self.api, self._served = server, new
        log.warning("reload: API server %s", f"restarted on {server.url}" if server else "stopped")
        return server.url if server is not None else "stopped"

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for part in (self.alarms, self.rules):
                try:
                    part.tick()
                except Exception:  # noqa: BLE001 - contained: logged, the loop goes on
                    log.exception("%s tick failed", type(part).__name__)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the API, the tick task, rule writes in flight and the event sender, each bounded."""
        self.started = False
        if self.api is not None:
            await self.api.stop(timeout_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.rules.stop(timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.opcua_events.stop(), timeout_s)
        self.app.pipeline.remove("alarms")

    async def reload(self, loaded: LoadedConfig) -> None:
        """New configuration (after ``app.reload``): engines rebuilt, live alarm and rule state kept by name.

        The API server itself was restarted by :meth:`reload_api` when its listener settings changed;
        tokens, roles, rate limits and the other request settings apply from here.
        """
        alarms = self._alarm_engine_without_listeners(loaded)
        alarms.take_over(self.alarms)
        alarms.listeners = self._listeners()
        rules = RuleEngine(loaded.plant, loaded.config.rules or [], lambda: self.app.store, self.app.writes)
        rules.take_over(self.rules)
        await self.rules.stop()
        self.loaded, self.alarms, self.rules = loaded, alarms, rules
        self.opcua_events.build()  # condition objects of added alarms; removed ones go
        new_api = loaded.config.api or ApiConfig(enabled=False)
        self.tokens = self._tokens(loaded, new_api)
        self.config = new_api
        self.limiter = RateLimiter(self.config.write_rate_per_min, self.config.write_burst)
        if self.started:
            self.app.pipeline.add("alarms", self.alarms)

    def not_ready(self) -> str | None:
        """Why the appliance is not ready (None when it is)."""
        if not self.started or not self.app.started_at:
            return "starting"
        diags = self.app.diagnostics()
        if diags and all(d.state == DeviceState.CONNECTING for d in diags):
            return "no device has answered yet"
        return None

    async def rebind_opcua(self, opcua) -> None:
        """After a reload restarted the OPC UA server: alarm conditions move to the new one."""
        await self.opcua_events.stop()
        self.opcua_events._nodes.clear()
        self.opcua_events.start(opcua)

    def delivery(self) -> dict | None:
        """Spool and forwarder status (None when the appliance runs without outputs)."""
        outputs = getattr(self.app, "outputs", None)
        return outputs.delivery() if outputs is not None else None

    @property
    def url(self) -> str:
        return self.api.url if self.api is not None else ""

    def uptime_s(self) -> float:
        return time.monotonic() - self.app.started_at if self.app.started_at else 0.0
