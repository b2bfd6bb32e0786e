"""OPC UA server benchmark: delivered value changes/s and server CPU per change, ours vs plain asyncua.

For 10,000 and 50,000 tags (devices of 100 float64 tags) one server runs in this process and a
client in another process subscribes to 10,000 of them at a 100 ms publishing interval. Every
tag gets a new value every 50 ms (twice per publishing interval), or back to back when a pass
takes longer (the server is then saturated; the baseline always is). On the same server and
subscription, one after the other:

* ``baseline``: asyncua's own update path, ``node.write_value`` of a DataValue (value,
  StatusCode, source and server timestamps) per node, collector untouched;
* ``fast``: :meth:`edge.outputs.opcua.server.OpcUaServer.consume` with one SampleBatch per device,
  collector frozen and tuned as in production.

The address space of both is built by :mod:`edge.outputs.opcua.model` (``build_50k_s``); both
grant the same monitored-item queue size (100), so no queue drops a change in either.

The client is lean so that it is not the bottleneck: it decodes the common notification with
one ``struct`` call, counts notifications and fully checks every 50th (value belongs to that
tag and was produced by the server, StatusCode Good, SourceTimestamp and ServerTimestamp
present and ordered); ``checked_errors`` counts failures. A last phase measures asyncua's
client in its ordinary handler mode against the fast path (``handler_client_changes_s``).
Figures come from each process's own clock over the same window after a warm-up.

    .venv/bin/python bench/opcua.py            # about a minute
    .venv/bin/python bench/opcua.py --long     # 15 s windows
Ends with one line ``RESULT {json}``: ``changes_ratio`` and ``cpu_ratio`` are the 10,000-tag
figures (``*_50k`` the 50,000-tag ones).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import struct
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from asyncua import Client, ua  # noqa: E402

SUBSCRIBED = 10_000
TAGS_PER_DEVICE = 100
QUEUE = 100
STRIDE = 100_000.0  # value = cycle * STRIDE + tag id: the client can tell whose value it is
CHECK_EVERY = 50
CYCLE_S = 0.05  # every tag gets a new value every 50 ms (twice per publishing interval), or as fast as possible


# ----------------------------------------------------------------------------- client process

#: ClientHandle, mask (Value|Status|Source|Server), the value, status, 2 x DateTime; by Variant type
_LEAN = {11: struct.Struct("<IBBdIqq"), 10: struct.Struct("<IBBfIqq")}  # Double, Float


def install_lean_decoder() -> None:
    """Client side only: decode the common notification (a Double or Float with StatusCode and both
    timestamps) into a plain tuple with one struct call instead of asyncua's generic decoder,
    so the client is not the bottleneck; anything else goes through the library."""
    from asyncua.ua import ua_binary

    library = ua_binary._create_dataclass_deserializer
    full = library(ua.MonitoredItemNotification)

    def lean(buf):  # noqa: ANN001, ANN202 - asyncua's Buffer
        data, pos = buf._data, buf._cur_pos
        st = _LEAN.get(data[pos + 5]) if buf._size >= 6 and data[pos + 4] == 0x0F else None
        if st is not None and buf._size >= st.size:
            handle, _, _, value, status, src, srv = st.unpack_from(data, pos)
            buf._cur_pos = pos + st.size
            buf._size -= st.size
            return handle, value, status, src, srv
        return full(buf)

    def lookup(objtype):  # noqa: ANN001, ANN202
        return lean if objtype is ua.MonitoredItemNotification else library(objtype)

    ua_binary._create_dataclass_deserializer = lookup
    for cached in (library, ua_binary._create_list_deserializer, ua_binary._create_type_deserializer):
        cached.cache_clear()


async def client_main(endpoint: str, ns: int, n_sub: int, handler_mode: bool, seconds: float) -> None:
    """Subscribe to tags 0..n_sub-1 and report cumulative counts on stdout every 0.25 s."""
    from asyncua.common.subscription import Subscription

    state = {"n": 0, "checked": 0, "errors": 0}
    handle_tag: dict[int, int] = {}

    def check(item: ua.MonitoredItemNotification | tuple) -> None:
        if isinstance(item, tuple):  # decoded by the lean decoder: check the same fields
            handle, value, status, src, srv = item
            item = ua.MonitoredItemNotification(ClientHandle=handle, Value=ua.DataValue(
                ua.Variant(value, ua.VariantType.Double), ua.StatusCode(status),
                ua.win_epoch_to_datetime(src), ua.win_epoch_to_datetime(srv)))
        dv = item.Value
        if dv.StatusCode is not None and dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData:
            return  # the item's first notification, sent before the first update
        state["checked"] += 1
        now = datetime.now(UTC).replace(tzinfo=None)
        try:
            tag = handle_tag[item.ClientHandle]
            v = dv.Value.Value
            ok = (isinstance(v, float) and round(v % STRIDE) == tag and dv.StatusCode.is_good()
                  and dv.SourceTimestamp is not None and dv.ServerTimestamp is not None
                  and abs(now - dv.SourceTimestamp.replace(tzinfo=None)) < timedelta(seconds=30)
                  and dv.ServerTimestamp.replace(tzinfo=None) >= dv.SourceTimestamp.replace(tzinfo=None))
        except Exception:
            ok = False
        if not ok:
            state["errors"] += 1

    if not handler_mode:
        install_lean_decoder()

        async def lean_publish_callback(self: Subscription, publish_result: ua.PublishResult) -> None:
            for notif in publish_result.NotificationMessage.NotificationData or ():
                if isinstance(notif, ua.DataChangeNotification):
                    items = notif.MonitoredItems
                    state["n"] += len(items)
                    for item in items[::CHECK_EVERY]:
                        check(item)
                    report()

        Subscription.publish_callback = lean_publish_callback  # type: ignore[method-assign]

    last_report = [0.0]

    def report(force: bool = False) -> None:
        """Counters on stdout every 0.25 s, also from inside a swamped event loop."""
        now = time.monotonic()
        if force or now - last_report[0] >= 0.25:
            last_report[0] = now
            print(json.dumps({"t": now, "cpu": time.process_time(), **state}), flush=True)

    class Handler:
        def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
            state["n"] += 1
            if state["n"] % CHECK_EVERY == 0:
                check(ua.MonitoredItemNotification(ClientHandle=data.monitored_item.ClientHandle,
                                                   Value=data.monitored_item.Value))
                report()

    client = Client(endpoint, timeout=60, watchdog_intervall=600.0)  # no health probes while measuring
    client.set_user("bench")
    client.set_password("bench-password")
    async with client:
        sub = await client.create_subscription(100, Handler())
        nodes = [client.get_node(ua.NodeId(f"d{i // TAGS_PER_DEVICE}.t{i}", ns)) for i in range(n_sub)]
        handles = await sub.subscribe_data_change(nodes, queuesize=QUEUE)
        assert all(isinstance(h, int) for h in handles), "some monitored items were refused"
        for client_handle, data in sub._monitored_items.items():  # type: ignore[attr-defined]
            handle_tag[client_handle] = int(data.node.nodeid.Identifier.rsplit(".t", 1)[1])
        print(json.dumps({"ready": True}), flush=True)
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(0.25)
            report()


# ----------------------------------------------------------------------------- server side


def make_plant(n_tags: int):
    from edge.core.model import BusInfo, DeviceInfo, Plant, TagInfo

    tags = [TagInfo(id=i, device=f"d{i // TAGS_PER_DEVICE}", name=f"t{i}", bus="bus0", dtype="float64",
                    unit="V", low=0.0, high=1e12) for i in range(n_tags)]
    devs = [DeviceInfo(f"d{d}", "bus0", "unit 1", None, None, tuple(range(d * TAGS_PER_DEVICE, (d + 1) * TAGS_PER_DEVICE)))
            for d in range(n_tags // TAGS_PER_DEVICE)]
    return Plant("bench", [BusInfo("bus0", "modbus_tcp", tuple(d.name for d in devs))], devs, tags)


class _ClientProcess:
    """The measuring client in another process; ``latest`` holds its last reported counters."""

    def __init__(self) -> None:
        self.latest: dict = {}
        self.lines: list[dict] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None

    async def start(self, endpoint: str, ns: int, n_sub: int, kind: str, seconds: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", endpoint, str(ns), str(n_sub), kind, str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        self._task = asyncio.create_task(self._read())
        deadline = time.monotonic() + 120
        while not self.latest.get("ready"):
            assert time.monotonic() < deadline and self.proc.returncode is None, "client did not subscribe"
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            self.latest.update(msg)
            if "t" in msg:
                self.lines.append(msg)

    def window(self, t0: float, t1: float) -> tuple[dict, dict]:
        """The client's first and last reports inside [t0, t1] (time.monotonic is one clock for
        every process on Linux), so a late-read pipe does not skew the rates."""
        inside = [m for m in self.lines if t0 <= m["t"] <= t1]
        if len(inside) >= 2:
            return inside[0], inside[-1]
        before = [m for m in self.lines if m["t"] < t0] or self.lines[:1]
        after = [m for m in self.lines if m["t"] > t1] or self.lines[-1:]
        if not before or not after or after[0]["t"] <= before[-1]["t"]:
            raise RuntimeError("the client did not report around the window")
        return before[-1], after[0]  # a swamped client reports rarely: the reports around the window

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._task is not None:
            self._task.cancel()


class _Driver:
    """Updates every tag of one server continuously, with the edge path or asyncua's write_value."""

    def __init__(self, srv, n_tags: int) -> None:  # noqa: ANN001
        self.srv = srv
        self.cycle = 0
        self.ids_per_dev = [np.arange(d * TAGS_PER_DEVICE, (d + 1) * TAGS_PER_DEVICE, dtype=np.int32)
                            for d in range(n_tags // TAGS_PER_DEVICE)]
        self.nodes = [srv.server.get_node(ua.NodeId(f"d{i // TAGS_PER_DEVICE}.t{i}", srv.ns)) for i in range(n_tags)]

    async def run(self, mode: str, client: _ClientProcess, seconds: float, warmup: float,
                  cycle_s: float = CYCLE_S) -> dict:
        from edge.core.model import SampleBatch

        fast = mode == "fast"
        good = ua.StatusCode(ua.StatusCodes.Good)
        marks: dict[str, tuple] = {}
        t_start = time.monotonic()
        t_warm, t_stop = t_start + warmup, t_start + warmup + seconds
        produced = 0
        next_cycle = t_start
        while True:
            now = time.monotonic()
            if now < next_cycle:  # one pass over all tags per CYCLE_S, back to back when late
                await asyncio.sleep(next_cycle - now)
                now = time.monotonic()
            next_cycle = max(next_cycle + cycle_s, now)
            if "start" not in marks and now >= t_warm:
                marks["start"] = (time.process_time(), dict(client.latest), produced, now)
            if now >= t_stop:
                marks["stop"] = (time.process_time(), dict(client.latest), produced, now)
                break
            self.cycle += 1
            base = self.cycle * STRIDE
            for ids in self.ids_per_dev:
                ts_ns = time.time_ns()
                if fast:
                    self.srv.consume(SampleBatch("d", ts_ns, ids, ids.astype(np.float64) + base,
                                                 np.zeros(len(ids), np.uint8)))
                else:
                    src = datetime.fromtimestamp(ts_ns / 1e9, UTC)
                    for i in ids.tolist():
                        await self.nodes[i].write_value(ua.DataValue(ua.Variant(base + i, ua.VariantType.Double),
                                                                     good, src, datetime.now(UTC)))
                produced += len(ids)
                await asyncio.sleep(0)
                now = time.monotonic()
                if "start" not in marks and now >= t_warm:  # a baseline pass can outlast the warm-up
                    marks["start"] = (time.process_time(), dict(client.latest), produced, now)
                if now >= t_stop:
                    break
        await asyncio.sleep(0.6)  # let the last reports arrive before the next phase
        (cpu0, _, p0, w0), (cpu1, _, p1, w1) = marks["start"], marks["stop"]
        c0, c1 = client.window(w0, w1)
        final = dict(client.latest)
        if os.environ.get("BENCH_DEBUG"):
            print(mode, c0, c1, final, file=sys.stderr)
        if "t" not in c0 or c1["t"] <= c0["t"]:
            raise RuntimeError(f"{mode}: the client reported no progress ({c0} -> {c1})")
        # Rates from each side's own clock: the client's lines may be read late by a busy server.
        dt = c1["t"] - c0["t"]
        changes_s = (c1["n"] - c0["n"]) / dt
        cpu_share = (cpu1 - cpu0) / (w1 - w0)
        return {
            "mode": mode, "tags": len(self.nodes), "changes_s": changes_s,
            "server_cpu_ms_per_1k": cpu_share / max(changes_s, 1e-9) * 1e6,
            "server_cpu_share": cpu_share, "client_cpu_share": (c1["cpu"] - c0["cpu"]) / dt,
            "produced_s": (p1 - p0) / (w1 - w0), "checked": c1["checked"] - c0["checked"],
            "checked_errors": final["errors"],
        }


async def run_size(n_tags: int, seconds: float, warmup: float, users_file: Path, handler: bool,
                   rounds: int = 2) -> list[dict]:
    """One server with ``n_tags`` tags and one subscribed lean client; ``rounds`` times, one
    window with asyncua's own update path (baseline, collector untouched) and one with the edge
    path (collector frozen and tuned as in production), on the same server and subscription.
    Each mode keeps its best window (the machine is shared; both sides get the same chance).
    Then, if ``handler``, asyncua's client in handler mode against the edge path, offered
    40,000 changes/s (near its capacity: far above it, its task backlog thrashes)."""
    from edge.config.opcua import OpcUaConfig
    from edge.outputs.opcua.server import OpcUaServer
    from edge.security.pki import PkiPaths, create_server_certificate

    pki = users_file.parent / "pki"  # the client encrypts its password with the server's certificate
    if not PkiPaths(pki).cert.exists():
        create_server_certificate(pki, "urn:edge:opcua-server", "127.0.0.1")
    cfg = OpcUaConfig(endpoint="opc.tcp://127.0.0.1:0/bench", security_policies=["None"],
                      allow_security_none=True, users_file=users_file, pki_dir=pki, max_queue_size=QUEUE,
                      max_unacked_per_subscription=20)
    srv = OpcUaServer(make_plant(n_tags), cfg, tune_gc=False)
    t0 = time.perf_counter()
    await srv.start()
    startup_s = time.perf_counter() - t0
    iserver = srv.server.iserver
    edge_write = iserver.attribute_service.write

    def use_edge_path(on: bool) -> None:
        if on:
            iserver.attribute_service.write = edge_write
            srv.tune_gc = True
            srv._build(srv.plant, carry=srv.publisher.snapshot(srv.plant.tags), agg_carry=None)  # re-bind, freeze
        else:
            iserver.attribute_service.write = srv._original_write  # plain asyncua write path
            gc.unfreeze()
            if srv._gc_threshold is not None:
                gc.set_threshold(*srv._gc_threshold)
                srv._gc_threshold = None
            srv.tune_gc = False

    driver = _Driver(srv, n_tags)
    n_sub = min(SUBSCRIBED, n_tags)
    client = _ClientProcess()
    best: dict[str, dict] = {}
    results = []
    try:
        await client.start(srv.endpoint_url, srv.ns, n_sub, "lean", rounds * 2 * (warmup + seconds + 1) + 20)
        for _ in range(rounds):
            for mode in ("baseline", "fast"):
                use_edge_path(mode == "fast")
                r = await driver.run(mode, client, seconds, warmup) | {"client": "lean"}
                if mode not in best or r["changes_s"] > best[mode]["changes_s"]:
                    best[mode] = r
        results += [best["baseline"], best["fast"]]
        totals = {"errors": client.latest.get("errors", 0), "checked": client.latest.get("checked", 0)}
        await client.stop()
        if handler:
            client = _ClientProcess()
            h_seconds, h_warmup = max(seconds, 3.0), max(warmup, 1.5)  # its backlog needs time to settle
            await client.start(srv.endpoint_url, srv.ns, n_sub, "handler", h_warmup + h_seconds + 20)
            r = await driver.run("fast", client, h_seconds, h_warmup, cycle_s=n_tags / 40_000)
            results.append(r | {"client": "handler"})
            totals["errors"] += client.latest.get("errors", 0)
            totals["checked"] += client.latest.get("checked", 0)
    finally:
        await client.stop()
        await srv.stop()
        gc.collect()
    for r in results:
        r.update(build_s=srv.build_s, startup_s=startup_s, size_totals=totals)
    return results


def _fmt(r: dict) -> str:
    return (f"  {r['mode']:8s} {r['tags']:>6d} tags, {r['client']:7s} client: {r['changes_s']:>9.0f} changes/s delivered "
            f"(updates offered {r['produced_s']:>9.0f}/s), server CPU {r['server_cpu_ms_per_1k']:7.2f} ms per 1,000 "
            f"({r['server_cpu_share'] * 100:3.0f}% of a core), client CPU {r['client_cpu_share'] * 100:3.0f}%, "
            f"checked {r['checked']} ({r['checked_errors']} bad), build {r['build_s']:.2f} s, start-up {r['startup_s']:.2f} s")


async def bench_main(long: bool) -> None:
    import tempfile

    from edge.security.users import add_user

    logging.basicConfig(level=logging.ERROR)
    seconds, warmup = (10.0, 2.0) if long else (1.5, 0.7)
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        add_user(users, "bench", "viewer", "bench-password")
        results = {}
        handler = None
        for n in (10_000, 50_000):
            t_size = time.monotonic()
            for r in await run_size(n, seconds, warmup, users, handler=n == 10_000):
                print(_fmt(r), flush=True)
                if r["client"] == "handler":
                    handler = r
                else:
                    results[(r["mode"], n)] = r
            print(f"  ({n} tags: {time.monotonic() - t_size:.0f} s)", flush=True)
        assert handler is not None

    out: dict = {}
    for n in (10_000, 50_000):
        f, b = results[("fast", n)], results[("baseline", n)]
        k = f"{n // 1000}k"
        out[f"changes_s_{k}"] = round(f["changes_s"])
        out[f"baseline_changes_s_{k}"] = round(b["changes_s"])
        out[f"changes_ratio_{k}"] = round(f["changes_s"] / b["changes_s"], 2)
        out[f"cpu_ms_per_1k_{k}"] = round(f["server_cpu_ms_per_1k"], 2)
        out[f"baseline_cpu_ms_per_1k_{k}"] = round(b["server_cpu_ms_per_1k"], 2)
        out[f"cpu_ratio_{k}"] = round(f["server_cpu_ms_per_1k"] / b["server_cpu_ms_per_1k"], 3)
    out["changes_ratio"] = out["changes_ratio_10k"]
    out["cpu_ratio"] = out["cpu_ratio_10k"]
    # every notification checked by every client in the run (all windows, both modes)
    out["checked_errors"] = sum(results[("fast", n)]["size_totals"]["errors"] for n in (10_000, 50_000))
    out["checked"] = sum(results[("fast", n)]["size_totals"]["checked"] for n in (10_000, 50_000))
    out["build_50k_s"] = round(results[("fast", 50_000)]["build_s"], 2)
    out["startup_50k_s"] = round(results[("fast", 50_000)]["startup_s"], 2)
    out["handler_client_changes_s"] = round(handler["changes_s"])
    print(f"10k tags: {out['changes_ratio_10k']}x the baseline's changes/s, {out['cpu_ratio_10k']}x its CPU per change "
          f"(targets >= 8x, <= 0.15x); 50k tags: {out['changes_ratio_50k']}x, {out['cpu_ratio_50k']}x; "
          f"50k address space built in {out['build_50k_s']} s")
    print("RESULT " + json.dumps(out))


async def profile_fast() -> None:
    """Where the fast server's CPU goes (cProfile, top functions by own time)."""
    import cProfile
    import pstats
    import tempfile

    from edge.security.users import add_user

    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        add_user(users, "bench", "viewer", "bench-password")
        prof = cProfile.Profile()
        prof.enable()
        rs = await run_size(10_000, 5.0, 2.0, users, handler=False)
        prof.disable()
    for r in rs:
        print(_fmt(r))
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", action="store_true", help="10 s measuring windows instead of 1.5 s")
    ap.add_argument("--profile", action="store_true", help="profile the fast server with 10,000 tags only")
    ap.add_argument("--client", nargs=5, metavar=("ENDPOINT", "NS", "N", "MODE", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        endpoint, ns, n, mode, secs = args.client
        logging.basicConfig(level=logging.INFO if os.environ.get("BENCH_DEBUG") else logging.ERROR)
        asyncio.run(client_main(endpoint, int(ns), int(n), mode == "handler", float(secs)))
        return
    if args.profile:
        asyncio.run(profile_fast())
        return
    asyncio.run(bench_main(args.long))


if __name__ == "__main__":
    main()
