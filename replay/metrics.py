"""How good a sequence of nearest decisions was: against the best link and the truth.

The reference is the signal itself: on a grid of GRID seconds, each gateway's mean RSSI
over the WINDOW seconds centred on the grid time (raw readings as the radios reported
them: the link a function would have). The best gateway is the strongest of those; the
deficit of a decision is the best's mean minus the chosen gateway's (a chosen gateway
that heard nothing in the window counts as UNHEARD_DBM). Grid times where no gateway
heard the device are left out.

Needs numpy (the ``replay`` extra).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from replay.inputs import Advert

GRID = 0.5  # seconds between evaluation points
WINDOW = 5.0  # seconds of readings behind each gateway's reference mean
UNHEARD_DBM = -100.0  # a chosen gateway that heard nothing in the window
BAD_DB = 10.0  # "far below the best": time with a deficit at least this large

Timeline = Sequence[tuple[float, str | None]]
Floats = npt.NDArray[np.float64]


@dataclass(slots=True)
class Reference:
    """One device's best-link reference on the grid."""

    gateways: list[str]
    times: Floats  # grid times that some gateway heard the device around
    means: Floats  # (gateway, time): centred window mean, NaN where unheard
    best: Floats  # strongest mean per time

    def deficits(self, chosen: npt.NDArray[np.int64]) -> Floats:
        """Deficit per grid time for gateway indices (-1 = no decision -> NaN)."""
        picked = np.where(chosen >= 0, chosen, 0)
        own = self.means[picked, np.arange(len(self.times))]
        own = np.where(np.isnan(own), UNHEARD_DBM, own)
        out = self.best - own
        return np.where(chosen >= 0, out, np.nan)


def reference(adverts: Iterable[Advert], gateways: Sequence[str] | None = None) -> Reference:
    by_gw: dict[str, list[tuple[float, float]]] = {}
    for a in adverts:
        by_gw.setdefault(a.gateway, []).append((a.t, float(a.rssi)))
    names = sorted(set(gateways or ()) | set(by_gw))
    if not by_gw:
        empty = np.zeros(0)
        return Reference(names, empty, np.zeros((len(names), 0)), empty)
    first = min(v[0][0] for v in by_gw.values())
    last = max(v[-1][0] for v in by_gw.values())
    half = WINDOW / 2
    grid = _heard_grid(
        np.arange(math.ceil(first / GRID) * GRID, last + 1e-9, GRID),
        np.sort(np.array([t for rows in by_gw.values() for t, _v in rows])),
        half,
    )
    means = np.full((len(names), len(grid)), np.nan)
    for i, gw in enumerate(names):
        rows = by_gw.get(gw)
        if not rows:
            continue
        t = np.array([r[0] for r in rows])
        v = np.array([r[1] for r in rows])
        csum = np.concatenate(([0.0], np.cumsum(v)))
        lo = np.searchsorted(t, grid - half, side="right")
        hi = np.searchsorted(t, grid + half, side="right")
        n = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            means[i] = np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), np.nan)
    heard = ~np.all(np.isnan(means), axis=0)
    means = means[:, heard]
    grid = grid[heard]
    best = np.nanmax(means, axis=0) if len(grid) else np.zeros(0)
    return Reference(names, grid, means, best)


# Grid points whose windows are tested at once: bounds the temporaries of a long span.
GRID_CHUNK = 1 << 18


def _heard_grid(grid: Floats, times: Floats, half: float) -> Floats:
    """The grid points some advert (``times``, sorted) falls within ``half`` of, as the
    reference's windows count them: the points the reference keeps. Its means were
    built on the whole span x gateways first (0.5 s points: ~70 MB a day for 40
    gateways, for a recording of a few adverts); the points and their values are the
    same, so are the scores."""
    keep = np.zeros(len(grid), dtype=bool)
    for k in range(0, len(grid), GRID_CHUNK):
        g = grid[k : k + GRID_CHUNK]
        lo = np.searchsorted(times, g - half, side="right")
        keep[k : k + GRID_CHUNK] = np.searchsorted(times, g + half, side="right") > lo
    return grid[keep]


def on_grid(timeline: Timeline, ref: Reference) -> npt.NDArray[np.int64]:
    """The decided gateway's index at each grid time (-1 before any or when None)."""
    index = {g: i for i, g in enumerate(ref.gateways)}
    if not timeline:
        return np.full(len(ref.times), -1, dtype=np.int64)
    times = np.array([t for t, _ in timeline])
    codes = np.array(
        [index.get(n, -1) if n is not None else -1 for _, n in timeline], dtype=np.int64
    )
    pos = np.searchsorted(times, ref.times, side="right") - 1
    return np.where(pos >= 0, codes[np.maximum(pos, 0)], -1)


def at(timeline: Timeline, t: float) -> str | None:
    node: str | None = None
    for when, n in timeline:
        if when > t:
            break
        node = n
    return node


@dataclass(slots=True)
class Score:
    """One method on one device (or pooled): the numbers of the report."""

    deficits: list[Floats] = field(default_factory=list)  # decided grid points
    undecided_s: float = 0.0
    minutes: float = 0.0
    changes: int = 0  # changes between successive picks (a None between is no pick)
    truth_samples: int = 0
    truth_right: int = 0
    true_changes: int = 0
    reached: int = 0
    lags: list[float] = field(default_factory=list)
    first_pick_s: float | None = None  # time from the first advert to the first decision

    def add(self, other: Score) -> None:
        self.deficits += other.deficits
        self.undecided_s += other.undecided_s
        self.minutes += other.minutes
        self.changes += other.changes
        self.truth_samples += other.truth_samples
        self.truth_right += other.truth_right
        self.true_changes += other.true_changes
        self.reached += other.reached
        self.lags += other.lags

    def summary(self) -> dict[str, float | int | None]:
        d = np.concatenate(self.deficits) if self.deficits else np.zeros(0)
        return {
            "deficit_p50_db": _r(float(np.percentile(d, 50))) if len(d) else None,
            "deficit_p90_db": _r(float(np.percentile(d, 90))) if len(d) else None,
            "below_10db_pct": _r(100.0 * float(np.mean(d >= BAD_DB))) if len(d) else None,
            "changes_per_min": _r(self.changes / self.minutes) if self.minutes else None,
            "changes": self.changes,
            "undecided_s": _r(self.undecided_s),
            "accuracy_pct": _r(100.0 * self.truth_right / self.truth_samples)
            if self.truth_samples
            else None,
            "true_changes": self.true_changes,
            "reached": self.reached,
            "lag_p50_s": _r(float(np.median(self.lags))) if self.lags else None,
        }


def _r(x: float) -> float:
    return round(x, 2)


def score(
    timeline: Timeline, ref: Reference, truth: Sequence[tuple[float, str]] | None = None
) -> Score:
    chosen = on_grid(timeline, ref)
    deficits = ref.deficits(chosen)
    decided = ~np.isnan(deficits)
    s = Score()
    s.deficits.append(deficits[decided])
    s.undecided_s = float(np.sum(~decided)) * GRID
    s.minutes = len(ref.times) * GRID / 60.0
    # Between successive picks: gw-a, (none), gw-b is one move, as a baseline (which
    # never drops its pick) counts it; gw-a, (none), gw-a is none.
    picks = [n for _, n in timeline if n is not None]
    s.changes = sum(1 for a, b in itertools.pairwise(picks) if a != b)
    if truth:
        _score_truth(s, timeline, truth)
    return s


def _score_truth(s: Score, timeline: Timeline, truth: Sequence[tuple[float, str]]) -> None:
    times = np.array([t for t, _ in timeline]) if timeline else np.zeros(0)
    names = [n for _, n in timeline]

    def decided(t: float) -> str | None:
        i = int(np.searchsorted(times, t, side="right")) - 1
        return names[i] if i >= 0 else None

    for t, gw in truth:
        s.truth_samples += 1
        s.truth_right += decided(t) == gw
    changes = [
        (truth[i][0], truth[i][1]) for i in range(1, len(truth)) if truth[i][1] != truth[i - 1][1]
    ]
    for k, (tc, gw) in enumerate(changes):
        until = changes[k + 1][0] if k + 1 < len(changes) else truth[-1][0]
        s.true_changes += 1
        if decided(tc) == gw:
            s.reached += 1
            s.lags.append(0.0)
            continue
        for when, node in timeline:
            if tc < when <= until and node == gw:
                s.reached += 1
                s.lags.append(when - tc)
                break
