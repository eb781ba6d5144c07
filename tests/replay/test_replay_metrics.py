"""How replay counts a method's moves: between successive picks, a dropped pick between
them included (the policy drops its pick; the baselines never do)."""

from __future__ import annotations

import pytest

from replay.inputs import Advert
from replay.metrics import Timeline, reference, score


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
