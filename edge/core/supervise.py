"""Supervised background threads: no silent deaths (the concurrency contract, docs/architecture.md).

A :class:`SupervisedThread` runs one long-lived loop (the spool writer, the InfluxDB
forwarder) in a daemon thread. If the loop raises, the exception is logged once with its
traceback (a repeat of the same error is logged as one line with its count), counted in
``crashes``, kept as ``last_crash`` for the status (API, metrics, ``edge_health``), and
the loop is started again after a pause that doubles up to ``max_delay_s``. After
``give_up_after`` crashes in a row without ``healthy_s`` of clean running in between,
``on_give_up`` is called (the appliance stops cleanly) and the thread ends.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("edge.core.supervise")


@dataclass(slots=True)
class ThreadHealth:
    """What the status shows about one supervised thread."""

    name: str
    state: str = "new"  # new, running, restarting, stopped, given_up
    crashes: int = 0
    last_crash: str = ""
    last_crash_ns: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "crashes": self.crashes, "last_crash": self.last_crash,
                "last_crash_ns": self.last_crash_ns}


class SupervisedThread:
    """Run ``target()`` in a daemon thread, restarting it when it raises, until ``stopping()``.

    ``target`` returns normally only when its owner is stopping; a normal return ends the
    thread. ``stopping`` is asked after a crash: when it is true the thread ends instead of
    restarting. ``sleep(seconds)`` waits between restarts (an owner's stop event makes the
    wait end early).
    """

    def __init__(self, name: str, target: Callable[[], None], *, stopping: Callable[[], bool],
                 sleep: Callable[[float], object] = time.sleep, restart_delay_s: float = 0.5,
                 max_delay_s: float = 30.0, give_up_after: int = 0, healthy_s: float = 60.0,
                 on_give_up: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.target = target
        self.stopping = stopping
        self.sleep = sleep
        self.restart_delay_s = restart_delay_s
        self.max_delay_s = max_delay_s
        self.give_up_after = give_up_after  # 0: restart forever
        self.healthy_s = healthy_s
        self.on_give_up = on_give_up
        self.health = ThreadHealth(name)
        self._thread: threading.Thread | None = None
        self._logged: dict[str, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        delay = self.restart_delay_s
        in_a_row = 0
        while True:
            self.health.state = "running"
            started = time.monotonic()
            try:
                self.target()
                self.health.state = "stopped"
                return
            except BaseException as exc:  # noqa: BLE001 - supervised: logged, counted, restarted
                if time.monotonic() - started >= self.healthy_s:
                    in_a_row, delay = 0, self.restart_delay_s
                in_a_row += 1
                self._record(exc)
            if self.stopping():
                self.health.state = "stopped"
                return
            if self.give_up_after and in_a_row >= self.give_up_after:
                self.health.state = "given_up"
                log.critical("thread %s crashed %d times in a row; giving up: %s", self.name, in_a_row,
                             self.health.last_crash)
                if self.on_give_up is not None:
                    self.on_give_up(f"thread {self.name} crashed {in_a_row} times: {self.health.last_crash}")
                return
            self.health.state = "restarting"
            self.sleep(delay)
            delay = min(delay * 2, self.max_delay_s)
            if self.stopping():
                self.health.state = "stopped"
                return

    def _record(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"[:300]
        h = self.health
        h.crashes += 1
        h.last_crash, h.last_crash_ns = text, time.time_ns()
        seen = self._logged.get(text, 0)
        self._logged[text] = seen + 1
        if not seen:
            log.error("thread %s crashed (restarting): %s\n%s", self.name, text,
                      "".join(traceback.format_exception(exc)).rstrip())
        else:
            log.error("thread %s crashed again (%d times): %s", self.name, seen + 1, text)
        traceback.clear_frames(exc.__traceback__)
