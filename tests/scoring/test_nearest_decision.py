"""The central nearest-gateway decision: hysteresis on sightings over time."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from extender.policy.loader import load_policy
from extender.policy.schema import GatewayRadio, PolicySpec
from extender.scoring.nearest import NearestState, decide_nearest
from extender.state.snapshot import Sighting

SPEC = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml").policy.spec


def run(
    trace: Iterable[tuple[float, dict[str, float]]], spec: PolicySpec = SPEC
) -> list[tuple[float, str | None]]:
    """Feed (t, {gateway: rssi}) readings second by second; return the decision changes."""
    state: NearestState | None = None
    seen: dict[str, Sighting] = {}
    changes: list[tuple[float, str | None]] = []
    for t, readings in trace:
        for node, rssi in readings.items():
            seen[node] = Sighting(node=node, rssi=rssi, last_seen=t)
        new = decide_nearest(state, seen, t, spec)
        if (state.node if state else None) != new.node:
            changes.append((t, new.node))
        state = new
    return changes


def test_first_sighting_is_taken_at_once():
    assert run([(0.0, {"gw1": -70.0})]) == [(0.0, "gw1")]


def test_noisy_stationary_device_never_changes_gateway():
    rng = random.Random(7)
    # gw1 hears it at -62, gw2 at -66; 4 dB noise (std) on each, for an hour.
    trace = [
        (float(t), {"gw1": -62 + rng.gauss(0, 4), "gw2": -66 + rng.gauss(0, 4)})
        for t in range(3600)
    ]
    changes = run(trace)
    assert len(changes) == 1  # the first decision only
    assert changes[0][1] == "gw1"


def test_walk_from_gw1_to_gw2_changes_exactly_once():
    rng = random.Random(11)
    trace = []
    for t in range(240):
        # Linear walk over 120 s, from near gw1 (-50) to near gw2, with 3 dB noise.
        x = min(1.0, max(0.0, (t - 60) / 120))
        trace.append(
            (
                float(t),
                {"gw1": -50 - 40 * x + rng.gauss(0, 3), "gw2": -90 + 40 * x + rng.gauss(0, 3)},
            )
        )
    changes = run(trace)
    assert [node for _, node in changes] == ["gw1", "gw2"]
    switch_at = changes[1][0]
    # Equal signal at t=120; margin 6 dB is reached ~9 s later, then 10 s dwell.
    assert 120 < switch_at < 160


def test_brief_spike_shorter_than_the_dwell_does_not_switch():
    trace = [(float(t), {"gw1": -60.0, "gw2": -80.0}) for t in range(20)]
    trace += [(float(t), {"gw1": -60.0, "gw2": -45.0}) for t in range(20, 28)]  # 8 s < 10 s
    trace += [(float(t), {"gw1": -60.0, "gw2": -80.0}) for t in range(28, 60)]
    assert [n for _, n in run(trace)] == ["gw1"]


def test_challenger_needs_the_margin_not_just_more_signal():
    trace = [(0.0, {"gw1": -60.0})]
    trace += [(float(t), {"gw1": -60.0, "gw2": -56.0}) for t in range(1, 120)]  # 4 dB < 6 dB
    assert [n for _, n in run(trace)] == ["gw1"]


def test_stale_challenger_cannot_win():
    trace = [(0.0, {"gw1": -60.0, "gw2": -40.0})]
    trace += [(float(t), {"gw1": -60.0}) for t in range(1, 60)]  # gw2 never heard again
    # gw2 was strongest at t=0; once its reading is older than the sighting max
    # age the incumbent is gone and gw1 takes over, exactly once.
    changes = run(trace)
    assert [n for _, n in changes] == ["gw2", "gw1"]
    assert changes[-1][0] > SPEC.stale_data.sighting_max_age


def test_incumbent_gone_hands_over_at_once():
    trace = [(0.0, {"gw1": -60.0})] + [(float(t), {"gw2": -80.0}) for t in range(1, 40)]
    changes = run(trace)
    assert changes[0] == (0.0, "gw1")
    assert changes[1][1] == "gw2"


def test_excluded_gateway_never_wins():
    spec = SPEC.model_copy(update={"gateways": {"gw-loud": GatewayRadio(exclude_from_vote=True)}})
    trace = [(float(t), {"gw1": -70.0, "gw-loud": -30.0}) for t in range(60)]
    assert [n for _, n in run(trace, spec)] == ["gw1"]


@pytest.mark.parametrize("swing", [5.0, 8.0])
def test_oscillation_at_the_boundary_has_bounded_changes(swing):
    # The device sits between two gateways; the difference swings +-swing dB
    # every 6 s, faster than the dwell: no change at all after the first pick.
    trace = []
    for t in range(600):
        sign = 1 if (t // 6) % 2 == 0 else -1
        trace.append((float(t), {"gw1": -65 + sign * swing, "gw2": -65 - sign * swing}))
    assert len(run(trace)) == 1
