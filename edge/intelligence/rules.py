"""The rule engine: declarative automation (``when`` ... ``for`` ... ``then`` write) with hysteresis and interlocks.

Each rule is a two-state machine, *fired* or *released*. It fires when ``when`` has held for
``for_ms`` and writes ``then``; it releases when ``release_when`` holds (default: ``when`` is
false) and writes ``otherwise``. Between two actions at least ``min_interval_ms`` pass. An
interlock that holds (or cannot be evaluated because a tag it reads is bad) blocks the writes.
A rule whose conditions read a tag of bad quality does not act and says so (logged once per
episode, visible in ``status``). Every write goes through :class:`edge.core.writes.WriteService`,
the same path and audit log as an OPC UA write, as user ``rule:<name>``.

Rules are evaluated every ``TICK_S`` from the latest-value store (a few rules, each a few
tags: no per-sample work on the pipeline).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge.config.intelligence import RuleConfig
from edge.core.model import Plant, Quality, TagInfo
from edge.core.store import LatestStore
from edge.core.writes import WriteService
from edge.intelligence.expressions import Expression, TagType, compile_expression

log = logging.getLogger("edge.intelligence.rules")

TICK_S = 0.1
RETRY_S = 1.0  # after a failed write, when min_interval_ms is shorter


def tag_types(tags: Iterable[TagInfo]) -> dict[str, TagType]:
    return {t.key: TagType(t.dtype, t.enum is not None) for t in tags}


@dataclass
class Rule:
    config: RuleConfig
    when: Expression
    release: Expression | None
    interlocks: list[Expression]
    then: list[tuple[int, object]]  # (tag id, value)
    otherwise: list[tuple[int, object]]
    state: str = "unknown"  # unknown, fired, released
    status: str = "waiting for data"
    pending_since: float | None = None
    last_action: float = -1e18
    last_action_ns: int = 0
    actions: int = 0
    blocked: int = 0
    failures: int = 0
    bad_quality: int = 0
    last_error: str = ""
    busy: bool = False
    reads: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def snapshot(self) -> dict:
        return {"name": self.name, "enabled": self.config.enabled, "state": self.state, "status": self.status,
                "when": self.config.when, "release_when": self.config.release_when,
                "actions": self.actions, "blocked": self.blocked, "failures": self.failures,
                "bad_quality": self.bad_quality, "last_action_ns": self.last_action_ns or None,
                "last_error": self.last_error or None}


class RuleEngine:
    def __init__(self, plant: Plant, configs: Iterable[RuleConfig], store: Callable[[], LatestStore],
                 writes: WriteService):
        self.plant = plant
        self.store = store
        self.writes = writes
        types = tag_types(plant.tags)
        keys = plant.tag_by_key()
        self.rules: dict[str, Rule] = {}
        for cfg in configs:
            self.rules[cfg.name] = Rule(
                cfg, compile_expression(cfg.when, types),
                compile_expression(cfg.release_when, types) if cfg.release_when else None,
                [compile_expression(i.when, types) for i in cfg.interlocks],
                [(keys[k].id, v) for k, v in cfg.then.items()], [(keys[k].id, v) for k, v in cfg.otherwise.items()])
        self._ids = {t.key: t.id for t in plant.tags}
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ evaluation

    def _read(self, expr: Expression) -> tuple[list[float | str], list[str]]:
        """Current values of an expression's tags, and the keys whose quality is not Good."""
        store = self.store()
        values, bad = [], []
        for key in expr.refs:
            value, quality, _ = store.get(self._ids[key])
            values.append(value)
            if quality is not Quality.GOOD:
                bad.append(key)
        return values, bad

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for rule in self.rules.values():
            if rule.config.enabled and not rule.busy:
                try:
                    self._step(rule, now)
                except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
                    self._set_status(rule, f"error: {type(exc).__name__}: {exc}", logging.ERROR)
                    rule.last_error = str(exc)

    def _step(self, rule: Rule, now: float) -> None:
        exprs = [rule.when] + ([rule.release] if rule.release else [])
        values, bad = [], []
        for e in exprs:
            v, b = self._read(e)
            values.append(v)
            bad += [k for k in b if k not in bad]
        if bad:
            rule.pending_since = None
            if not rule.status.startswith("bad quality"):
                rule.bad_quality += 1
            self._set_status(rule, f"bad quality of {', '.join(bad)}: not acting", logging.WARNING)
            return
        cond = bool(rule.when.evaluate(values[0]))
        release = bool(rule.release.evaluate(values[1])) if rule.release else not cond
        if rule.state != "fired" and cond:
            if rule.pending_since is None:
                rule.pending_since = now
            if now - rule.pending_since >= rule.config.for_ms / 1e3:
                self._act(rule, "fired", rule.then, now)
            else:
                self._set_status(rule, f"condition true, waiting {rule.config.for_ms} ms")
            return
        rule.pending_since = None
        if rule.state != "released" and release and not cond:
            self._act(rule, "released", rule.otherwise, now)
        elif rule.state in ("fired", "released"):
            self._set_status(rule, rule.state)
        else:
            self._set_status(rule, "waiting for the condition or its release")

    def _act(self, rule: Rule, target: str, writes: list[tuple[int, object]], now: float) -> None:
        wait = rule.config.min_interval_ms / 1e3 - (now - rule.last_action)
        if wait > 0:
            self._set_status(rule, f"{target} pending: min_interval_ms, {wait:.1f} s left")
            return
        for lock, cfg in zip(rule.interlocks, rule.config.interlocks, strict=True):
            values, bad = self._read(lock)
            if bad or bool(lock.evaluate(values)):
                why = f"tags {', '.join(bad)} of bad quality" if bad else (cfg.reason or cfg.when)
                if not rule.status.startswith("blocked"):
                    rule.blocked += 1
                self._set_status(rule, f"blocked by interlock '{cfg.when}': {why}", logging.WARNING)
                return
        if not writes:
            rule.state = target
            self._set_status(rule, target)
            return
        rule.busy = True
        task = asyncio.get_running_loop().create_task(self._write(rule, target, writes), name=f"rule:{rule.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, rule: Rule, target: str, writes: list[tuple[int, object]]) -> None:
        try:
            await self._write_all(rule, target, writes)
        except Exception as exc:  # noqa: BLE001 - a write path bug must not kill the rule; it is visible
            rule.failures += 1
            rule.last_error = f"{type(exc).__name__}: {exc}"
            rule.last_action = time.monotonic() - rule.config.min_interval_ms / 1e3 + RETRY_S
            self._set_status(rule, f"write failed: {rule.last_error}", logging.ERROR)
        finally:
            rule.busy = False

    async def _write_all(self, rule: Rule, target: str, writes: list[tuple[int, object]]) -> None:
        for tag_id, value in writes:
            result = await self.writes.write(tag_id, value, user=f"rule:{rule.name}", source="rule",
                                             role="operator")
            if not result.ok:
                rule.failures += 1
                rule.last_error = f"{self.plant.tags[tag_id].key}: {result.status.name} {result.message}"
                rule.last_action = time.monotonic() - rule.config.min_interval_ms / 1e3 + RETRY_S
                self._set_status(rule, f"write failed: {rule.last_error}", logging.WARNING)
                return
        rule.state, rule.actions = target, rule.actions + 1
        rule.last_action, rule.last_action_ns = time.monotonic(), time.time_ns()
        self._set_status(rule, target, logging.INFO)

    @staticmethod
    def _set_status(rule: Rule, status: str, level: int | None = None) -> None:
        """Change the visible status; log only when it changes (once per episode, not per tick)."""
        if status != rule.status and level is not None:
            log.log(level, "rule %s: %s", rule.name, status)
        rule.status = status

    def snapshot(self) -> list[dict]:
        return [r.snapshot() for r in self.rules.values()]

    def take_over(self, old: RuleEngine) -> None:
        """Keep state and counters of rules with the same name after a reload."""
        for name, rule in self.rules.items():
            prev = old.rules.get(name)
            if prev is not None:
                for attr in ("state", "last_action", "last_action_ns", "actions", "blocked", "failures",
                             "bad_quality"):
                    setattr(rule, attr, getattr(prev, attr))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let writes in flight finish (bounded), then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for t in pending:
                t.cancel()
