"""OPC UA Alarms and Conditions (Part 9) over the appliance's one alarm engine.

Each configured alarm (:mod:`edge.intelligence.alarms`) is a condition instance: an object
``<alarm>#condition`` of type ExclusiveLimitAlarmType (limit alarms) or OffNormalAlarmType (bit,
state, quality and offline alarms) under its source (the tag's node, or the device's), linked by
HasCondition, with a ``ShelvingState`` object. Every state change of the engine becomes one event
of that type, emitted by the Server object, carrying ConditionId (NodeId), ConditionName,
SourceNode/SourceName, Severity, Retain (any state but NORMAL), ActiveState, AckedState,
ConfirmedState, LimitState (HighHigh/High/Low/LowLow), ShelvingState, Message, Comment and
ClientUserId. There is one alarm state: the engine's; OPC UA and the HTTP API show and change the
same one.

Methods (role-checked: the operator role; a viewer gets BadUserAccessDenied; each call, allowed
or refused, is appended to the appliance's audit log, the same file as writes):

* ``Acknowledge(EventId, Comment)`` / ``Confirm(EventId, Comment)`` on the condition: the EventId
  must be the condition's latest (else BadEventIdUnknown); nothing to acknowledge or confirm is
  BadConditionBranchAlreadyAcked / BadConditionBranchAlreadyConfirmed.
* ``TimedShelve(ShelvingTime ms)``, ``OneShotShelve()``, ``Unshelve()`` on the ShelvingState
  object: the API's shelving (a one-shot shelve lasts until unshelved or the API's maximum, 7 days).
* ``ConditionRefresh(SubscriptionId)`` (and ConditionRefresh2): asyncua's own, which re-sends the
  last event of every retained condition between RefreshStart and RefreshEnd.

asyncua fence (pinned to 2.1): :func:`install` sets ``iserver.bind_condition_methods`` (the
library's ConditionRefresh; before ``Server.init``) and wraps ``InternalSession.call`` once per
process so that method callbacks can learn the calling session's user (a context variable; the
library passes none). Tests: ``tests/outputs/opcua/test_opcua_conditions.py`` with asyncua and
node-opcua.
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.common import events
from asyncua.common.node import Node
from asyncua.server.internal_session import InternalSession

from edge.intelligence.alarms import Alarm, AlarmEngine, AlarmError, AlarmEvent

if TYPE_CHECKING:
    from edge.outputs.opcua.server import OpcUaServer

log = logging.getLogger(__name__)
SC = ua.StatusCodes
MAX_ONE_SHOT_S = 7 * 86400  # the API's longest shelving
_TYPES = {"limit": ua.ObjectIds.ExclusiveLimitAlarmType}
_OFF_NORMAL = ua.ObjectIds.OffNormalAlarmType
_LIMIT_STATE = {"HH": "HighHigh", "H": "High", "L": "Low", "LL": "LowLow"}
_CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar("edge_opcua_caller", default=None)
_library_call = InternalSession.call


async def _call_with_caller(self: InternalSession, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
    token = _CALLER.set(getattr(self, "user", None))
    try:
        return await _library_call(self, params)
    finally:
        _CALLER.reset(token)


def install(server: Any) -> None:
    """Before ``Server.init``: the library's ConditionRefresh, and the caller's user for method calls."""
    server.iserver.bind_condition_methods = True
    if InternalSession.call is not _call_with_caller:
        InternalSession.call = _call_with_caller


def condition_nodeid(ns: int, alarm: str) -> ua.NodeId:
    return ua.NodeId(f"{alarm}#condition", ns, ua.NodeIdType.String)


def shelving_nodeid(ns: int, alarm: str) -> ua.NodeId:
    return ua.NodeId(f"{alarm}#condition.ShelvingState", ns, ua.NodeIdType.String)


class OpcUaConditions:
    """The engine's alarms as condition instances on one OPC UA server (see the module docstring).

    ``engine()`` gives the current alarm engine (it is replaced on a reload); ``role(user)`` the
    edge role of an asyncua user; ``audit(entry)`` appends to the audit log. Events are queued
    (bounded; overflow counted) and sent in order by one task.
    """

    def __init__(self, engine: Callable[[], AlarmEngine], audit: Callable[[dict], None] | None = None,
                 maxsize: int = 1000) -> None:
        self.engine = engine
        self.audit = audit
        self.queue: asyncio.Queue[AlarmEvent] = asyncio.Queue(maxsize)
        self.opcua: OpcUaServer | None = None
        self.sent = self.dropped = self.errors = 0
        self.calls = {"ok": 0, "refused": 0}
        self._templates: dict[int, Any] = {}
        self._event_ids: dict[str, bytes] = {}  # alarm -> EventId of its latest event
        self._nodes: dict[str, ua.NodeId] = {}
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, opcua: OpcUaServer) -> None:
        self.opcua = opcua
        self.build()
        session = opcua.server.iserver.isession  # type: ignore[union-attr]
        for method, fn in ((ua.ObjectIds.AcknowledgeableConditionType_Acknowledge, self._acknowledge),
                           (ua.ObjectIds.AcknowledgeableConditionType_Confirm, self._confirm),
                           (ua.ObjectIds.ShelvedStateMachineType_TimedShelve, self._timed_shelve),
                           (ua.ObjectIds.ShelvedStateMachineType_OneShotShelve, self._one_shot_shelve),
                           (ua.ObjectIds.ShelvedStateMachineType_Unshelve, self._unshelve)):
            session.add_method_callback(ua.NodeId(method), fn)
        self._task = asyncio.create_task(self._run(), name="opcua-conditions")
        now = time.time_ns()
        for alarm in self.engine().alarms.values():  # standing alarms (after a restart of the server)
            if alarm.state != "NORMAL":
                self.put(_event_of(alarm, "refresh", now))

    def build(self) -> None:
        """One condition object (and its ShelvingState) per alarm of the current engine; gone ones removed."""
        opcua = self.opcua
        if opcua is None or opcua._factory is None:
            return
        f, ns = opcua._factory, opcua.ns
        alarms = self.engine().alarms
        for name in [n for n in self._nodes if n not in alarms]:
            f.remove(self._nodes.pop(name))
        for name, alarm in alarms.items():
            if name in self._nodes:
                continue
            source = self._source_node(alarm)
            typedef = _TYPES.get(alarm.config.kind, _OFF_NORMAL)
            nd = f.add_object(source, condition_nodeid(ns, name), name, folder=False, reftype="HasCondition",
                              description=alarm.text(), typedef=ua.NodeId(typedef))
            f.add_object(nd.nodeid, shelving_nodeid(ns, name), "ShelvingState", folder=False,
                         reftype="HasComponent", typedef=ua.NodeId(ua.ObjectIds.ShelvedStateMachineType))
            self._nodes[name] = nd.nodeid

    def _source_node(self, alarm: Alarm) -> ua.NodeId:
        opcua = self.opcua
        assert opcua is not None
        key = alarm.config.tag
        source = (opcua.tag_nodeid(key) if key else None) or opcua.device_nodeid(alarm.device)
        if source is not None:
            return source
        assert opcua._site_node is not None
        return opcua._site_node.nodeid

    def put(self, event: AlarmEvent) -> None:
        if self.opcua is None:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------------ events

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._send(event)
                self.sent += 1
            except Exception:  # noqa: BLE001 - count and go on; the other outputs still have the event
                self.errors += 1
                log.exception("OPC UA condition event for %s failed", event.alarm)

    async def _template(self, typedef: int) -> Any:
        ev = self._templates.get(typedef)
        if ev is None:
            server = self.opcua.server if self.opcua is not None else None
            assert server is not None, "events are built for a started OPC UA server only"
            ev = await events.get_event_obj_from_type_node(Node(server.iserver.isession, ua.NodeId(typedef)))
            ev.add_property("NodeId", None, ua.VariantType.NodeId)  # ConditionId
            ev.add_property("LimitState/CurrentState", None, ua.VariantType.LocalizedText)
            ev.add_property("ShelvingState/CurrentState", None, ua.VariantType.LocalizedText)
            self._templates[typedef] = ev
        return copy.deepcopy(ev)

    async def _send(self, e: AlarmEvent) -> None:
        opcua = self.opcua
        if opcua is None or opcua.server is None:
            return
        alarm = self.engine().alarms.get(e.alarm)
        if alarm is None or e.alarm not in self._nodes:
            return
        ev = await self._template(_TYPES.get(e.kind, _OFF_NORMAL))
        event_id = uuid.uuid4().bytes
        self._event_ids[e.alarm] = event_id
        t = datetime.fromtimestamp(e.ts_ns / 1e9, UTC)
        ns = opcua.ns
        fields: dict[str, Any] = {
            "EventId": event_id, "Time": t, "ReceiveTime": datetime.now(UTC), "Message": ua.LocalizedText(e.message),
            "SourceNode": self._source_node(alarm), "SourceName": e.tag or e.device, "Severity": e.severity,
            "NodeId": condition_nodeid(ns, e.alarm), "ConditionName": e.alarm,
            "ConditionClassName": ua.LocalizedText(e.kind), "Retain": e.state != "NORMAL",
            "EnabledState": ua.LocalizedText("Enabled"), "EnabledState/Id": True,
            "ActiveState": ua.LocalizedText("Active" if e.active else "Inactive"), "ActiveState/Id": e.active,
            "ActiveState/EffectiveDisplayName": ua.LocalizedText(f"{e.level or ''} {e.state}".strip()),
            "AckedState": ua.LocalizedText("Acknowledged" if e.acked else "Unacknowledged"), "AckedState/Id": e.acked,
            "ConfirmedState": ua.LocalizedText("Confirmed" if alarm.confirmed else "Unconfirmed"),
            "ConfirmedState/Id": alarm.confirmed, "SuppressedOrShelved": e.shelved,
            "ShelvingState/CurrentState": ua.LocalizedText("TimedShelved" if e.shelved else "Unshelved"),
            "LimitState/CurrentState": ua.LocalizedText(_LIMIT_STATE.get(e.level or "", "")) if e.kind == "limit"
            else None,
            "Comment": ua.LocalizedText(e.comment), "ClientUserId": e.user, "Quality": ua.StatusCode(SC.Good),
            "LastSeverity": e.severity, "BranchId": ua.NodeId(),
        }
        if e.kind == "limit":
            limits = alarm.config.limits()
            for key, name in (("HH", "HighHighLimit"), ("H", "HighLimit"), ("L", "LowLimit"), ("LL", "LowLowLimit")):
                if key in limits:
                    fields[name] = float(limits[key])
        for name, value in fields.items():
            if name in ev.data_types:
                setattr(ev, name, value)
        ev.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        await opcua.server.iserver.isession.subscription_service.trigger_event(ev)

    # ------------------------------------------------------------------ methods

    def _alarm_of(self, parent: ua.NodeId, suffix: str) -> str | None:
        ident = parent.Identifier if isinstance(parent.Identifier, str) else ""
        if self.opcua is None or parent.NamespaceIndex != self.opcua.ns or not ident.endswith(suffix):
            return None
        name = ident[: -len(suffix)]
        return name if name in self._nodes else None

    def _caller(self) -> tuple[str, str]:
        user = _CALLER.get()
        users = self.opcua.users if self.opcua is not None else None
        role = users.role(user).value if users is not None else "viewer"
        return (getattr(user, "name", None) or "anonymous"), role

    def _audit(self, action: str, alarm: str, user: str, role: str, result: str, comment: str = "",
               **extra: object) -> None:
        if self.audit is not None:
            start = time.time_ns()
            self.audit({"ts": start, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9)),
                        "user": user, "source": "opcua", "role": role, "action": action, "alarm": alarm,
                        "result": result, "comment": comment, **extra})

    def _do(self, action: str, parent: ua.NodeId, suffix: str, fn: Callable[[AlarmEngine, str, str], object],
            comment: str = "", event_id: bytes | None = None, **extra: object) -> ua.StatusCode:
        """Role check, EventId check, the engine call, the audit entry: one method call."""
        name = self._alarm_of(parent, suffix)
        if name is None:
            return ua.StatusCode(SC.BadNodeIdInvalid)
        user, role = self._caller()
        status = SC.Good
        message = ""
        if role != "operator":
            status, message = SC.BadUserAccessDenied, f"role {role!r} may not {action}"
        elif event_id is not None and event_id != self._event_ids.get(name):
            status, message = SC.BadEventIdUnknown, "not the condition's latest EventId"
        else:
            try:
                fn(self.engine(), name, user)
            except AlarmError as exc:
                message = str(exc)
                status = {"acknowledge": SC.BadConditionBranchAlreadyAcked,
                          "confirm": SC.BadConditionBranchAlreadyConfirmed,
                          "unshelve": SC.BadConditionNotShelved}.get(action, SC.BadInvalidState)
        self.calls["ok" if status == SC.Good else "refused"] += 1
        self._audit(action, name, user, role, "GOOD" if status == SC.Good else _status_name(status),
                    comment or message, **extra)
        if status != SC.Good:
            log.info("OPC UA %s of %s by %s refused: %s", action, name, user, message)
        return ua.StatusCode(status)

    async def _acknowledge(self, parent: ua.NodeId, event_id: ua.Variant, comment: ua.Variant) -> ua.StatusCode:
        text = _text(comment)
        return self._do("acknowledge", parent, "#condition",
                        lambda eng, name, user: eng.acknowledge(name, user, text), text, _bytes(event_id))

    async def _confirm(self, parent: ua.NodeId, event_id: ua.Variant, comment: ua.Variant) -> ua.StatusCode:
        text = _text(comment)
        return self._do("confirm", parent, "#condition",
                        lambda eng, name, user: eng.confirm(name, user, text), text, _bytes(event_id))

    async def _timed_shelve(self, parent: ua.NodeId, shelving_ms: ua.Variant) -> ua.StatusCode:
        ms = float(shelving_ms.Value if isinstance(shelving_ms, ua.Variant) else shelving_ms)
        if not 0 < ms <= MAX_ONE_SHOT_S * 1000:
            return ua.StatusCode(SC.BadShelvingTimeOutOfRange)
        return self._do("shelve", parent, "#condition.ShelvingState",
                        lambda eng, name, user: eng.shelve(name, ms / 1000, user), duration_s=ms / 1000)

    async def _one_shot_shelve(self, parent: ua.NodeId) -> ua.StatusCode:
        return self._do("shelve", parent, "#condition.ShelvingState",
                        lambda eng, name, user: eng.shelve(name, MAX_ONE_SHOT_S, user), duration_s=MAX_ONE_SHOT_S)

    async def _unshelve(self, parent: ua.NodeId) -> ua.StatusCode:
        return self._do("unshelve", parent, "#condition.ShelvingState",
                        lambda eng, name, user: eng.unshelve(name, user))


def _event_of(alarm: Alarm, transition: str, ts: int) -> AlarmEvent:
    c = alarm.config
    return AlarmEvent(ts, alarm.name, transition, alarm.state, alarm.active, alarm.acked, alarm.shelved(ts), c.kind,
                      c.tag, alarm.device, alarm.level, alarm.value, c.priority, alarm.severity, alarm.text())


def _text(v: Any) -> str:
    v = v.Value if isinstance(v, ua.Variant) else v
    return v.Text or "" if isinstance(v, ua.LocalizedText) else str(v or "")


def _bytes(v: Any) -> bytes | None:
    v = v.Value if isinstance(v, ua.Variant) else v
    return bytes(v) if v is not None else None


def _status_name(code: int) -> str:
    for name, value in vars(ua.StatusCodes).items():
        if value == code and not name.startswith("_"):
            return name
    return hex(code)
