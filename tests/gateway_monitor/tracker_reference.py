"""The tracker as it was before its hot path was rewritten (issue 19's replay speed):
a window of (t, value) tuples, ``statistics`` for the median and the mean, every
judgement re-reading the whole window. Kept only as the reference the fast tracker
must equal, decision for decision and float for float."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway_monitor.tracker import (
    LinkState,
    Thresholds,
    TrackerConfig,
    Transition,
    Update,
    clamp_rssi,
)


def reference_robust_mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("robust_mean of no values")
    if len(values) < 4:
        return statistics.median(values)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    spread = 1.5 * (q3 - q1)
    inliers = [v for v in values if q1 - spread <= v <= q3 + spread]
    return statistics.fmean(inliers)


@dataclass(slots=True)
class _Link:
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    present: bool = False
    last_seen: float = 0.0
    below_since: float | None = None


class ReferenceTracker:
    def __init__(self, config: TrackerConfig, overrides: dict[str, Thresholds]) -> None:
        self.config = config
        self._links: dict[str, _Link] = {}
        self._overrides = overrides

    def observe(self, key: str, raw_rssi: float, now: float) -> Update:
        cfg = self.config
        link = self._links.setdefault(key, _Link())
        link.samples.append((now, raw_rssi + cfg.offset))
        link.last_seen = now
        horizon = now - cfg.window
        while len(link.samples) > 1 and (
            link.samples[0][0] < horizon or len(link.samples) > cfg.max_samples
        ):
            link.samples.popleft()
        thresholds = self._overrides.get(key, cfg.thresholds)
        transition: Transition | None = None
        values = [v for _, v in link.samples]
        if not link.present:
            latest = values[-cfg.arrive_samples :]
            if len(latest) == cfg.arrive_samples and statistics.median(latest) >= thresholds.enter:
                link.present = True
                transition = Transition.ARRIVED
                while len(link.samples) > cfg.arrive_samples:
                    link.samples.popleft()
        elif reference_robust_mean(values) >= thresholds.leave:
            link.below_since = None
        else:
            if link.below_since is None:
                link.below_since = now
            if now - link.below_since >= cfg.leave_hold:
                link.present = False
                link.below_since = None
                transition = Transition.DEPARTED
        return Update(self._state(key, link), transition)

    def tick(self, now: float) -> list[Update]:
        cfg = self.config
        out: list[Update] = []
        for key, link in list(self._links.items()):
            silent = now - link.last_seen
            if link.present and silent >= cfg.away_timeout:
                link.present = False
                link.below_since = None
                link.samples.clear()
                out.append(Update(self._state(key, link), Transition.DEPARTED))
            elif not link.present and silent >= max(cfg.window, cfg.away_timeout):
                del self._links[key]
        return out

    def state(self, key: str) -> LinkState | None:
        link = self._links.get(key)
        return None if link is None else self._state(key, link)

    def _state(self, key: str, link: _Link) -> LinkState:
        since = link.last_seen - self.config.rssi_window
        values = [v for t, v in link.samples if t >= since]
        rssi = clamp_rssi(reference_robust_mean(values)) if values else None
        return LinkState(key=key, present=link.present, rssi=rssi, last_seen=link.last_seen)
