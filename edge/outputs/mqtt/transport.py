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

Echoes of our own DDATA (the session subscribes to them: each one proves the broker took and
forwarded that message) are counted below paho (:class:`EchoCounter`): they are by far the most
frequent packets the node receives, and paho's read path costs a few receive calls, a
``MQTTMessage`` and a callback per packet. Apart from that one override (``_sock_recv``, see
:class:`_Client`) this module relies only on paho's public API (``on_socket_*`` callbacks,
``loop_read``, ``loop_write``, ``loop_misc``, ``want_write``); paho-mqtt is pinned to 2.2.x in
setup.py and a test checks the override is still the only way paho reads the socket.
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
READ_CHUNK = 65536  # bytes read from the socket at once when echoes are counted
CORK = True  # write each loop step's packets under TCP_CORK: full segments, not one per message
PUBLISH_QOS0 = 0x30  # fixed header of a PUBLISH with QoS 0, not retained, not a duplicate


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


class EchoCounter:
    """Counts the echoes of our own DDATA in the byte stream from the broker and passes the rest on.

    The stream is cut into MQTT packets by their fixed header (packet type byte, then the
    remaining length in 1-4 bytes, MQTT 3.1.1 section 2.2). A PUBLISH with QoS 0, not retained
    (header byte 0x30: how a broker forwards a message to an established subscription), whose
    topic starts with ``prefix`` is an echo: counted and dropped. Every other packet is passed on
    byte for byte, whole; a packet not complete yet waits for the next read. A retained message on
    our DDATA topics (sent on subscription, not forwarded live) goes to paho and is not counted.
    After a malformed length everything is passed on unchanged: paho reports the protocol error.
    """

    def __init__(self, prefix: bytes):
        self.prefix = prefix
        self.echoes = 0  # echoes counted since the last :meth:`take`
        self.total = 0
        self._raw = bytearray()
        self._broken = False

    def take(self) -> int:
        n, self.echoes = self.echoes, 0
        return n

    def feed(self, data: bytes) -> bytes:
        """The bytes just read; the complete packets among everything fed so far that are not echoes."""
        if self._broken:
            return data
        raw = self._raw
        raw += data
        size, pos, prefix, plen = len(raw), 0, self.prefix, len(self.prefix)
        out = bytearray()
        echoes = 0
        while pos < size:
            i, length, mult, whole = pos + 1, 0, 1, False
            while i < size:
                b = raw[i]
                i += 1
                length += (b & 127) * mult
                if b < 128:
                    whole = True
                    break
                if i - pos > 4:  # a fourth length byte that says more follow: not MQTT
                    self._broken = True
                    out += raw[pos:]
                    raw.clear()
                    self._count(echoes)
                    return bytes(out)
                mult *= 128
            end = i + length
            if not whole or end > size:
                break  # the rest of this packet is still on its way
            if (raw[pos] == PUBLISH_QOS0 and length >= plen + 2 and (raw[i] << 8 | raw[i + 1]) >= plen
                    and raw.startswith(prefix, i + 2)):
                echoes += 1
            else:
                out += raw[pos:end]
            pos = end
        del raw[:pos]
        self._count(echoes)
        return bytes(out)

    def _count(self, n: int) -> None:
        self.echoes += n
        self.total += n


class _Client(paho.Client):
    """paho's client, with our echoes counted under its read path (:class:`EchoCounter`).

    paho 2.x reads the socket only through ``_sock_recv`` (the command byte, the length bytes and
    the rest of each packet, one call each). With a counter set, one call reads up to
    ``READ_CHUNK`` bytes, the counter drops the echoes, and paho's calls are served from the rest;
    when a read held nothing but echoes, paho is told to wait for more (``BlockingIOError``, as a
    non-blocking socket with nothing to read). ``on_echoes(n)`` is called as soon as they are read:
    before paho handles anything that follows them (a lost connection included).
    """

    echo_counter: EchoCounter | None = None
    on_echoes: Callable[[int], None] | None = None
    _passed: bytearray

    def _sock_recv(self, bufsize: int) -> bytes:
        counter = self.echo_counter
        if counter is None:
            return super()._sock_recv(bufsize)
        buf = self._passed
        if not buf:
            data = super()._sock_recv(READ_CHUNK)
            if not data:
                return data  # end of stream: paho sees the connection lost
            buf += counter.feed(data)
            if counter.echoes and self.on_echoes is not None:
                self.on_echoes(counter.take())
            if not buf:
                raise BlockingIOError  # only echoes (or part of a packet): nothing for paho yet
        out = bytes(buf[:bufsize])
        del buf[:bufsize]
        return out

    @property
    def buffered(self) -> bool:
        """Bytes read from the socket and not yet handed to paho."""
        return self.echo_counter is not None and bool(self._passed)


class Transport:
    """A paho client whose socket belongs to the running loop (see the module docstring).

    ``on_message(topic, payload)``, ``on_lost(reason)`` and ``on_echoes(n)`` are called on the
    loop. With ``echo_prefix`` (the topic prefix of our own DDATA, which the caller subscribes to),
    messages whose topic starts with it are not messages: ``on_echoes(n)`` says that n more came
    back (counted under paho, :class:`EchoCounter`). One instance is one connection: after a
    loss, make a new one.
    """

    def __init__(self, config: MqttConfig, client_id: str, base_dir: Path | None,
                 on_message: Callable[[str, bytes], None], on_lost: Callable[[str], None],
                 echo_prefix: str | None = None, on_echoes: Callable[[int], None] | None = None):
        self.config = config
        self.client_id = client_id
        self.base_dir = base_dir
        self.on_message = on_message
        self.on_lost = on_lost
        self.echo_prefix = echo_prefix
        self.on_echoes = on_echoes
        self._loop = asyncio.get_running_loop()
        self._client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                               protocol=paho.MQTTv311)
        self._client._passed = bytearray()
        if echo_prefix is not None and on_echoes is not None:
            self._client.echo_counter = EchoCounter(echo_prefix.encode())
            self._client.on_echoes = on_echoes
        self._client.connect_timeout = config.connect_timeout_s
        self._client.max_queued_messages_set(0)
        self._fd = -1
        self._cork_sock: socket.socket | None = None
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
            if CORK and hasattr(socket, "TCP_CORK"):
                self._cork_sock = sock
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
        for _ in range(1000):  # paho reads one packet per call; the echo counter or SSL may hold more
            rc = c.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if c.buffered:
                continue
            sock = c.socket()
            pending = getattr(sock, "pending", None)
            if pending is None or not pending():
                break

    def _writable(self) -> None:
        """Write what paho queued; corked, so that one loop step's messages leave in full segments."""
        sock = self._cork_sock
        if sock is None:
            self._client.loop_write()
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        except OSError:
            self._client.loop_write()
            return
        try:
            self._client.loop_write()
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

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
        topic = message.topic
        if self.echo_prefix is not None and topic.startswith(self.echo_prefix):
            # one the counter passed on: a retained one is an old message sent on subscription, not an echo
            if not message.retain and self.on_echoes is not None:
                self.on_echoes(1)
            return
        self.on_message(topic, message.payload)

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
