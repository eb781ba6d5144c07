"""Per-device link judgement: calibration, robust smoothing and presence hysteresis.

Pure: no I/O, no clock. Every call gets the time (seconds, any monotonic origin) so the
same code runs live, on replayed traces at any speed, and in tests.

Arrival is fast and departure slow, because "not heard" is never proof of absence:
- arrive when the median of the last ``arrive_samples`` calibrated readings reaches
  ``enter`` (a median, so one lucky spike from a far device cannot claim presence);
- leave when the outlier-robust mean of the last ``window`` seconds has stayed below
  ``leave`` (set below ``enter``) for ``leave_hold`` seconds, or when nothing was heard
  for ``away_timeout``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import islice
from math import fsum

from cloud4iot.devices import RSSI_MAX, RSSI_MIN


class ConfigError(ValueError):
    """A tracker setting that cannot work (e.g. leave above enter)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Calibrated dBm levels: presence is claimed at ``enter`` and given up below ``leave``."""

    enter: float
    leave: float

    def __post_init__(self) -> None:
        if self.leave > self.enter:
            raise ConfigError(f"leave ({self.leave}) must not be above enter ({self.enter})")


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Tunables; the README explains each default."""

    thresholds: Thresholds = Thresholds(enter=-75.0, leave=-85.0)
    away_timeout: float = 30.0  # seconds without any advert before a present device is away
    window: float = 10.0  # seconds of readings behind the presence judgement
    # Seconds of readings behind the published RSSI (the newest ones within `window`):
    # the nearest decision integrates over time itself (its evidence sum is the
    # smoother), and each second of window is ~0.5 s more lag behind a walk: 10 s lagged
    # ~5 s in the replays of the flat, 2 s -> 1 s took the p90 deficit 5.0 -> 4.6 dB on
    # the Lease path (BENCHMARKS.md "The nearest decision on the Lease path").
    rssi_window: float = 1.0
    leave_hold: float = 5.0  # the smoothed RSSI must stay below leave this long to depart
    max_samples: int = 32  # cap per device, so a chatty advertiser costs bounded memory
    arrive_samples: int = 3  # median of this many latest readings must reach enter
    offset: float = 0.0  # this gateway's radio calibration, added to every raw reading

    def __post_init__(self) -> None:
        if self.rssi_window <= 0:
            raise ConfigError("rssi_window must be positive")
        if self.away_timeout <= 0 or self.window <= 0 or self.leave_hold < 0:
            raise ConfigError("away_timeout and window must be positive, leave_hold >= 0")
        if self.arrive_samples < 1 or self.max_samples < self.arrive_samples:
            raise ConfigError("need 1 <= arrive_samples <= max_samples")


class Transition(StrEnum):
    ARRIVED = "arrived"
    DEPARTED = "departed"


@dataclass(frozen=True, slots=True)
class LinkState:
    """What this gateway currently believes about one device."""

    key: str
    present: bool
    rssi: int | None  # smoothed, calibrated, clamped to the CRD's range; None if no reading
    last_seen: float  # time of the latest advert


@dataclass(frozen=True, slots=True)
class Update:
    """Result of feeding a reading or a clock tick: the new state and whether it flipped."""

    state: LinkState
    transition: Transition | None = None


def robust_mean(values: Sequence[float]) -> float:
    """Mean of the readings inside the Tukey fences (Q1 - 1.5 IQR, Q3 + 1.5 IQR).

    BLE RSSI has one-sided outliers (reflections, body blocking a single packet); the
    fences discard them and the mean of the rest keeps the resolution a median lacks.
    Below four readings quartiles mean little, so it falls back to the median.
    """
    if not values:
        raise ValueError("robust_mean of no values")
    return _robust_mean_sorted(sorted(values))


def _robust_mean_sorted(data: Sequence[float]) -> float:
    """``robust_mean`` of readings already sorted, to the bit: the median as
    ``statistics.median`` takes it, Q1/Q3 as ``_quartiles``, and the inliers, a run of
    the sorted readings, summed by ``fsum`` as ``statistics.fmean`` does (exactly
    rounded, so their order cannot change the float). This runs twice per advert."""
    n = len(data)
    if n < 4:
        return _median_sorted(data)
    m = n - 1
    j, delta = divmod(m, 4)
    q1 = (data[j] * (4 - delta) + data[j + 1] * delta) / 4
    j, delta = divmod(3 * m, 4)
    q3 = (data[j] * (4 - delta) + data[j + 1] * delta) / 4
    spread = 1.5 * (q3 - q1)
    lo = bisect_left(data, q1 - spread)
    hi = bisect_right(data, q3 + spread)
    return fsum(data[lo:hi]) / (hi - lo)


def _median_sorted(data: Sequence[float]) -> float:
    """statistics.median of readings already sorted (the same pick and the same sum)."""
    n = len(data)
    i = n // 2
    return data[i] if n % 2 else (data[i - 1] + data[i]) / 2


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 as statistics.quantiles(values, n=4, method="inclusive") computes them
    (the same arithmetic, so the same floats), without its generality: this runs for
    every advert."""
    data = sorted(values)
    m = len(data) - 1
    j, delta = divmod(m, 4)
    q1 = (data[j] * (4 - delta) + data[j + 1] * delta) / 4
    j, delta = divmod(3 * m, 4)
    q3 = (data[j] * (4 - delta) + data[j + 1] * delta) / 4
    return q1, q3


def clamp_rssi(value: float) -> int:
    return max(RSSI_MIN, min(RSSI_MAX, round(value)))


@dataclass(slots=True)
class _Link:
    # The window's readings, oldest first: times and calibrated dBm side by side (no
    # tuple per advert; the values sort and copy in C).
    times: deque[float] = field(default_factory=deque)
    values: deque[float] = field(default_factory=deque)
    # Whether `times` never went backwards (a live source's clock may): then the
    # readings of the last `rssi_window` seconds are a tail, found by bisection.
    ordered: bool = True
    present: bool = False
    last_seen: float = 0.0
    below_since: float | None = None  # when the smoothed RSSI last went below leave

    def clear(self) -> None:
        self.times.clear()
        self.values.clear()
        self.ordered = True


class Tracker:
    """All devices one gateway tracks, keyed by Device object name."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._links: dict[str, _Link] = {}
        self._overrides: dict[str, Thresholds] = {}

    def set_offset(self, offset: float) -> None:
        """Change the calibration (policy reload); applies to readings from now on."""
        self.config = replace(self.config, offset=offset)

    def set_thresholds(self, key: str, enter: float | None, leave: float | None) -> None:
        """Per-device thresholds from the Device spec; a missing one keeps the default gap."""
        default = self.config.thresholds
        gap = default.enter - default.leave
        if enter is None and leave is None:
            self._overrides.pop(key, None)
            return
        if enter is None:
            assert leave is not None
            enter = leave + gap
        elif leave is None:
            leave = enter - gap
        self._overrides[key] = Thresholds(enter=enter, leave=leave)

    def thresholds(self, key: str) -> Thresholds:
        return self._overrides.get(key, self.config.thresholds)

    def forget(self, key: str) -> None:
        """The Device is gone: drop everything about it."""
        self._links.pop(key, None)
        self._overrides.pop(key, None)

    def present_count(self) -> int:
        return sum(1 for link in self._links.values() if link.present)

    def state(self, key: str) -> LinkState | None:
        link = self._links.get(key)
        return None if link is None else self._state(key, link)

    def observe(self, key: str, raw_rssi: float, now: float) -> Update:
        """Feed one advert's RSSI (dBm as the radio reported it) heard at ``now``."""
        cfg = self.config
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link()
        times, values = link.times, link.values
        if times and now < times[-1]:
            link.ordered = False
        times.append(now)
        values.append(raw_rssi + cfg.offset)
        link.last_seen = now
        self._prune(link, now)
        thresholds = self._overrides.get(key, cfg.thresholds)
        transition: Transition | None = None
        if not link.present:
            n = cfg.arrive_samples
            # The median of the latest n readings (statistics.median's, to the bit).
            if len(values) >= n and _median_sorted(sorted(islice(reversed(values), n))) >= (
                thresholds.enter
            ):
                link.present = True
                transition = Transition.ARRIVED
                # The approach readings describe where the device was, not where it is.
                while len(times) > n:
                    times.popleft()
                    values.popleft()
        elif _robust_mean_sorted(sorted(values)) >= thresholds.leave:
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
        """Advance the clock: departures by away timeout, and forget long-silent devices."""
        cfg = self.config
        out: list[Update] = []
        for key, link in list(self._links.items()):
            silent = now - link.last_seen
            if link.present and silent >= cfg.away_timeout:
                link.present = False
                link.below_since = None
                link.clear()
                out.append(Update(self._state(key, link), Transition.DEPARTED))
            elif not link.present and silent >= max(cfg.window, cfg.away_timeout):
                del self._links[key]
            # No pruning here: every judgement reads the samples right after observe()
            # pruned them, and a link holds max_samples at most. (Pruning each link every
            # tick was a tenth of a replay's time.)
        return out

    def _prune(self, link: _Link, now: float) -> None:
        horizon = now - self.config.window
        cap = self.config.max_samples
        times, values = link.times, link.values
        # The newest reading stays: a present device keeps a value until it is away.
        while len(times) > 1 and (times[0] < horizon or len(times) > cap):
            times.popleft()
            values.popleft()

    def _state(self, key: str, link: _Link) -> LinkState:
        since = link.last_seen - self.config.rssi_window
        times, values = link.times, link.values
        if link.ordered:
            data = sorted(islice(values, bisect_left(times, since), None))
        else:
            data = sorted([v for t, v in zip(times, values, strict=True) if t >= since])
        rssi = clamp_rssi(_robust_mean_sorted(data)) if data else None
        return LinkState(key=key, present=link.present, rssi=rssi, last_seen=link.last_seen)
