"""The walk-front bench's own logic: the front, and the baselines' knobs it sweeps."""

from __future__ import annotations

from bench.walk_front import Point, front
from replay import baselines
from replay.inputs import read_csv_adverts
from replay.metrics import reference, score
from tests.replay.helpers import DATA


def pt(moves: float, bad: float) -> Point:
    return Point("f", f"{moves}/{bad}", moves, bad, 0.0)


def test_the_front_keeps_only_points_nothing_beats_on_both() -> None:
    points = [pt(5, 20), pt(6, 25), pt(7, 10), pt(7, 12), pt(9, 10), pt(10, 1)]
    assert [(p.moves, p.bad) for p in front(points)] == [(5, 20), (7, 10), (10, 1)]


def test_the_baselines_knobs_change_what_they_decide() -> None:
    walk = read_csv_adverts(DATA / "test_walk.adverts.csv.gz")
    adverts = list(walk.adverts)
    ref = reference(adverts, walk.gateways)
    default = score(baselines.ema_margin(adverts), ref).summary()
    same = score(baselines.ema_margin(adverts, tau=3.0, margin=6.0), ref).summary()
    eager = score(baselines.ema_margin(adverts, tau=0.5, margin=0.0), ref).summary()
    assert default == same
    assert eager["changes"] > 2 * default["changes"]  # type: ignore[operator]
    slow = score(baselines.strongest_mean(adverts, ref, window=5.0), ref).summary()
    fast = score(baselines.strongest_mean(adverts, ref, window=1.0), ref).summary()
    assert fast["changes"] > slow["changes"]  # type: ignore[operator]
