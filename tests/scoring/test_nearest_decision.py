"""The central nearest-gateway decision: hysteresis on sightings over time."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from cloud4iot.policy.loader import load_policy
from cloud4iot.policy.schema import GatewayRadio, NearestRule, PolicySpec
from extender.scoring.nearest import NearestState, decide_nearest
from extender.state.snapshot import Sighting

SHIPPED = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml").policy.spec
# The tests below pin what happens once a device is decided, from its first reading on:
# the shipped policy's arrivalWait (1 s) has its own tests at the end.
DEFAULT = SHIPPED.model_copy(
    update={"nearest": SHIPPED.nearest.model_copy(update={"arrival_wait": 0.0})}
)
# Most tests below pin the `dwell` rule's timing (challengerMarginDb for challengerDwell);
# the default rule, `evidence`, has its own section at the end.
SPEC = DEFAULT.model_copy(
    update={"nearest": DEFAULT.nearest.model_copy(update={"rule": NearestRule.DWELL})}
)


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


@pytest.mark.parametrize("rule", list(NearestRule))
def test_noisy_stationary_device_never_changes_gateway(rule):
    rng = random.Random(7)
    # gw1 hears it at -62, gw2 at -66; 4 dB noise (std) on each, for an hour.
    trace = [
        (float(t), {"gw1": -62 + rng.gauss(0, 4), "gw2": -66 + rng.gauss(0, 4)})
        for t in range(3600)
    ]
    changes = run(trace, _rule(rule))
    assert len(changes) == 1  # the first decision only
    assert changes[0][1] == "gw1"


@pytest.mark.parametrize("rule", list(NearestRule))
def test_walk_from_gw1_to_gw2_changes_exactly_once(rule):
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
    changes = run(trace, _rule(rule))
    assert [node for _, node in changes] == ["gw1", "gw2"]
    switch_at = changes[1][0]
    # Equal signal at t=120. dwell: margin 6 dB is reached ~9 s later, then 10 s dwell;
    # evidence: 6 dB x s past the 5.5 dB deadband, ~10 s after the crossing.
    assert 120 < switch_at < (160 if rule is NearestRule.DWELL else 140)


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


def _rule(rule: NearestRule) -> PolicySpec:
    return DEFAULT.model_copy(update={"nearest": DEFAULT.nearest.model_copy(update={"rule": rule})})


# --- rule "evidence" (the default): the strongest rival's advantage past deadbandDb,
# summed over time, must reach switchCostDbS (6 dB x s past 5.5 dB by default).


def test_evidence_is_the_default_rule():
    assert DEFAULT.nearest.rule is NearestRule.EVIDENCE
    assert (DEFAULT.nearest.switch_cost_db_s, DEFAULT.nearest.deadband_db) == (6.0, 5.5)


@pytest.mark.parametrize(("gap", "seconds"), [(23.0, 1.0), (8.0, 3.0), (7.0, 4.0)])
def test_large_gaps_move_fast_and_small_ones_slowly(gap, seconds):
    trace = [(float(t), {"gw1": -60.0}) for t in range(10)]
    trace += [(10.0 + t, {"gw1": -60.0, "gw2": -60.0 + gap}) for t in range(60)]
    # Evidence starts counting at the first decision that sees the gap (t = 10).
    assert run(trace, DEFAULT) == [(0.0, "gw1"), (10.0 + seconds, "gw2")]


def test_a_gap_inside_the_deadband_never_moves():
    trace = [(0.0, {"gw1": -60.0})]
    trace += [(float(t), {"gw1": -60.0, "gw2": -57.0}) for t in range(1, 3600)]
    assert run(trace, DEFAULT) == [(0.0, "gw1")]


def test_rotating_rivals_keep_their_evidence():
    # Two rivals, each 8 dB stronger in turn, every second: under "dwell" the
    # challenger restarts every second and never wins; evidence counts any rival.
    trace = [(float(t), {"gw1": -60.0, "gw2": -66.0, "gw3": -66.0}) for t in range(10)]
    for t in range(10, 40):
        up, down = ("gw2", "gw3") if t % 2 else ("gw3", "gw2")
        trace.append((float(t), {"gw1": -60.0, up: -52.0, down: -70.0}))
    assert [n for _, n in run(trace, SPEC)] == ["gw1"]
    changes = run(trace, DEFAULT)
    assert [n for _, n in changes][:1] == ["gw1"]
    assert len(changes) == 2
    assert changes[1][0] <= 14.0  # 2.5 dB past the deadband: 6 dB x s in ~3 s


def test_evidence_decays_when_the_incumbent_is_strongest_again():
    trace = [(float(t), {"gw1": -60.0, "gw2": -66.0}) for t in range(10)]
    for cycle in range(30):  # 1 s of +6 dB, then 3 s of -6 dB: the sum never reaches 10
        base = 10.0 + 4 * cycle
        trace.append((base, {"gw1": -60.0, "gw2": -54.0}))
        trace += [(base + k, {"gw1": -60.0, "gw2": -66.0}) for k in (1.0, 2.0, 3.0)]
    assert run(trace, DEFAULT) == [(0.0, "gw1")]


def _passing_by(gw3_at_the_crossing: float) -> list[tuple[float, dict[str, float]]]:
    # gw3 7 dB ahead of the incumbent for 3 s (1.5 dB past the deadband: 3 dB x s),
    # then gw2 peaks 10 dB ahead for one second, which takes the sum past 6 dB x s.
    trace = [(float(t), {"gw1": -60.0, "gw2": -66.0, "gw3": -66.0}) for t in range(10)]
    trace += [(float(t), {"gw1": -60.0, "gw2": -66.0, "gw3": -53.0}) for t in (10, 11, 12)]
    trace.append((13.0, {"gw1": -60.0, "gw2": -50.0, "gw3": gw3_at_the_crossing}))
    trace += [(float(t), {"gw1": -60.0, "gw2": -66.0, "gw3": -53.0}) for t in range(14, 30)]
    return trace


def test_a_move_goes_to_the_rival_ahead_all_along_not_the_one_peaking():
    # The flat's walk: carried past one gateway on the way to the next, the device
    # stopped 2-3 s at the one it passed (lead: gw3 21 dB x s, gw2 10).
    assert run(_passing_by(-53.0), DEFAULT) == [(0.0, "gw1"), (13.0, "gw3")]


def test_a_move_never_goes_to_a_rival_not_past_the_deadband_now():
    # gw3 led for longer but is only 3 dB ahead when the sum crosses: gw2 it is, and
    # gw3 takes over later on its own evidence.
    changes = run(_passing_by(-57.0), DEFAULT)
    assert changes[:2] == [(0.0, "gw1"), (13.0, "gw2")]
    assert [n for _, n in changes] == ["gw1", "gw2", "gw3"]


def test_arrival_pick_is_decided_again_at_the_end_of_settle():
    # gw2 was already heard at arrival (so no instant correction) but reads weaker
    # for a moment; at settle's end the strongest heard gateway is taken at once.
    trace = [(0.0, {"gw1": -70.0, "gw2": -72.0})]
    trace += [(float(t), {"gw1": -70.0, "gw2": -63.0}) for t in range(1, 30)]
    settle = DEFAULT.nearest.settle
    assert run(trace, DEFAULT) == [(0.0, "gw1"), (settle, "gw2")]


def test_settle_end_keeps_a_pick_within_the_deadband():
    trace = [(0.0, {"gw1": -70.0, "gw2": -72.0})]
    trace += [(float(t), {"gw1": -70.0, "gw2": -68.0}) for t in range(1, 60)]
    assert run(trace, DEFAULT) == [(0.0, "gw1")]


# --- arrivalWait: a newly heard device is decided on every gateway heard by then.


def test_shipped_policy_waits_a_second_before_the_first_pick():
    assert SHIPPED.nearest.arrival_wait == 1.0
    # gw-weak reports first; gw-strong half a second later.
    trace = [(0.0, {"gw-weak": -70.0}), (0.5, {"gw-strong": -55.0})]
    trace += [(1.0 + t, {"gw-weak": -70.0, "gw-strong": -55.0}) for t in range(5)]
    assert run(trace, SHIPPED) == [(1.0, "gw-strong")]  # no pick of gw-weak in between
    assert run(trace, DEFAULT) == [(0.0, "gw-weak"), (0.5, "gw-strong")]


def test_waiting_is_pending_so_the_writer_decides_again():
    state = decide_nearest(None, {"gw": Sighting("gw", -60.0, 10.0)}, 10.0, SHIPPED)
    assert state.node is None
    assert state.pending
    assert state.since == 10.0
    later = decide_nearest(state, {"gw": Sighting("gw", -60.0, 10.9)}, 10.9, SHIPPED)
    assert later.node is None
    assert later.since == 10.0
    assert decide_nearest(later, {"gw": Sighting("gw", -60.0, 11.0)}, 11.0, SHIPPED).node == "gw"


def test_a_device_no_longer_heard_stops_waiting():
    state = decide_nearest(None, {"gw": Sighting("gw", -60.0, 0.0)}, 0.0, SHIPPED)
    gone = decide_nearest(state, {"gw": Sighting("gw", -60.0, 0.0)}, 100.0, SHIPPED)
    assert gone == NearestState(node=None)


def test_a_silent_incumbent_gateway_keeps_the_decision_while_no_one_hears_it_fresh():
    """Issue 26 item 2: the incumbent's gateway still lists the device but went silent
    (an outage, its monitor gone): unknown, not gone; the decision holds. A legacy entry
    (a Device's own sightings) that is as old still ages the decision out."""
    prev = NearestState(node="gw-a", since=0.0)
    stale = 100.0  # far past sightingMaxAge
    silent = {"gw-a": Sighting("gw-a", -60, 0.0, reported=True)}
    kept = decide_nearest(prev, silent, stale, SPEC)
    assert kept.node == "gw-a"
    assert not kept.pending
    legacy = {"gw-a": Sighting("gw-a", -60, 0.0)}
    assert decide_nearest(prev, legacy, stale, SPEC).node is None
    # a live gateway that hears it fresh wins over a silent incumbent (the usual arrival)
    heard = silent | {"gw-b": Sighting("gw-b", -75, stale, reported=True)}
    assert decide_nearest(prev, heard, stale, SPEC).node == "gw-b"


def test_settle_ending_with_nothing_fresh_keeps_the_pick():
    """The 10,000-node bench's stall: the writer, starved for 16 s, reached an arrival
    pick's settle end after its only sighting had passed `freshness` (still inside the
    sighting max age); `max()` of no fresh gateway raised, and every pass failed."""
    rules = DEFAULT.nearest
    picked = NearestState(node="gw-a", since=0.0, arrival_voters=frozenset({"gw-a"}))
    sighting = {"gw-a": Sighting("gw-a", -60, -rules.arrival_wait)}
    late = rules.freshness + 1.0
    assert late < DEFAULT.stale_data.sighting_max_age
    assert late > rules.settle
    kept = decide_nearest(picked, sighting, late, DEFAULT)
    assert kept.node == "gw-a"
    assert not kept.pending  # settled: no longer corrected without evidence


def test_a_handover_by_departure_holds_the_decision_while_gathering():
    """The incumbent stops listing the device while another gateway hears it: the
    previous decision holds for arrivalWait, then the strongest takes over. Deciding
    "nowhere" first removed status.nearest for a second on every such handover."""
    prev = NearestState(node="gw-a", since=0.0)
    heard = {"gw-b": Sighting("gw-b", -62.0, 100.0), "gw-c": Sighting("gw-c", -70.0, 100.0)}
    held = decide_nearest(prev, heard, 100.0, SHIPPED)
    assert (held.node, held.since, held.gathering_since) == ("gw-a", 0.0, 100.0)
    assert held.pending
    still = decide_nearest(held, heard, 100.9, SHIPPED)
    assert (still.node, still.gathering_since) == ("gw-a", 100.0)
    moved = decide_nearest(still, heard, 101.0, SHIPPED)
    assert (moved.node, moved.since, moved.gathering_since) == ("gw-b", 101.0, None)
    # The incumbent listed again within the wait: no handover, nothing pending.
    back = heard | {"gw-a": Sighting("gw-a", -60.0, 100.5)}
    kept = decide_nearest(held, back, 100.5, SHIPPED)
    assert (kept.node, kept.gathering_since, kept.pending) == ("gw-a", None, False)
    # Without a wait (arrivalWait 0) the strongest takes over at once, as before.
    assert decide_nearest(prev, heard, 100.0, DEFAULT).node == "gw-b"


def test_a_rule_changed_to_dwell_mid_sum_does_not_move_at_once() -> None:
    """The evidence rule's state names the strongest rival last seen and when the sum
    began; the dwell rule must not read it as one rival margin-stronger for that long."""
    evidence = DEFAULT.model_copy(
        update={"nearest": DEFAULT.nearest.model_copy(update={"rule": NearestRule.EVIDENCE})}
    )
    trace = [(float(t), {"gwA": -70.0}) for t in range(7)]  # decided, settled
    trace += [(float(t), {"gwA": -70.0, "gwC": -64.0}) for t in range(7, 15)]  # C ahead
    trace += [(float(t), {"gwA": -70.0, "gwC": -80.0, "gwB": -64.0}) for t in range(15, 17)]
    state: NearestState | None = None
    seen: dict[str, Sighting] = {}
    for t, readings in trace:
        for node, rssi in readings.items():
            seen[node] = Sighting(node=node, rssi=rssi, last_seen=t)
        state = decide_nearest(state, seen, t, evidence)
    assert state is not None
    assert state.node == "gwA"  # the sum has not reached the cost
    assert (state.challenger, state.challenger_since) == ("gwB", 7.0)
    moved = None
    for t in range(17, 40):  # the admin switches the policy to the dwell rule
        seen["gwA"] = Sighting("gwA", -70.0, float(t))
        seen["gwB"] = Sighting("gwB", -64.0, float(t))
        state = decide_nearest(state, seen, float(t), SPEC)
        if state.node != "gwA":
            moved = t
            break
    # B margin-stronger for 2 s under the old rule; the dwell counts from the switch
    assert moved == 27
