"""One value everywhere (issue 14, acceptance 1 and 2): the demo plant, simulated, polled by the
appliance, and every demo tag's value at one source timestamp compared across every way out of
the appliance against the simulator's own engineering value for that instant.

The paths: the HTTP API (live and history), OPC UA Read by asyncua and by node-opcua, OPC UA
HistoryRead, ``edge history --json`` (a separate process reading the spool), and the InfluxDB
export as a real InfluxDB 1.x stores it (queried with its own InfluxQL API). The truth:
``SimPlant.value_served`` (what the device's registers held when it answered the request whose
response the appliance stamped; the signal a pure function of simulated time and seed, stored
and read exactly: 97 x 0.1 is 9.7), and for the plugin's derived tags its hook applied to those
values. Strings and enumerations (value and state name) included. 0 mismatches.

Exactness. Every comparison is ``==`` on the value in the path's own type, no tolerance: doubles
travel exactly through OPC UA (Double), JSON (shortest round-trip text), line protocol (``repr``)
and InfluxDB 1.x (float64, JSON out with Go's shortest round-trip formatting); float32 tags are
served as OPC UA Float, which holds a float32 value exactly, and the truth is the float32 the
simulator stored. A path's type is part of the check (bools are booleans, unscaled integers
integers, scaled values Double). The only rounding is of time: OPC UA DateTime carries the
sample's whole microseconds (the server's datetime resolution), so an OPC UA timestamp
identifies a sample by ``ts_ns // 1000``; samples of one tag are milliseconds apart, so this is
unambiguous, and the test asserts that it is.

The run: a few seconds of the demo (simulated time starting at 60 s, when the line runs, so the
pump's current has decimals and the enumerations are not all 0), then polling stops, so that
the live values of every path belong to the same last samples.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asyncua import Client, ua
from harness import wait_until

from drivers.modbus.resolve import data as modbus_data
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.sim.spec import RtuOverTcpTransport, SimDeviceSpec, TcpTransport
from drivers.modbus.simulation import plant_specs
from edge.config.loader import LoadedConfig, load_config
from edge.core.model import TagInfo
from edge.runtime.app import Appliance
from tests.fixtures.tsdb import InfluxDB1
from tests.outputs.opcua.opcua_helpers import node_ua

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"
START_S = 60.0  # simulated seconds at start: the line runs (its first start is at 20 s, running at 35 s)
RUN_S = 3.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FLOAT_TYPES = ("float32", "float64")


@pytest.fixture
def influx(tmp_path_factory: pytest.TempPathFactory):
    db = InfluxDB1(tmp_path_factory.mktemp("influxdb1"))
    db.start()
    db.create_database("edge")
    try:
        yield db
    finally:
        db.stop()


def demo_site(folder: Path, influx_url: str) -> Path:
    """The demo's own configuration with one more output: the InfluxDB export to the test's server."""
    text = DEMO.read_text()
    site = text.replace("plugins_dir: ../../../plugins", f"plugins_dir: {REPO / 'plugins'}")
    influx = f"  influxdb: {{url: {influx_url}, database: edge, batch_max_age_ms: 100}}\n"
    site = site.replace("outputs:\n  spool:", f"outputs:\n{influx}  spool:")
    assert site.count("influxdb:") == 1 and "../../../plugins" not in site
    path = folder / "edge.yaml"
    path.write_text(site)
    return path


def on_port_zero(spec: SimDeviceSpec) -> SimDeviceSpec:
    """The simulated twin on free ports: TCP devices bind port 0; a gateway's drives share theirs."""
    t = spec.transport
    if isinstance(t, TcpTransport | RtuOverTcpTransport):
        return spec.model_copy(update={"transport": t.model_copy(update={"port": 0, "share": f"{t.kind}:{t.port}"})})
    return spec


def ns_of(dt: datetime) -> int:
    """An OPC UA DateTime (whole microseconds here) as Unix ns."""
    return (dt.replace(tzinfo=dt.tzinfo or UTC) - _EPOCH) // _MICRO * 1000


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


class Truth:
    """The simulator's engineering value of every demo tag at an instant; derived tags by their hook."""

    def __init__(self, loaded: LoadedConfig, sim: SimPlant) -> None:
        self.sim = sim
        self.hooks = {f"{d.name}.{h.derived.name}": (d.name, h) for d in loaded.devices for h in d.hooks}
        self.enums = {f"{d.name}.{p.name}": dict(p.enum) for d in loaded.devices
                      for p in modbus_data(d).register_points if p.enum}
        self.enums |= {k: dict(h.derived.enum) for k, (_, h) in self.hooks.items() if h.derived.enum}

    def value(self, tag: TagInfo, ts_ns: int) -> float | str:
        hook = self.hooks.get(tag.key)
        if hook is None:
            return self.sim.value_served(tag.device, tag.name, ts_ns)
        device, h = hook
        result = h.function(*[self.sim.value_served(device, name, ts_ns) for name in h.derived.inputs])
        return float(result)  # type: ignore[arg-type]

    def state(self, tag: TagInfo, value: float | str) -> str | None:
        names = self.enums.get(tag.key)
        return names.get(int(value)) if names is not None and isinstance(value, float) else None


def as_json_type(tag: TagInfo, value: float | str) -> object:
    """The truth in the type a JSON view must show: bools true/false, unscaled integers whole numbers."""
    if isinstance(value, str):
        return value
    if tag.dtype == "bool":
        return value != 0.0
    if tag.dtype not in FLOAT_TYPES:
        assert value.is_integer(), (tag.key, value)
        return int(value)
    return value


def same(got: object, want: object) -> bool:
    """Equal in value and kind (True is not 1, 1 is not 1.0 for a float tag's JSON is fine: JSON has one number)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, str) or isinstance(got, str):
        return got == want
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return got == want


UA_TYPES = {"bool": ua.VariantType.Boolean, "int16": ua.VariantType.Int16, "uint16": ua.VariantType.UInt16,
            "int32": ua.VariantType.Int32, "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64,
            "uint64": ua.VariantType.UInt64, "float32": ua.VariantType.Float, "float64": ua.VariantType.Double,
            "string": ua.VariantType.String}


def ua_expected(tag: TagInfo, value: float | str) -> object:
    """The truth as an OPC UA client decodes it (a Float is the float32 itself, read as a double)."""
    if tag.dtype == "float32":
        assert float(np.float32(value)) == value, (tag.key, value)  # the simulator stored a float32
    return as_json_type(tag, value)


async def run_demo(tmp_path: Path, influx: InfluxDB1, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("EDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDGE_DEMO_OPCUA_PORT", "0")
    monkeypatch.setenv("EDGE_DEMO_API_PORT", "0")
    monkeypatch.setenv("EDGE_DEMO_PLC_PORT", "1")  # until the simulator has bound its ports
    monkeypatch.setenv("EDGE_DEMO_GATEWAY_PORT", "1")
    (tmp_path / "run").mkdir()
    site = demo_site(tmp_path, influx.url)
    sim = SimPlant([on_port_zero(s) for s in plant_specs(load_config(site))], seed=0, start_s=START_S)
    await sim.start()
    monkeypatch.setenv("EDGE_DEMO_PLC_PORT", str(sim.address("plc_line1")[1]))
    monkeypatch.setenv("EDGE_DEMO_GATEWAY_PORT", str(sim.address("vfd_pump1")[1]))
    loaded = load_config(site)
    app = Appliance(loaded)
    return site, sim, loaded, app


async def stop_polling(app: Appliance) -> None:
    """Every device's poller stops; what every output holds stays as the last polls left it."""
    tasks = [r.task for r in app.devices.values() if r.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # the derived-tag workers hand their last results back
    spool = app.outputs.spool
    assert await wait_until(lambda: spool.stats()["unsent_points"] == 0, 20), spool.stats()


async def opcua_reads(endpoint: str, tags: list[TagInfo], t0_ns: int):
    """asyncua: one Read of every tag (value, both timestamps) and one HistoryRead of every tag."""
    async with Client(endpoint, timeout=30) as c:
        ns = await c.get_namespace_index("urn:edge:demo")
        nodes = [ua.NodeId(t.key, ns, ua.NodeIdType.String) for t in tags]
        texts = [ua.NodeId(f"{t.key}#ValueAsText", ns, ua.NodeIdType.String) for t in tags if enumerated(t)]
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes + texts]
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        live = await c.uaclient.read(params)  # one request: the values and their texts belong together
        details = ua.ReadRawModifiedDetails(IsReadModified=False, NumValuesPerNode=0, ReturnBounds=False,
                                            StartTime=_EPOCH + (t0_ns // 1000) * _MICRO,
                                            EndTime=datetime.now(UTC))
        hparams = ua.HistoryReadParameters(HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
                                           ReleaseContinuationPoints=False,  # asyncua defaults to True
                                           NodesToRead=[ua.HistoryReadValueId(NodeId=n) for n in nodes])
        history = await c.uaclient.history_read(hparams)
    return ns, live, history


def enumerated(tag: TagInfo) -> bool:
    """An enumeration (not a two-state bool): its node has a ValueAsText."""
    return tag.enum is not None and tag.dtype != "bool"


def influx_rows(influx: InfluxDB1, devices: list[str]) -> dict[str, dict[int, dict[str, object]]]:
    """device -> ts_ns -> {field: value}, as InfluxDB 1.x stores the export (InfluxQL, ns epoch)."""
    out: dict[str, dict[int, dict[str, object]]] = {}
    for device in devices:
        res = influx.query(f'SELECT * FROM "{device}"', db="edge")["results"][0]
        rows: dict[int, dict[str, object]] = {}
        for series in res.get("series", []):
            cols = series["columns"]
            for row in series["values"]:
                rec = dict(zip(cols, row, strict=True))
                rows.setdefault(int(rec.pop("time")), {}).update({k: v for k, v in rec.items() if v is not None})
        out[device] = rows
    return out


def edge_history(site: Path, tags: list[TagInfo]) -> dict[tuple[str, int], dict]:
    """``edge history --json`` of every tag, in its own process: (tag, ts_ns) -> row."""
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "history", str(site), *[t.key for t in tags],
                           "--since", "10m", "--json"], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return {(r["tag"], r["ts_ns"]): r for r in json.loads(proc.stdout)}


async def test_every_demo_tag_has_one_value_everywhere(tmp_path: Path, influx: InfluxDB1,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    site, sim, loaded, app = await run_demo(tmp_path, influx, monkeypatch)
    tags = list(loaded.plant.tags)
    try:
        t0 = time.time_ns()
        await app.start()
        started = time.monotonic()
        ok = await wait_until(lambda: time.monotonic() - started >= RUN_S
                              and all(r.diag.polls_ok >= 3 for r in app.devices.values()), 30)
        assert ok, {n: (r.diag.state.name, r.diag.polls_ok, r.diag.last_error) for n, r in app.devices.items()}
        await stop_polling(app)
        endpoint, api = app.outputs.opcua.endpoint_url, app.intelligence.api.url
        ns, live, history = await opcua_reads(endpoint, tags, t0)
        node_reads, cli, api_live_rows, api_hist = await asyncio.gather(  # two processes and the API at once
            node_ua(endpoint, None, None, [{"op": "read", "nodeId": f"ns={ns};s={t.key}"} for t in tags]
                    + [{"op": "read", "nodeId": f"ns={ns};s={t.key}#ValueAsText"} for t in tags if enumerated(t)],
                    tmp_path / "node-pki"),
            asyncio.to_thread(edge_history, site, tags),
            asyncio.to_thread(get_json, f"{api}/api/tags"),
            asyncio.to_thread(lambda: {t.key: get_json(f"{api}/api/tags/{t.key}/history?start_ns={t0}&max_values=100000")
                                       for t in tags}))
        api_live = {t["key"]: t for t in api_live_rows}
        stored = influx_rows(influx, [d.name for d in loaded.plant.devices])
        truth = Truth(loaded, sim)
        mismatches: list[str] = []
        compared: dict[str, int] = {}

        def check(path: str, tag: TagInfo, got: object, want: object) -> None:
            compared[path] = compared.get(path, 0) + 1
            if not same(got, want):
                mismatches.append(f"{tag.key} {path}: {got!r} ({type(got).__name__}), want {want!r}")

        texts_seen = 0
        for i, tag in enumerate(tags):
            dv = live[i]
            assert dv.StatusCode.is_good(), (tag.key, dv.StatusCode)
            # the sample the OPC UA value belongs to, in ns: the history's sample of that microsecond
            hist = api_hist[tag.key]
            stamps = [t for t in hist["ts_ns"] if t // 1000 == ns_of(dv.SourceTimestamp) // 1000]
            assert len(stamps) == 1, (tag.key, dv.SourceTimestamp, hist["ts_ns"][-5:])
            ts = stamps[0]
            want = truth.value(tag, ts)
            state = truth.state(tag, want)
            # OPC UA Read, asyncua: the value in the tag's type
            check("opcua-asyncua", tag, dv.Value.Value, ua_expected(tag, want))
            check("opcua-asyncua type", tag, dv.Value.VariantType, UA_TYPES[tag.dtype])
            if enumerated(tag):  # ValueAsText: the state's name, the value's SourceTimestamp
                text = live[len(tags) + texts_seen]
                node_text = node_reads[len(tags) + texts_seen]
                texts_seen += 1
                check("opcua-asyncua ValueAsText", tag, text.Value.Value.Text, state)
                check("opcua-asyncua ValueAsText time", tag, text.SourceTimestamp, dv.SourceTimestamp)
                check("opcua-node ValueAsText", tag, node_text["value"], state)
            # OPC UA Read, node-opcua: same SourceTimestamp (ms + picoseconds), same value
            nr = node_reads[i]
            node_ns = round(datetime.fromisoformat(nr["source"].replace("Z", "+00:00")).timestamp() * 1000) * 10**6 \
                + nr["sourcePico"] // 1000
            check("opcua-node timestamp", tag, node_ns, ts // 1000 * 1000)
            node_value = int(nr["value"]) if tag.dtype in ("int64", "uint64") else nr["value"]
            check("opcua-node", tag, node_value, ua_expected(tag, want))
            check("opcua-node type", tag, nr["dataType"], UA_TYPES[tag.dtype].name)
            # OPC UA HistoryRead: the entry of that SourceTimestamp
            assert history[i].StatusCode.is_good(), (tag.key, history[i].StatusCode)
            entries = [d for d in history[i].HistoryData.DataValues if d.SourceTimestamp == dv.SourceTimestamp]
            check("historyread count", tag, len(entries), 1)
            for d in entries:
                check("historyread", tag, d.Value.Value, ua_expected(tag, want))
            # HTTP API history: the sample at ts
            k = hist["ts_ns"].index(ts)
            check("api-history", tag, hist["values"][k], as_json_type(tag, want))
            check("api-history quality", tag, hist["quality"][k], 0)
            # HTTP API live: the latest sample (ts at or after the OPC UA one: unchanged values are not re-reported)
            now = api_live[tag.key]
            check("api-live quality", tag, now["quality"], "Good")
            check("api-live", tag, now["value"], as_json_type(tag, truth.value(tag, now["ts_ns"])))
            if state is not None:
                check("api-live state", tag, now["state"], truth.state(tag, truth.value(tag, now["ts_ns"])))
            # edge history --json (its own process, the spool on disk)
            row = cli.get((tag.key, ts))
            check("edge-history", tag, row["value"] if row else "missing", as_json_type(tag, want))
            if state is not None:
                check("edge-history text", tag, row["text"] if row else "missing", state)
            # InfluxDB 1.x as it stores the export
            fields = stored[tag.device].get(ts, {})
            check("influxdb", tag, fields.get(tag.name, "missing"), want if tag.dtype in FLOAT_TYPES or
                  isinstance(want, str) else float(want))  # a numeric field is a float64 field in InfluxDB
            check("influxdb quality", tag, fields.get(f"q_{tag.name}"), 0)
        assert mismatches == [], f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:40])
        assert all(n == len(tags) for p, n in compared.items() if "state" not in p and "text" not in p.lower()), compared
        assert len(tags) == 109 and compared["api-live state"] == compared["opcua-node ValueAsText"] == 5
        # Acceptance 2: the pump's current, the room temperature and the line's runtime hours reach both
        # OPC UA clients as Double with their decimals (0.1 and 0.01 steps; the issue saw 9, 84, 3), equal
        # to the API's value of the same sample
        decimals = 0
        for key in ("vfd_pump1.motor_current", "th_room1.temperature", "plc_line1.runtime_hours"):
            i = [t.key for t in tags].index(key)
            assert live[i].Value.VariantType == ua.VariantType.Double and node_reads[i]["dataType"] == "Double"
            assert node_reads[i]["value"] == live[i].Value.Value
            k = [t // 1000 for t in api_hist[key]["ts_ns"]].index(ns_of(live[i].SourceTimestamp) // 1000)
            assert api_hist[key]["values"][k] == live[i].Value.Value
            decimals += sum(not float(d.Value.Value).is_integer() for d in history[i].HistoryData.DataValues)
        assert decimals > 0
    finally:
        await app.stop()
        await sim.stop()
