"""Request latency and poll-start jitter of every device of one Modbus session, refreshed together.

Each device's poller writes its samples into rings that are rows of matrices shared by the
session (:class:`StatsRow` holds views of its rows). The status loop then computes every
device's percentiles with one sort per matrix instead of a dozen numpy calls per device: at
500 devices the per-device refresh cost ~8 % of the event loop (py-spy, issue 21), the shared
pass about a tenth of that. Samples are float32 seconds (sub-microsecond resolution at these
magnitudes), whose sort is several times faster than float64's; empty slots are NaN, which
sorts last, so a ring that is not full yet needs no special case.
"""
from __future__ import annotations

import numpy as np

from edge.core.model import DeviceDiagnostics

#: Samples kept per device: the last WINDOW requests, the start delays of the last WINDOW cycles.
WINDOW = 512
#: Devices per matrix. Rows are handed out lowest first and a refresh sorts only up to the highest
#: row in use, so a small site sorts a few rows, a large one a few matrices.
CHUNK_ROWS = 128


class StatsRow:
    """One device's rings (views of its chunk's rows) and where its percentiles go."""

    __slots__ = ("latency", "jitter", "jitter_at", "diag", "_chunk", "_index")

    def __init__(self, chunk: _Chunk, index: int, diag: DeviceDiagnostics):
        self._chunk, self._index = chunk, index
        self.latency = chunk.latency[index]  # seconds per request, NaN where no sample yet
        self.jitter = chunk.jitter[index]  # seconds each cycle started after its deadline
        self.jitter_at = chunk.jitter_at[index]  # monotonic time of each cycle start (-inf: none yet)
        self.diag = diag  # the jitter window is the chunk's window_s[index]


class _Chunk:
    def __init__(self) -> None:
        self.latency = np.full((CHUNK_ROWS, WINDOW), np.nan, dtype=np.float32)
        self.jitter = np.zeros((CHUNK_ROWS, WINDOW), dtype=np.float32)
        self.jitter_at = np.full((CHUNK_ROWS, WINDOW), -np.inf)
        self.window_s = np.zeros(CHUNK_ROWS)
        self.rows: list[StatsRow | None] = [None] * CHUNK_ROWS

    def used(self) -> int:
        """One past the highest row in use (0: none)."""
        return max((i + 1 for i, row in enumerate(self.rows) if row is not None), default=0)


class PollStats:
    """The latency and jitter rings of every device of a session, and their shared refresh."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []

    def row(self, diag: DeviceDiagnostics, window_s: float) -> StatsRow:
        """Rings for a new device whose percentiles go to ``diag`` (jitter over the last ``window_s``)."""
        for chunk in self._chunks:
            for i, taken in enumerate(chunk.rows):
                if taken is None:
                    return self._take(chunk, i, diag, window_s)
        self._chunks.append(_Chunk())
        return self._take(self._chunks[-1], 0, diag, window_s)

    @staticmethod
    def _take(chunk: _Chunk, i: int, diag: DeviceDiagnostics, window_s: float) -> StatsRow:
        chunk.latency[i] = np.nan
        chunk.jitter[i] = 0.0
        chunk.jitter_at[i] = -np.inf
        chunk.window_s[i] = window_s
        row = chunk.rows[i] = StatsRow(chunk, i, diag)
        return row

    def release(self, row: StatsRow) -> None:
        """The device is gone: its rows may be handed out again."""
        if row._chunk.rows[row._index] is row:
            row._chunk.rows[row._index] = None

    def keep_only(self, rows: set[StatsRow]) -> None:
        """Release every row not in ``rows`` (the devices still running after a reload)."""
        for chunk in self._chunks:
            for row in chunk.rows:
                if row is not None and row not in rows:
                    self.release(row)

    def refresh(self, now: float) -> None:
        """Write every device's latency p50/p99 and jitter p99 (ms) into its diagnostics.

        Nearest-rank percentiles, as before: latency over the ring, jitter over the cycles that
        started within the device's window before ``now`` (monotonic). A device without samples
        keeps its previous figures.
        """
        for chunk in self._chunks:
            used = chunk.used()
            if used:
                self._refresh_chunk(chunk, used, now)

    @staticmethod
    def _refresh_chunk(chunk: _Chunk, used: int, now: float) -> None:
        rows = np.arange(used)
        latency = np.sort(chunk.latency[:used], axis=1)
        n = np.count_nonzero(~np.isnan(latency), axis=1)
        last = np.maximum(n - 1, 0)
        p50 = (latency[rows, last // 2].astype(np.float64) * 1e3).tolist()
        p99 = (latency[rows, (0.99 * last).astype(np.intp)].astype(np.float64) * 1e3).tolist()
        recent = chunk.jitter_at[:used] >= (now - chunk.window_s[:used])[:, None]
        jitter = np.where(recent, chunk.jitter[:used], np.float32(np.nan))
        jitter.sort(axis=1)
        m = np.count_nonzero(recent, axis=1)
        j99 = (jitter[rows, (0.99 * np.maximum(m - 1, 0)).astype(np.intp)].astype(np.float64) * 1e3).tolist()
        for i, (row, has_latency, has_jitter) in enumerate(zip(chunk.rows[:used], n.tolist(), m.tolist(),
                                                               strict=True)):
            if row is None:
                continue
            diag = row.diag
            if has_latency:
                diag.latency_p50_ms = p50[i]
                diag.latency_p99_ms = p99[i]
            if has_jitter:
                diag.jitter_p99_ms = j99[i]


__all__ = ["CHUNK_ROWS", "WINDOW", "PollStats", "StatsRow"]
