"""Derived tags: plugin hooks evaluated on each poll's batch, contained when they misbehave.

One :class:`DerivedStage` per device sits between its poller and the pipeline. It keeps the
latest value and quality of every hook input; when a batch brings an input, the hooks that
use it run and their results go out as one extra batch with the same source timestamp. A
result outside the derived tag's range is Bad_OutOfRange, as for a polled value. A
hook whose input is not Good is not called: its tag takes that input's quality. A hook that
raises, returns something that is not a finite number or bool (or, for a tag of type int64
or bool, a value that type cannot hold exactly: never truncated), or outruns its budget puts
only its own tag in Bad_ConfigurationError (slow hooks are reported, their value is kept);
each distinct problem is logged once and counted in the device's diagnostics.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from edge.core.model import DeviceDiagnostics, Quality, SampleBatch
from edge.plugins.loader import Hook

log = logging.getLogger("edge.hooks")


class DerivedStage:
    def __init__(self, device: str, hooks: list[Hook], tag_id_of: dict[str, int],
                 publish: Callable[[SampleBatch], None], diag: DeviceDiagnostics):
        self.device = device
        self.publish_next = publish
        self.diag = diag
        self.hooks = hooks
        inputs = sorted({tag_id_of[i] for h in hooks for i in h.derived.inputs})
        self._slot = {tid: k for k, tid in enumerate(inputs)}
        self._input_ids = np.array(inputs, dtype=np.int32)
        self._values = np.full(len(inputs), np.nan)
        self._quality = np.full(len(inputs), int(Quality.BAD_NO_COMMUNICATION), dtype=np.uint8)
        self._args = [np.array([self._slot[tag_id_of[i]] for i in h.derived.inputs], dtype=np.intp) for h in hooks]
        self._out_ids = np.array([tag_id_of[h.derived.name] for h in hooks], dtype=np.int32)
        self._ranges = [h.derived.range or (-math.inf, math.inf) for h in hooks]
        self._logged: set[tuple[str, str]] = set()
        self.errors = 0
        self.slow = 0

    def publish(self, batch: SampleBatch) -> None:
        """Pass the batch on, then publish the derived tags whose inputs it brought."""
        self.publish_next(batch)
        if not len(self.hooks):
            return
        mask = np.isin(batch.tag_ids, self._input_ids)
        if not mask.any():
            return
        slots = np.fromiter((self._slot[int(t)] for t in batch.tag_ids[mask]), dtype=np.intp)
        self._values[slots] = batch.values[mask]
        self._quality[slots] = batch.quality[mask]
        touched = set(slots.tolist())
        due = [k for k, args in enumerate(self._args) if touched.intersection(args.tolist())]
        values = np.full(len(due), np.nan)
        quality = np.zeros(len(due), dtype=np.uint8)
        for j, k in enumerate(due):
            values[j], quality[j] = self._evaluate(k)
        self.publish_next(SampleBatch(self.device, batch.ts_ns, self._out_ids[due], values, quality))

    def _evaluate(self, k: int) -> tuple[float, int]:
        hook, args = self.hooks[k], self._args[k]
        q = self._quality[args]
        if q.any():
            return math.nan, int(q.max())
        start = time.perf_counter()
        try:
            result = hook.function(*self._values[args].tolist())
        except Exception as exc:  # noqa: BLE001 - a plugin hook must not take the device down
            return self._fail(hook, f"raised {type(exc).__name__}: {exc}")
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if elapsed_ms > hook.budget_ms:
                self.slow += 1
                self.diag.hook_slow += 1
                self._once(hook, "slow", f"hook {hook.derived.hook} took {elapsed_ms:.1f} ms "
                                         f"(budget {hook.budget_ms:.1f} ms)", logging.WARNING)
        if isinstance(result, bool | int | float | np.integer | np.floating) and math.isfinite(float(result)):
            kind = hook.derived.type
            if kind == "int64" and not float(result).is_integer():
                return self._fail(hook, f"returned {result!r} for an int64 tag: a whole number is needed "
                                        "(declare type float64 for a fractional value)")
            if kind == "bool" and float(result) not in (0.0, 1.0):
                return self._fail(hook, f"returned {result!r} for a bool tag: true/false or 1/0 is needed")
            low, high = self._ranges[k]
            if not low <= float(result) <= high:
                return math.nan, int(Quality.BAD_OUT_OF_RANGE)
            return float(result), int(Quality.GOOD)
        return self._fail(hook, f"returned {result!r}: a hook must return a finite number or a bool")

    def _fail(self, hook: Hook, what: str) -> tuple[float, int]:
        self.errors += 1
        self.diag.hook_errors += 1
        text = f"hook {hook.derived.hook} of {self.device}.{hook.derived.name} {what}"
        self.diag.last_error = text
        self.diag.last_error_ns = time.time_ns()
        self._once(hook, what.split(":")[0], text, logging.ERROR)
        return math.nan, int(Quality.BAD_CONFIG_ERROR)

    def _once(self, hook: Hook, kind: str, text: str, level: int) -> None:
        key = (hook.derived.name, kind)
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, "%s (logged once)", text)
