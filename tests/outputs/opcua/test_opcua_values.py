"""Values, StatusCodes and timestamps as subscribed by a real asyncua client; deadband at the source."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC

import numpy as np
import pytest
from asyncua import Client, ua
from opcua_helpers import PASSWORDS, config, make_plant, node_ua, tag_id

from edge.core.model import Quality, SampleBatch, TagInfo
from edge.outputs.opcua.fastpath import ua_time
from edge.outputs.opcua.server import OpcUaServer

pytestmark = pytest.mark.usefixtures("opcua_path")  # the fast path and the library's plain path


class Recorder:
    """asyncua subscription handler keeping every DataValue per node id string."""

    def __init__(self) -> None:
        self.values: dict[str, list[ua.DataValue]] = {}

    def datachange_notification(self, node, val, data) -> None:  # noqa: ANN001 - asyncua's signature
        self.values.setdefault(node.nodeid.Identifier, []).append(data.monitored_item.Value)

    async def wait_for(self, key: str, count: int, timeout_s: float = 5.0) -> list[ua.DataValue]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.values.get(key, [])) >= count:
                return self.values[key]
            await asyncio.sleep(0.02)
        raise AssertionError(f"{key}: wanted {count} notifications, got {self.values.get(key)}")


def good(device: str, ids: list[int], values: list[float], ts_ns: int | None = None) -> SampleBatch:
    return SampleBatch(device=device, ts_ns=ts_ns or time.time_ns(), tag_ids=np.array(ids, dtype=np.int32),
                       values=np.array(values, dtype=np.float64), quality=np.zeros(len(ids), dtype=np.uint8))


def client(srv: OpcUaServer, user: str = "victor") -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def test_device_goes_offline_and_back(running: OpcUaServer) -> None:
    plant = running.plant
    dev = plant.device("meter1")
    ids = list(dev.tag_ids)
    v_id, e_id, r_id, m_id, s_id = (tag_id(plant, f"meter1.{n}") for n in ("voltage", "energy", "running", "mode", "serial"))
    rec = Recorder()
    async with client(running) as c:
        sub = await c.create_subscription(20, rec)
        await sub.subscribe_data_change([c.get_node(f"ns={running.ns};s=meter1.{n}")
                                         for n in ("voltage", "energy", "running", "mode", "serial")])
        await rec.wait_for("meter1.voltage", 1)  # the initial BadWaitingForInitialData

        t_good = time.time_ns()
        values = [0.0] * len(ids)
        for tid, val in ((v_id, 231.5), (e_id, 12345.0), (r_id, 1.0), (m_id, 3.0)):
            values[ids.index(tid)] = val
        batch = good("meter1", ids, values, t_good)
        batch.values[ids.index(s_id)] = np.nan
        batch.texts = {s_id: "SN-0042"}
        assert running.consume(batch) == len(ids)

        dv = (await rec.wait_for("meter1.voltage", 2))[-1]
        assert dv.StatusCode.is_good() and dv.Value.Value == 231.5 and dv.Value.VariantType == ua.VariantType.Float
        assert abs(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() - t_good / 1e9) < 1e-5
        assert dv.ServerTimestamp is not None
        energy = (await rec.wait_for("meter1.energy", 2))[-1]
        assert energy.Value.Value == 12345 and energy.Value.VariantType == ua.VariantType.UInt32
        assert (await rec.wait_for("meter1.running", 2))[-1].Value.Value is True
        assert (await rec.wait_for("meter1.mode", 2))[-1].Value.Value == 3
        assert (await rec.wait_for("meter1.serial", 2))[-1].Value.Value == "SN-0042"

        # The poller's offline batch: every tag Bad_NoCommunication, no values.
        t_bad = time.time_ns()
        running.consume(SampleBatch.bad("meter1", t_bad, np.array(ids), Quality.BAD_NO_COMMUNICATION))
        dv = (await rec.wait_for("meter1.voltage", 3))[-1]
        assert dv.StatusCode.value == ua.StatusCodes.BadNoCommunication
        assert dv.Value is None or dv.Value.Value is None
        assert abs(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() - t_bad / 1e9) < 1e-5
        read = await c.get_node(f"ns={running.ns};s=meter1.voltage").read_data_value(raise_on_bad_status=False)
        assert read.StatusCode.value == ua.StatusCodes.BadNoCommunication
        # A second offline batch changes nothing: no duplicate notification.
        assert running.consume(SampleBatch.bad("meter1", time.time_ns(), np.array(ids), Quality.BAD_NO_COMMUNICATION)) == 0

        # Stale (Uncertain_LastUsableValue) keeps the value; then back online.
        stale = good("meter1", [v_id], [231.5])
        stale.quality[:] = Quality.UNCERTAIN_LAST_USABLE
        running.consume(stale)
        dv = (await rec.wait_for("meter1.voltage", 4))[-1]
        assert dv.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue and dv.Value.Value == 231.5

        running.consume(good("meter1", [v_id], [229.0]))
        dv = (await rec.wait_for("meter1.voltage", 5))[-1]
        assert dv.StatusCode.is_good() and dv.Value.Value == 229.0
        await sub.delete()


async def test_all_quality_codes_map_to_status_codes(running: OpcUaServer) -> None:
    c_id = tag_id(running.plant, "meter2.current")
    expected = {
        Quality.BAD_COMM_ERROR: ua.StatusCodes.BadCommunicationError,
        Quality.BAD_CONFIG_ERROR: ua.StatusCodes.BadConfigurationError,
        Quality.BAD_OUT_OF_RANGE: ua.StatusCodes.BadOutOfRange,
        Quality.BAD_NO_COMMUNICATION: ua.StatusCodes.BadNoCommunication,
        Quality.UNCERTAIN_LAST_USABLE: ua.StatusCodes.UncertainLastUsableValue,
        Quality.GOOD: ua.StatusCodes.Good,
        Quality.BAD_SENSOR_FAILURE: ua.StatusCodes.BadSensorFailure,  # sentinels (issue 16)
    }
    assert set(expected) == set(Quality)  # a new quality code needs its StatusCode here
    async with client(running) as c:
        node = c.get_node(f"ns={running.ns};s=meter2.current")
        for q, code in expected.items():
            b = good("meter2", [c_id], [5.0])
            b.quality[:] = q
            running.consume(b)
            dv = await node.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode.value == code, q


async def test_deadband_compares_with_last_reported_value(running: OpcUaServer) -> None:
    """voltage has deadband 0.5: a slow drift of 0.2 per poll is reported once it adds up past 0.5."""
    v_id = tag_id(running.plant, "meter2.voltage")
    rec = Recorder()
    async with client(running) as c:
        sub = await c.create_subscription(10, rec)
        await sub.subscribe_data_change(c.get_node(f"ns={running.ns};s=meter2.voltage"))
        await rec.wait_for("meter2.voltage", 1)
        reported = [running.consume(good("meter2", [v_id], [230.0 + 0.2 * i])) for i in range(8)]
        # 230.0 reported; 230.2, 230.4 within 0.5 of it; 230.6 reported; 230.8, 231.0 within; 231.2 reported...
        assert reported == [1, 0, 0, 1, 0, 0, 1, 0]
        dvs = await rec.wait_for("meter2.voltage", 4)
        assert [round(d.Value.Value, 1) for d in dvs[1:]] == [230.0, 230.6, 231.2]
        await sub.delete()


async def test_slow_client_queue_is_capped(users_file) -> None:
    """A client asking for an unlimited queue (0) gets the configured cap, not every change."""
    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file, max_queue_size=5))
    await srv.start()
    try:
        c_id = tag_id(plant, "meter1.current")
        rec = Recorder()
        async with client(srv) as c:
            sub = await c.create_subscription(400, rec)
            handle = await sub.subscribe_data_change(c.get_node(f"ns={srv.ns};s=meter1.current"), queuesize=0)
            assert handle
            await rec.wait_for("meter1.current", 1)
            for i in range(100):  # all within one publishing interval
                srv.consume(good("meter1", [c_id], [float(i)]))
            await asyncio.sleep(0)  # the library's plain path queues from tasks: one loop turn runs them all
            isub = next(iter(srv.server.iserver.subscription_service.subscriptions.values()))
            queued = sum(len(v) for v in isub._triggered_datachanges.values())
            queued += sum(int(ps.pending.sum()) for ps in srv.publisher.packed.subs.values())  # packed: newest value
            assert queued == 5
            dvs = await rec.wait_for("meter1.current", 6)
            assert [d.Value.Value for d in dvs[1:]] == [95.0, 96.0, 97.0, 98.0, 99.0]
            await sub.delete()
    finally:
        await srv.stop()


async def test_unknown_tag_ids_are_counted_not_raised(running: OpcUaServer) -> None:
    n = len(running.plant.tags)
    b = good("meter1", [0, n + 5, -1], [1.0, 2.0, 3.0])
    assert running.consume(b) == 1
    assert running.publisher.stats.dropped_unknown_tag == 2


async def test_value_as_text_follows_the_enumeration(running: OpcUaServer, tmp_path) -> None:  # noqa: ANN001
    """Issue 14: ValueAsText of enumerations was empty. It is the state's name, kept current (Read and
    subscriptions), with the value's StatusCode and SourceTimestamp; a state the configuration does not
    name shows its number. Read with asyncua and node-opcua."""
    plant = running.plant
    mode = tag_id(plant, "meter1.mode")  # {0: off, 1: auto, 3: manual}
    key = "meter1.mode#ValueAsText"
    rec = Recorder()
    async with client(running) as c:
        node = c.get_node(f"ns={running.ns};s={key}")
        waiting = await node.read_data_value(raise_on_bad_status=False)
        assert waiting.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData
        t_manual = time.time_ns()
        running.consume(good("meter1", [mode], [3.0], t_manual))
        dv = await node.read_data_value()
        assert dv.Value.Value.Text == "manual" and dv.StatusCode.is_good()
        assert dv.SourceTimestamp == ua_time(t_manual)
        sub = await c.create_subscription(20, rec)
        await sub.subscribe_data_change(node)
        await rec.wait_for(key, 1)
        running.consume(good("meter1", [mode], [1.0]))
        assert (await rec.wait_for(key, 2))[-1].Value.Value.Text == "auto"
        running.consume(good("meter1", [mode], [7.0]))
        assert (await rec.wait_for(key, 3))[-1].Value.Value.Text == "7"
        running.consume(good("meter1", [mode], [0.0]))
        assert (await rec.wait_for(key, 4))[-1].Value.Value.Text == "off"
        (read,) = await node_ua(running.endpoint_url, "victor", PASSWORDS["victor"],
                                [{"op": "read", "nodeId": f"ns={running.ns};s={key}"}], tmp_path / "pki")
        assert read["value"] == "off" and read["dataType"] == "LocalizedText"
        running.consume(SampleBatch("meter1", time.time_ns(), np.array([mode], np.int32), np.array([np.nan]),
                                    np.array([int(Quality.BAD_NO_COMMUNICATION)], np.uint8)))
        last = (await rec.wait_for(key, 5))[-1]
        assert last.StatusCode.value == ua.StatusCodes.BadNoCommunication and last.Value.Value is None


async def test_value_as_text_of_a_bit_field_names_the_set_bits(users_file) -> None:  # noqa: ANN001
    """A status word with named bits (plugins' ``bits:``) has a ValueAsText too: the set bits' names."""
    plant = make_plant(devices=1, analog_per_device=0)
    tid = len(plant.tags)
    plant.tags.append(TagInfo(id=tid, device="meter1", name="events", bus="line1", dtype="uint16",
                              bits={0: "ground_fault", 3: "over_temp", 9: "fan_fault"}))
    dev = plant.devices[0]
    plant.devices[0] = type(dev)(dev.name, dev.bus, dev.address, dev.plugin, dev.plugin_version, (*dev.tag_ids, tid))
    srv = OpcUaServer(plant, config(users_file))
    await srv.start()
    try:
        srv.consume(good("meter1", [tid], [float(1 | 8)]))
        async with client(srv) as c:
            node = c.get_node(f"ns={srv.ns};s=meter1.events#ValueAsText")
            assert (await node.read_value()).Text == "ground_fault,over_temp"
            srv.consume(good("meter1", [tid], [0.0]))
            assert (await node.read_value()).Text == ""
    finally:
        await srv.stop()
