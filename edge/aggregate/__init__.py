"""Per-tag ring buffers, window statistics and visual downsampling.

The compiled extension ``edge.aggregate._ringbuf`` is used when it is built; otherwise the
pure-Python twin ``edge.aggregate.pyring`` (same API, identical results, much slower) with
one warning at import. ``ACTIVE_IMPL`` says which one is active (``edge doctor`` prints it).

The app uses :class:`edge.aggregate.engine.Aggregator`::

    agg = Aggregator.from_tags(plant.tags, {tag_id: tag_cfg.aggregate, ...}, settings)
    agg.consume(batch)                    # every SampleBatch, on the asyncio loop
    for wb in agg.collect(time.time_ns()):  # about once per second
        ...                               # WindowBatch -> exporter / OPC UA
    ts, values, quality = agg.read_range(tag_id, t0_ns, t1_ns)
    ts, values, quality = agg.downsample(tag_id, t0_ns, t1_ns, 1000, method="m4")

Samples held elsewhere (the spool's history for the HTTP API's trends) are downsampled with
``downsample_arrays(ts, values, quality, t0_ns, t1_ns, n_out, method)``, the same selection.
"""
from __future__ import annotations

import warnings

try:
    from edge.aggregate._ringbuf import RingStore, downsample_arrays

    ACTIVE_IMPL = "cython"
except ImportError as exc:  # the extension is not built: fall back to the twin, say so once
    from edge.aggregate.pyring import RingStore, downsample_arrays

    ACTIVE_IMPL = "python"
    warnings.warn(
        f"edge.aggregate: compiled ring buffers not available ({exc}); using the pure-Python twin, "
        "which is much slower. Build with `pip install .` or `python setup.py build_ext --inplace`.",
        RuntimeWarning,
        stacklevel=2,
    )



def describe() -> str:
    """One line for ``edge doctor``: which implementation and which CPU kernels are active."""
    if ACTIVE_IMPL == "python":
        return "python (pure-Python twin: the compiled extension is not built; much slower)"
    from edge.aggregate import _ringbuf

    return f"cython ({('scalar', 'SSE2', 'AVX2')[_ringbuf.get_isa()]} kernels)"


__all__ = ["ACTIVE_IMPL", "RingStore", "describe", "downsample_arrays"]
