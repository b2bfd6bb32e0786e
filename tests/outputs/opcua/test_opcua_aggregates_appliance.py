"""Aggregate variables end to end: simulated device -> poller -> aggregator -> OPC UA server ->
real asyncua client; what the client reads is checked against the raw samples the window holds.
Also: bad faults and an offline device in the StatusCodes, a reload, and configuration errors."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client, ua
from harness import server_pki, wait_until

from edge.config.errors import ConfigError
from edge.config.loader import load_config

S = 1_000_000_000
GRACE_MS = 300
FULL = ["Count", "Min", "Max", "Mean", "First", "Last", "Sum", "Std", "Twa", "GoodRatio", "BadCount"]
LEVEL = f"{{windows: [1s], capacity_s: 60, grace_ms: {GRACE_MS}, opcua: true}}"


def site_text(users: str, level: str = LEVEL, temp: str = "{windows: [1s]}", extra: str = "",
              plc_port: int | str = "{port:plc}", opc_port: int = 0) -> str:
    """The PLC on a port held for the simulator (``{port:plc}``, see make_site); OPC UA on any free port."""
    pki = Path(users).parent / "pki"  # made by the users fixture (a server certificate: passwords travel encrypted)
    return f"""
site: {{name: aggsite}}
buses: [{{name: net, type: modbus_tcp, timeout_ms: 100}}]
devices:
  - name: plc
    bus: net
    port: {plc_port}
    interval_ms: 100
    offline_after_failures: 2
    backoff_max_s: 1
    points:
      - {{name: level, address: 0, type: float32, unit: "%", range: [0, 100],
          sim: {{kind: sine, mean: 50, amplitude: 20, noise: 1, period_s: 7}}, aggregate: {level}}}
      - {{name: temp, address: 2, type: float32, unit: degC, sim: {{kind: constant, value: 21.5}}, aggregate: {temp}}}
outputs:
  aggregator: {{collect_interval_ms: 100{extra}}}
  opcua:
    endpoint: opc.tcp://127.0.0.1:{opc_port}/edge
    security_policies: [None]
    allow_security_none: true
    users_file: {users}
    pki_dir: {pki}
"""


@pytest.fixture
def users(tmp_path):
    from edge.security.users import add_user

    path = tmp_path / "users.txt"
    add_user(path, "vic", "viewer", "viewer-password")
    server_pki(tmp_path)
    return str(path)


def client(site) -> Client:  # noqa: ANN001 - a conftest Site
    c = Client(site.app.outputs.opcua.endpoint_url, timeout=10)
    c.set_user("vic")
    c.set_password("viewer-password")
    return c


def ns_of(dt: datetime) -> int:
    """An OPC UA DateTime (100 ns ticks, here whole microseconds) as Unix ns."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1e6) * 1000


async def read_window(c: Client, ns: int, key: str, window: str, names: list[str]) -> dict[str, ua.DataValue]:
    """Every statistic of one window in ONE Read request, so that they belong to the same window."""
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(f"{key}#aggregates.{window}.{n}", ns),
                                         AttributeId=ua.AttributeIds.Value) for n in names]
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    return dict(zip(names, await c.uaclient.read(params), strict=True))


class Recorder:
    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001
        self.values.append(data.monitored_item.Value)

    def statuses(self) -> list[int]:
        return [d.StatusCode.value for d in self.values]


def expected_stats(ts: np.ndarray, v: np.ndarray, q: np.ndarray, end_ns: int) -> dict[str, float]:
    """The statistics of one window from its raw samples (definitions of docs/aggregator.md)."""
    good = (q == 0) & ~np.isnan(v)
    g = v[good]
    nxt = np.append(ts[1:], end_ns)  # a good value holds until the next sample of any quality or the end
    dt = (nxt - ts)[good].astype(np.float64)
    return {"Count": int(good.sum()), "BadCount": int((~good).sum()), "GoodRatio": good.sum() / len(v),
            "Min": g.min(), "Max": g.max(), "First": g[0], "Last": g[-1], "Sum": g.sum(), "Mean": g.mean(),
            "Std": g.std(), "Twa": float((g * dt).sum() / dt.sum())}


async def test_clients_read_the_window_statistics_of_the_polled_values(make_site, users) -> None:
    site = await make_site(site_text(users))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    agg = site.app.outputs.aggregator
    level_id = site.tag_id("plc", "level")
    async with client(site) as c:
        ns = await c.get_namespace_index("urn:edge:aggsite")
        plc = await c.nodes.objects.get_child([f"{ns}:aggsite", f"{ns}:net", f"{ns}:plc"])
        folder = await plc.get_child([f"{ns}:Aggregates"])
        assert [(await n.read_browse_name()).Name for n in await folder.get_children()] == ["level"]
        window = await folder.get_child([f"{ns}:level", f"{ns}:1s"])
        assert [(await n.read_browse_name()).Name for n in await window.get_children()] == FULL
        # temp has a ring (windows go to InfluxDB) but no opcua: no aggregate node
        dv = await c.get_node(ua.NodeId("plc.temp#aggregates", ns)).read_data_value(raise_on_bad_status=False)
        assert dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        assert agg.opcua_tag_ids == [level_id]

        rec = Recorder()
        sub = await c.create_subscription(50, rec)
        await sub.subscribe_data_change(await window.get_child([f"{ns}:Mean"]))
        # two windows closed after the subscription: the second one is a full window
        assert await wait_until(lambda: sum(d.StatusCode.is_good() and d.Value.Value is not None
                                            for d in rec.values) >= 3, 6)
        dvs = await read_window(c, ns, "plc.level", "1s", FULL)
        end_ns = ns_of(dvs["Mean"].SourceTimestamp)
        assert end_ns % S == 0  # the end of a wall-clock aligned window
        assert {ns_of(d.SourceTimestamp) for d in dvs.values()} == {end_ns}
        ts, v, q = agg.read_range(level_id, end_ns - S, end_ns)
        want = expected_stats(ts, v, q, end_ns)
        assert 7 <= want["Count"] <= 11 and want["BadCount"] == 0  # 100 ms polls
        for name in ("Count", "BadCount", "Min", "Max", "First", "Last", "GoodRatio"):
            assert dvs[name].Value.Value == want[name], name
        for name in ("Sum", "Mean", "Std", "Twa"):
            assert dvs[name].Value.Value == pytest.approx(want[name], rel=1e-12, abs=1e-12), name
        assert dvs["Count"].Value.VariantType == ua.VariantType.UInt32
        assert dvs["Mean"].Value.VariantType == ua.VariantType.Double
        # the statistics are those of the values the device served: float32 sine around 50
        assert 25 <= want["Min"] <= want["Mean"] <= want["Max"] <= 75
        assert all(np.float32(x) == x for x in v)
        for name, d in dvs.items():
            assert d.StatusCode.is_good(), name
            srv = ns_of(d.ServerTimestamp)
            # a window is taken at the first collect after its end + grace
            assert end_ns + GRACE_MS * 1_000_000 - 1_000_000 <= srv <= ns_of(datetime.now(UTC)) + 1_000_000
        stamps = [ns_of(d.SourceTimestamp) for d in rec.values if d.SourceTimestamp is not None]
        assert len(stamps) >= 3 and set(np.diff(stamps).tolist()) == {S}  # one window per second
        units = await (await window.get_child([f"{ns}:Mean", "0:EngineeringUnits"])).read_value()
        assert units.DisplayName.Text == "%"


async def subscribed(c: Client, *names: str) -> list[Recorder]:
    """One recorder per statistic of plc.level's 1 s window, once a Good window has arrived."""
    ns = await c.get_namespace_index("urn:edge:aggsite")
    recs = []
    for name in names:
        rec = Recorder()
        sub = await c.create_subscription(50, rec)
        await sub.subscribe_data_change(c.get_node(ua.NodeId(f"plc.level#aggregates.1s.{name}", ns)))
        recs.append(rec)
    assert await wait_until(lambda: ua.StatusCodes.Good in recs[0].statuses(), 4)
    return recs


async def test_a_window_of_out_of_range_samples_is_bad_out_of_range(make_site, users) -> None:
    site = await make_site(site_text(users))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    async with client(site) as c:
        rec, counts = await subscribed(c, "Mean", "BadCount")

        # out of range for more than a whole window: that window has no good sample
        site.sim.set_value("plc", "level", 150.0)
        assert await wait_until(lambda: ua.StatusCodes.BadOutOfRange in rec.statuses(), 5)
        bad = next(d for d in rec.values if d.StatusCode.value == ua.StatusCodes.BadOutOfRange)
        assert bad.Value.Value is None
        # every sample of that window counted bad (its BadCount may come in the next publish response)
        assert await wait_until(lambda: any((d.Value.Value or 0) >= 7 for d in counts.values), 3)
        site.sim.release("plc", "level")
        n = len(rec.values)
        assert await wait_until(lambda: ua.StatusCodes.Good in rec.statuses()[n:], 5)


async def test_an_offline_device_turns_its_aggregates_bad_no_communication(make_site, users) -> None:
    site = await make_site(site_text(users))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    async with client(site) as c:
        ns = await c.get_namespace_index("urn:edge:aggsite")
        [rec] = await subscribed(c, "Mean")
        # the device goes silent: failed polls, then offline (no samples at all)
        site.sim.set_fault("plc", "silence")
        assert await wait_until(lambda: rec.statuses()[-1:] == [ua.StatusCodes.BadNoCommunication], 6)
        await asyncio.sleep(1.1)  # windows keep closing empty: still BadNoCommunication, later ends
        dvs = await read_window(c, ns, "plc.level", "1s", ["Mean", "Count", "BadCount"])
        assert dvs["Mean"].StatusCode.value == ua.StatusCodes.BadNoCommunication and dvs["Mean"].Value.Value is None
        assert dvs["Count"].Value.Value == 0 and dvs["Count"].StatusCode.is_good()
        assert ns_of(dvs["Mean"].SourceTimestamp) >= ns_of(datetime.now(UTC)) - 2 * S
        site.sim.clear_fault("plc")
        n = len(rec.values)
        assert await wait_until(lambda: ua.StatusCodes.Good in rec.statuses()[n:], 6)
        stamps = [ns_of(d.SourceTimestamp) for d in rec.values if d.SourceTimestamp is not None]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_reload_changes_the_aggregate_variables_and_keeps_subscriptions(make_site, held_ports, users) -> None:
    site = await make_site(site_text(users))
    assert await wait_until(lambda: site.diag("plc").polls_ok >= 3, 5)
    async with client(site) as c:
        ns = await c.get_namespace_index("urn:edge:aggsite")
        rec = Recorder()
        sub = await c.create_subscription(50, rec)
        await sub.subscribe_data_change(c.get_node(ua.NodeId("plc.level#aggregates.1s.Max", ns)))
        assert await wait_until(lambda: ua.StatusCodes.Good in rec.statuses(), 4)

        path = site.loaded.path
        old = path.read_text()
        path.write_text(held_ports.fill(site_text(
            users,
            level=f"{{windows: [1s, 2s], capacity_s: 60, grace_ms: {GRACE_MS}, opcua: [max, count]}}",
            temp="{windows: [1s], grace_ms: 100, opcua: [mean]}")) + old[old.index("\nruntime:"):])
        await site.app.reload(load_config(path))
        window = c.get_node(ua.NodeId("plc.level#aggregates.1s", ns))
        assert [(await n.read_browse_name()).Name for n in await window.get_children()] == ["Count", "Max"]
        dv = await c.get_node(ua.NodeId("plc.level#aggregates.1s.Min", ns)).read_data_value(
            raise_on_bad_status=False)
        assert dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        n = len(rec.values)
        temp_mean = c.get_node(ua.NodeId("plc.temp#aggregates.1s.Mean", ns))
        two_s = c.get_node(ua.NodeId("plc.level#aggregates.2s.Max", ns))

        async def temp_is_good() -> bool:
            dv = await temp_mean.read_data_value(raise_on_bad_status=False)
            return dv.StatusCode.is_good() and dv.Value.Value == 21.5

        for _ in range(40):
            if await temp_is_good():
                break
            await asyncio.sleep(0.1)
        assert await temp_is_good()
        # the subscription made before the reload still gets the next windows
        assert await wait_until(lambda: sum(d.StatusCode.is_good() for d in rec.values[n:]) >= 1, 4)
        for _ in range(40):
            dv = await two_s.read_data_value(raise_on_bad_status=False)
            if dv.StatusCode.is_good():
                break
            await asyncio.sleep(0.1)
        assert dv.StatusCode.is_good() and ns_of(dv.SourceTimestamp) % (2 * S) == 0


def test_bad_opcua_values_are_clear_configuration_errors(tmp_path) -> None:
    path = tmp_path / "edge.yaml"
    text = site_text(str(tmp_path / "users.txt"), level="{windows: [1s], opcua: [mean, median]}",
                     temp="{windows: [1s], opcua: sometimes}", plc_port=1502, opc_port=4840)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    messages = {".".join(map(str, i.path)): (i.message, i.line) for i in err.value.issues}
    level = messages["devices.0.points.0.aggregate.opcua"]
    assert "unknown statistic 'median'" in level[0] and "allowed: count, min, max, mean" in level[0]
    assert level[1] == text.splitlines().index(next(x for x in text.splitlines() if "name: level" in x)) + 2
    temp = messages["devices.0.points.1.aggregate.opcua"]
    assert "unknown statistic 'sometimes'" in temp[0]

    for bad, says in (("{windows: [1s], opcua: []}", "empty list publishes nothing"),
                      ("{windows: [1s], opcua: 3}", "opcua is true (every statistic), false, or a list"),
                      ("{windows: [1s], opcua: [mean, mean]}", "'mean' is listed twice"),
                      ("{windows: [], opcua: true}", "windows is empty")):
        path.write_text(site_text("users.txt", level=bad, plc_port=1502, opc_port=4840))
        with pytest.raises(ConfigError) as err:
            load_config(path, env={})
        assert any(says in i.message for i in err.value.issues), (bad, [str(i) for i in err.value.issues])

    # a statistic the site's aggregator does not compute: refused by the loader (so by `edge check`),
    # at the tag's aggregate key, not only when the aggregator is built at start-up
    text = site_text("users.txt", level="{windows: [1s], opcua: [mean, std]}", extra=", stats: basic",
                     plc_port=1502, opc_port=4840)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    [issue] = err.value.issues
    assert ".".join(map(str, issue.path)) == "devices.0.points.0.aggregate"
    assert "plc.level: aggregate.opcua lists std, which aggregator stats: basic does not compute" in issue.message
    assert issue.line == text.splitlines().index(next(x for x in text.splitlines() if "name: level" in x)) + 2
