"""The OPC UA server of the appliance: the plant's address space, values, writes, history.

Integration (all calls on the application's asyncio loop)::

    server = OpcUaServer(plant, config, writer=write_path, history=ring_history,
                         aggregates=aggregator.opcua_specs())
    await server.start()                 # builds the address space, listens
    server.consume(batch)                # once per poll: SampleBatch -> values + StatusCodes
    server.consume_windows(wb, quality)  # once per closed-window batch (Aggregator.for_opcua)
    server.close_empty_windows(now_ns)   # once per collect: empty windows of tags whose source is Bad
    server.update_device(diagnostics)    # per-device Status object
    await server.reload(new_plant, aggregates=...)  # add/remove nodes; sessions and NodeIds stay
    await server.stop()

``writer(tag_id, value, user, source) -> WriteResult`` is awaited for every client write to a
writable tag by an operator (``source`` is ``"opcua"``; ``user`` the login name or
``"anonymous"``). It owns the device write, range check, read-back and the audit log; this
module refuses non-writable tags, viewers, wrong types and out-of-range values before calling
it, and maps its :class:`edge.core.model.WriteStatus` onto OPC UA StatusCodes.

``history(tag_id, t0_ns, t1_ns, max_values, newest_first) -> HistoryArrays`` (sync or async;
:meth:`edge.outputs.manager.Outputs.history`) serves HistoryRead, raw and processed, with
continuation points (:mod:`edge.outputs.opcua.history`); tags are marked Historizing and
HistoryRead-able only when it is given.

``aggregates`` maps tag ids to ``(window labels, statistics, grace_ns)`` (an
:class:`~edge.outputs.opcua.aggregates.AggregateSpec`): those tags get the variables of their
closed windows (:mod:`edge.outputs.opcua.aggregates`); other tags cost nothing.

The address space is built by :mod:`edge.outputs.opcua.model` and values flow through
:mod:`edge.outputs.opcua.fastpath`.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeValue, NodeData

from edge.config.opcua import OpcUaConfig
from edge.core.model import (
    DeviceDiagnostics,
    DeviceInfo,
    Plant,
    SampleBatch,
    TagInfo,
    WindowBatch,
    WriteResult,
    WriteStatus,
)
from edge.outputs.opcua import asyncua_adapter, lazy_nodes, security
from edge.outputs.opcua.aggregates import AggregateSpace, AggregateSpec
from edge.outputs.opcua.channel_guard import ChannelPolicy, current_channel
from edge.outputs.opcua.conditions import install as install_conditions
from edge.outputs.opcua.fastpath import FastPublisher
from edge.outputs.opcua.history import HistoryService
from edge.outputs.opcua.history import advertise as advertise_history
from edge.outputs.opcua.history import install as install_history
from edge.outputs.opcua.model import (
    APPLIANCE_STATUS_FIELDS,
    STATUS_FIELDS,
    WRITE,
    NodeFactory,
    appliance_status_values,
    tag_typedef,
)
from edge.outputs.opcua.security import EdgeUserManager, SecuritySetup, make_user_manager
from edge.outputs.opcua.status import DeviceStatus
from edge.outputs.opcua.virtual import VirtualPlant
from edge.security.trust import TrustListValidator
from edge.storage.history import HistoryArrays

log = logging.getLogger(__name__)
#: what the publisher keeps of a plant across a reload: Value records with monitored items, ValueAsText records
Records = tuple[dict[str, AttributeValue], dict[str, AttributeValue]]

Writer = Callable[[int, float | int | bool | str, str, str], Awaitable[WriteResult]]
#: ``refuse(target, value, user, source, role, status, reason, address=..., **extra)``: audits a write
#: refused before the write path (:meth:`edge.core.writes.WriteService.refuse`).
Refuser = Callable[..., object]
History = Callable[[int, int, int, int, bool], HistoryArrays | Awaitable[HistoryArrays]]

WRITE_STATUS_CODES: dict[WriteStatus, int] = {
    WriteStatus.GOOD: ua.StatusCodes.Good,
    WriteStatus.BAD_OUT_OF_RANGE: ua.StatusCodes.BadOutOfRange,
    WriteStatus.BAD_COMM_ERROR: ua.StatusCodes.BadCommunicationError,
    WriteStatus.BAD_TIMEOUT: ua.StatusCodes.BadTimeout,
    WriteStatus.BAD_USER_ACCESS_DENIED: ua.StatusCodes.BadUserAccessDenied,
    WriteStatus.BAD_NOT_WRITABLE: ua.StatusCodes.BadNotWritable,
    WriteStatus.BAD_TYPE_MISMATCH: ua.StatusCodes.BadTypeMismatch,
    WriteStatus.BAD_CONFIG_ERROR: ua.StatusCodes.BadConfigurationError,
}
_INT_RANGE = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
              "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}
ANONYMOUS = "anonymous"


class OpcUaServer:
    """The plant as an OPC UA server (see the module docstring for the call sequence)."""

    def __init__(self, plant: Plant, config: OpcUaConfig, *, writer: Writer | None = None,
                 history: History | None = None, tune_gc: bool = True,
                 aggregates: Mapping[int, AggregateSpec | tuple] | None = None,
                 refuse: Refuser | None = None) -> None:
        self.plant = plant
        self.config = config
        self.writer = writer
        self.refuse = refuse
        self.history = history
        self.tune_gc = tune_gc
        self.publisher = FastPublisher(fast=config.fast_path)
        self.aggregates = AggregateSpace(self.publisher)
        self._agg_specs = AggregateSpace.specs_by_key(plant, aggregates)
        self.server: Server | None = None
        self.ns = 0
        self.endpoint_url = ""
        self.validator: TrustListValidator | None = None
        self.users: EdgeUserManager | None = None
        self.channel_policy: ChannelPolicy | None = None
        self.security: SecuritySetup | None = None
        self.history_service: HistoryService | None = None
        self.build_s = 0.0
        self.writes = {"ok": 0, "refused": 0, "failed": 0}
        self._factory: NodeFactory | None = None
        self._virtual: VirtualPlant | None = None  # devices, tags and properties: built on demand
        self._tags_by_key: dict[str, TagInfo] = {}
        self._devices: dict[str, DeviceInfo] = {}  # devices whose Status object exists
        self._bus_nodes: dict[str, NodeData] = {}
        self._status_nodes: dict[str, dict[str, NodeData]] = {}  # the site's appliance Status
        self._device_status: dict[str, DeviceStatus] = {}  # each device's Status, built on demand
        self._status_last: dict[str, dict[str, object]] = {}
        self._site_node: NodeData | None = None
        self._original_write: Any = None
        self._gc_threshold: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Build the address space from the plant and start listening."""
        cfg = self.config
        self.users = make_user_manager(cfg)
        server = Server(user_manager=self.users)
        install_conditions(server)  # ConditionRefresh and the caller of method calls (alarms)
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(cfg.server_name)
        await server.set_application_uri(cfg.application_uri_for(self.plant.site))
        self.security = await security.configure(server, cfg, self.users)
        self.validator, self.channel_policy = self.security.validator, self.security.channel_policy
        await server.set_build_info(*build_info())
        server.subscribe_server_callback(CallbackType.PostRead, self._user_access_levels)
        iserver = server.iserver
        iserver.max_monitored_item_queue_size = cfg.max_queue_size
        iserver.max_unacked_messages_per_subscription = cfg.max_unacked_per_subscription
        iserver.max_connections = cfg.max_sessions
        if self.history is not None:
            self.history_service = HistoryService(self, self.history, cfg.history_max_values)
            install_history(iserver, self.history_service)
        await advertise_history(server, cfg.history_max_values if self.history is not None else None)
        self.ns = await server.register_namespace(cfg.namespace_for(self.plant.site))
        self.publisher.fast = fast = asyncua_adapter.acquire(cfg.fast_path)  # library patches: now, not at import
        library_log = logging.getLogger("asyncua.server.server")
        level = library_log.level
        try:
            self._setup_nodes(server, fast)
            library_log.setLevel(logging.CRITICAL)  # a failed listen is reported once, by the caller, not as a traceback
            await server.start()
        except BaseException:
            asyncua_adapter.release(fast)
            self.server = None
            raise
        finally:
            library_log.setLevel(level)
        security.after_start(server)  # before the loop runs again: no client has seen the endpoints
        self.endpoint_url = _bound_endpoint(server, cfg.endpoint)
        log.info("OPC UA server on %s: %d tags, address space built in %.2f s, %s path",
                 self.endpoint_url, len(self.plant.tags), self.build_s,
                 "fast" if self.publisher.fast else "library's plain")

    def _setup_nodes(self, server: Server, fast: bool) -> None:
        """Build the plant's address space and take over Write.

        On the fast path the plant's device, tag and property nodes are built on first access
        (:mod:`edge.outputs.opcua.lazy_nodes` replaces asyncua's node table: an internal of the
        tested version). On the library's plain path (``fast_path: false`` or an untested asyncua)
        the same nodes are built once and stored in asyncua's own table (~8 KB per tag)."""
        iserver = server.iserver
        self._factory = NodeFactory(iserver.aspace, self.ns)
        self._factory.spawn = self.publisher._spawn  # items of removed nodes are told (Bad_NodeIdUnknown)
        build = self._virtual_build
        table = lazy_nodes.install(iserver.aspace, self.ns, build) if fast else lazy_nodes.PlantNodes({}, self.ns, build)
        self._factory.virtual_table = table
        self._virtual = VirtualPlant(self._factory, self.publisher, table, stored=not fast)
        self.aggregates.factory = self._factory
        self._original_write = iserver.attribute_service.write
        iserver.attribute_service.write = self._handle_write
        self.server = server
        t0 = asyncio.get_running_loop().time()
        self._build(self.plant, carry=None, agg_carry=None)
        self.build_s = asyncio.get_running_loop().time() - t0

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the bound one when the endpoint asked for port 0)."""
        return urlparse(self.endpoint_url).port or 0

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
            asyncua_adapter.release(self.publisher.fast)
            if self.tune_gc:
                gc.unfreeze()
                if self._gc_threshold is not None:
                    gc.set_threshold(*self._gc_threshold)
                    self._gc_threshold = None

    async def reload(self, plant: Plant, aggregates: Mapping[int, AggregateSpec | tuple] | None = None) -> None:
        """Switch to a new plant: add and remove nodes; sessions, subscriptions and NodeIds stay.

        A tag that keeps its key keeps its node (and the monitored items on it); its metadata
        (unit, range, description, access) is refreshed in place. Removed tags' monitored items
        get BadNodeIdUnknown. ``aggregates`` are the new plant's (None: none); an aggregate
        variable that is still wanted keeps its node, its monitored items and its last window.
        """
        assert self._factory is not None, "start() first"
        if plant.site != self.plant.site:
            raise ValueError(f"reload cannot rename the site ({self.plant.site!r} -> {plant.site!r}); restart")
        agg_specs = AggregateSpace.specs_by_key(plant, aggregates)
        carry = self.publisher.snapshot(self.plant.tags)
        agg_carry = self.aggregates.snapshot()
        old_tags = self._tags_by_key
        new_tags = plant.tag_by_key()
        f = self._factory
        # removals run while the old plant still answers for its nodes: their monitored items get
        # BadNodeIdUnknown and the nodes other parts hung under them (Status, conditions) go too
        new_devices = {d.name: d for d in plant.devices}
        for name in list(self._devices):
            if name not in new_devices or new_devices[name].bus != self._devices[name].bus:
                f.remove(_sid(self.ns, name))
                del self._devices[name]
                status = self._device_status.pop(name, None)
                if status is not None:
                    status.detach()
        for key, tag in old_tags.items():
            new = new_tags.get(key)
            if (new is None or _shape(new) != _shape(tag) or new.device != tag.device or new.bus != tag.bus) \
                    and tag.device in self._devices:
                f.remove(_sid(self.ns, key))
        new_buses = {b.name for b in plant.buses} | {d.bus for d in plant.devices}
        for name in list(self._bus_nodes):
            if name not in new_buses:
                f.remove(self._bus_nodes.pop(name).nodeid)
        records = self.publisher.records_by_key(self.plant.tags)  # kept tags keep their monitored items
        self.aggregates.prune(plant, agg_specs)
        self._agg_specs = agg_specs
        self._build(plant, carry, agg_carry, records)
        self.plant = plant

    # ------------------------------------------------------------------ building

    def _build(self, plant: Plant, carry: dict[str, tuple[float, int, str | None, int, int]] | None,
               agg_carry: dict | None, records: Records | None = None) -> None:
        """Create every missing node of the plant (all of them on the first call) and bind the
        value path to it.

        The collector is paused meanwhile: the build allocates hundreds of thousands of
        long-lived objects and would otherwise trigger repeated full scans of them."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._bind(plant, carry, records)
            self._build_nodes(plant)
            self.aggregates.build(plant, self._agg_specs, {name: _sid(self.ns, name) for name in self._devices})
            self.aggregates.bind(plant, agg_carry)
            self._freeze_gc()
        finally:
            if was_enabled:
                gc.enable()

    def _build_nodes(self, plant: Plant) -> None:
        f = self._factory
        assert f is not None
        if self._site_node is None:
            self._site_node = f.add_object(
                ua.NodeId(ua.ObjectIds.ObjectsFolder), _sid(self.ns, "#site"), plant.site,
                description=f"site {plant.site}",
            )
            self._status_nodes["#site"] = f.add_appliance_status(self._site_node)
        historizing = self.history is not None
        bus_kind = {b.name: b.kind for b in plant.buses}
        for bus in [b.name for b in plant.buses] + [d.bus for d in plant.devices]:
            if bus not in self._bus_nodes:
                self._bus_nodes[bus] = f.add_object(self._site_node.nodeid, _sid(self.ns, f"#bus.{bus}"), bus,
                                                    description=bus_kind.get(bus, ""))
        orphans = [t.key for t in plant.tags if t.device not in {d.name for d in plant.devices}]
        if orphans:
            raise ValueError(f"tags of unknown devices (not in plant.devices): {orphans[:5]}")
        assert self._virtual is not None
        self._virtual.set_plant(plant, historizing, {name: nd.nodeid for name, nd in self._bus_nodes.items()})
        for dev in plant.devices:  # device and tag nodes are built on demand; Status objects are kept
            if dev.name not in self._devices:
                self._devices[dev.name] = dev
                f.add_forward_ref(self._bus_nodes[dev.bus], _sid(self.ns, dev.name), dev.name, "Organizes",
                                  "BaseObjectType", ua.NodeClass.Object)
                nodes = f.add_status(f.aspace[_sid(self.ns, dev.name)], dev)
                self._device_status[dev.name] = DeviceStatus([nodes[k].attributes[ua.AttributeIds.Value]
                                                              for k in STATUS_FIELDS])
            self._devices[dev.name] = dev

    def _bind(self, plant: Plant, carry: dict[str, tuple[float, int, str | None, int, int]] | None,
              records: Records | None) -> None:
        for i, tag in enumerate(plant.tags):
            if tag.id != i:
                raise ValueError(f"tag {tag.key} has id {tag.id} at index {i}: Plant.tags must be indexed by id")
        if records is None:  # the same plant bound again: monitored items stay on their tags
            records = self.publisher.records_by_key(self.plant.tags)
        self._tags_by_key = plant.tag_by_key()
        values, texts = records
        self.publisher.bind(plant.tags, carry, values, texts)

    def _freeze_gc(self) -> None:
        """Move the address space out of the collector's sight (it never becomes garbage), and
        collect less often: with a lean hot path, re-scanning the large address space was the
        main server cost (see docs/decisions/opcua.md)."""
        if not self.tune_gc:
            return
        gc.freeze()  # no collect first: the build ran with the collector paused, little garbage
        g0, g1, g2 = gc.get_threshold()
        if g0 < 20_000:
            self._gc_threshold = self._gc_threshold or (g0, g1, g2)
            gc.set_threshold(20_000, g1, g2)

    # ------------------------------------------------------------------ values

    def consume(self, batch: SampleBatch) -> int:
        """Publish one poll's samples (deadband at the source); returns the number of changes."""
        return self.publisher.consume(batch)

    def consume_windows(self, wb: WindowBatch, quality: np.ndarray | None = None) -> int:
        """Publish one batch of closed windows (the newest per tag, e.g. ``Aggregator.for_opcua``);
        ``quality`` (``Aggregator.window_quality``) says why a window has no good sample. Rows of
        tags without OPC UA aggregates are ignored. Returns the number of windows published."""
        return self.aggregates.consume(wb, quality)

    def close_empty_windows(self, now_ns: int) -> int:
        """After each collect: windows that closed empty while their tag's live quality is Bad are
        published as Count 0 with that StatusCode. Returns how many."""
        return self.aggregates.close_empty(now_ns)

    def update_device(self, diag: DeviceDiagnostics) -> None:
        """Refresh a device's Status object: changed fields notify their subscribers; the others
        are brought up to date when read (:mod:`edge.outputs.opcua.status`, issue 21)."""
        status = self._device_status.get(diag.name)
        if status is None:
            log.warning("OPC UA: diagnostics for unknown device %r ignored", diag.name)
            return
        status.update(diag, time.time_ns(), self.publisher)

    def update_appliance(self, delivery: dict) -> None:
        """Refresh the site's appliance Status object (spool, forwarder); only changes notify."""
        nodes = self._status_nodes.get("#site")
        if nodes is None:
            return
        last = self._status_last.setdefault("#site", {})
        now = datetime.now(UTC)
        for field, value in appliance_status_values(delivery).items():
            if last.get(field) == value:
                continue
            last[field] = value
            dv = ua.DataValue(ua.Variant(value, APPLIANCE_STATUS_FIELDS[field][1]), ua.StatusCode(), now, now)
            self.publisher.set_value(nodes[field].attributes[ua.AttributeIds.Value], dv)

    def tag_for_nodeid(self, nodeid: ua.NodeId) -> TagInfo | None:
        tid = self._virtual.tag_id(nodeid) if self._virtual is not None else None
        return self.plant.tags[tid] if tid is not None else None

    def tag_nodeid(self, key: str) -> ua.NodeId | None:
        """The NodeId of tag ``<device>.<tag>``, or None when the plant has no such tag."""
        return self._virtual.tag_nodeid(key) if self._virtual is not None else None

    def device_nodeid(self, name: str) -> ua.NodeId | None:
        """The NodeId of a device's node, or None when the plant has no such device."""
        return self._virtual.device_nodeid(name) if self._virtual is not None else None

    def _virtual_build(self, nodeid: ua.NodeId) -> NodeData | None:
        return self._virtual.build(nodeid) if self._virtual is not None else None

    def _user_access_levels(self, event: Any, _dispatcher: Any) -> None:
        """UserAccessLevel per session role: a viewer's session sees no write bit on any tag
        (asyncua answers with AccessLevel for everyone). Runs after each Read (PostRead callback)."""
        users = self.users
        if users is None or users.role(event.user).may_write:
            return
        results = event.response_params
        for i, rv in enumerate(event.request_params.NodesToRead):
            if rv.AttributeId != ua.AttributeIds.UserAccessLevel or self.tag_for_nodeid(rv.NodeId) is None:
                continue
            dv = results[i]
            if dv.Value is not None and isinstance(dv.Value.Value, int) and dv.Value.Value & WRITE:
                results[i] = ua.DataValue(ua.Variant(dv.Value.Value & ~WRITE, ua.VariantType.Byte), dv.StatusCode)

    def has_node(self, nodeid: ua.NodeId) -> bool:
        return self.server is not None and nodeid in self.server.iserver.aspace

    # ------------------------------------------------------------------ writes

    async def _handle_write(self, params: ua.WriteParameters, user: User | None = None) -> list[ua.StatusCode]:
        """asyncua's attribute-service write, with client writes to the plant's tags routed to the
        injected writer. The admin role only exists inside the process (the server-side Node API):
        its writes keep asyncua's behaviour."""
        if user is None or user.role == UserRole.Admin:
            return await self._original_write(params, User(role=UserRole.Admin))
        results: list[ua.StatusCode] = []
        for wv in params.NodesToWrite:
            tag = self.tag_for_nodeid(wv.NodeId)
            if tag is None or wv.AttributeId != ua.AttributeIds.Value:
                if wv.NodeId.NamespaceIndex == self.ns:
                    who = user.name or ANONYMOUS
                    results.append(ua.StatusCode(self._refuse(
                        str(wv.NodeId.Identifier), wv, who, self.users.role(user).value if self.users else "",
                        ua.StatusCodes.BadNotWritable, "only the values of writable tags can be written")))
                    continue
                one = ua.WriteParameters(NodesToWrite=[wv])
                results.extend(await self._original_write(one, user))
                continue
            status = await self._write_tag(tag, wv, user)
            results.append(ua.StatusCode(status))
        return results

    def _refuse(self, target: str, wv: ua.WriteValue, who: str, role: str, status: int, reason: str) -> int:
        """A write refused before the write path: counted and, with ``refuse``, audited (issue 15)."""
        self.writes["refused"] += 1
        if self.refuse is not None:
            channel = current_channel()
            variant = wv.Value.Value if wv.Value is not None else None
            self.refuse(target, variant.Value if variant is not None else None, who, "opcua", role,
                        _REFUSED_AS.get(status, WriteStatus.BAD_CONFIG_ERROR), reason,
                        address=channel.peer if channel is not None else "", status_code=ua.StatusCode(status).name)
        return status

    async def _write_tag(self, tag: TagInfo, wv: ua.WriteValue, user: User) -> int:
        assert self.users is not None
        who = user.name or ANONYMOUS
        role = self.users.role(user).value if user.name else ANONYMOUS
        if not tag.writable:
            return self._refuse(tag.key, wv, who, role, ua.StatusCodes.BadNotWritable, f"{tag.key} is not writable")
        if not self.users.role(user).may_write:
            log.info("OPC UA write to %s refused: %s may not write", tag.key, who)
            return self._refuse(tag.key, wv, who, role, ua.StatusCodes.BadUserAccessDenied,
                                f"{who} ({role}) may not write: the operator role is needed")
        if wv.IndexRange:
            return self._refuse(tag.key, wv, who, role, ua.StatusCodes.BadIndexRangeInvalid,
                                "an IndexRange cannot be written")
        value, status = _check_write_value(tag, wv.Value)
        if status != ua.StatusCodes.Good:
            return self._refuse(tag.key, wv, who, role, status, _refusal_reason(tag, wv, status))
        if self.writer is None:
            return self._refuse(tag.key, wv, who, role, ua.StatusCodes.BadNotWritable, "no write path")
        try:
            result = await asyncio.wait_for(self.writer(tag.id, value, who, "opcua"),
                                            self.config.write_timeout_ms / 1000)
        except TimeoutError:
            self.writes["failed"] += 1
            log.warning("OPC UA write to %s by %s timed out", tag.key, who)
            return ua.StatusCodes.BadTimeout
        except Exception:
            self.writes["failed"] += 1
            log.exception("OPC UA write to %s by %s failed in the write path", tag.key, who)
            return ua.StatusCodes.BadCommunicationError
        self.writes["ok" if result.ok else "failed"] += 1
        return WRITE_STATUS_CODES.get(result.status, ua.StatusCodes.BadCommunicationError)


_REFUSED_AS = {code: status for status, code in WRITE_STATUS_CODES.items()} | {
    ua.StatusCodes.BadIndexRangeInvalid: WriteStatus.BAD_TYPE_MISMATCH}


def _refusal_reason(tag: TagInfo, wv: ua.WriteValue, status: int) -> str:
    """Why a value was refused, in words, for the audit log."""
    variant = wv.Value.Value if wv.Value is not None else None
    sent = f"{variant.VariantType.name} {variant.Value!r}" if variant is not None else "no value"
    if status == ua.StatusCodes.BadTypeMismatch:
        return f"{sent} does not fit the {tag.dtype} tag {tag.key}"
    limits = f" [{tag.low:g}, {tag.high:g}]" if tag.low is not None and tag.high is not None else ""
    states = f", states {sorted(tag.enum)}" if tag.enum else ""
    return f"{sent} is outside what {tag.key} ({tag.dtype}{limits}{states}) takes"


_NUMERIC_VTYPES = {
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16, ua.VariantType.Int32,
    ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64, ua.VariantType.Float, ua.VariantType.Double,
}


def _check_write_value(tag: TagInfo, dv: ua.DataValue) -> tuple[Any, int]:
    """The written value converted to the tag's type, or the StatusCode refusing it.

    Bool tags take Boolean; string tags String; integer tags any integer variant (a Float or
    Double only when it is integral); float tags any numeric variant. Then the tag's range.
    """
    variant = dv.Value
    if variant is None or variant.Value is None or variant.is_array:
        return None, ua.StatusCodes.BadTypeMismatch
    vt, raw = variant.VariantType, variant.Value
    if tag.dtype == "bool":
        if vt != ua.VariantType.Boolean:
            return None, ua.StatusCodes.BadTypeMismatch
        return bool(raw), ua.StatusCodes.Good
    if tag.dtype == "string":
        if vt != ua.VariantType.String:
            return None, ua.StatusCodes.BadTypeMismatch
        return str(raw), ua.StatusCodes.Good
    if vt not in _NUMERIC_VTYPES or isinstance(raw, bool):
        return None, ua.StatusCodes.BadTypeMismatch
    if tag.dtype in _INT_RANGE:
        if isinstance(raw, float):
            if not raw.is_integer():
                return None, ua.StatusCodes.BadTypeMismatch
            raw = int(raw)
        lo, hi = _INT_RANGE[tag.dtype]
        if not lo <= raw <= hi:
            return None, ua.StatusCodes.BadOutOfRange
        value: Any = int(raw)
    else:
        value = float(raw)
        if not math.isfinite(value):
            return None, ua.StatusCodes.BadOutOfRange
        if vt == ua.VariantType.Float:  # a Float means its shortest decimal (9.7f is 9.7): on a 0.1 grid
            value = float(str(np.float32(value)))
    if tag.enum is not None and int(value) not in tag.enum:
        return None, ua.StatusCodes.BadOutOfRange
    if (tag.low is not None and value < tag.low) or (tag.high is not None and value > tag.high):
        return None, ua.StatusCodes.BadOutOfRange
    return value, ua.StatusCodes.Good


PRODUCT_URI = "urn:ot-edge-appliance"
MANUFACTURER = "OT edge appliance project"
PRODUCT_NAME = "OT edge appliance"


def build_info() -> tuple[str, str, str, str, str, datetime]:
    """BuildInfo of this product (not the library's "FreeOpcUa Python Server 1.0pre"): product URI,
    manufacturer, name, the installed distribution's version, build number and build date (when
    the installed package was built: its files' time)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("ot-edge-appliance")
        version = dist.version
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    built = datetime.fromtimestamp(Path(__file__).stat().st_mtime, UTC)
    return PRODUCT_URI, MANUFACTURER, PRODUCT_NAME, version, version, built


def _bound_endpoint(server: Server, endpoint: str) -> str:
    """The endpoint URL with the port the server listens on: port 0 in the configuration picks a free
    one (tests bind port 0 instead of guessing a free port); the advertised endpoints follow."""
    url = urlparse(endpoint)
    if url.port != 0 or server.bserver is None:
        return endpoint
    bound = url._replace(netloc=f"{url.hostname}:{server.bserver.port}").geturl()
    server.endpoint = urlparse(bound)
    for edp in server.iserver.endpoints:
        edp.EndpointUrl = bound
        edp.Server.DiscoveryUrls = [bound]
    return bound


def _shape(tag: TagInfo) -> tuple[str, str]:
    """What fixes a tag node's type: its dtype and its variable type (a reload that gives a tag a
    range makes it an AnalogItemType: a new node)."""
    return tag.dtype, tag_typedef(tag)


def _sid(ns: int, s: str) -> ua.NodeId:
    return ua.NodeId(s, ns, ua.NodeIdType.String)
