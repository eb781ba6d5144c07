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


def test_the_trend_family_reads_the_line_at_now_plus_ahead() -> None:
    # Two gateways crossing at 1 dB/s relative (b - a = t - 30), noise-free: a trailing
    # mean would see b 6 dB ahead W/2 s late; the line sees it at 36 s, `ahead` s sooner.
    from bench.walk_front import trend_margin
    from tests.replay.helpers import recording

    rec = recording({"gw-a": (-50, -80), "gw-b": (-80, -50)}, seconds=60, noise=0)
    adverts = list(rec.adverts)
    for ahead, expected in ((0.0, 36.0), (2.0, 34.0)):
        timeline = trend_margin(adverts, window=4.0, ahead=ahead, margin=6.0)
        # (the first pick is whichever gateway is heard first, corrected within a second)
        assert [n for _, n in timeline][-2:] == ["gw-a", "gw-b"]
        assert timeline[-2][0] < 1.0
        assert abs(timeline[-1][0] - expected) < 0.6, (ahead, timeline)
    eager = trend_margin(adverts, window=4.0, ahead=0.0, margin=0.0)
    assert abs(eager[-1][0] - 30.0) < 0.6
    assert eager[-1][1] == "gw-b"
