"""Per-window consolidation of heart-rate readings, and out-of-range alerts.

Windows are aligned to the epoch: with ``window_s = 60`` they are whole UTC minutes.
A window is the half-open interval [start, start + window_s): a reading exactly on a
boundary opens the next window. A window closes when a reading of a later window arrives,
or when the clock passes its end (``close_due``), whichever comes first; closed windows
are final, so a reading stamped before the open window's start (the wall clock stepped
back a little) is counted as late and left out of every summary. It still raises alerts.

A reading more than a window before the open (or last closed) window is a step of the wall
clock back (NTP correcting a clock that ran ahead): waiting for the clock to catch up
would send no summary for as long as the step. So the open window is closed as it is, the
windows start over from the reading, and a repeat alert is not held back by an alert
stamped in the old future. Such steps are counted (``clock_steps``).

Alerts: the first out-of-range reading (below ``low_bpm`` or above ``high_bpm``) alerts at
once; while the heart rate stays out of range on the same side it alerts again at most
every ``repeat_s`` seconds (0: every reading). Going back in range re-arms it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["low", "high"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    low_bpm: int = 40
    high_bpm: int = 150
    repeat_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_bpm < self.high_bpm:
            raise ValueError(f"need 0 <= low < high, got low={self.low_bpm} high={self.high_bpm}")
        if self.repeat_s < 0:
            raise ValueError(f"repeat_s must be >= 0, got {self.repeat_s}")


@dataclass(frozen=True, slots=True)
class WindowSummary:
    start: float
    end: float
    count: int
    minimum: int
    maximum: int
    mean: float


@dataclass(frozen=True, slots=True)
class Alert:
    at: float
    bpm: int
    side: Side
    threshold_bpm: int


@dataclass(slots=True)
class Outcome:
    alerts: list[Alert] = field(default_factory=list)
    closed: list[WindowSummary] = field(default_factory=list)


@dataclass(slots=True)
class _Window:
    start: float
    end: float
    count: int = 0
    minimum: int = 0
    maximum: int = 0
    total: int = 0

    def add(self, bpm: int) -> None:
        if self.count == 0:
            self.minimum = self.maximum = bpm
        else:
            self.minimum = min(self.minimum, bpm)
            self.maximum = max(self.maximum, bpm)
        self.count += 1
        self.total += bpm

    def summary(self, end: float | None = None) -> WindowSummary:
        return WindowSummary(
            start=self.start,
            end=self.end if end is None else end,
            count=self.count,
            minimum=self.minimum,
            maximum=self.maximum,
            mean=round(self.total / self.count, 1),
        )


class Consolidator:
    def __init__(self, window_s: float = 60.0, thresholds: Thresholds | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self.thresholds = thresholds or Thresholds()
        self.late = 0  # readings older than the open window: in no summary
        self.clock_steps = 0  # the wall clock stepped back: windows and alerts started over
        self._open: _Window | None = None
        self._closed_until = -math.inf  # windows ending at or before this are final
        self._alert_side: Side | None = None
        self._last_alert_at = -math.inf

    def window_of(self, at: float) -> tuple[float, float]:
        start = math.floor(at / self.window_s) * self.window_s
        return start, start + self.window_s

    def add(self, at: float, bpm: int) -> Outcome:
        out = Outcome()
        stepped = self._stepped_back(at)
        if stepped:
            if self._open is not None:
                out.closed.append(self._close())
            self._closed_until = -math.inf
        if at < self._last_alert_at:  # behind the last alert: a repeat is due, not held back
            stepped = True
            self._last_alert_at = -math.inf
        self.clock_steps += stepped
        alert = self._check(at, bpm)
        if alert is not None:
            out.alerts.append(alert)
        start, end = self.window_of(at)
        if self._open is not None and start >= self._open.end:
            out.closed.append(self._close())
        if start < self._closed_until or (self._open is not None and start < self._open.start):
            self.late += 1
            return out
        if self._open is None:
            self._open = _Window(start, end)
        self._open.add(bpm)
        return out

    def _stepped_back(self, at: float) -> bool:
        """``at`` is more than a window before the open window, or the last closed one."""
        # the start of the open window, else of the last closed one (-inf: none yet)
        newest = self._closed_until - self.window_s if self._open is None else self._open.start
        return at < newest - self.window_s

    def close_due(self, now: float) -> list[WindowSummary]:
        """Close the open window if ``now`` is at or past its end."""
        if self._open is not None and now >= self._open.end:
            return [self._close()]
        return []

    def close_partial(self, now: float) -> list[WindowSummary]:
        """Shutting down: close the open window early; its interval ends at ``now``."""
        if self._open is None:
            return []
        end = min(max(now, self._open.start), self._open.end)
        return [self._close(end)]

    def _close(self, end: float | None = None) -> WindowSummary:
        assert self._open is not None
        summary = self._open.summary(end)
        self._closed_until = self._open.end
        self._open = None
        return summary

    def _check(self, at: float, bpm: int) -> Alert | None:
        t = self.thresholds
        side: Side | None = "low" if bpm < t.low_bpm else "high" if bpm > t.high_bpm else None
        if side is None:
            self._alert_side = None
            return None
        if side == self._alert_side and at - self._last_alert_at < t.repeat_s:
            return None
        self._alert_side, self._last_alert_at = side, at
        return Alert(at, bpm, side, t.low_bpm if side == "low" else t.high_bpm)
