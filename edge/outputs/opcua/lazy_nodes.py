"""The plant's device, tag and property nodes built on first access (asyncua 2.1 adapter).

asyncua keeps every node as a ``NodeData`` (a dict of ``AttributeValue`` records and a list of
``ReferenceDescription``s) in one dict, ``AddressSpace._nodes``: about 8 KB per tag for an
AnalogItem with its EURange and EngineeringUnits properties (bench/memory.py). Every service
(Read, Browse, TranslateBrowsePaths, monitored items, HistoryRead, writes) reaches nodes only
through that dict's ``[]``, ``get`` and ``in``, so :func:`install` swaps it for
:class:`PlantNodes`, a dict subclass that answers for the plant's nodes from the plant itself:

* the nodes asyncua and this server build eagerly (the standard address space, the site, buses,
  Status objects, aggregates, alarm conditions) are stored as before;
* a device ``<device>``, a tag ``<device>.<tag>`` and a tag's properties ``<device>.<tag>#<Name>``
  are built when asked for (:class:`edge.outputs.opcua.virtual.VirtualPlant`) with the same
  attributes and references, kept in a small recently-used cache, and otherwise not kept;
* what must outlive one request lives elsewhere, small: the value of a tag in the publisher's
  arrays (its Value record has a read callback); the Value record of a tag that has monitored
  items (it holds their callbacks) in the publisher; references that other nodes add to a
  virtual one (a Status object under a device, a HasCondition from a tag) in
  :attr:`PlantNodes.extras`.

Installed only on the fast path (:func:`edge.outputs.opcua.asyncua_adapter.acquire`); on the
library's plain path the same builder stores every node in asyncua's own table at start and
reload, and a :class:`PlantNodes` that is not installed only keeps the extras.

``keys()``/``len()``/iteration cover the stored nodes only (asyncua uses them only to dump the
address space and to number new nodes of a namespace with numeric ids; the plant's are strings).
Pinned to asyncua 2.1's ``AddressSpace`` (``_nodes`` and its use through ``[]``/``get``/``in``);
``tests/outputs/opcua`` browse, read, subscribe, write and HistoryRead these nodes with asyncua and
node-opcua, so a library change that breaks it fails there.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from asyncua import ua
from asyncua.server.address_space import AddressSpace, NodeData

#: Built nodes kept for reuse: a Read of many attributes of one node, a browse of a device and
#: the reads of its tags that follow, need not rebuild them (~20-40 us each).
RECENT = 4096

Builder = Callable[[ua.NodeId], NodeData | None]


class VirtualNode(NodeData):
    """A node built on demand from the plant; never stored in the node table."""


class PlantNodes(dict):
    """asyncua's node table with the plant's device, tag and property nodes built on demand."""

    def __init__(self, nodes: dict[ua.NodeId, NodeData], ns: int, build: Builder) -> None:
        super().__init__(nodes)
        self.ns = ns
        self.build = build
        self.extras: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}  # references added to virtual nodes
        self._recent: OrderedDict[ua.NodeId, NodeData] = OrderedDict()
        self.built = 0  # nodes built so far (diagnostics)

    def __missing__(self, key: ua.NodeId) -> NodeData:
        nd = self.virtual(key)
        if nd is None:
            raise KeyError(key)
        return nd

    def get(self, key: ua.NodeId, default: NodeData | None = None) -> NodeData | None:
        nd = dict.get(self, key)
        if nd is not None:
            return nd
        nd = self.virtual(key)
        return default if nd is None else nd

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self.virtual(key) is not None

    def virtual(self, key: object) -> NodeData | None:
        """The virtual node ``key`` (built or reused), or None when the plant has no such node."""
        if not isinstance(key, ua.NodeId) or key.NamespaceIndex != self.ns or not isinstance(key.Identifier, str):
            return None
        recent = self._recent
        nd = recent.get(key)
        if nd is not None:
            recent.move_to_end(key)
            return nd
        nd = self.build(key)
        if nd is None:
            return None
        self.built += 1
        recent[key] = nd
        if len(recent) > RECENT:
            recent.popitem(last=False)
        return nd

    def remember(self, nodes: Iterable[NodeData]) -> None:
        """Keep nodes built together (a tag and its properties) for the next lookups."""
        for nd in nodes:
            self._recent[nd.nodeid] = nd
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def forget(self) -> None:
        """Drop the built nodes kept for reuse (the plant or a virtual node's references changed)."""
        self._recent.clear()

    def add_extra(self, nodeid: ua.NodeId, ref: ua.ReferenceDescription) -> None:
        """A reference another node adds to a virtual node (kept, appended each time it is built)."""
        self.extras.setdefault(nodeid, []).append(ref)
        self._recent.pop(nodeid, None)

    def drop_extra(self, nodeid: ua.NodeId, target: ua.NodeId) -> None:
        """Remove the references of virtual node ``nodeid`` to ``target``."""
        refs = self.extras.get(nodeid)
        if refs is not None:
            refs[:] = [r for r in refs if r.NodeId != target]
            if not refs:
                del self.extras[nodeid]
        self._recent.pop(nodeid, None)


def install(aspace: AddressSpace, ns: int, build: Builder) -> PlantNodes:
    """Replace ``aspace``'s node table by a :class:`PlantNodes` holding the same nodes."""
    nodes = aspace._nodes
    if isinstance(nodes, PlantNodes):
        nodes.ns, nodes.build = ns, build
        nodes.forget()
        return nodes
    if not isinstance(nodes, dict):
        raise TypeError(f"asyncua's node table is a {type(nodes).__name__}, not a dict: lazy nodes need asyncua 2.1 "
                        "without the address-space shelf")
    table = PlantNodes(nodes, ns, build)
    aspace._nodes = table
    return table
