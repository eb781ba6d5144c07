"""The central nearest-gateway decision: hysteresis on sightings over time."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from cloud4iot.policy.loader import load_policy
from cloud4iot.policy.schema import GatewayRadio, PolicySpec
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
    keep_for = SPEC.stale_data.sighting_max_age
    assert keep_for == 30.0
    trace = [(0.0, {"gw1": -60.0})] + [(float(t), {"gw2": -80.0}) for t in range(1, 60)]
    # gw2 is weaker, so it never wins as a challenger: it takes over on the first reading
    # after gw1's sighting outlived the max age, with neither dwell nor settle added.
    assert run(trace) == [(0.0, "gw1"), (keep_for + 1, "gw2")]


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


# --- settle: a newly heard device's first pick is corrected at once by a
# margin-stronger gateway reporting a moment later (policy spec.nearest.settle).


def test_weaker_first_is_corrected_within_settle_without_dwell():
    assert SPEC.nearest.settle == 5.0
    assert SPEC.nearest.challenger_dwell == 10.0
    trace = [(0.0, {"gw-weak": -75.0})]
    trace += [(float(t), {"gw-weak": -75.0, "gw-strong": -60.0}) for t in range(1, 60)]
    assert run(trace) == [(0.0, "gw-weak"), (1.0, "gw-strong")]


def test_correction_at_the_last_moment_of_the_window():
    # since = 0, settle = 5: t = 4.9 is inside, t = 5 is not.
    inside = [(0.0, {"gw1": -75.0}), (4.9, {"gw1": -75.0, "gw2": -60.0})]
    assert run(inside) == [(0.0, "gw1"), (4.9, "gw2")]
    at_end = [(0.0, {"gw1": -75.0}), (5.0, {"gw1": -75.0, "gw2": -60.0})]
    assert run(at_end) == [(0.0, "gw1")]


def test_after_settle_the_old_dwell_rule_holds():
    trace = [(float(t), {"gw1": -75.0}) for t in range(6)]
    trace += [(float(t), {"gw1": -75.0, "gw2": -60.0}) for t in range(6, 40)]
    # First margin-stronger reading at t=6, then the full 10 s dwell.
    assert run(trace) == [(0.0, "gw1"), (16.0, "gw2")]


@pytest.mark.parametrize("stronger_by", [3.0, 5.9])
def test_challenger_not_margin_stronger_never_wins_in_the_window(stronger_by):
    trace = [(0.0, {"gw1": -70.0})]
    trace += [(float(t), {"gw1": -70.0, "gw2": -70.0 + stronger_by}) for t in range(1, 120)]
    assert run(trace) == [(0.0, "gw1")]


def test_gateway_already_heard_at_arrival_still_needs_the_dwell():
    # Both were weighed at t=0; gw2's later jump is treated like any challenger.
    trace = [(0.0, {"gw1": -70.0, "gw2": -72.0})]
    trace += [(float(t), {"gw1": -70.0, "gw2": -60.0}) for t in range(1, 30)]
    assert run(trace) == [(0.0, "gw1"), (11.0, "gw2")]


def test_no_ping_pong_after_a_correction():
    trace = [(0.0, {"gw1": -75.0}), (1.0, {"gw1": -75.0, "gw2": -60.0})]
    # Within the original window gw1 reads margin-stronger than gw2 for 3 s: the
    # corrected decision is not provisional, so gw1 needs the full dwell and fails.
    trace += [(float(t), {"gw1": -50.0, "gw2": -60.0}) for t in range(2, 5)]
    trace += [(float(t), {"gw1": -75.0, "gw2": -60.0}) for t in range(5, 60)]
    assert run(trace) == [(0.0, "gw1"), (1.0, "gw2")]


@pytest.mark.parametrize("seed", range(20))
def test_noisy_arrival_settles_on_the_stronger_gateway_with_one_correction(seed):
    rng = random.Random(seed)
    trace = [(0.0, {"gw1": -75.0 + rng.gauss(0, 3)})]
    trace += [
        (float(t), {"gw1": -75.0 + rng.gauss(0, 3), "gw2": -58.0 + rng.gauss(0, 3)})
        for t in range(1, 600)
    ]
    assert run(trace) == [(0.0, "gw1"), (1.0, "gw2")]


def test_settle_zero_turns_the_correction_off():
    spec = SPEC.model_copy(update={"nearest": SPEC.nearest.model_copy(update={"settle": 0.0})})
    trace = [(0.0, {"gw1": -75.0})]
    trace += [(float(t), {"gw1": -75.0, "gw2": -60.0}) for t in range(1, 30)]
    assert run(trace, spec) == [(0.0, "gw1"), (11.0, "gw2")]


def test_incumbent_gone_pick_is_provisional_too():
    # gw1 goes silent; once stale, the first fresh gateway (gw3, weak) is picked at
    # once and a margin-stronger gw2 reporting a second later corrects it.
    stale = SPEC.stale_data.sighting_max_age
    trace = [(0.0, {"gw1": -60.0})]
    t_gone = stale + 1.0
    trace += [(t_gone, {"gw3": -80.0}), (t_gone + 1.0, {"gw3": -80.0, "gw2": -65.0})]
    assert run(trace) == [(0.0, "gw1"), (t_gone, "gw3"), (t_gone + 1.0, "gw2")]
