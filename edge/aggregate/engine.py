"""The aggregator as the app sees it: tag configuration in, SampleBatches in, WindowBatches out.

Wraps the active ring store (compiled or twin, see ``edge.aggregate``) with the tag
configuration, window labels, the memory budget and diagnostics. All calls are made from
the app's asyncio loop (one thread); none of them blocks on I/O.

Integration::

    agg = Aggregator.from_tags(plant.tags, {t.id: cfg for t, cfg in aggregated}, settings)
    agg.consume(batch)                       # every SampleBatch (hot path, no per-value Python)
    windows = agg.collect(time.time_ns())    # every settings.collect_interval_ms -> list[WindowBatch]
    agg.opcua_specs()                        # tag id -> (window labels, statistics, grace ns) for OPC UA
    agg.for_opcua(wb)                        # newest window per OPC UA-enabled tag, or None
    agg.window_quality(wb)                   # why a window has no good sample (quality of its last one)
    agg.read_range(tag_id, t0_ns, t1_ns)     # raw history: (ts int64[], values float64[], quality uint8[])
    agg.downsample(tag_id, t0_ns, t1_ns, n_out, method="m4" | "minmaxlttb")
    agg.memory_bytes(), agg.diagnostics()    # for health/`edge doctor`
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np

from edge.aggregate import ACTIVE_IMPL, RingStore
from edge.config.aggregate import (
    MAX_WINDOWS,
    STATISTICS,
    AggregatorSettings,
    TagAggregateConfig,
    window_label,
)
from edge.core.model import (
    QUALITY_DTYPE,
    TAG_ID_DTYPE,
    VALUE_DTYPE,
    Quality,
    SampleBatch,
    TagInfo,
    WindowBatch,
)

#: Bytes of ring memory per stored sample: int64 timestamp + float64 value + uint8 quality.
BYTES_PER_SAMPLE = 17


class AggregatorConfigError(ValueError):
    """The aggregation configuration cannot be honoured (memory budget, too many windows)."""


class Aggregator:
    """Per-tag rings and windows for the tags configured with ``aggregate:``."""

    def __init__(self, settings: AggregatorSettings | None = None, store_cls: type | None = None) -> None:
        self.settings = settings or AggregatorSettings()
        cls = store_cls or RingStore
        self.impl = ACTIVE_IMPL if store_cls is None else getattr(store_cls, "__module__", "?").rsplit(".", 1)[-1]
        self._store = cls(basic=self.settings.stats == "basic")
        self._stat_names = tuple(self._store.stat_names)
        assert set(self._stat_names) <= set(STATISTICS), self._stat_names  # the config validates against it
        self._opcua: dict[int, bool] = {}
        self._opcua_specs: dict[int, tuple[tuple[str, ...], tuple[str, ...], int]] = {}
        self._opcua_ids: np.ndarray | None = None  # cache of the tag ids in _opcua_specs
        self._planned_bytes = 0
        self.windows_emitted = 0
        self.collect_s = 0.0  # total time spent in collect, for diagnostics

    @classmethod
    def from_tags(cls, tags: Iterable[TagInfo], configs: Mapping[int, TagAggregateConfig],
                  settings: AggregatorSettings | None = None) -> Aggregator:
        """Build from the plant's tags and each aggregated tag's ``aggregate:`` block (by tag id).

        Checks the memory budget, the window count, capacities and OPC UA statistics before
        allocating anything (the same checks ``edge check`` runs through :meth:`problems`).
        """
        agg = cls(settings)
        by_id = {t.id: t for t in tags}
        found = agg.problems(by_id, configs)
        if found:
            raise AggregatorConfigError(found[0][1])
        for tid, cfg in configs.items():
            agg.add_tag(tid, cfg.capacity(by_id[tid].interval_ms), cfg)
        return agg

    def problems(self, by_id: Mapping[int, TagInfo],
                 configs: Mapping[int, TagAggregateConfig]) -> list[tuple[int | None, str]]:
        """Every reason these tag configurations cannot be honoured, without allocating rings.

        (tag id, message) pairs; the id is None for site-wide problems (window lengths, memory).
        """
        out: list[tuple[int | None, str]] = []
        missing = sorted(set(configs) - set(by_id))
        if missing:
            return [(None, f"aggregate configured for unknown tag ids {missing[:10]}")]
        plan = [(by_id[tid], cfg, cfg.capacity(by_id[tid].interval_ms)) for tid, cfg in configs.items()]
        lengths = {ns for _, cfg, _ in plan for ns in cfg.windows_ns}
        if len(lengths) > MAX_WINDOWS:
            labels = ", ".join(window_label(ns) for ns in sorted(lengths))
            out.append((None, f"{len(lengths)} distinct window lengths across tags ({labels}); "
                              f"at most {MAX_WINDOWS} allowed"))
        for tag, cfg, cap in plan:
            try:
                self.check_capacity(tag, cfg, cap)
            except AggregatorConfigError as exc:
                out.append((tag.id, str(exc)))
            try:
                self.check_opcua(tag.key, cfg)
            except AggregatorConfigError as exc:
                out.append((tag.id, str(exc)))
        need = sum(cap for _, _, cap in plan) * BYTES_PER_SAMPLE
        if need > self.settings.max_memory_bytes:
            worst = sorted(plan, key=lambda p: -p[2])[:3]
            names = ", ".join(f"{t.key} ({cap} samples)" for t, _, cap in worst)
            out.append((None, f"ring buffers need {need} bytes, over max_memory_bytes="
                              f"{self.settings.max_memory_bytes}; largest: {names}. Lower "
                              "capacity_s/capacity_samples or raise max_memory_bytes."))
        return out

    def check_capacity(self, tag: TagInfo, cfg: TagAggregateConfig, capacity: int) -> None:
        """The ring must hold the longest window plus grace and one collect interval at the poll rate.

        Otherwise samples are overwritten before their window closes (they would still be
        counted as ``unwindowed``, but the windows would be wrong by design).
        """
        if not cfg.windows:
            return
        span_ms = max(cfg.windows_ns) // 1_000_000 + cfg.grace_ms + self.settings.collect_interval_ms
        need = -(-span_ms // max(tag.interval_ms, 1))
        if capacity < need:
            raise AggregatorConfigError(
                f"{tag.key}: aggregate capacity of {capacity} samples is too small for window "
                f"{window_label(max(cfg.windows_ns))} + grace {cfg.grace_ms} ms + collect interval "
                f"{self.settings.collect_interval_ms} ms at interval_ms={tag.interval_ms}: need >= {need} samples")

    def check_opcua(self, name: str, cfg: TagAggregateConfig) -> tuple[str, ...]:
        """The statistics ``cfg`` publishes to OPC UA; each listed one must be computed by the site's
        ``stats`` setting (``basic`` has no first, last, std, twa)."""
        stats = cfg.opcua_stats(self.stat_names)
        if isinstance(cfg.opcua, tuple) and len(stats) < len(cfg.opcua):
            missing = ", ".join(s for s in cfg.opcua if s not in stats)
            raise AggregatorConfigError(
                f"{name}: aggregate.opcua lists {missing}, which aggregator stats: {self.settings.stats} does not "
                f"compute (it computes {', '.join(self.stat_names)}); set stats: full or drop them")
        return stats

    def add_tag(self, tag_id: int, capacity: int, cfg: TagAggregateConfig) -> None:
        """Give one tag a ring of ``capacity`` samples with ``cfg``'s windows and grace period."""
        stats = self.check_opcua(f"tag id {tag_id}", cfg)
        self._store.add_tag(tag_id, capacity, cfg.windows_ns, cfg.grace_ms * 1_000_000)
        self._opcua[tag_id] = bool(stats)
        if stats:
            labels = tuple(window_label(ns) for ns in cfg.windows_ns)
            self._opcua_specs[tag_id] = (labels, stats, cfg.grace_ms * 1_000_000)
        else:
            self._opcua_specs.pop(tag_id, None)
        self._opcua_ids = None
        self._planned_bytes += capacity * BYTES_PER_SAMPLE

    def __contains__(self, tag_id: int) -> bool:
        return tag_id in self._store

    @property
    def tag_ids(self) -> list[int]:
        return list(self._opcua)

    @property
    def opcua_tag_ids(self) -> list[int]:
        """Tags whose closed windows are published as OPC UA variables."""
        return [t for t, on in self._opcua.items() if on]

    @property
    def has_opcua(self) -> bool:
        """Whether any tag publishes its windows to OPC UA (cheap: checked at every collect)."""
        return bool(self._opcua_specs)

    @property
    def stat_names(self) -> tuple[str, ...]:
        return self._stat_names

    def opcua_specs(self) -> dict[int, tuple[tuple[str, ...], tuple[str, ...], int]]:
        """What the OPC UA server publishes, by tag id: (window labels as in ``WindowBatch.window``,
        statistics in the aggregator's order, grace period in ns). Tags without OPC UA are absent."""
        return dict(self._opcua_specs)

    @property
    def store(self):
        """The underlying ring store (``RingStore`` of the active implementation)."""
        return self._store

    def consume(self, batch: SampleBatch) -> None:
        """Push one poll's batch into the rings; tags without a ring are skipped (counted)."""
        tag_ids, values, quality = batch.tag_ids, batch.values, batch.quality
        if tag_ids.dtype != TAG_ID_DTYPE or not tag_ids.flags.c_contiguous:
            tag_ids = np.ascontiguousarray(tag_ids, dtype=TAG_ID_DTYPE)
        if values.dtype != VALUE_DTYPE or not values.flags.c_contiguous:
            values = np.ascontiguousarray(values, dtype=VALUE_DTYPE)
        if quality.dtype != QUALITY_DTYPE or not quality.flags.c_contiguous:
            quality = np.ascontiguousarray(quality, dtype=QUALITY_DTYPE)
        self._store.consume(tag_ids, batch.ts_ns, values, quality)

    def collect(self, now_ns: int | None = None) -> list[WindowBatch]:
        """Windows closed by ``now_ns`` (default: the wall clock), one WindowBatch per length."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        t = time.perf_counter()
        out = []
        for window_ns, tag_ids, starts, stats in self._store.collect(now_ns):
            out.append(WindowBatch(window=window_label(window_ns), window_ns=window_ns, tag_ids=tag_ids,
                                   start_ns=starts, stats=stats))
            self.windows_emitted += len(tag_ids)
        self.collect_s += time.perf_counter() - t
        return out

    def for_opcua(self, wb: WindowBatch) -> WindowBatch | None:
        """The newest closed window of each tag in ``wb`` that publishes to OPC UA (``opcua: true``).

        Rows of a WindowBatch come grouped by tag in window order, so the last row of each
        tag's run is its newest window. None when no such tag is in the batch.
        """
        ids = self._opcua_ids
        if ids is None:
            ids = self._opcua_ids = np.fromiter(self._opcua_specs, dtype=TAG_ID_DTYPE, count=len(self._opcua_specs))
        if len(ids) == 0:
            return None
        idx = np.flatnonzero(np.isin(wb.tag_ids, ids))
        if len(idx) == 0:
            return None
        tags = wb.tag_ids[idx]
        sel = idx[np.flatnonzero(np.r_[tags[1:] != tags[:-1], True])]
        return WindowBatch(window=wb.window, window_ns=wb.window_ns, tag_ids=wb.tag_ids[sel],
                           start_ns=wb.start_ns[sel], stats={k: v[sel] for k, v in wb.stats.items()})

    def window_quality(self, wb: WindowBatch) -> np.ndarray:
        """Per row of ``wb``: 0 (Good) for a window with good samples, else the quality code of the
        window's last sample, read back from the ring (why the window has no good value: offline,
        failed polls, out of range...). Only windows without good samples cost a ring read."""
        out = np.zeros(len(wb), dtype=QUALITY_DTYPE)
        for i in np.flatnonzero(wb.stats["count"] == 0).tolist():
            t0 = int(wb.start_ns[i])
            _, _, quality = self._store.read_range(int(wb.tag_ids[i]), t0, t0 + wb.window_ns)
            # a window is emitted only with samples; should the ring have lost them, say "no communication"
            out[i] = quality[-1] if len(quality) else Quality.BAD_NO_COMMUNICATION
        return out

    def read_range(self, tag_id: int, t0_ns: int, t1_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw samples of one tag with t0_ns <= ts < t1_ns still held in its ring, in time order."""
        if t1_ns < t0_ns:
            raise ValueError(f"t1_ns ({t1_ns}) is before t0_ns ({t0_ns})")
        return self._store.read_range(tag_id, t0_ns, t1_ns)

    def downsample(self, tag_id: int, t0_ns: int, t1_ns: int, n_out: int,
                   method: str = "m4") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """About ``n_out`` good samples of [t0_ns, t1_ns) that draw like the raw data (M4 or MinMaxLTTB)."""
        return self._store.downsample(tag_id, t0_ns, t1_ns, n_out, method)

    def memory_bytes(self) -> int:
        """Bytes held by the rings and their bookkeeping."""
        return int(self._store.memory_bytes())

    def counters(self, tag_id: int) -> dict[str, int]:
        """stored, held, capacity, overwritten, late and bad samples of one tag."""
        return dict(self._store.counters(tag_id))

    def diagnostics(self) -> dict[str, object]:
        """Totals for the health output and ``edge doctor``."""
        totals = dict(self._store.totals())
        totals.update(impl=self.impl, memory_bytes=self.memory_bytes(), planned_bytes=self._planned_bytes,
                      windows_emitted=self.windows_emitted, collect_s=round(self.collect_s, 6))
        return totals
