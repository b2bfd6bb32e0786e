"""The OPC UA address space of a plant, written straight into asyncua's node table.

Objects/<Site>/<Bus>/<Device>/<Tag>: numbers become AnalogItemType variables (EURange,
EngineeringUnits with UNECE codes), bools TwoStateDiscreteType (TrueState/FalseState),
enumerations MultiStateValueDiscreteType (EnumValues). Each device also has a ``Status``
object with its diagnostics.

Why not ``add_variable``: asyncua's node-management path checks siblings on every insert and
instantiates type children through its client-style API; 10,000 variables take seconds and
50,000 AnalogItems (150,000 nodes with their properties) take minutes. :class:`NodeFactory`
builds the same ``NodeData`` records (attributes and both directions of every reference)
directly, at a few microseconds per node, sharing the attribute records that never change.
Clients cannot change those shared records: only Value attributes are writable for
non-admin users and this server never hands out the admin role.

NodeIds (namespace = the site's URI) are strings derived from names, stable across restarts
and reloads: tag ``<device>.<tag>``; device ``<device>``; status ``<device>#status`` and its
variables ``<device>#status.<Field>``; bus ``#bus.<bus>``; site ``#site``; a tag's properties
``<device>.<tag>#<Property>``; aggregate folder, objects and variables ``<device>#aggregates``,
``<device>.<tag>#aggregates[.<window>[.<Stat>]]`` (:mod:`edge.outputs.opcua.aggregates`). ``#``
cannot occur in configured names, so these never collide.
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData

from edge.core.model import BusInfo, DeviceDiagnostics, DeviceInfo, TagInfo
from edge.outputs.opcua.asyncua_adapter import Spawn, deliver_plain_one, gone_value
from edge.outputs.opcua.lazy_nodes import PlantNodes, VirtualNode

A = ua.AttributeIds
VT = ua.VariantType
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

#: Data type NodeId and variant type of each configured dtype.
DTYPE_TO_UA: dict[str, tuple[int, ua.VariantType]] = {
    "bool": (ua.ObjectIds.Boolean, VT.Boolean),
    "int16": (ua.ObjectIds.Int16, VT.Int16),
    "uint16": (ua.ObjectIds.UInt16, VT.UInt16),
    "int32": (ua.ObjectIds.Int32, VT.Int32),
    "uint32": (ua.ObjectIds.UInt32, VT.UInt32),
    "int64": (ua.ObjectIds.Int64, VT.Int64),
    "uint64": (ua.ObjectIds.UInt64, VT.UInt64),
    "float32": (ua.ObjectIds.Float, VT.Float),
    "float64": (ua.ObjectIds.Double, VT.Double),
    "string": (ua.ObjectIds.String, VT.String),
}

#: Common units -> UN/CEFACT common codes (OPC UA Part 8, EUInformation).
UNECE_CODES: dict[str, tuple[str, str]] = {
    "°C": ("CEL", "degree Celsius"), "degC": ("CEL", "degree Celsius"), "C": ("CEL", "degree Celsius"),
    "°F": ("FAH", "degree Fahrenheit"), "degF": ("FAH", "degree Fahrenheit"), "K": ("KEL", "kelvin"),
    "%RH": ("P1", "percent (relative humidity)"), "m/min": ("2X", "metre per minute"),
    "Nm3/h": ("MQH", "cubic metre per hour (at normal conditions)"),
    "V": ("VLT", "volt"), "kV": ("KVT", "kilovolt"), "mV": ("2Z", "millivolt"),
    "A": ("AMP", "ampere"), "mA": ("4K", "milliampere"), "kA": ("B22", "kiloampere"),
    "W": ("WTT", "watt"), "kW": ("KWT", "kilowatt"), "MW": ("MAW", "megawatt"),
    "VA": ("D46", "volt - ampere"), "kVA": ("KVA", "kilovolt - ampere"),
    "var": ("D44", "var"), "kvar": ("KVR", "kilovar"),
    "Wh": ("WHR", "watt hour"), "kWh": ("KWH", "kilowatt hour"), "MWh": ("MWH", "megawatt hour"),
    "varh": ("D45", "var hour"), "kvarh": ("K3", "kilovar hour"),
    "Hz": ("HTZ", "hertz"), "%": ("P1", "percent"), "ppm": ("59", "part per million"),
    "Pa": ("PAL", "pascal"), "kPa": ("KPA", "kilopascal"), "MPa": ("MPA", "megapascal"),
    "bar": ("BAR", "bar"), "mbar": ("MBR", "millibar"), "psi": ("PS", "pound-force per square inch"),
    "m": ("MTR", "metre"), "mm": ("MMT", "millimetre"), "cm": ("CMT", "centimetre"), "km": ("KMT", "kilometre"),
    "m/s": ("MTS", "metre per second"), "km/h": ("KMH", "kilometre per hour"),
    "m3": ("MTQ", "cubic metre"), "m³": ("MTQ", "cubic metre"), "l": ("LTR", "litre"), "L": ("LTR", "litre"),
    "m3/h": ("MQH", "cubic metre per hour"), "m³/h": ("MQH", "cubic metre per hour"),
    "l/min": ("L2", "litre per minute"), "l/s": ("G51", "litre per second"),
    "kg": ("KGM", "kilogram"), "g": ("GRM", "gram"), "t": ("TNE", "tonne"), "kg/h": ("E93", "kilogram per hour"),
    "s": ("SEC", "second"), "ms": ("C26", "millisecond"), "min": ("MIN", "minute"), "h": ("HUR", "hour"),
    "rpm": ("RPM", "revolutions per minute"), "1/min": ("RPM", "revolutions per minute"),
    "Nm": ("NU", "newton metre"), "N": ("NEW", "newton"), "J": ("JOU", "joule"), "kJ": ("KJO", "kilojoule"),
    "lx": ("LUX", "lux"), "dB": ("2N", "decibel"), "Ohm": ("OHM", "ohm"), "Ω": ("OHM", "ohm"),
    "S/m": ("D10", "siemens per metre"), "pH": ("Q30", "pH"),
}

STATUS_FIELDS: dict[str, tuple[int, ua.VariantType]] = {
    "State": (ua.ObjectIds.String, VT.String),
    "LastError": (ua.ObjectIds.String, VT.String),
    "LastErrorTime": (ua.ObjectIds.DateTime, VT.DateTime),
    "LastOkTime": (ua.ObjectIds.DateTime, VT.DateTime),
    "PollsOk": (ua.ObjectIds.UInt64, VT.UInt64),
    "PollsFailed": (ua.ObjectIds.UInt64, VT.UInt64),
    "Requests": (ua.ObjectIds.UInt64, VT.UInt64),
    "Timeouts": (ua.ObjectIds.UInt64, VT.UInt64),
    "Exceptions": (ua.ObjectIds.UInt64, VT.UInt64),
    "CrcErrors": (ua.ObjectIds.UInt64, VT.UInt64),
    "Overruns": (ua.ObjectIds.UInt64, VT.UInt64),
    "LatencyP50Ms": (ua.ObjectIds.Double, VT.Double),
    "LatencyP99Ms": (ua.ObjectIds.Double, VT.Double),
    "Holes": (ua.ObjectIds.UInt32, VT.UInt32),
    "UnreadablePoints": (ua.ObjectIds.UInt32, VT.UInt32),
    "Plugin": (ua.ObjectIds.String, VT.String),
    "PluginVersion": (ua.ObjectIds.String, VT.String),
}

#: The site's appliance-level ``Status`` object (``#site#status.<Field>``): store-and-forward figures,
#: filled from :meth:`edge.outputs.manager.Outputs.delivery` (see appliance_status_values).
APPLIANCE_STATUS_FIELDS: dict[str, tuple[int, ua.VariantType]] = {
    "Degraded": (ua.ObjectIds.String, VT.String),
    "SpoolUnsentPoints": (ua.ObjectIds.UInt64, VT.UInt64),
    "SpoolUnsentBytes": (ua.ObjectIds.UInt64, VT.UInt64),
    "SpoolOldestUnsentAgeS": (ua.ObjectIds.Double, VT.Double),
    "SpoolDiskBytes": (ua.ObjectIds.UInt64, VT.UInt64),
    "SpoolDroppedPoints": (ua.ObjectIds.UInt64, VT.UInt64),
    "SpoolDropReasons": (ua.ObjectIds.String, VT.String),
    "ForwarderState": (ua.ObjectIds.String, VT.String),
    "ForwarderUrl": (ua.ObjectIds.String, VT.String),
    "ForwarderLastError": (ua.ObjectIds.String, VT.String),
    "ThreadCrashes": (ua.ObjectIds.UInt64, VT.UInt64),
}

READ = 1 << ua.AccessLevel.CurrentRead
WRITE = 1 << ua.AccessLevel.CurrentWrite
HISTORY_READ = 1 << ua.AccessLevel.HistoryRead

_REF = {name: ua.NodeId(getattr(ua.ObjectIds, name)) for name in
        ("Organizes", "HasComponent", "HasProperty", "HasTypeDefinition", "HasCondition")}
_TYPE = {name: ua.NodeId(getattr(ua.ObjectIds, name)) for name in
         ("FolderType", "BaseObjectType", "BaseDataVariableType", "PropertyType", "AnalogItemType",
          "BaseAnalogType", "TwoStateDiscreteType", "MultiStateValueDiscreteType")}

_NODECLASS = {int(nc): nc for nc in ua.NodeClass}
_NO_NAME, _NO_TEXT, _NULL_ID = ua.QualifiedName(), ua.LocalizedText(), ua.NodeId()  # shared, never mutated


def unece_unit(unit: str | None) -> ua.EUInformation:
    """EUInformation for a unit text: the UNECE code when known, else UnitId -1 and the text."""
    if not unit:
        return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=-1, DisplayName=ua.LocalizedText(""))
    code, description = UNECE_CODES.get(unit, (None, unit))
    unit_id = -1
    if code is not None:
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE, UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit), Description=ua.LocalizedText(description),
    )


def tag_nodeid(ns: int, tag: TagInfo) -> ua.NodeId:
    return ua.NodeId(tag.key, ns, ua.NodeIdType.String)


def property_nodeid(ns: int, tag: TagInfo, name: str) -> ua.NodeId:
    """A tag's property (``<device>.<tag>#<Property>``), as :meth:`NodeFactory.add_property` names it."""
    return ua.NodeId(f"{tag.key}#{name}", ns, ua.NodeIdType.String)


def status_nodeid(ns: int, device: str, field: str | None = None) -> ua.NodeId:
    return ua.NodeId(f"{device}#status" + (f".{field}" if field else ""), ns, ua.NodeIdType.String)


def _const(value: object, vtype: ua.VariantType, is_array: bool = False) -> AttributeValue:
    return AttributeValue(ua.DataValue(ua.Variant(value, vtype, is_array=is_array)))


@dataclass(slots=True)
class _Shared:
    """Attribute records identical on many nodes, built once (never written: see module doc)."""

    zero_mask: AttributeValue
    scalar: AttributeValue
    no_dims: AttributeValue
    min_interval: AttributeValue
    no_events: AttributeValue
    not_historizing: AttributeValue
    historizing: AttributeValue
    access: dict[int, AttributeValue]
    datatype: dict[int, AttributeValue]
    empty_text: AttributeValue


def _shared() -> _Shared:
    return _Shared(
        zero_mask=_const(0, VT.UInt32),
        scalar=_const(-1, VT.Int32),
        no_dims=_const([], VT.UInt32, is_array=True),
        min_interval=_const(0.0, VT.Double),
        no_events=_const(0, VT.Byte),
        not_historizing=_const(False, VT.Boolean),
        historizing=_const(True, VT.Boolean),
        access={},
        datatype={},
        empty_text=_const(ua.LocalizedText(""), VT.LocalizedText),
    )


_PENDING: set[asyncio.Task[Any]] = set()


def _run_soon(coro: Any) -> None:
    """A coroutine onto the running loop, referenced until it ends (a factory without a publisher)."""
    task = asyncio.get_running_loop().create_task(coro)
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


class NodeFactory:
    """Adds and removes nodes in an asyncua address space without the node-management service."""

    def __init__(self, aspace: AddressSpace, ns: int) -> None:
        self.aspace = aspace
        self.ns = ns
        self._s = _shared()
        self._nodeclass = {nc: _const(int(nc), VT.Int32) for nc in (ua.NodeClass.Object, ua.NodeClass.Variable)}
        self._typerefs: dict[ua.NodeId, ua.ReferenceDescription] = {}
        self._last_inverse: tuple[NodeData, str, ua.ReferenceDescription] | None = None
        self._property_names: dict[str, tuple[AttributeValue, AttributeValue]] = {}
        self._intervals: dict[float, AttributeValue] = {}
        self.node_type: type[NodeData] = NodeData  # VirtualNode in a factory that builds nodes on demand
        self.virtual_table: PlantNodes | None = None  # keeps references added to virtual nodes
        self.spawn: Spawn = _run_soon  # runs the library's coroutine callbacks (the server sets its publisher's)

    def detached(self) -> NodeFactory:
        """A factory sharing this one's constant records that builds virtual nodes into a scratch
        dict (``aspace``) instead of the server (edge.outputs.opcua.virtual)."""
        d = copy.copy(self)
        d.aspace = {}
        d.node_type = VirtualNode
        d.virtual_table = None
        d._last_inverse = None
        return d

    # ------------------------------------------------------------------ primitives

    def _common(self, nodeid: ua.NodeId, name: str, nodeclass: ua.NodeClass, description: str,
                names: tuple[AttributeValue, AttributeValue] | None = None) -> NodeData:
        nd = self.node_type(nodeid)
        at = nd.attributes
        at[A.NodeId] = AttributeValue(ua.DataValue(ua.Variant(nodeid, VT.NodeId)))
        at[A.NodeClass] = self._nodeclass[nodeclass]
        if names is None:
            bname = ua.QualifiedName(name, self.ns)
            at[A.BrowseName] = AttributeValue(ua.DataValue(ua.Variant(bname, VT.QualifiedName)))
            at[A.DisplayName] = AttributeValue(ua.DataValue(ua.Variant(ua.LocalizedText(name), VT.LocalizedText)))
        else:
            at[A.BrowseName], at[A.DisplayName] = names
        at[A.Description] = (
            AttributeValue(ua.DataValue(ua.Variant(ua.LocalizedText(description), VT.LocalizedText)))
            if description else self._s.empty_text
        )
        at[A.WriteMask] = self._s.zero_mask
        at[A.UserWriteMask] = self._s.zero_mask
        return nd

    def _link(self, parent: NodeData, child: NodeData, reftype: str, typedef: ua.NodeId,
              nodeclass: ua.NodeClass) -> None:
        bname = child.attributes[A.BrowseName].value.Value.Value
        dname = child.attributes[A.DisplayName].value.Value.Value
        ref = ua.ReferenceDescription(
            ReferenceTypeId=_REF[reftype], IsForward=True, NodeId=child.nodeid, BrowseName=bname,
            DisplayName=dname, NodeClass=nodeclass, TypeDefinition=typedef,
        )
        parent.references.append(ref)
        if isinstance(parent, VirtualNode) and self.virtual_table is not None:
            self.virtual_table.add_extra(parent.nodeid, ref)  # a built-on-demand parent keeps it there
        child.references.append(self._inverse_ref(parent, reftype))
        child.references.append(self.typeref(typedef, nodeclass))
        self.aspace[child.nodeid] = child

    def add_forward_ref(self, parent: NodeData, child: ua.NodeId, name: str, reftype: str, typedef: str,
                        nodeclass: ua.NodeClass) -> None:
        """The parent's reference to a child that is built on demand (the child holds its own inverse one)."""
        parent.references.append(ua.ReferenceDescription(
            ReferenceTypeId=_REF[reftype], IsForward=True, NodeId=child, BrowseName=ua.QualifiedName(name, self.ns),
            DisplayName=ua.LocalizedText(name), NodeClass=nodeclass, TypeDefinition=_TYPE[typedef]))

    def typeref(self, typedef: ua.NodeId, nodeclass: ua.NodeClass) -> ua.ReferenceDescription:
        """The HasTypeDefinition reference to ``typedef``: one shared record per type, never mutated."""
        typeref = self._typerefs.get(typedef)
        if typeref is None:
            typeref = self._typerefs[typedef] = ua.ReferenceDescription(
                ReferenceTypeId=_REF["HasTypeDefinition"], IsForward=True, NodeId=typedef, BrowseName=_NO_NAME,
                DisplayName=_NO_TEXT, TypeDefinition=_NULL_ID,
                NodeClass=ua.NodeClass.ObjectType if nodeclass == ua.NodeClass.Object else ua.NodeClass.VariableType,
            )
        return typeref

    def _inverse_ref(self, parent: NodeData, reftype: str) -> ua.ReferenceDescription:
        """The child-to-parent reference; siblings added in a row share one record."""
        last = self._last_inverse
        if last is not None and last[0] is parent and last[1] == reftype:
            return last[2]
        pb = parent.attributes[A.BrowseName].value.Value.Value
        pd = parent.attributes[A.DisplayName].value.Value.Value
        pclass = _NODECLASS[parent.attributes[A.NodeClass].value.Value.Value]
        ref = ua.ReferenceDescription(
            ReferenceTypeId=_REF[reftype], IsForward=False, NodeId=parent.nodeid, BrowseName=pb,
            DisplayName=pd, NodeClass=pclass, TypeDefinition=_NULL_ID,
        )
        self._last_inverse = (parent, reftype, ref)
        return ref

    def add_object(self, parent: ua.NodeId, nodeid: ua.NodeId, name: str, *, folder: bool = True,
                   description: str = "", reftype: str = "Organizes", typedef: ua.NodeId | None = None) -> NodeData:
        nd = self._common(nodeid, name, ua.NodeClass.Object, description)
        nd.attributes[A.EventNotifier] = self._s.no_events
        if typedef is None:
            typedef = _TYPE["FolderType" if folder else "BaseObjectType"]
        self._link(self.aspace[parent], nd, reftype, typedef, ua.NodeClass.Object)
        return nd

    def add_variable(
        self, parent: NodeData, nodeid: ua.NodeId, name: str, datatype: int, value: ua.Variant, *,
        typedef: str = "BaseDataVariableType", reftype: str = "HasComponent", access: int = READ,
        description: str = "", historizing: bool = False,
        names: tuple[AttributeValue, AttributeValue] | None = None, min_interval_ms: float | None = None,
    ) -> NodeData:
        nd = self._common(nodeid, name, ua.NodeClass.Variable, description, names)
        at, s = nd.attributes, self._s
        at[A.Value] = AttributeValue(ua.DataValue(value))
        dt = s.datatype.get(datatype)
        if dt is None:
            dt = s.datatype[datatype] = _const(ua.NodeId(datatype), VT.NodeId)
        at[A.DataType] = dt
        at[A.ValueRank] = s.scalar if not value.is_array else _const(1, VT.Int32)
        at[A.ArrayDimensions] = s.no_dims
        acc = s.access.get(access)
        if acc is None:
            acc = s.access[access] = _const(access, VT.Byte)
        at[A.AccessLevel] = acc
        at[A.UserAccessLevel] = acc
        at[A.MinimumSamplingInterval] = s.min_interval if min_interval_ms is None else self._interval(min_interval_ms)
        at[A.Historizing] = s.historizing if historizing else s.not_historizing
        self._link(parent, nd, reftype, _TYPE[typedef], ua.NodeClass.Variable)
        return nd

    def _interval(self, ms: float) -> AttributeValue:
        """One shared MinimumSamplingInterval record per distinct poll interval (tags stay lean)."""
        rec = self._intervals.get(float(ms))
        if rec is None:
            rec = self._intervals[float(ms)] = _const(float(ms), VT.Double)
        return rec

    def add_property(self, parent: NodeData, name: str, datatype: int, value: ua.Variant) -> NodeData:
        nodeid = ua.NodeId(f"{parent.nodeid.Identifier}#{name}", self.ns, ua.NodeIdType.String)
        names = self._property_names.get(name)
        if names is None:  # namespace-0 browse names (the standard types define them), shared by all
            names = self._property_names[name] = (
                _const(ua.QualifiedName(name, 0), VT.QualifiedName), _const(ua.LocalizedText(name), VT.LocalizedText))
        return self.add_variable(parent, nodeid, name, datatype, value, typedef="PropertyType",
                                 reftype="HasProperty", names=names)

    def remove(self, nodeid: ua.NodeId) -> int:
        """Remove a node, its children (forward hierarchical references in this namespace) and the
        parent's reference to it; subscribed monitored items get BadNodeIdUnknown. Returns the count."""
        nd = self.aspace.get(nodeid)
        if nd is None:
            return 0
        count = 0
        for ref in list(nd.references):
            if ref.IsForward and ref.ReferenceTypeId != _REF["HasTypeDefinition"] and ref.NodeId.NamespaceIndex == self.ns:
                count += self.remove(ref.NodeId)
            elif not ref.IsForward:
                parent = self.aspace.get(ref.NodeId)
                if isinstance(parent, VirtualNode) and self.virtual_table is not None:
                    self.virtual_table.drop_extra(parent.nodeid, nodeid)
                elif parent is not None:
                    parent.references = [r for r in parent.references if r.NodeId != nodeid]
        value = nd.attributes.get(A.Value)
        if value is not None:
            for handle, callback in list(value.datachange_callbacks.items()):
                try:  # the item's last notification: Bad_NodeIdUnknown (asyncua's callback is a coroutine)
                    deliver_plain_one(callback, handle, gone_value(), self.spawn)
                finally:
                    self.aspace.delete_datachange_callback(handle)
        if isinstance(nd, VirtualNode):  # built from the plant: gone once the plant no longer has it
            if self.virtual_table is not None:
                self.virtual_table.extras.pop(nodeid, None)
        else:
            del self.aspace[nodeid]
        return count + 1

    # ------------------------------------------------------------------ plant objects

    def add_tag(self, device: NodeData, tag: TagInfo, *, historizing: bool) -> NodeData:
        """One tag variable with its type's properties; its Value starts null with BadWaitingForInitialData."""
        datatype, _ = DTYPE_TO_UA[tag.dtype]
        nd = self.add_variable(
            device, ua.NodeId(tag.key, self.ns, ua.NodeIdType.String), tag.name, datatype,
            ua.Variant(None, VT.Null), typedef=tag_typedef(tag), access=tag_access(tag, historizing),
            description=tag.description, historizing=historizing, min_interval_ms=float(tag.interval_ms),
        )
        nd.attributes[A.Value].value = ua.DataValue(
            ua.Variant(None, VT.Null), StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
        )
        self.add_tag_properties(nd, tag)
        return nd

    def refresh_tag(self, nd: NodeData, tag: TagInfo, *, historizing: bool) -> None:
        """New metadata of a kept tag node (same type): description, access and properties are
        replaced; the Value record and the monitored items on it stay."""
        has_property = _REF["HasProperty"]
        for ref in [r for r in nd.references if r.IsForward and r.ReferenceTypeId == has_property]:
            self.remove(ref.NodeId)
        at = nd.attributes
        at[A.Description] = (
            AttributeValue(ua.DataValue(ua.Variant(ua.LocalizedText(tag.description), VT.LocalizedText)))
            if tag.description else self._s.empty_text
        )
        access = tag_access(tag, historizing)
        acc = self._s.access.get(access)
        if acc is None:
            acc = self._s.access[access] = _const(access, VT.Byte)
        at[A.AccessLevel] = at[A.UserAccessLevel] = acc
        self.add_tag_properties(nd, tag)

    def add_tag_properties(self, nd: NodeData, tag: TagInfo) -> None:
        """EURange + EngineeringUnits (analog), FalseState/TrueState (two-state), EnumValues (multi-state)."""
        typedef = tag_typedef(tag)
        if typedef in ("AnalogItemType", "BaseAnalogType"):
            known = eu_range(tag)
            if known is not None:  # a configured range, or what a scaled value's type can hold
                self.add_property(nd, "EURange", ua.ObjectIds.Range,
                                  ua.Variant(ua.Range(Low=known[0], High=known[1]), VT.ExtensionObject))
            if tag.unit:  # a unitless tag has no EngineeringUnits (not an empty EUInformation)
                self.add_property(nd, "EngineeringUnits", ua.ObjectIds.EUInformation,
                                  ua.Variant(unece_unit(tag.unit), VT.ExtensionObject))
            if tag.bits is not None:  # a bit field: the names of its set bits (kept current by the fast path)
                self.add_property(nd, "ValueAsText", ua.ObjectIds.LocalizedText,
                                  ua.Variant(ua.LocalizedText(""), VT.LocalizedText))
        elif typedef == "TwoStateDiscreteType":
            states = tag.enum or {0: "false", 1: "true"}
            self.add_property(nd, "FalseState", ua.ObjectIds.LocalizedText,
                              ua.Variant(ua.LocalizedText(states.get(0, "false")), VT.LocalizedText))
            self.add_property(nd, "TrueState", ua.ObjectIds.LocalizedText,
                              ua.Variant(ua.LocalizedText(states.get(1, "true")), VT.LocalizedText))
        elif typedef == "MultiStateValueDiscreteType":
            assert tag.enum is not None
            values = [ua.EnumValueType(Value=int(k), DisplayName=ua.LocalizedText(v), Description=ua.LocalizedText(v))
                      for k, v in sorted(tag.enum.items())]
            self.add_property(nd, "EnumValues", ua.ObjectIds.EnumValueType,
                              ua.Variant(values, VT.ExtensionObject, is_array=True))
            self.add_property(nd, "ValueAsText", ua.ObjectIds.LocalizedText,
                              ua.Variant(ua.LocalizedText(""), VT.LocalizedText))

    def add_appliance_status(self, site: NodeData) -> dict[str, NodeData]:
        """The site's appliance-level Status object (spool, forwarder, threads)."""
        status = self.add_object(site.nodeid, status_nodeid(self.ns, "#site"), "Status", folder=False,
                                 reftype="HasComponent", description="store-and-forward and thread health")
        defaults = appliance_status_values({})
        return {field: self.add_variable(status, status_nodeid(self.ns, "#site", field), field, datatype,
                                         ua.Variant(defaults[field], vtype))
                for field, (datatype, vtype) in APPLIANCE_STATUS_FIELDS.items()}

    def add_status(self, device: NodeData, info: DeviceInfo) -> dict[str, NodeData]:
        """The device's Status object with one variable per diagnostics field."""
        status = self.add_object(device.nodeid, status_nodeid(self.ns, info.name), "Status", folder=False,
                                 description="poller state and Modbus counters of this device", reftype="HasComponent")
        out = {}
        for field, (datatype, vtype) in STATUS_FIELDS.items():
            out[field] = self.add_variable(status, status_nodeid(self.ns, info.name, field), field, datatype,
                                           ua.Variant(_status_default(field, info), vtype))
        return out


def tag_typedef(tag: TagInfo) -> str:
    """The variable type of a tag's node: two-state (bool), multi-state (enum), analog (number)."""
    if tag.dtype == "bool":
        return "TwoStateDiscreteType"
    if tag.enum is not None:
        return "MultiStateValueDiscreteType"
    if tag.dtype == "string":
        return "BaseDataVariableType"
    # AnalogItemType makes EURange mandatory: a tag without a known range is a BaseAnalogType
    return "AnalogItemType" if eu_range(tag) is not None else "BaseAnalogType"


def eu_range(tag: TagInfo) -> tuple[float, float] | None:
    """A tag's EURange: its configured range, else what its type on the device can hold when that
    bounds a scaled value (``TagInfo.type_range``: a uint16 x 0.1 is 0..6553.5); never an unscaled
    type's own limits (the DataType says those)."""
    if tag.low is not None and tag.high is not None:
        return tag.low, tag.high
    return tag.type_range


def tag_access(tag: TagInfo, historizing: bool) -> int:
    return READ | (WRITE if tag.writable else 0) | (HISTORY_READ if historizing else 0)


def _status_default(field: str, info: DeviceInfo) -> object:
    diag = DeviceDiagnostics(name=info.name, bus=info.bus, plugin=info.plugin, plugin_version=info.plugin_version)
    return status_values(diag)[field]


def status_values(diag: DeviceDiagnostics) -> dict[str, object]:
    """The Status object's variable values for one diagnostics record."""
    from datetime import UTC, datetime

    def ts(ns: int) -> datetime:
        return datetime.fromtimestamp(ns / 1e9, UTC) if ns else datetime(1601, 1, 1, tzinfo=UTC)

    return {
        "State": diag.state.name, "LastError": diag.last_error, "LastErrorTime": ts(diag.last_error_ns),
        "LastOkTime": ts(diag.last_ok_ns), "PollsOk": diag.polls_ok, "PollsFailed": diag.polls_failed,
        "Requests": diag.requests, "Timeouts": diag.timeouts, "Exceptions": sum(diag.exceptions.values()),
        "CrcErrors": diag.crc_errors, "Overruns": diag.overruns, "LatencyP50Ms": float(diag.latency_p50_ms),
        "LatencyP99Ms": float(diag.latency_p99_ms), "Holes": diag.holes,
        "UnreadablePoints": diag.unreadable_points, "Plugin": diag.plugin or "",
        "PluginVersion": diag.plugin_version or "",
    }


def appliance_status_values(delivery: dict) -> dict[str, object]:
    """The appliance Status variables from :meth:`edge.outputs.manager.Outputs.delivery` ({} for defaults)."""
    spool = delivery.get("spool", {})
    fw = delivery.get("forwarder") or {}
    drops = spool.get("dropped_points", {})
    return {
        "Degraded": delivery.get("degraded") or "",
        "SpoolUnsentPoints": int(spool.get("unsent_points", 0)),
        "SpoolUnsentBytes": int(spool.get("unsent_bytes", 0)),
        "SpoolOldestUnsentAgeS": float(spool.get("oldest_unsent_age_s", 0.0)),
        "SpoolDiskBytes": int(spool.get("disk_bytes", 0)),
        "SpoolDroppedPoints": int(spool.get("dropped_points_total", 0)),
        "SpoolDropReasons": ", ".join(f"{k}: {v}" for k, v in sorted(drops.items())),
        "ForwarderState": fw.get("state", "none"),
        "ForwarderUrl": fw.get("url", ""),
        "ForwarderLastError": fw.get("last_error", ""),
        "ThreadCrashes": int(delivery.get("thread_crashes", 0)),
    }


def plant_layout(buses: Iterable[BusInfo], devices: Iterable[DeviceInfo]) -> dict[str, list[DeviceInfo]]:
    """Devices grouped by bus name, in configuration order (buses without devices included)."""
    out: dict[str, list[DeviceInfo]] = {b.name: [] for b in buses}
    for d in devices:
        out.setdefault(d.bus, []).append(d)
    return out
