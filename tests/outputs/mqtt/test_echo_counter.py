"""The echoes of the node's own DDATA counted under paho (transport.EchoCounter, transport._Client).

The counter cuts the broker's byte stream into MQTT packets itself, so it is checked on bytes built
here from the MQTT 3.1.1 framing (fixed header, remaining length of 1-3 bytes, topic, packet id),
cut at every possible point; then end to end through paho against a real Mosquitto (plain and
TLS): every DDATA published comes back as one echo counted below paho, every other packet (a
DCMD, the barrier's UNSUBACK, a retained DDATA sent on subscription) still reaches paho.
"""
from __future__ import annotations

import asyncio
import random

import paho.mqtt.client as paho
import pytest
from harness import wait_until
from mqtt_broker import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.mqtt import MqttConfig
from edge.outputs.mqtt.transport import EchoCounter, Transport

PREFIX = "spBv1.0/g/DDATA/n/"


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False, mid: int = 7) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + remaining_length(len(body)) + body


def stream() -> tuple[list[bytes], list[bool]]:
    """Packets and whether each is an echo."""
    rng = random.Random(19)
    packets = [
        (publish(PREFIX + "dev1", b"x" * 10), True),  # remaining length in 1 byte
        (publish("spBv1.0/g/DCMD/n/dev1", b"command"), False),
        (publish(PREFIX + "dev2", rng.randbytes(2000)), True),  # 2 bytes
        (b"\xd0\x00", False),  # PINGRESP: no body at all
        (publish(PREFIX + "dev3", rng.randbytes(20000)), True),  # 3 bytes
        (b"\xb0\x02\x00\x05", False),  # UNSUBACK (a barrier's acknowledgement)
        (publish(PREFIX + "old", b"retained", retain=True), False),  # sent on subscription: not an echo
        (publish(PREFIX + "dev1", b"qos1", qos=1), False),  # not how our QoS 0 subscription gets them
        (publish("spBv1.0/g/DDATA", b"/n/dev1 looks like the rest of the prefix"), False),  # a shorter topic
        (publish("spBv1.0/g/DDATA/n2/dev1", b"another node"), False),
        (b"\x90\x03\x00\x01\x00", False),  # SUBACK
        (publish(PREFIX + "dev4", b""), True),
    ]
    return [p for p, _ in packets], [e for _, e in packets]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 1500, 16384, 10**6])
def test_counts_echoes_and_passes_every_other_packet_whole_at_any_cut(chunk):
    packets, echo = stream()
    data = b"".join(packets)
    counter = EchoCounter(PREFIX.encode())
    passed = bytearray()
    for i in range(0, len(data), chunk):
        out = counter.feed(data[i:i + chunk])
        passed += out
        assert passed == b"".join(p for p, e in zip(packets, echo, strict=True) if not e)[:len(passed)]
    assert bytes(passed) == b"".join(p for p, e in zip(packets, echo, strict=True) if not e)
    assert counter.total == counter.take() == sum(echo) == 4
    assert counter.take() == 0


def test_random_cuts():
    packets, echo = stream()
    data = b"".join(packets * 5)
    rng = random.Random(7)
    for _ in range(50):
        counter = EchoCounter(PREFIX.encode())
        passed = bytearray()
        i = 0
        while i < len(data):
            n = rng.randint(1, 3000)
            passed += counter.feed(data[i:i + n])
            i += n
        assert bytes(passed) == b"".join(p for p, e in zip(packets * 5, echo * 5, strict=True) if not e)
        assert counter.total == 20


def test_a_malformed_length_passes_everything_on_for_paho_to_refuse():
    counter = EchoCounter(PREFIX.encode())
    bad = b"\x30\xff\xff\xff\xff\x01" + b"z" * 10
    assert counter.feed(publish(PREFIX + "d", b"1") + bad) == bad
    later = publish(PREFIX + "d", b"2")
    assert counter.feed(later) == later  # no framing to trust any more
    assert counter.total == 1


@pytest.mark.parametrize("tls", [False, True])
async def test_through_paho_against_mosquitto(tmp_path, pki, tls):
    """Echoes are counted below paho (the counter's own total: paho still reads through the method the
    counter overrides), everything else reaches paho's callbacks."""
    broker = Mosquitto(tmp_path / "broker", pki=pki if tls else None)
    broker.start()
    other = paho.Client(CallbackAPIVersion.VERSION2, client_id="other")
    try:
        if tls:
            other.tls_set(ca_certs=str(pki.ca))
        other.connect("127.0.0.1", broker.port)
        other.loop_start()
        retained = other.publish(PREFIX + "old", b"kept", 1, retain=True)
        retained.wait_for_publish(5)
        assert retained.is_published()

        cfg = MqttConfig(url=broker.url, tls={"ca_file": str(pki.ca)} if tls else None)
        messages: list[tuple[str, bytes]] = []
        echoes: list[int] = []
        lost: list[str] = []
        t = Transport(cfg, "node", None, lambda topic, payload: messages.append((topic, payload)), lost.append,
                      PREFIX, echoes.append)
        await t.connect(None)
        await t.subscribe([(PREFIX + "+", 0), ("spBv1.0/g/DCMD/n/+", 0)], 5)
        n = 300
        for i in range(n):
            assert t.publish(PREFIX + f"dev{i % 7}", bytes([i % 256]) * (10 + 97 * i), 0, False)
            if i % 50 == 0:
                await asyncio.sleep(0)
        barriers: list[int] = []
        assert t.barrier(lambda: barriers.append(1))
        other.publish("spBv1.0/g/DCMD/n/dev1", b"write this", 0)
        assert await wait_until(lambda: sum(echoes) == n and barriers and messages, 10), (sum(echoes), barriers)
        await asyncio.sleep(0.2)
        assert sum(echoes) == n  # the retained DDATA sent on subscription was not counted
        assert t._client.echo_counter is not None and t._client.echo_counter.total == n
        assert messages == [("spBv1.0/g/DCMD/n/dev1", b"write this")]
        assert not lost
        await t.disconnect()
    finally:
        other.loop_stop()
        other.disconnect()
        broker.stop()
