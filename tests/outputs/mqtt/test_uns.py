"""The plain JSON unified namespace: retained <site>/<bus>/<device>/<tag> topics with value, quality,
unit and timestamp, read by a plain MQTT subscriber (no Sparkplug) against a real Mosquitto."""
from __future__ import annotations

import json
import threading

import paho.mqtt.client as paho
from harness import wait_until
from mqtt_site import site_yaml
from paho.mqtt.enums import CallbackAPIVersion


class Retained:
    """A late subscriber: what the broker holds (retained) and what arrives after."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.latest: dict[str, dict] = {}
        self.retained: set[str] = set()
        self.count = 0
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="uns-reader")
        self.c.on_message = self._on
        self.c.on_connect = lambda c, *a: c.subscribe("mq/#", 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on(self, client, userdata, msg) -> None:
        with self.lock:
            self.latest[msg.topic] = json.loads(msg.payload)
            self.count += 1
            if msg.retain:
                self.retained.add(msg.topic)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


async def test_json_namespace_retained_topics(broker, make_site):
    site = await make_site(site_yaml(broker.url, mqtt_extra="unified_namespace: {enabled: true}",
                                     sparkplug_extra=", enabled: false"))
    out = site.app.outputs.mqtt
    assert await wait_until(lambda: out.stats()["uns_messages"] > 20, 10), out.stats()
    reader = Retained(broker.port)  # subscribes after the fact: the retained values are there
    try:
        want = {f"mq/net/boiler/{t}" for t in ("temp", "setpoint", "level", "flow", "burner_on", "count")} | \
               {"mq/net/pump/speed", "mq/net/pump/current"}
        assert await wait_until(lambda: want <= reader.retained, 5), reader.retained
        sp = reader.latest["mq/net/boiler/setpoint"]
        assert sp["value"] == 55.5 and sp["unit"] == "degC" and sp["quality"] == "Good" and sp["status_code"] == 0
        assert sp["timestamp"].endswith("Z") and sp["ts_ms"] > 0
        assert reader.latest["mq/net/boiler/level"]["value"] == -12
        assert reader.latest["mq/net/boiler/burner_on"]["value"] in (True, False)
        assert isinstance(reader.latest["mq/net/boiler/count"]["value"], int)
        n = reader.count
        assert await wait_until(lambda: reader.count > n + 10, 5)  # changes keep coming
        site.sim.set_fault("pump", "offline")
        assert await wait_until(lambda: reader.latest["mq/net/pump/speed"]["quality"] == "Bad_NoCommunication", 10)
        assert reader.latest["mq/net/pump/speed"]["value"] is None
        assert reader.latest["mq/net/pump/speed"]["status_code"] == 0x80310000
        assert out.stats()["births"] == 0  # Sparkplug is off: no spBv1.0 traffic
    finally:
        reader.stop()
