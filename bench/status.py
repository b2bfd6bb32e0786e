"""Status-tick benchmark: CPU per device per status tick of the devices' OPC UA Status objects (issue 21).

One server (:class:`edge.outputs.opcua.server.OpcUaServer`, fast path, production GC tuning) with
N devices runs in this process. Every tick each device's diagnostics move as a polling device's
do (PollsOk, Requests, LastOkTime and both latencies change; the other 12 fields do not), then
all devices' Status objects are refreshed, timed, by one of two paths on the same nodes:

* ``old``: the eager path this replaced (``status_values`` dict, compare, one DataValue +
  Variant + datetime per changed field, ``publisher.set_value``), copied here as it was;
* ``new``: :meth:`OpcUaServer.update_device` (:mod:`edge.outputs.opcua.status`: raw fields
  compared, DataValues built only for watched fields or when read).

Two phases: no monitored items, then an asyncua client (same process) with a monitored item on
every Status variable of every device (its notifications are counted per path, as a check that
both deliver the same changes). Ticks alternate old/new; figures are medians over the ticks.
Also shown: the cost of a Read of a changed field on the new path (the work moved to read time).

    .venv/bin/python bench/status.py             # 500 devices, about 20 s
    .venv/bin/python bench/status.py --long      # 1000 devices, more ticks
Ends with ``RESULT {json}``: ``us_per_device_old/new`` and ``ratio`` (new/old) per phase
(``*_idle``: no monitored items, ``*_watched``: items on every Status variable).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncua import Client, ua  # noqa: E402

from edge.core.model import BusInfo, DeviceDiagnostics, DeviceInfo, DeviceState, Plant, TagInfo  # noqa: E402
from edge.outputs.opcua.model import STATUS_FIELDS, status_nodeid, status_values  # noqa: E402
from edge.outputs.opcua.server import OpcUaServer  # noqa: E402


def make_plant(devices: int) -> Plant:
    tags = [TagInfo(id=i, device=f"d{i}", name="t", bus="bus0", dtype="float32") for i in range(devices)]
    devs = [DeviceInfo(f"d{d}", "bus0", "unit 1", None, None, (d,)) for d in range(devices)]
    return Plant("bench", [BusInfo("bus0", "modbus_tcp", tuple(d.name for d in devs))], devs, tags)


def old_update(srv: OpcUaServer, records: dict[str, Any], last: dict[str, object], diag: DeviceDiagnostics) -> None:
    """The eager update this issue replaced (edge/outputs/opcua/server.py before issue 21)."""
    now = datetime.now(UTC)
    for field, value in status_values(diag).items():
        if last.get(field) == value:
            continue
        last[field] = value
        vtype = STATUS_FIELDS[field][1]
        dv = ua.DataValue(ua.Variant(value, vtype), ua.StatusCode(), now, now)
        srv.publisher.set_value(records[field], dv)


def advance(diags: list[DeviceDiagnostics], k: int) -> None:
    """One poll's worth of change on every device."""
    now = time.time_ns()
    for d in diags:
        d.polls_ok += 1
        d.requests += 2
        d.last_ok_ns = now
        d.latency_p50_ms = 10.0 + (k % 7)
        d.latency_p99_ms = 20.0 + (k % 5)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.n += 1


async def phase(srv: OpcUaServer, diags: list[DeviceDiagnostics], old_records: list[dict[str, Any]],
                ticks: int, counter: Counter | None) -> dict[str, float]:
    """``ticks`` alternating old/new ticks; medians of µs per device per tick."""
    old_last: list[dict[str, object]] = [{} for _ in diags]
    times: dict[str, list[float]] = {"old": [], "new": []}
    notes = {"old": 0, "new": 0}
    n = len(diags)
    for k in range(ticks):
        for path in ("old", "new") if k % 2 else ("new", "old"):
            advance(diags, k)
            before = counter.n if counter else 0
            t0 = time.perf_counter_ns()
            if path == "old":
                for d, recs, last in zip(diags, old_records, old_last, strict=True):
                    old_update(srv, recs, last, d)
            else:
                for d in diags:
                    srv.update_device(d)
            times[path].append((time.perf_counter_ns() - t0) / 1e3 / n)
            if counter is not None:  # let the subscription publish and the client take it
                for _ in range(100):
                    await asyncio.sleep(0.02)
                    if counter.n - before >= 5 * n:
                        break
                if k:  # the first tick of each path counts every field as changed
                    notes[path] += counter.n - before
            else:
                await asyncio.sleep(0)
    return {"old": statistics.median(times["old"][1:]), "new": statistics.median(times["new"][1:]),
            "notifications_old": notes["old"], "notifications_new": notes["new"]}


def read_cost(srv: OpcUaServer, diags: list[DeviceDiagnostics]) -> tuple[float, float]:
    """µs per address-space read of a field that changed at the last tick (the DataValue built at
    read time) and of the same field read again (cached); medians of 5 rounds."""
    aspace = srv.server.iserver.aspace  # type: ignore[union-attr]
    ids = [status_nodeid(srv.ns, d.name, "PollsOk") for d in diags]
    changed, cached = [], []
    for k in range(5):
        advance(diags, k)
        for d in diags:
            srv.update_device(d)
        for out in (changed, cached):
            t0 = time.perf_counter_ns()
            for nid in ids:
                aspace.read_attribute_value(nid, ua.AttributeIds.Value)
            out.append((time.perf_counter_ns() - t0) / 1e3 / len(ids))
    return statistics.median(changed), statistics.median(cached)


async def run(devices: int, ticks: int) -> dict[str, float]:
    from edge.config.opcua import OpcUaConfig
    from edge.security.pki import create_server_certificate
    from edge.security.users import add_user

    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        add_user(users, "bench", "viewer", "bench-password")
        pki = Path(tmp) / "pki"
        create_server_certificate(pki, "urn:edge:opcua-server", "127.0.0.1")
        cfg = OpcUaConfig(endpoint="opc.tcp://127.0.0.1:0/bench", security_policies=["None"],
                          allow_security_none=True, users_file=users, pki_dir=pki, max_queue_size=100)
        srv = OpcUaServer(make_plant(devices), cfg)
        await srv.start()
        try:
            diags = [DeviceDiagnostics(name=f"d{i}", bus="bus0", state=DeviceState.ONLINE) for i in range(devices)]
            aspace = srv.server.iserver.aspace  # type: ignore[union-attr]
            old_records = [{f: aspace[status_nodeid(srv.ns, d.name, f)].attributes[ua.AttributeIds.Value]
                            for f in STATUS_FIELDS} for d in diags]
            idle = await phase(srv, diags, old_records, ticks, None)
            print(f"no monitored items:      old {idle['old']:6.2f} us/device/tick   new {idle['new']:6.2f}"
                  f"   ratio new/old {idle['new'] / idle['old']:.3f}", flush=True)
            read_us, cached_us = read_cost(srv, diags)
            print(f"address-space read of a changed field (new path, built at read): {read_us:.2f} us;"
                  f" read again (cached): {cached_us:.2f} us", flush=True)
            counter = Counter()
            client = Client(srv.endpoint_url, timeout=60)
            client.set_user("bench")
            client.set_password("bench-password")
            async with client:
                sub = await client.create_subscription(100, counter)
                nodes = [client.get_node(status_nodeid(srv.ns, d.name, f)) for d in diags for f in STATUS_FIELDS]
                t0 = time.perf_counter()
                for i in range(0, len(nodes), 2000):
                    await sub.subscribe_data_change(nodes[i:i + 2000], sampling_interval=0, queuesize=10)
                print(f"{len(nodes)} monitored items created in {time.perf_counter() - t0:.1f} s", flush=True)
                await asyncio.sleep(1.0)
                watched = await phase(srv, diags, old_records, max(ticks // 4, 6), counter)
                await sub.delete()
            print(f"items on every variable: old {watched['old']:6.2f} us/device/tick   new {watched['new']:6.2f}"
                  f"   ratio new/old {watched['new'] / watched['old']:.3f}   notifications old "
                  f"{watched['notifications_old']} new {watched['notifications_new']}", flush=True)
        finally:
            await srv.stop()
    return {"devices": devices,
            "us_per_device_old_idle": round(idle["old"], 3), "us_per_device_new_idle": round(idle["new"], 3),
            "ratio_idle": round(idle["new"] / idle["old"], 4),
            "us_per_device_old_watched": round(watched["old"], 3),
            "us_per_device_new_watched": round(watched["new"], 3),
            "ratio_watched": round(watched["new"] / watched["old"], 4),
            "notifications_old_watched": watched["notifications_old"],
            "notifications_new_watched": watched["notifications_new"],
            "us_per_read_changed_field": round(read_us, 3), "us_per_read_cached_field": round(cached_us, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", action="store_true", help="1000 devices, more ticks")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    out = asyncio.run(run(1000 if args.long else 500, 80 if args.long else 40))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
