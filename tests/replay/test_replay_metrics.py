"""How replay counts a method's moves: between successive picks, a dropped pick between
them included (the policy drops its pick; the baselines never do)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from replay import metrics
from replay.inputs import Advert, read_csv_adverts
from replay.metrics import GRID, WINDOW, Reference, Timeline, reference, score
from tests.replay.helpers import DATA


@pytest.mark.parametrize(
    ("timeline", "changes"),
    [
        ([(0.0, "gw-a"), (10.0, None), (20.0, "gw-b")], 1),  # counted 0 before
        ([(0.0, "gw-a"), (10.0, "gw-b")], 1),  # what a baseline writes for the same move
        ([(0.0, "gw-a"), (10.0, None), (20.0, "gw-a")], 0),  # back where it was
        ([(0.0, None), (5.0, "gw-a"), (10.0, None)], 0),
        ([(0.0, "gw-a"), (5.0, None), (10.0, "gw-b"), (15.0, "gw-a")], 2),
        ([], 0),
    ],
)
def test_changes_count_moves_between_successive_picks(timeline: Timeline, changes: int) -> None:
    adverts = [Advert(t * 0.5, gw, "tag", -60) for t in range(60) for gw in ("gw-a", "gw-b")]
    assert score(timeline, reference(adverts)).changes == changes


# A deliberate independent oracle: a copy of the old whole-span reference (not replay's
# own code), so the heard-only grid is checked against what it replaced.
def _whole_span_reference(adverts: list[Advert], gateways: list[str]) -> Reference:
    """The reference as it was built before: every grid point of the span x every
    gateway, then the points no gateway heard dropped."""
    by_gw: dict[str, list[tuple[float, float]]] = {}
    for a in adverts:
        by_gw.setdefault(a.gateway, []).append((a.t, float(a.rssi)))
    names = sorted(set(gateways) | set(by_gw))
    first = min(v[0][0] for v in by_gw.values())
    last = max(v[-1][0] for v in by_gw.values())
    grid = np.arange(math.ceil(first / GRID) * GRID, last + 1e-9, GRID)
    means = np.full((len(names), len(grid)), np.nan)
    for i, gw in enumerate(names):
        rows = by_gw.get(gw)
        if not rows:
            continue
        t = np.array([r[0] for r in rows])
        v = np.array([r[1] for r in rows])
        csum = np.concatenate(([0.0], np.cumsum(v)))
        lo = np.searchsorted(t, grid - WINDOW / 2, side="right")
        hi = np.searchsorted(t, grid + WINDOW / 2, side="right")
        n = hi - lo
        means[i] = np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), np.nan)
    heard = ~np.all(np.isnan(means), axis=0)
    means, grid = means[:, heard], grid[heard]
    return Reference(names, grid, means, np.nanmax(means, axis=0))


@pytest.mark.parametrize("run", ["calib1", "test_robot", "test_walk"])
def test_the_reference_is_the_whole_span_ones_on_the_flat(run: str) -> None:
    recording = read_csv_adverts(DATA / f"{run}.adverts.csv.gz")
    ref = reference(recording.adverts, recording.gateways)
    old = _whole_span_reference(recording.adverts, recording.gateways)
    assert ref.gateways == old.gateways
    assert np.array_equal(ref.times, old.times)
    assert np.array_equal(ref.means, old.means, equal_nan=True)
    assert np.array_equal(ref.best, old.best)


def test_a_sparse_day_builds_the_grid_only_around_what_was_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three bursts over a day, 40 gateways: the means were 40 x 172,800 floats (55 MB)."""
    monkeypatch.setattr(metrics, "GRID_CHUNK", 1000)  # several chunks, and a burst across one
    gateways = [f"gw-{i:02}" for i in range(40)]
    adverts = [
        Advert(start + k * 0.3, gateways[k % 3], "tag", -60 - k % 5)
        for start in (10.0, 499.9, 86_390.0)
        for k in range(30)
    ]
    ref = reference(adverts, gateways)
    assert ref.means.shape[0] == 40
    assert ref.means.shape[1] < 3 * (9 + 5) / GRID + 3
    old = _whole_span_reference(adverts, gateways)
    assert np.array_equal(ref.times, old.times)
    assert np.array_equal(ref.means, old.means, equal_nan=True)
