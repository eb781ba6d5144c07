"""The nearest writer's pure plan: `plan_nearest`, `shown` and `due_devices`.

No I/O: Devices are built as DeviceFacts, the policy comes from YAML text, the
clock is fixed. "The object" is what the Device watch shows (DeviceFacts.nearest);
`written` is this term's memory of our own writes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloud4iot.policy.loader import parse_policy
from extender.controllers.nearest_plan import (
    RSSI_REFRESH,
    RSSI_STEP,
    UNDELIVERED_MAX,
    NearestWrite,
    Written,
    due_devices,
    plan_nearest,
    shown,
)
from extender.scoring.nearest import NearestState
from extender.state.snapshot import DeviceFacts, Sighting

NOW = 1_800_000_000.0

SPEC = parse_policy(
    """
apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata:
  name: plan
spec:
  staleData:
    sightingMaxAge: 30s
  nearest:
    rule: dwell
    challengerMarginDb: 6
    challengerDwell: 10s
    freshness: 15s
  classes:
    wearable:
      tiers: [gateway, edge]
      proximity: required
"""
).policy.spec


def band(
    *heard: tuple[str, float, float],
    nearest: str | None = None,
    since: float | None = None,
    name: str = "band",
) -> DeviceFacts:
    """A Device heard by (gateway, rssi, seconds ago) whose object shows `nearest`."""
    return DeviceFacts(
        name=name,
        address=None,
        sightings={n: Sighting(n, rssi, NOW - age) for n, rssi, age in heard},
        nearest=nearest,
        nearest_since=since,
    )


# --- shown -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mine", "on_object", "expected"),
    [
        pytest.param(None, "gw1", ("gw1", None, False), id="no-write-of-ours-object-as-is"),
        pytest.param(None, None, (None, None, False), id="no-write-of-ours-object-empty"),
        pytest.param(
            Written("gw2", -70.0, before="gw1"),
            "gw2",
            ("gw2", -70.0, True),
            id="our-write-delivered-acknowledged",
        ),
        pytest.param(
            Written("gw2", -70.0, before="gw1", at=NOW - 1),
            "gw1",
            ("gw2", -70.0, False),
            id="our-write-undelivered-counted-as-shown",
        ),
        pytest.param(
            Written("gw2", -70.0, before="gw1", at=NOW - UNDELIVERED_MAX - 1),
            "gw1",
            ("gw1", None, False),
            id="our-write-unseen-for-too-long-counted-lost",
        ),
        pytest.param(
            Written("gw2", -70.0, before="gw1"),
            "gw9",
            ("gw9", None, False),
            id="someone-else-wrote-after-us",
        ),
        pytest.param(
            Written("gw2", -70.0, before="gw1", seen=True),
            "gw1",
            ("gw1", None, False),
            id="seen-then-changed-back-by-someone-else",
        ),
        pytest.param(
            Written(None, None, before="gw1"),
            None,
            (None, None, True),
            id="our-clearing-write-delivered",
        ),
    ],
)
def test_shown(
    mine: Written | None, on_object: str | None, expected: tuple[str | None, float | None, bool]
) -> None:
    assert shown(mine, on_object, NOW) == expected


# --- plan_nearest: a new leadership term --------------------------------------


def test_new_leader_continues_the_objects_decision_with_one_rssi_write() -> None:
    # gw1 is stronger, but not by the 6 dB margin: the object's gw2 holds.
    dev = band(("gw1", -60.0, 0), ("gw2", -62.0, 0), nearest="gw2", since=NOW - 100)
    plan = plan_nearest({"band": dev}, ["band"], {}, {}, NOW, SPEC)
    continued = NearestState("gw2", since=NOW - 100)  # the object's since, not now
    assert plan.states == {"band": continued}
    # The object's rssi is not in DeviceFacts: the term's one rssi write, not a move.
    assert plan.writes == [NearestWrite("band", continued, -62.0, NOW, shown="gw2", before="gw2")]
    assert not plan.writes[0].moved
    assert plan.written == {}

    # The writer records that write; the next plan writes nothing and marks it seen.
    mine = Written("gw2", -62.0, before="gw2")
    later = plan_nearest({"band": dev}, ["band"], plan.states, {"band": mine}, NOW + 1, SPEC)
    assert later.writes == []
    assert later.states == {"band": continued}
    assert later.written == {"band": replace(mine, seen=True)}


def test_new_leader_without_since_on_the_object_starts_the_decision_now() -> None:
    dev = band(("gw2", -62.0, 0), nearest="gw2")
    plan = plan_nearest({"band": dev}, ["band"], {}, {}, NOW, SPEC)
    assert plan.states == {"band": NearestState("gw2", since=NOW)}


def test_device_heard_by_nobody_and_shown_nowhere_needs_no_write() -> None:
    plan = plan_nearest({"band": band()}, ["band"], {}, {}, NOW, SPEC)
    assert plan.states == {"band": NearestState(None)}
    assert plan.writes == []


def test_only_due_devices_are_decided() -> None:
    devices = {
        "a": band(("gw1", -60.0, 0), name="a"),
        "b": band(("gw1", -60.0, 0), name="b"),
    }
    plan = plan_nearest(devices, ["b"], {}, {}, NOW, SPEC)
    assert set(plan.states) == {"b"}
    assert [w.device for w in plan.writes] == ["b"]


# --- plan_nearest: changed decisions ------------------------------------------


def test_changed_decision_is_exactly_one_moving_write() -> None:
    # The incumbent gw1's sighting is 40 s old (> 30 s): the fresh gw2 takes over.
    dev = band(("gw1", -60.0, 40), ("gw2", -70.0, 0), nearest="gw1")
    states = {"band": NearestState("gw1", since=NOW - 100)}
    written = {"band": Written("gw1", -60.0, before=None, seen=True)}
    plan = plan_nearest({"band": dev}, ["band"], states, written, NOW, SPEC)
    moved = NearestState("gw2", since=NOW, arrival_voters=frozenset({"gw2"}))  # an arrival pick
    assert plan.states == {"band": moved}
    assert plan.writes == [NearestWrite("band", moved, -70.0, NOW, shown="gw1", before="gw1")]
    assert plan.writes[0].moved
    assert plan.written == {}  # already seen: nothing to acknowledge


def test_losing_every_sighting_writes_a_clearing_move() -> None:
    dev = band(("gw1", -60.0, 40), nearest="gw1")
    states = {"band": NearestState("gw1", since=NOW - 100)}
    plan = plan_nearest({"band": dev}, ["band"], states, {}, NOW, SPEC)
    assert plan.writes == [
        NearestWrite("band", NearestState(None), None, None, shown="gw1", before="gw1")
    ]
    assert plan.writes[0].moved


@pytest.mark.parametrize(
    ("challenging_for", "writes"),
    [
        pytest.param(9.0, [], id="challenger-before-dwell-no-write"),
        pytest.param(10.0, ["gw2"], id="challenger-at-dwell-takes-over"),
    ],
)
def test_challenger_takes_over_only_after_the_dwell(
    challenging_for: float, writes: list[str]
) -> None:
    dev = band(("gw1", -66.0, 0), ("gw2", -60.0, 0), nearest="gw1")  # gw2 exactly 6 dB stronger
    pending = NearestState(
        "gw1", NOW - 100, challenger="gw2", challenger_since=NOW - challenging_for
    )
    written = {"band": Written("gw1", -66.0, before=None, seen=True)}
    plan = plan_nearest({"band": dev}, ["band"], {"band": pending}, written, NOW, SPEC)
    assert [w.state.node for w in plan.writes] == writes
    assert all(w.moved and w.shown == "gw1" for w in plan.writes)


# --- plan_nearest: rssi refreshes ----------------------------------------------


@pytest.mark.parametrize(
    ("rssi", "rewritten"),
    [
        pytest.param(-60.0, False, id="unchanged"),
        pytest.param(-60.0 - RSSI_STEP + 0.1, False, id="weaker-below-step"),
        pytest.param(-60.0 - RSSI_STEP, True, id="weaker-at-step"),
        pytest.param(-60.0 + RSSI_STEP - 0.1, False, id="stronger-below-step"),
        pytest.param(-60.0 + RSSI_STEP, True, id="stronger-at-step"),
    ],
)
def test_rssi_rewritten_only_when_it_drifts_by_the_step(rssi: float, rewritten: bool) -> None:
    assert RSSI_STEP == 6.0
    dev = band(("gw1", rssi, 0), nearest="gw1")
    states = {"band": NearestState("gw1", since=NOW - 100)}
    written = {"band": Written("gw1", -60.0, before="gw1", seen=True)}
    plan = plan_nearest({"band": dev}, ["band"], states, written, NOW, SPEC)
    expected = [NearestWrite("band", states["band"], rssi, NOW, shown="gw1", before="gw1")]
    assert plan.writes == (expected if rewritten else [])
    assert not any(w.moved for w in plan.writes)


# --- plan_nearest: our own writes and someone else's ---------------------------

# We moved band from gw1 to gw2; the incumbent gw1 has since gone stale.
OURS = Written("gw2", -70.0, before="gw1", at=NOW - 1)
DECIDED = {"band": NearestState("gw2", since=NOW - 1)}


def heard_at_gw2(on_object: str | None) -> dict[str, DeviceFacts]:
    return {"band": band(("gw1", -60.0, 40), ("gw2", -70.0, 0), nearest=on_object)}


def test_our_undelivered_write_counts_as_shown_no_duplicate() -> None:
    plan = plan_nearest(heard_at_gw2("gw1"), ["band"], DECIDED, {"band": OURS}, NOW, SPEC)
    assert plan.states == DECIDED
    assert plan.writes == []
    assert plan.written == {}  # not acknowledged yet


def test_our_write_delivered_flips_seen_and_writes_nothing() -> None:
    plan = plan_nearest(heard_at_gw2("gw2"), ["band"], DECIDED, {"band": OURS}, NOW, SPEC)
    assert plan.writes == []
    assert plan.written == {"band": replace(OURS, seen=True)}
    # Once seen, it is not acknowledged again.
    again = plan_nearest(
        heard_at_gw2("gw2"), ["band"], DECIDED, {"band": replace(OURS, seen=True)}, NOW, SPEC
    )
    assert again.writes == []
    assert again.written == {}


def test_someone_elses_later_write_is_detected_and_rewritten() -> None:
    plan = plan_nearest(heard_at_gw2("gw9"), ["band"], DECIDED, {"band": OURS}, NOW, SPEC)
    assert plan.writes == [
        NearestWrite("band", DECIDED["band"], -70.0, NOW, shown="gw9", before="gw9")
    ]
    assert plan.writes[0].moved
    assert plan.written == {}


def test_a_change_back_after_our_write_was_seen_is_rewritten() -> None:
    seen = {"band": replace(OURS, seen=True)}
    plan = plan_nearest(heard_at_gw2("gw1"), ["band"], DECIDED, seen, NOW, SPEC)
    assert [(w.state.node, w.shown, w.moved) for w in plan.writes] == [("gw2", "gw1", True)]


# --- due_devices ---------------------------------------------------------------


def test_due_devices_picks_changed_retried_and_challenged_only() -> None:
    same = band(("gw1", -60.0, 0), nearest="gw1", name="same")
    changed = band(("gw1", -60.0, 0), nearest="gw1", name="changed")
    copy = replace(changed)  # an equal value, but a new object: the reflector replaced it
    previous = {
        "same": same,
        "changed": copy,
        "retried": band(name="retried"),
        "challenged": band(name="challenged"),
        "settled": band(name="settled"),
        "gone": band(name="gone"),
    }
    devices = {
        "same": same,
        "new": band(name="new"),
        "changed": changed,
        "retried": previous["retried"],
        "challenged": previous["challenged"],
        "settled": previous["settled"],
    }
    states = {
        "same": NearestState("gw1", NOW - 100),
        "challenged": NearestState("gw1", NOW - 100, challenger="gw2", challenger_since=NOW - 1),
        "settled": NearestState("gw1", NOW - 100),
    }
    assert copy == changed
    assert copy is not changed
    due = due_devices(devices, previous, states, retry={"retried", "gone"})
    assert due == ["new", "changed", "retried", "challenged"]


def test_rssi_drift_is_rewritten_at_most_every_refresh_interval() -> None:
    """A stationary device's noise must not rewrite its Device every few seconds."""
    dev = band(("gw1", -60.0 - RSSI_STEP, 0), nearest="gw1")
    states = {"band": NearestState("gw1", since=NOW - 1000)}
    for age, rewritten in ((RSSI_REFRESH - 0.1, False), (RSSI_REFRESH, True)):
        written = {"band": Written("gw1", -60.0, before="gw1", seen=True, at=NOW - age)}
        plan = plan_nearest({"band": dev}, ["band"], states, written, NOW, SPEC)
        assert bool(plan.writes) is rewritten, age
