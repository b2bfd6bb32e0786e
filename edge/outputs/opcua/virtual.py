"""The plant's device, tag and property nodes, built when a service asks for them.

:class:`VirtualPlant` is the builder behind :class:`edge.outputs.opcua.lazy_nodes.PlantNodes`: from
the plant (devices, tags), the shared constant records of the server's
:class:`~edge.outputs.opcua.model.NodeFactory` and the publisher's Value records, it builds the
same ``NodeData`` the factory would store (same attributes, same references in both directions,
same properties), with the factory's own code (``add_tag``) run against a scratch table. What
it keeps per tag is one dict entry (device -> tag name -> tag id); everything else is either
shared or rebuilt.

Reference order of a device: its bus (inverse Organizes), its type, what other parts added to it
(the Status object, the Aggregates folder, alarm conditions), then its tags in configuration order.
"""
from __future__ import annotations

from asyncua import ua
from asyncua.server.address_space import NodeData

from edge.core.model import DeviceInfo, Plant
from edge.outputs.opcua.fastpath import FastPublisher
from edge.outputs.opcua.lazy_nodes import PlantNodes
from edge.outputs.opcua.model import _REF, _TYPE, A, NodeFactory, property_nodeid, tag_typedef


def device_description(dev: DeviceInfo) -> str:
    """A device node's Description: where it is on its bus and its plugin."""
    desc = dev.address + (f", plugin {dev.plugin} {dev.plugin_version or ''}" if dev.plugin else "")
    return desc.strip()


class VirtualPlant:
    """Builds the plant's device, tag and tag-property nodes on demand (see the module docstring)."""

    def __init__(self, factory: NodeFactory, publisher: FastPublisher, table: PlantNodes, *,
                 stored: bool = False) -> None:
        self.factory = factory
        self.publisher = publisher
        self.table = table  # asyncua's node table on the fast path; bookkeeping of extras when stored
        self.stored = stored  # the library's plain path: every node built at once into asyncua's own table
        self._stored_ids: set[ua.NodeId] = set()
        self.ns = factory.ns
        self.plant: Plant | None = None
        self.historizing = False
        self._devices: dict[str, DeviceInfo] = {}
        self._tags: dict[str, dict[str, int]] = {}  # device -> tag name -> tag id
        self._bus_ids: dict[str, ua.NodeId] = {}

    def set_plant(self, plant: Plant, historizing: bool, bus_ids: dict[str, ua.NodeId]) -> None:
        """Serve this plant's nodes from now on (start and reload)."""
        self.plant = plant
        self.historizing = historizing
        self._devices = {d.name: d for d in plant.devices}
        tags: dict[str, dict[str, int]] = {}
        for t in plant.tags:
            tags.setdefault(t.device, {})[t.name] = t.id
        self._tags = tags
        self._bus_ids = dict(bus_ids)
        self.table.forget()
        if self.stored:
            self._store_all()

    def _store_all(self) -> None:
        """Store every device, tag and property node of the plant in asyncua's own node table and
        drop the stored ones the plant no longer has: the library's plain path, where nothing of
        asyncua is replaced (start and each reload rebuild them, with the references other parts
        added, :attr:`PlantNodes.extras`)."""
        assert self.plant is not None
        aspace = self.factory.aspace
        ids: set[ua.NodeId] = set()
        for dev in self.plant.devices:
            nodeid = ua.NodeId(dev.name, self.ns, ua.NodeIdType.String)
            nd = self._device(dev.name, nodeid)
            if nd is not None:
                aspace[nodeid] = nd
                ids.add(nodeid)
        for tag in self.plant.tags:
            for nodeid, nd in self._tag(tag.id).items():
                aspace[nodeid] = nd
                ids.add(nodeid)
        for nodeid in self._stored_ids - ids:
            if aspace.get(nodeid) is not None:
                del aspace[nodeid]
        self._stored_ids = ids

    # ------------------------------------------------------------------ lookups

    def tag_id(self, nodeid: ua.NodeId) -> int | None:
        """The tag id of a tag node's NodeId (``<device>.<tag>``), else None."""
        ident = nodeid.Identifier
        if nodeid.NamespaceIndex != self.ns or not isinstance(ident, str) or "#" in ident:
            return None
        device, dot, name = ident.partition(".")
        return self._tags.get(device, {}).get(name) if dot else None

    def device_nodeid(self, name: str) -> ua.NodeId | None:
        return ua.NodeId(name, self.ns, ua.NodeIdType.String) if name in self._devices else None

    def tag_nodeid(self, key: str) -> ua.NodeId | None:
        device, _, name = key.partition(".")
        return ua.NodeId(key, self.ns, ua.NodeIdType.String) if name in self._tags.get(device, {}) else None

    # ------------------------------------------------------------------ building

    def build(self, nodeid: ua.NodeId) -> NodeData | None:
        """The node ``nodeid`` if it is one of the plant's devices, tags or tag properties."""
        ident = nodeid.Identifier
        key, hash_, _prop = ident.partition("#")
        device, dot, name = key.partition(".")
        if not dot:
            return None if hash_ else self._device(device, nodeid)
        tid = self._tags.get(device, {}).get(name)
        if tid is None:
            return None
        built = self._tag(tid)
        self.table.remember(built.values())
        return built.get(nodeid)

    def _device(self, name: str, nodeid: ua.NodeId) -> NodeData | None:
        info = self._devices.get(name)
        bus_id = self._bus_ids.get(info.bus) if info is not None else None
        bus = self.factory.aspace.get(bus_id) if bus_id is not None else None
        if info is None or bus is None or self.plant is None:
            return None
        d = self.factory.detached()
        nd = d._common(nodeid, name, ua.NodeClass.Object, device_description(info))
        nd.attributes[A.EventNotifier] = d._s.no_events
        nd.references.append(d._inverse_ref(bus, "Organizes"))
        nd.references.append(d.typeref(_TYPE["BaseObjectType"], ua.NodeClass.Object))
        nd.references.extend(self.table.extras.get(nodeid, ()))
        tags = self.plant.tags
        has_component = _REF["HasComponent"]
        for tid in info.tag_ids:
            tag = tags[tid]
            nd.references.append(ua.ReferenceDescription(
                ReferenceTypeId=has_component, IsForward=True, NodeId=ua.NodeId(tag.key, self.ns, ua.NodeIdType.String),
                BrowseName=ua.QualifiedName(tag.name, self.ns), DisplayName=ua.LocalizedText(tag.name),
                NodeClass=ua.NodeClass.Variable, TypeDefinition=_TYPE[tag_typedef(tag)]))
        return nd

    def _tag(self, tid: int) -> dict[ua.NodeId, NodeData]:
        """Tag ``tid``'s variable and property nodes, by NodeId."""
        assert self.plant is not None
        tag = self.plant.tags[tid]
        d = self.factory.detached()
        info = self._devices[tag.device]
        parent = d._common(ua.NodeId(tag.device, self.ns, ua.NodeIdType.String), tag.device, ua.NodeClass.Object,
                           device_description(info))
        nd = d.add_tag(parent, tag, historizing=self.historizing)
        nd.attributes[A.Value] = self.publisher.value_record(tid)
        built: dict[ua.NodeId, NodeData] = d.aspace
        text = self.publisher.text_record(tid)
        if text is not None:  # an enumeration's or bit field's ValueAsText follows the value
            prop = built.get(property_nodeid(self.ns, tag, "ValueAsText"))
            if prop is not None:
                prop.attributes[A.Value] = text
        extras = self.table.extras
        if extras:
            for node_id, node in built.items():
                node.references.extend(extras.get(node_id, ()))
        return built
