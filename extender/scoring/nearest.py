"""The nearest gateway of a device: the one module that says which gateway that is.

`decide_nearest` is the central decision with incumbent/challenger hysteresis
(written to status.nearest by the elected writer); `nearest_of` is what the
scorer uses: that decision while it holds on fresh data, else the strongest
voter. Pure: the previous decision, the device's sightings, the time and the
policy in; the next decision out. Defaults (policy `spec.nearest`) follow the BLE presence
systems surveyed in research/peers.md: Bermuda lets a challenger win only when it
is clearly closer (~15-30% in distance, which is ~3-6 dB under a log-distance
model with exponent 2.7-3) and only on readings fresher than ~10 s; ESPresense
and Bermuda both warn that one noisy reading must never switch rooms. So:

* the incumbent keeps the device while its sighting is fresh (sighting max age), and
  while no gateway hears it fresh but the incumbent's gateway still lists it in its
  report (a silent gateway makes the device unknown, not gone: issue 26);
* a challenger must be `challengerMarginDb` stronger, on data fresher than
  `freshness`, continuously for `challengerDwell`, before it takes over;
* without an incumbent, the strongest fresh gateway is taken at once (arrival is
  fast, leaving is slow), and gateways marked `excludeFromVote` never win;
* that arrival pick is provisional for `settle`: a gateway that was not yet heard
  when it was taken and reports `challengerMarginDb` stronger within the window
  takes over at once, without the dwell. A device switched on in a room heard by
  two gateways would otherwise go to whichever reported first, and its function
  be placed there and moved ~10 s later.

That is rule `dwell`. The default rule, `evidence` (`_by_evidence`), sums the strongest
rival's advantage past `deadbandDb` over time and moves when the sum reaches
`switchCostDbS`; it was chosen by replaying real recordings (`cloud4iot replay`,
policies/README.md), on which the dwell rule held devices 10 dB or more below the best
gateway 8 % of the time.

The correction happens at most once per arrival (the corrected decision is not
provisional), and only for gateways that had not been compared yet: gateways that
were already heard were weighed on the data at hand, and letting their noise win
without a dwell would make a stationary device flap in its first seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from cloud4iot.policy.schema import NearestRule, PolicySpec
from extender.state.snapshot import DeviceFacts, Sighting

V = TypeVar("V")


def voters(heard: Mapping[str, V], spec: PolicySpec) -> dict[str, V]:
    """The entries of gateways that may win the vote (not marked excludeFromVote)."""
    excluded = {n for n, g in spec.gateways.items() if g.exclude_from_vote}
    return {n: v for n, v in heard.items() if n not in excluded} if excluded else dict(heard)


def nearest_of(device: DeviceFacts, heard: Mapping[str, float], spec: PolicySpec) -> str | None:
    """The central decision if it still holds on fresh data, else the strongest voter."""
    if device.nearest in heard:
        return device.nearest
    rssi = voters(heard, spec)
    return max(rssi, key=lambda n: (rssi[n], n)) if rssi else None


@dataclass(frozen=True, slots=True)
class NearestState:
    node: str | None
    since: float | None = None
    challenger: str | None = None
    challenger_since: float | None = None
    # Set on an arrival pick only (taken without an incumbent): the gateways heard
    # fresh at that moment. Any other gateway may still correct it within `settle`.
    arrival_voters: frozenset[str] | None = None
    # rule "evidence": the summed advantage (dB x s) of the strongest rival and when
    # it was last brought up to date.
    evidence: float = 0.0
    evidence_at: float | None = None
    # rule "evidence": each fresh rival's summed advantage over the incumbent since the
    # sum above began (dB x s, never below zero): where the device goes when it moves.
    lead: tuple[tuple[str, float], ...] = ()
    # The incumbent left (no longer listed, silent past the sighting age, excluded)
    # while others hear the device: since when the others are gathered for arrivalWait,
    # the previous decision held meanwhile.
    gathering_since: float | None = None

    @property
    def pending(self) -> bool:
        """Whether time alone may change this decision (the writer re-decides it each tick)."""
        return (
            self.challenger is not None
            or self.arrival_voters is not None
            or self.gathering_since is not None
        )


# Longest gap between two decisions that counts as evidence: the writer decides a
# pending device every second; a longer gap (a new leader, a stalled loop) says
# nothing about what the signals did in between.
MAX_EVIDENCE_STEP = 5.0


def decide_nearest(
    previous: NearestState | None,
    sightings: Mapping[str, Sighting],
    now: float,
    spec: PolicySpec,
) -> NearestState:
    rules = spec.nearest
    keep_for = spec.stale_data.sighting_max_age
    eligible = voters(sightings, spec)
    fresh = {n: s for n, s in eligible.items() if now - s.last_seen <= rules.freshness}
    prev = previous or NearestState(node=None)
    incumbent = eligible.get(prev.node) if prev.node else None

    if incumbent is None or now - incumbent.last_seen > keep_for:
        if not fresh:
            if incumbent is not None and incumbent.reported:
                # Its gateway still lists it but went silent (monitor gone, node down,
                # or our view of the apiserver interrupted): unknown, not gone. Hold.
                return _calm(prev)
            return NearestState(node=None)
        # Gather for arrivalWait (pending: the writer decides it again each tick).
        if prev.node is not None:
            # A handover by departure: not a newly heard device, so the previous
            # decision holds while the others are gathered. Deciding "nowhere" first
            # removed status.nearest for a second on every such handover: two writes,
            # and no settle hold in between (found in review, 2026-12-07).
            gathering = prev.gathering_since if prev.gathering_since is not None else now
            if now - gathering < rules.arrival_wait:
                return NearestState(node=prev.node, since=prev.since, gathering_since=gathering)
        else:
            heard_since = prev.since if prev.since is not None else now
            if now - heard_since < rules.arrival_wait:
                return NearestState(node=None, since=heard_since, arrival_voters=frozenset(fresh))
        strongest = max(fresh.values(), key=lambda s: (s.rssi, s.node))
        return NearestState(node=strongest.node, since=now, arrival_voters=frozenset(fresh))
    if prev.gathering_since is not None:
        prev = replace(prev, gathering_since=None)  # the incumbent is back: no handover

    rivals = [s for n, s in fresh.items() if n != prev.node]
    best = max(rivals, key=lambda s: (s.rssi, s.node), default=None)
    if rules.rule is NearestRule.EVIDENCE:
        return _by_evidence(prev, incumbent, best, fresh, now, spec)
    if prev.evidence_at is not None:
        # Left by the evidence rule (the policy's rule changed): its challenger is
        # whichever rival was strongest last, timed from when the sum began, not one
        # rival margin-stronger all along; taken as such it moved the device at once.
        prev = replace(
            prev, challenger=None, challenger_since=None, evidence=0.0, evidence_at=None, lead=()
        )
    if best is None or best.rssi < incumbent.rssi + rules.challenger_margin_db:
        return replace(prev, challenger=None, challenger_since=None)
    if _corrects_arrival(prev, best.node, now, rules.settle):
        return NearestState(node=best.node, since=now)
    if best.node != prev.challenger or prev.challenger_since is None:
        return replace(prev, challenger=best.node, challenger_since=now)
    if now - prev.challenger_since >= rules.challenger_dwell:
        return NearestState(node=best.node, since=now)
    return prev


def _corrects_arrival(prev: NearestState, challenger: str, now: float, settle: float) -> bool:
    """Whether a margin-stronger challenger may replace an arrival pick without dwell."""
    return (
        prev.arrival_voters is not None
        and challenger not in prev.arrival_voters
        and prev.since is not None
        and now - prev.since < settle
    )


def _by_evidence(
    prev: NearestState,
    incumbent: Sighting,
    best: Sighting | None,
    fresh: Mapping[str, Sighting],
    now: float,
    spec: PolicySpec,
) -> NearestState:
    """Rule "evidence": a CUSUM of the strongest rival's advantage over the incumbent.

    Whichever rival is strongest at each moment counts (rivals rotating between
    gateways 5 m apart reset nothing), less ``deadbandDb``; the sum never drops below
    zero and the device moves when it reaches ``switchCostDbS``. A 15 dB gap moves it
    in ~2 s, 4 dB in ~15 s, and a gap inside the deadband never: large deficits are
    cut short, small ones are not worth a move. This is rent-or-buy: pay the deficit
    until it has cost as much as a move, then move.
    """
    rules = spec.nearest
    if prev.arrival_voters is not None and prev.since is not None:
        if (
            best is not None
            and _corrects_arrival(prev, best.node, now, rules.settle)
            and best.rssi >= incumbent.rssi + rules.challenger_margin_db
        ):
            return NearestState(node=best.node, since=now)
        if now - prev.since >= rules.settle:
            # The end of the settle window: decide again on everything now heard. Maybe
            # nothing is fresh any more (the writer was held up past `freshness`: a
            # new leader, a starved loop): then the pick stands.
            strongest = max(fresh.values(), key=lambda s: (s.rssi, s.node), default=None)
            if (
                strongest is not None
                and strongest.node != prev.node
                and strongest.rssi > incumbent.rssi + rules.deadband_db
            ):
                return NearestState(node=strongest.node, since=now)
            prev = replace(prev, arrival_voters=None)
    if best is None:
        return _calm(prev)
    advantage = best.rssi - incumbent.rssi - rules.deadband_db
    step = (
        0.0
        if prev.evidence_at is None
        else max(0.0, min(now - prev.evidence_at, MAX_EVIDENCE_STEP))
    )
    evidence = max(0.0, prev.evidence + advantage * step)
    before = dict(prev.lead)
    lead = {
        n: max(0.0, before.get(n, 0.0) + (s.rssi - incumbent.rssi) * step)
        for n, s in fresh.items()
        if n != prev.node
    }
    if evidence >= rules.switch_cost_db_s:
        ahead = {
            n: v for n, v in lead.items() if fresh[n].rssi > incumbent.rssi + rules.deadband_db
        }
        return NearestState(node=_target(ahead, best.node), since=now)
    if evidence <= 0.0 and advantage <= 0.0:
        return _calm(prev)
    return replace(
        prev,
        challenger=best.node,
        challenger_since=prev.challenger_since if prev.challenger is not None else now,
        evidence=evidence,
        evidence_at=now,
        lead=tuple(sorted(lead.items())),
    )


def _calm(prev: NearestState) -> NearestState:
    """No rival past the deadband any more: the sums start again from zero."""
    if (
        prev.challenger is None
        and prev.challenger_since is None
        and prev.evidence == 0.0
        and prev.evidence_at is None
        and not prev.lead
    ):
        # Already calm, the case of every stationary device each time its gateways'
        # reports change: `replace` was a third of the elected writer's CPU at rest.
        return prev
    return replace(
        prev, challenger=None, challenger_since=None, evidence=0.0, evidence_at=None, lead=()
    )


def _target(lead: Mapping[str, float], strongest: str) -> str:
    """Where a move goes: of the rivals past the deadband now, the one furthest ahead
    over the whole episode, not whichever is strongest at the instant the sum crosses.
    A device carried past one gateway on its way to the next (the flat's walk: kitchen,
    past the living room's first gateway, to its second) otherwise stops 2-3 s at the
    one it passes. Replayed (BENCHMARKS.md): the same on calib1-4, held-out test_robot
    deficit p90 4.52 -> 4.17 dB and 1.81 -> 1.64 moves/min."""
    return max(lead, key=lambda n: (lead[n], n == strongest, n)) if lead else strongest
