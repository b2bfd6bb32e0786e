"""systemd service notifications (``sd_notify``) with the standard library only.

Under a ``Type=notify`` unit systemd passes ``$NOTIFY_SOCKET`` (a unix datagram socket, or an
abstract one starting with ``@``) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. Without the
variable every call here is a no-op, so ``edge run`` behaves the same in a terminal.
A failed send is logged once and never raised: the appliance must not stop because the
service manager went away.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger("edge.runtime.systemd")


class Notifier:
    """Sends READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1 to the service manager, if there is one."""

    def __init__(self, environ: dict[str, str] | os._Environ[str] | None = None):
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one ``KEY=VALUE`` newline-separated state message; False if not sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("sd_notify to %r failed: %s (further failures are only counted)", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 for Type=notify-reload; older ones ignore it
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half the watchdog timeout (systemd's recommendation), or None without a watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    async def watchdog_loop(self) -> None:
        """Ping the watchdog at half its timeout until cancelled; returns at once without a watchdog.

        It runs on the appliance's event loop, so a blocked loop stops the pings and systemd
        restarts the service: exactly what the watchdog is for.
        """
        interval = self.watchdog_interval_s
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket (@name): notifications off", value)
    return None


def _watchdog_usec(env) -> int | None:
    """WATCHDOG_USEC, if set, positive, and meant for this process (WATCHDOG_PID absent or ours)."""
    raw = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not raw:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer: watchdog pings off", raw)
        return None
    return usec if usec > 0 else None
