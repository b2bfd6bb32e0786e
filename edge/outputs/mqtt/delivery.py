"""What the MQTT output has delivered: report-by-exception filters and the store-and-forward backlog.

:class:`ChangeFilter` decides which samples of a batch are changes (value beyond the tag's
deadband, or quality) against the last *reported* value of each tag, with numpy over the whole
batch. :class:`Backlog` keeps the ranges of spool seqs (``[lo, hi)``) whose samples a Sparkplug
host has not received yet: while the broker or the primary host is away the range from the last
confirmed seq on is held open; when a session is live again it is closed at the spool's next seq
and replayed with ``is_historical``. Its state is persisted in the spool's cursor table, so a
restart replays what the last run had not confirmed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from edge.core.model import QUALITY_DTYPE


class ChangeFilter:
    """Last reported value and quality per tag id; :meth:`changes` reports and remembers changes."""

    def __init__(self, n_tags: int, deadband: np.ndarray, string_ids: set[int]):
        self.value = np.full(n_tags, np.nan, dtype=np.float64)
        self.quality = np.zeros(n_tags, dtype=QUALITY_DTYPE)
        self.known = np.zeros(n_tags, dtype=bool)
        self.all_known = n_tags == 0
        self.text: dict[int, str | None] = {}
        self.deadband = deadband
        self.any_deadband = bool((deadband > 0).any())
        self.string_ids = string_ids

    def reset(self) -> None:
        """Nothing reported yet: the next sample of every tag is a change."""
        self.known[:] = False
        self.all_known = len(self.known) == 0
        self.text.clear()

    def changes(self, ids: np.ndarray, values: np.ndarray, quality: np.ndarray,
                texts: dict[int, str] | None) -> np.ndarray:
        """Boolean mask of the samples that are changes; the filter then holds them as reported."""
        pv = self.value[ids]
        changed = values != pv  # NaN != NaN: corrected below when both are NaN
        nan = np.isnan(values)
        if nan.any():
            changed &= ~(nan & np.isnan(pv))
        if self.any_deadband:
            with np.errstate(invalid="ignore"):
                changed &= ~(np.abs(values - pv) <= self.deadband[ids])
        changed |= quality != self.quality[ids]
        if not self.all_known:
            changed |= ~self.known[ids]
        if self.string_ids:
            self._text_changes(ids, texts, changed)
        sel = ids[changed]
        self.value[sel] = values[changed]
        self.quality[sel] = quality[changed]
        if not self.all_known:
            self.known[sel] = True
            self.all_known = bool(self.known.all())
        return changed

    def _text_changes(self, ids: np.ndarray, texts: dict[int, str] | None, changed: np.ndarray) -> None:
        for k, tag_id in enumerate(ids.tolist()):
            if tag_id in self.string_ids:
                text = (texts or {}).get(tag_id)
                if self.text.get(tag_id, "\0unset") != text:
                    changed[k] = True
                self.text[tag_id] = text

    def adopt(self, ids: np.ndarray, values: np.ndarray, quality: np.ndarray, texts: dict[int, str | None]) -> None:
        """Take these as reported (a birth certificate carried them)."""
        self.value[ids] = values
        self.quality[ids] = quality
        self.known[ids] = True
        self.all_known = bool(self.known.all())
        for tag_id in ids.tolist():
            if tag_id in self.string_ids:
                self.text[tag_id] = texts.get(tag_id)


@dataclass
class Backlog:
    """Spool seq ranges ``[lo, hi)`` not yet delivered; ``hi`` None: open (data still being held)."""

    ranges: list[list[int | None]] = field(default_factory=list)

    @property
    def holding(self) -> bool:
        return bool(self.ranges) and self.ranges[-1][1] is None

    def hold_from(self, seq: int) -> None:
        """Everything from ``seq`` on is held (an outage begins)."""
        if self.holding:
            return
        if self.ranges and self.ranges[-1][1] is not None and self.ranges[-1][1] >= seq:
            self.ranges[-1][1] = None  # the held data join the last range: one contiguous replay
            return
        self.ranges.append([seq, None])

    def close(self, upto: int) -> None:
        """Live again: the open range ends before ``upto`` (the spool's next seq)."""
        if self.holding:
            self.ranges[-1][1] = upto
            if self.ranges[-1][0] >= upto:  # type: ignore[operator]
                self.ranges.pop()

    def confirm(self, upto: int) -> None:
        """Every seq below ``upto`` that the replay covered has reached the broker."""
        keep: list[list[int | None]] = []
        for lo, hi in self.ranges:
            if hi is not None and hi <= upto:
                continue
            keep.append([max(lo, upto), hi])  # type: ignore[type-var]
        self.ranges = keep

    def work(self) -> tuple[int, int] | None:
        """The first closed range to replay, or None."""
        if self.ranges:
            lo, hi = self.ranges[0]
            if lo is not None and hi is not None:
                return lo, hi
        return None

    def lowest(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    def to_json(self, live_confirmed: int | None) -> str:
        return json.dumps({"ranges": self.ranges, "live_confirmed": live_confirmed})

    @classmethod
    def from_json(cls, text: str | None, next_seq: int) -> Backlog:
        """The persisted backlog; what the last run published live but had not confirmed is held again.

        No persisted state (first start with MQTT): hold from ``next_seq`` (nothing older is owed).
        """
        backlog = cls()
        if not text:
            backlog.hold_from(next_seq)
            return backlog
        data = json.loads(text)
        backlog.ranges = [[int(lo), None if hi is None else int(hi)] for lo, hi in data.get("ranges", [])]
        live = data.get("live_confirmed")
        backlog.hold_from(int(live) + 1 if live is not None else next_seq)
        return backlog
