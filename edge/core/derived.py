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

Hooks are code written by technicians: in the appliance (``offload=True``) they run off the
event loop, in one daemon worker thread per device, so a slow hook cannot stall polling. The
time budget is enforced: a hook that outruns its budget ``OVERRUNS_TO_DISABLE`` times in a row,
that raises a BaseException that is not an Exception (``SystemExit``, ``KeyboardInterrupt``), or
that is still running after ``hang_s`` is **disabled**: its tag goes Bad_ConfigurationError with
the reason, it is never called again (until a reload brings new hooks), and a hung worker is
abandoned for a fresh one. Batches that arrive while the worker is busy are coalesced: the next
evaluation uses the newest inputs (never a queue). ``edge read`` (one poll) runs them inline.
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.core.model import DeviceDiagnostics, Quality, SampleBatch
from edge.plugins.loader import Hook

log = logging.getLogger("edge.hooks")


OVERRUNS_TO_DISABLE = 5  # consecutive calls over budget that disable a hook
HANG_MIN_S = 1.0  # a call still running after max(this, OVERRUNS_TO_DISABLE x budget) is a hung hook


class _Worker:
    """One daemon thread that runs jobs and hands each outcome back to the loop (never raises)."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.running = -1  # index of the hook being called (written by the worker, read by the loop)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[_Worker], object], loop: asyncio.AbstractEventLoop,
               done: Callable[[object], None]) -> None:
        self.jobs.put((job, loop, done))

    def close(self) -> None:
        self.jobs.put(None)

    def _run(self) -> None:
        while (item := self.jobs.get()) is not None:
            job, loop, done = item
            try:
                out = job(self)
            except BaseException as exc:  # noqa: BLE001 - the job catches per hook; this is a last resort
                out = exc
            try:
                loop.call_soon_threadsafe(done, out)
            except RuntimeError:  # the loop is closed: the appliance stopped
                return


class DerivedStage:
    def __init__(self, device: str, hooks: list[Hook], tag_id_of: dict[str, int],
                 publish: Callable[[SampleBatch], None], diag: DeviceDiagnostics, *, offload: bool = False):
        self.device = device
        self.publish_next = publish
        self.diag = diag
        self.hooks = hooks
        self.offload = offload
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
        self.disabled: dict[int, str] = {}  # hook index -> why it was disabled
        self._overruns = [0] * len(hooks)
        self._worker: _Worker | None = None
        self._inflight: tuple[float, _Worker] | None = None  # (start, worker) of the evaluation running
        self._pending: set[int] = set()
        self._pending_ts = 0

    def close(self) -> None:
        """Stop the worker thread (a hung one is left to die with the process: it is a daemon)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

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
        if not self.offload:
            outcomes = [self._call(k, self._inputs(k), None) for k in due]
            self._publish_outcomes(batch.ts_ns, due, outcomes)
            return
        self._pending.update(due)
        self._pending_ts = batch.ts_ns
        self._check_hung()
        if self._inflight is None:
            self._submit()

    # ------------------------------------------------------------------ off the loop

    def _inputs(self, k: int) -> tuple[list[float], int]:
        """A hook's input values (a copy) and the worst input quality (0: all Good)."""
        args = self._args[k]
        return self._values[args].tolist(), int(self._quality[args].max()) if len(args) else 0

    def _submit(self) -> None:
        due = sorted(self._pending)
        self._pending.clear()
        if not due:
            return
        inputs = {k: self._inputs(k) for k in due if k not in self.disabled}
        ts = self._pending_ts
        if self._worker is None:
            self._worker = _Worker(f"hooks-{self.device}")
        worker = self._worker

        def job(w: _Worker) -> list[tuple]:
            return [self._call(k, inputs[k], w) if k in inputs else ("disabled",) for k in due]

        def done(out: object) -> None:
            if self._inflight is None or self._inflight[1] is not worker:
                return  # a worker given up as hung answered after all: its results are stale
            self._inflight = None
            outcomes = out if isinstance(out, list) else [("raised", f"{type(out).__name__}: {out}", 0.0, True)] * len(due)
            self._publish_outcomes(ts, due, outcomes)
            if self._pending:
                self._submit()

        self._inflight = (time.monotonic(), worker)
        worker.submit(job, asyncio.get_running_loop(), done)

    def _check_hung(self) -> None:
        """A call running far past its budget: disable that hook, give up its worker, start afresh."""
        if self._inflight is None:
            return
        started, worker = self._inflight
        k = worker.running
        if k < 0:
            return
        limit = max(HANG_MIN_S, OVERRUNS_TO_DISABLE * self.hooks[k].budget_ms / 1e3)
        elapsed = time.monotonic() - started
        if elapsed <= limit:
            return
        self._inflight = None
        worker.close()
        if self._worker is worker:
            self._worker = None
        self._disable(k, f"still running after {elapsed:.1f} s (budget {self.hooks[k].budget_ms:g} ms)")
        self.publish_next(SampleBatch(self.device, time.time_ns(), self._out_ids[[k]], np.array([math.nan]),
                                      np.array([int(Quality.BAD_CONFIG_ERROR)], dtype=np.uint8)))

    def _call(self, k: int, inputs: tuple[list[float], int], worker: _Worker | None) -> tuple:
        """Call hook ``k`` (any thread): ("ok", result, ms) | ("raised", text, ms, fatal) | ("bad", quality)."""
        values, worst = inputs
        if worst:
            return ("bad", worst)
        hook = self.hooks[k]
        if worker is not None:
            worker.running = k
        start = time.perf_counter()
        try:
            result = hook.function(*values)
        except Exception as exc:  # noqa: BLE001 - a plugin hook must not take the device down
            return ("raised", f"raised {type(exc).__name__}: {exc}", (time.perf_counter() - start) * 1e3, False)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt...: never the appliance's
            return ("raised", f"raised {type(exc).__name__}: {exc}", (time.perf_counter() - start) * 1e3, True)
        finally:
            if worker is not None:
                worker.running = -1
        return ("ok", result, (time.perf_counter() - start) * 1e3)

    # ------------------------------------------------------------------ results (on the loop)

    def _publish_outcomes(self, ts_ns: int, due: list[int], outcomes: list[tuple]) -> None:
        values = np.full(len(due), np.nan)
        quality = np.zeros(len(due), dtype=np.uint8)
        for j, (k, out) in enumerate(zip(due, outcomes, strict=True)):
            values[j], quality[j] = self._judge(k, out)
        self.publish_next(SampleBatch(self.device, ts_ns, self._out_ids[due], values, quality))

    def _judge(self, k: int, out: tuple) -> tuple[float, int]:
        hook = self.hooks[k]
        if k in self.disabled or out[0] == "disabled":
            return math.nan, int(Quality.BAD_CONFIG_ERROR)
        if out[0] == "bad":
            return math.nan, int(out[1])
        elapsed_ms = out[2]
        if elapsed_ms > hook.budget_ms:
            self.slow += 1
            self.diag.hook_slow += 1
            self._overruns[k] += 1
            self._once(hook, "slow", f"hook {hook.derived.hook} took {elapsed_ms:.1f} ms "
                                     f"(budget {hook.budget_ms:.1f} ms)", logging.WARNING)
            if self._overruns[k] >= OVERRUNS_TO_DISABLE:
                return self._disable(k, f"took longer than its budget {OVERRUNS_TO_DISABLE} times in a row "
                                        f"(last {elapsed_ms:.0f} ms, budget {hook.budget_ms:g} ms)")
        else:
            self._overruns[k] = 0
        if out[0] == "raised":
            if out[3]:
                return self._disable(k, out[1])
            return self._fail(hook, out[1])
        return self._value(k, out[1])

    def _disable(self, k: int, why: str) -> tuple[float, int]:
        """Never call hook ``k`` again: its tag is Bad_ConfigurationError from now on."""
        if k not in self.disabled:
            self.disabled[k] = why
            self.diag.hooks_disabled += 1
        return self._fail(self.hooks[k], f"disabled: {why}")

    def _value(self, k: int, result: object) -> tuple[float, int]:
        hook = self.hooks[k]
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
