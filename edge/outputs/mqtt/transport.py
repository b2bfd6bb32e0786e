"""One MQTT connection driven by the asyncio loop: paho-mqtt 2.x through its external event loop API.

paho's own network thread is not used: its socket is read and written by loop callbacks
(``add_reader`` / ``add_writer``) and its keep-alive runs from a loop task, so every paho callback
(CONNACK, messages, acknowledgements, disconnect) runs on the loop and may touch appliance state.
Only ``connect()`` (DNS, TCP connect, TLS handshake: blocking) runs in a worker thread, before
the socket is handed to the loop. :meth:`publish` is synchronous and never blocks: paho queues
the packet and the loop writes it when the socket is writable.

:meth:`barrier` asks the broker for an acknowledgement that follows everything published so far
on this connection (an UNSUBSCRIBE of a topic nobody subscribed to: the broker handles one
connection's packets in order, so its UNSUBACK means it has taken every earlier PUBLISH, also the
QoS 0 ones Sparkplug prescribes for data). The session uses it to know what reached the broker.

This module relies only on paho's public API (``on_socket_*`` callbacks, ``loop_read``,
``loop_write``, ``loop_misc``, ``want_write``); pinned to paho-mqtt 2.x in setup.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.config.mqtt import MqttConfig

log = logging.getLogger("edge.outputs.mqtt.transport")
BARRIER_TOPIC_SUFFIX = "$edge/sync"  # never subscribed: only its UNSUBACK is wanted


class ConnectError(Exception):
    """The broker could not be reached, refused the TLS handshake or the CONNECT (message says why)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused  # the broker answered and said no (credentials, client id...)


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Transport:
    """A paho client whose socket belongs to the running loop (see the module docstring).

    ``on_message(topic, payload)`` and ``on_lost(reason)`` are called on the loop. One
    instance is one connection: after a loss, make a new one.
    """

    def __init__(self, config: MqttConfig, client_id: str, base_dir: Path | None,
                 on_message: Callable[[str, bytes], None], on_lost: Callable[[str], None]):
        self.config = config
        self.client_id = client_id
        self.base_dir = base_dir
        self.on_message = on_message
        self.on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                                   protocol=paho.MQTTv311)
        self._client.connect_timeout = config.connect_timeout_s
        self._client.max_queued_messages_set(0)
        self._fd = -1
        self._misc: asyncio.Task | None = None
        self._connack: asyncio.Future = self._loop.create_future()
        self._acks: dict[int, asyncio.Future] = {}  # SUBACK waiters by mid
        self._barriers: dict[int, tuple[float, Callable[[], None]]] = {}  # mid -> (sent, UNSUBACK callback)
        self.connected = False
        self.connect_sent = False  # the CONNECT packet (with the will) went out
        self.lost = False
        self.published = 0  # messages handed to paho
        self.barrier_topic = ""

    # ------------------------------------------------------------------ connect

    def _setup(self, will: Will | None, password: str | None) -> None:
        c, cfg = self._client, self.config
        if cfg.username is not None:
            c.username_pw_set(cfg.username, password)
        if cfg.use_tls:
            c.tls_set_context(self._tls_context())
        if will is not None:
            c.will_set(will.topic, will.payload, will.qos, will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe  # no on_publish: paho builds two objects per call for it

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if tls is not None:
            if tls.ca_file:
                ctx.load_verify_locations(cafile=str(self._path(tls.ca_file)))
            if tls.cert_file and tls.key_file:
                ctx.load_cert_chain(str(self._path(tls.cert_file)), str(self._path(tls.key_file)))
            if tls.insecure_skip_hostname_check:
                ctx.check_hostname = False
        return ctx

    def _path(self, value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p

    async def connect(self, will: Will | None) -> None:
        """Connect and wait for a successful CONNACK (bounded by ``connect_timeout_s``)."""
        cfg = self.config
        try:
            password = cfg.resolved_password(self.base_dir)
            self._setup(will, password)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ConnectError(f"MQTT client set-up failed: {exc}", refused=True) from None
        try:
            await asyncio.wait_for(asyncio.to_thread(self._client.connect, cfg.host, cfg.port, cfg.keepalive_s),
                                   cfg.connect_timeout_s + 1)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._close_socket()
            raise ConnectError(f"cannot connect to {cfg.host}:{cfg.port}: {exc or type(exc).__name__}") from None
        self.connect_sent = True
        self._attach()
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), cfg.connect_timeout_s)
        except TimeoutError:
            self.close()
            raise ConnectError(f"no CONNACK from {cfg.host}:{cfg.port} within {cfg.connect_timeout_s:g} s") from None
        except ConnectError:
            self.close()
            raise

    def _attach(self) -> None:
        """Hand the connected socket to the loop."""
        c = self._client
        sock = c.socket()
        if sock is None:
            raise ConnectError("the connection closed during the handshake")
        self._fd = sock.fileno()
        if isinstance(sock, socket.socket):  # small packets (barriers) go out at once, no Nagle
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(self._fd, self._readable)
        if c.want_write():
            self._loop.add_writer(self._fd, self._writable)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-keepalive")

    # ------------------------------------------------------------------ socket callbacks (loop)

    def _readable(self) -> None:
        c = self._client
        for _ in range(1000):  # an SSL socket may hold decoded bytes the selector cannot see
            rc = c.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            sock = c.socket()
            pending = getattr(sock, "pending", None)
            if pending is None or not pending():
                break

    def _writable(self) -> None:
        self._client.loop_write()

    def _on_register_write(self, client, userdata, sock) -> None:
        if self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client, userdata, sock) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client, userdata, sock) -> None:
        self._detach()

    def _detach(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()

    async def _misc_loop(self) -> None:
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ protocol callbacks (loop)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connack.done():
            return
        if reason_code.is_failure:
            self._connack.set_exception(ConnectError(f"broker refused the connection: {reason_code}", refused=True))
        else:
            self.connected = True
            self._connack.set_result(None)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if not self._connack.done():
            self._connack.set_exception(ConnectError(f"connection closed before CONNACK: {reason_code}"))
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self._acks.clear()
        self._barriers.clear()
        self._detach()
        if was and not self.lost:
            self.lost = True
            self.on_lost(str(reason_code))

    def _on_message(self, client, userdata, message) -> None:
        self.on_message(message.topic, message.payload)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            bad = [str(rc) for rc in reason_codes if rc.is_failure]
            if bad:
                fut.set_exception(ConnectError(f"subscription refused: {', '.join(bad)}", refused=True))
            else:
                fut.set_result(None)

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        entry = self._barriers.pop(mid, None)
        if entry is not None:
            entry[1]()

    # ------------------------------------------------------------------ operations

    async def subscribe(self, topics: list[tuple[str, int]], timeout_s: float) -> None:
        rc, mid = self._client.subscribe(topics)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectError(f"subscribe failed: {paho.error_string(rc)}")
        fut = self._loop.create_future()
        self._acks[mid] = fut
        await asyncio.wait_for(fut, timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue one message; False when there is no connection (nothing was queued)."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self.published += 1
        return True

    async def publish_acked(self, topic: str, payload: bytes, timeout_s: float) -> bool:
        """Publish with QoS 1 and wait (bounded) for the broker's PUBACK; True when it came."""
        info = self._client.publish(topic, payload, 1, False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self.published += 1
        for _ in range(int(timeout_s / 0.01) + 1):
            if info.is_published() or not self.connected:
                break
            await asyncio.sleep(0.01)
        return info.is_published()

    def barrier(self, done: Callable[[], None]) -> bool:
        """Call ``done`` (on the loop) once the broker has taken everything published before this call."""
        rc, mid = self._client.unsubscribe(self.barrier_topic or f"{BARRIER_TOPIC_SUFFIX}/{self.client_id}")
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return False
        self._barriers[mid] = (time.monotonic(), done)
        return True

    @property
    def unconfirmed(self) -> int:
        """Barriers sent and not acknowledged yet."""
        return len(self._barriers)

    def oldest_barrier_age(self) -> float:
        """Seconds the oldest unacknowledged barrier has waited (0 if none): a stalled connection grows it."""
        if not self._barriers:
            return 0.0
        return time.monotonic() - min(t for t, _ in self._barriers.values())

    async def disconnect(self, timeout_s: float = 2.0) -> None:
        """Write what is queued, send DISCONNECT (the will is not published), close."""
        self.lost = True  # an intended end, not a loss
        if self.connected:
            self._client.disconnect()
            for _ in range(int(timeout_s / 0.01)):
                if self._fd < 0 or not self.connected:
                    break
                await asyncio.sleep(0.01)
        self.close()

    def close(self) -> None:
        """Drop the connection at once (no DISCONNECT: the broker publishes the will)."""
        self.lost = True
        self.connected = False
        self._detach()
        self._close_socket()

    def _close_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
