"""The rebalancer's pure planner: (pods, snapshot, policy, memory, now) -> moves.

No I/O, no clock, no asyncio: the actor passes the time in and applies the plan
(rollout, eviction, scale, Events). It never scores a node itself: it asks THE
scorer (`evaluate`) for the pod's current node and every other node, and expects
the new pod where the extender ranks it first (kube-scheduler places it through
the extender; the Event names that expected node).

Design choices (policies/README.md documents the knobs, `spec.rebalance`):

* Never without a feasible better node. When the current node is still feasible
  a target must beat it by `minImprovement` score points (an *optional* move);
  when it is not (the device left its gateway, the node is over a load limit) the
  best feasible node will do (a *forced* move). No feasible node: nothing moves.
* Bare pods are never moved (held "no-controller"), and neither are pods of
  owners other than Deployments, StatefulSets and ReplicaSets (the actor reports
  those as bare). Evicting a bare pod deletes the function: nothing recreates it,
  so the patient's stream would end rather than move. A DaemonSet or Job would
  recreate it on the same node or not at all.
* Make-before-break when the owner allows it: a Deployment that can surge is
  moved by a rollout (the new replica is Ready before the old one goes); any other
  owner by the Eviction API, which honours PodDisruptionBudgets.
* Forced vs optional and the cooldown. An optional move is a preference, so
  after any move of the workload, or of another function of the same device,
  it waits for `cooldown` (this is what stops offload/onload and roam/roam-back
  flapping). A forced move cannot wait for a preference: it bypasses the
  cooldown, but it never sends the workload back to a node it left within the
  cooldown (Koordinator #1114). The scheduler, not the planner, picks the node:
  if a node just left scores at the top, the move would land there, so it is held
  ("no-return") rather than announced towards a second-best node it would not
  reach. The pod keeps running on its current node meanwhile.
* Dwell and settle. A move must be wanted for the same target and reason for
  `dwell` (a snapshot of noisy readings never moves a function); a Roaming or
  DeviceBack move also waits until the device's nearest-gateway decision is older
  than `spec.nearest.settle`, so a first pick still being corrected moves nothing.
* Rates count every move in the last 60 s, including those planned earlier in
  the same call: `maxMovesPerMinute` over the cluster, `maxMovesPerNodePerMinute`
  per node leaving or arriving. Forced moves are served first, then the largest
  improvement, then names, so plans are deterministic. One move per workload per
  plan: a rollout replaces all its replicas, and an evicted StatefulSet replica
  must come back before the next one goes.
* A device no gateway hears fresh but a silent gateway still lists (its Lease not
  renewed) is unknown, not away: its proximity and DeviceAway moves and parks are held
  (`gateway-silent`) until that gateway speaks again or loses its report.
* Device lifecycle (`whenDeviceAway`): `fallback` lets the normal evaluation
  move the function (DeviceAway); `keep` holds DeviceAway moves; `park` scales a
  Deployment to zero once no gateway has heard the device for `deviceAwayAfter`
  (newest sighting; for a device never sighted, since the planner first saw it
  so), and restores it as soon as a gateway hears the device (no dwell: the
  patient is back; the cluster-wide rate still applies). A parked function whose
  class no longer parks is restored too, so a policy change cannot strand it.
* Memory is the planner's only state and is returned, not mutated. Pods not
  passed to a call (event-driven plans cover only the affected pods) keep their
  pending entries; `Memory.forget` drops pods that are gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from cloud4iot.policy.loader import LoadedPolicy
from cloud4iot.policy.schema import FunctionClass, ProximityMode, WhenDeviceAway
from extender.scoring import Code, Context, PodFacts, TableCache, Verdict, evaluate, make_context
from extender.state.snapshot import Snapshot
from rebalancer.model import (
    Action,
    Fact,
    Held,
    Kind,
    Limit,
    ManagedPod,
    Memory,
    Move,
    MoveRecord,
    Pending,
    Plan,
    Reason,
    Workload,
)

__all__ = [
    "FACTS",
    "RATE_WINDOW",
    "Action",
    "Held",
    "Kind",
    "Limit",
    "ManagedPod",
    "Memory",
    "Move",
    "MoveRecord",
    "Pending",
    "Plan",
    "Reason",
    "Workload",
    "plan",
]

RATE_WINDOW = 60.0  # the "per minute" of the move rates
# Keys of Move.facts (all optional): what the Event message shows.
FACTS = (
    "why",  # the scorer's reason about the current node, or what changed
    "device",
    "rssiFrom",  # dBm of the device's sighting at the current / target node
    "rssiTo",
    "loadFrom",  # peak utilisation 0..1 of the current / target node
    "loadTo",
    "scoreFrom",  # the scorer's 0..10 (0: infeasible)
    "scoreTo",
    "sightingAge",  # s since the device's newest sighting
    "decisionAge",  # s since its nearest-gateway decision
    "awayFor",  # s the device has been away (park)
    "policy",  # LoadedPolicy.version
)
TIER_RANK = {"gateway": 0, "edge": 1, "cloud": 2}
PROXIMITY_CODES = frozenset(
    {Code.NOT_NEAREST, Code.HEARD_BY_GATEWAY, Code.NOT_HEARD, Code.UNKNOWN_DEVICE}
)
LOAD_CODES = frozenset({Code.OVERLOADED, Code.STALE_LOAD})


@dataclass(slots=True)
class _Candidate:
    """A move that passed the per-pod rules and waits for the rate limits."""

    move: Move
    device: str | None
    forced: bool
    improvement: int
    node_rate: bool  # unpark: the cluster-wide rate only

    def order(self) -> tuple[bool, int, str, str]:
        pod = self.move.pod
        return (not self.forced, -self.improvement, self.move.workload.key, pod.name if pod else "")


@dataclass(slots=True)
class _Work:
    """The mutable state of one `plan` call."""

    snapshot: Snapshot
    loaded: LoadedPolicy
    memory: Memory
    now: float
    pending: dict[str, Pending]
    unheard: dict[str, float]
    tables: TableCache | None = None  # the scorer's cache (memoization only)
    held: list[Held] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)

    def hold(
        self,
        workload: Workload,
        pod: ManagedPod | None,
        reason: Reason | None,
        limit: Limit,
        target: str | None = None,
        until: float | None = None,
    ) -> None:
        self.held.append(Held(workload.key, pod.uid if pod else None, reason, limit, target, until))


def plan(
    pods: Iterable[ManagedPod],
    snapshot: Snapshot,
    policy: LoadedPolicy,
    memory: Memory,
    now: float,
    parked: Iterable[tuple[Workload, PodFacts]] = (),
    tables: TableCache | None = None,
) -> Plan:
    """The moves to make now for these pods (and parked Deployments), and the new memory.

    `tables` is the scorer's cache (the caller's; the plan is the same without it)."""
    pods = sorted(pods, key=lambda p: (p.namespace, p.name, p.uid))
    parked = sorted(parked, key=lambda wp: wp[0].key)
    if not (snapshot.nodes_synced and snapshot.devices_synced):
        # A partial cache would make running functions look misplaced: wait.
        held = [
            Held(p.workload.key, p.uid, None, Limit.NOT_SYNCED)
            for p in pods
            if p.ready and not p.deleting
        ]
        held += [Held(w.key, None, None, Limit.NOT_SYNCED) for w, _ in parked]
        return Plan((), tuple(held), memory)
    if any(m.at > now for m in memory.moves):
        # Our clock stepped back since they were made: as if made now, so they age out
        # after their windows rather than after the step on top.
        made = tuple(replace(m, at=now) if m.at > now else m for m in memory.moves)
        memory = replace(memory, moves=made)
    work = _Work(
        snapshot, policy, memory, now, dict(memory.pending), dict(memory.unheard_since), tables
    )
    for pod in pods:
        if not pod.deleting and pod.ready:  # leaving, or not up yet: nothing to judge
            _consider(work, pod)
    for workload, facts in parked:
        _consider_parked(work, workload, facts)
    moves, records = _admit(work)
    keep = max(policy.policy.spec.rebalance.cooldown, RATE_WINDOW)
    recent = tuple(m for m in memory.moves if now - m.at < keep) + records
    held = sorted(work.held, key=lambda h: (h.workload, h.pod or "", h.limit.value))
    return Plan(tuple(moves), tuple(held), Memory(work.pending, recent, work.unheard))


def _consider(work: _Work, pod: ManagedPod) -> None:
    snapshot, spec = work.snapshot, work.loaded.policy.spec
    if pod.node not in snapshot.nodes:
        work.hold(pod.workload, pod, None, Limit.UNKNOWN_NODE)
        return
    evaluation = evaluate(pod.facts, snapshot, work.loaded.policy, work.now, tables=work.tables)
    ctx, verdicts = evaluation.ctx, evaluation.verdicts()
    current = next(v for v in verdicts if v.node == pod.node)
    silent = _gateways_silent(ctx, spec.stale_data.sighting_max_age, work.now)
    away = _device_away(ctx) and not silent
    if not away and pod.facts.device is not None:
        work.unheard.pop(pod.facts.device, None)  # heard: a later absence starts afresh
    cls = ctx.cls
    if away and cls is not None and cls.when_device_away is WhenDeviceAway.PARK:
        away_for = work.now - _away_since(work, ctx)
        if away_for >= spec.rebalance.device_away_after:
            work.pending.pop(pod.uid, None)
            _propose_park(work, pod, ctx, current, away_for)
            return
    others = sorted(
        (v for v in verdicts if v.feasible and v.node != pod.node),
        key=lambda v: (-v.score, v.node),
    )
    forced = not current.feasible
    if not others or (
        not forced and others[0].score < current.score + spec.rebalance.min_improvement
    ):
        work.pending.pop(pod.uid, None)
        if forced:
            work.hold(pod.workload, pod, None, Limit.NO_FEASIBLE_NODE)
        return
    target = others[0]
    reason = _reason(pod, ctx, current, target.node, away)
    if silent and (reason is Reason.DEVICE_AWAY or current.code in PROXIMITY_CODES):
        work.pending.pop(pod.uid, None)
        work.hold(pod.workload, pod, reason, Limit.GATEWAY_SILENT, target.node)
        return
    if not forced and pod.workload.replicas > 1:
        # A replicated workload's spread is kube-scheduler's business (its spreading
        # and fit scores outweigh our preference on purpose): moving a feasible replica
        # for a preference would fight it, rollout after rollout.
        work.pending.pop(pod.uid, None)
        work.hold(pod.workload, pod, reason, Limit.REPLICATED, target.node)
        return
    wanted = work.pending.get(pod.uid)
    if wanted is None or (wanted.target, wanted.reason) != (target.node, reason):
        wanted = work.pending[pod.uid] = Pending(target.node, reason, work.now)
    held = _rule_holding(work, pod, ctx, cls, reason, forced, others, wanted)
    if held is not None:
        limit, until = held
        work.hold(pod.workload, pod, reason, limit, target.node, until)
        return
    # Make-before-break for a single replica; a replicated workload loses one replica
    # (the others serve meanwhile) instead of rolling all of them out.
    single = pod.workload.replicas <= 1
    action = (
        Action.ROLLOUT
        if pod.workload.kind is Kind.DEPLOYMENT and pod.workload.can_surge and single
        else Action.EVICT
    )
    facts = _facts(work, ctx, pod.node, target.node, current, target)
    if not forced:
        facts["why"] = f"{target.node} scores {target.score}, {pod.node} {current.score}"
    move = Move(action, reason, pod.workload, pod, pod.node, target.node, facts)
    improvement = target.score - current.score
    work.candidates.append(_Candidate(move, pod.facts.device, forced, improvement, True))


def _rule_holding(
    work: _Work,
    pod: ManagedPod,
    ctx: Context,
    cls: FunctionClass | None,
    reason: Reason,
    forced: bool,
    others: Sequence[Verdict],
    wanted: Pending,
) -> tuple[Limit, float | None] | None:
    """The first per-pod rule that holds this move (and when it may lift), or None."""
    spec, now = work.loaded.policy.spec, work.now
    rb = spec.rebalance
    workload = pod.workload
    if workload.kind is Kind.POD:
        return Limit.NO_CONTROLLER, None
    if not workload.settled:
        return Limit.ROLLOUT_IN_PROGRESS, None
    if reason is Reason.DEVICE_AWAY and cls is not None:
        if cls.when_device_away is WhenDeviceAway.KEEP:
            return Limit.DEVICE_AWAY_KEEP, None
        if cls.when_device_away is WhenDeviceAway.PARK:
            return Limit.DEVICE_AWAY_WAIT, _away_since(work, ctx) + rb.device_away_after
    recent = [m for m in work.memory.moves if now - m.at < rb.cooldown]
    mine = [m for m in recent if m.workload == workload.key]
    if forced:
        left = {m.from_node: m.at for m in mine if m.from_node is not None}
        top = [v.node for v in others if v.score == others[0].score]
        back = [left[n] for n in top if n in left]
        if back:
            return Limit.NO_RETURN, max(back) + rb.cooldown
    else:
        if mine:
            return Limit.COOLDOWN_WORKLOAD, max(m.at for m in mine) + rb.cooldown
        device = pod.facts.device
        same_device = [m.at for m in recent if device is not None and m.device == device]
        if same_device:
            return Limit.COOLDOWN_DEVICE, max(same_device) + rb.cooldown
    if reason in (Reason.ROAMING, Reason.DEVICE_BACK) and ctx.device is not None:
        since = ctx.device.nearest_since
        # A decision stamped a little ahead of our clock (the writer's clock skewed by
        # less than a settle) is fresh: held as one made now. One further ahead (ours
        # stepped back) is of unknown age: not held for the skew; the dwell still wants
        # it steady.
        settle = spec.nearest.settle
        if since is not None and -settle <= now - since < settle:
            return Limit.SETTLE, since + settle
    dwell = rb.dwell
    if reason in (Reason.OFFLOADING, Reason.ONLOADING):
        # The extender reads load on its own timer: a move wanted on a load it has not
        # read yet would be scheduled on the old picture (back onto the same node).
        dwell = max(dwell, spec.prometheus.refresh_interval)
    if now - wanted.since < dwell:
        return Limit.DWELL, wanted.since + dwell
    return None


def _propose_park(
    work: _Work, pod: ManagedPod, ctx: Context, current: Verdict, away_for: float
) -> None:
    workload = pod.workload
    if workload.kind is Kind.POD:
        work.hold(workload, pod, Reason.DEVICE_AWAY, Limit.NO_CONTROLLER)
    elif workload.kind is not Kind.DEPLOYMENT:
        work.hold(workload, pod, Reason.DEVICE_AWAY, Limit.PARK_NEEDS_DEPLOYMENT)
    elif not workload.settled:
        work.hold(workload, pod, Reason.DEVICE_AWAY, Limit.ROLLOUT_IN_PROGRESS)
    else:
        facts = _facts(work, ctx, pod.node, None, current, None)
        facts["awayFor"] = away_for
        facts["why"] = f"no gateway has heard device {ctx.pod.device} for {away_for:.0f}s"
        move = Move(Action.PARK, Reason.DEVICE_AWAY, workload, pod, pod.node, None, facts)
        work.candidates.append(_Candidate(move, pod.facts.device, True, 0, True))


def _consider_parked(work: _Work, workload: Workload, facts: PodFacts) -> None:
    snapshot, policy = work.snapshot, work.loaded.policy
    ctx = make_context(facts, snapshot, policy, work.now)
    cls = ctx.cls
    still_parks = (
        cls is not None
        and cls.when_device_away is WhenDeviceAway.PARK
        and cls.proximity is not ProximityMode.IGNORED
    )
    if still_parks and not ctx.heard:
        return
    verdicts = evaluate(facts, snapshot, policy, work.now, tables=work.tables).verdicts()
    feasible = sorted((v for v in verdicts if v.feasible), key=lambda v: (-v.score, v.node))
    if not feasible:
        work.hold(workload, None, Reason.DEVICE_BACK, Limit.NO_FEASIBLE_NODE)
        return
    target = feasible[0]
    move_facts = _facts(work, ctx, None, target.node, None, target)
    move_facts["why"] = (
        f"device {facts.device} heard by {', '.join(sorted(ctx.heard))}"
        if ctx.heard
        else f"class {facts.function} no longer parks"
    )
    move = Move(Action.UNPARK, Reason.DEVICE_BACK, workload, None, None, target.node, move_facts)
    work.candidates.append(_Candidate(move, facts.device, True, target.score, False))


def _admit(work: _Work) -> tuple[list[Move], tuple[MoveRecord, ...]]:
    """Apply the rates and one move per workload, in priority order."""
    rb, now = work.loaded.policy.spec.rebalance, work.now
    # How long before a move shows in the load the scorer reads: data this old still counts.
    settle_load = work.loaded.policy.spec.stale_data.load_max_age
    window = [m for m in work.memory.moves if now - m.at < RATE_WINDOW]
    moves: list[Move] = []
    records: list[MoveRecord] = []
    moved: set[str] = set()
    for cand in sorted(work.candidates, key=_Candidate.order):
        move = cand.move
        workload = move.workload
        if workload.key in moved:
            continue  # its rollout or eviction is already planned
        if len(window) >= rb.max_moves_per_minute:
            until = sorted(m.at for m in window)[len(window) - rb.max_moves_per_minute]
            work.hold(
                workload,
                move.pod,
                move.reason,
                Limit.GLOBAL_RATE,
                move.to_node,
                until + RATE_WINDOW,
            )
            continue
        if not cand.forced and move.to_node is not None:
            # A preference (load headroom above all) is judged on load data that does
            # not show a move onto the target yet: one at a time, or every pod that
            # prefers the idle node goes at once, and back again once loads invert.
            landed = [m.at for m in (*work.memory.moves, *records) if m.to_node == move.to_node]
            recent = [at for at in landed if now - at < settle_load]
            if recent:
                work.hold(
                    workload,
                    move.pod,
                    move.reason,
                    Limit.TARGET_SETTLING,
                    move.to_node,
                    max(recent) + settle_load,
                )
                continue
        nodes = (move.from_node, move.to_node) if cand.node_rate else ()
        frees = [_node_frees_at(window, n, rb.max_moves_per_node_per_minute) for n in nodes]
        busy = [t for t in frees if t is not None]
        if busy:
            work.hold(workload, move.pod, move.reason, Limit.NODE_RATE, move.to_node, max(busy))
            continue
        record = MoveRecord(
            workload.key, cand.device, move.from_node, move.to_node, move.reason, now
        )
        window.append(record)
        records.append(record)
        moves.append(move)
        moved.add(workload.key)
        if move.pod is not None:
            work.pending.pop(move.pod.uid, None)
    return moves, tuple(records)


def _node_frees_at(window: Sequence[MoveRecord], node: str | None, limit: int) -> float | None:
    """None when `node` may take one more move now, else when its window frees up."""
    if node is None:
        return None
    touching = sorted(m.at for m in window if node in (m.from_node, m.to_node))
    if len(touching) < limit:
        return None
    return touching[len(touching) - limit] + RATE_WINDOW


def _device_away(ctx: Context) -> bool:
    """No gateway hears the pod's device (only for classes that follow a device)."""
    cls = ctx.cls
    return (
        cls is not None
        and cls.proximity is not ProximityMode.IGNORED
        and ctx.pod.device is not None
        and not ctx.heard
    )


def _gateways_silent(ctx: Context, max_age: float, now: float) -> bool:
    """No gateway hears the device fresh, but a gateway's report still lists it with
    no renewal for `max_age`: we stopped hearing that gateway, not it the device
    (docs/gateway-writes.md, section 5). Unknown is never away."""
    device = ctx.device
    if device is None or ctx.heard:
        return False
    return any(s.reported and now - s.last_seen > max_age for s in device.sightings.values())


def _away_since(work: _Work, ctx: Context) -> float:
    """The newest sighting of the device; for one never sighted, when first seen so."""
    device = ctx.device
    name = ctx.pod.device or ""
    if device is not None and device.sightings:
        work.unheard.pop(name, None)
        return max(s.last_seen for s in device.sightings.values())
    return work.unheard.setdefault(name, work.now)


def _reason(pod: ManagedPod, ctx: Context, current: Verdict, target: str, away: bool) -> Reason:
    nodes = ctx.snapshot.nodes
    here, there = nodes[pod.node].tier, nodes[target].tier
    to_hearing_gateway = there == "gateway" and target in ctx.heard
    if not current.feasible:
        if current.code in LOAD_CODES:
            return Reason.OFFLOADING
        if current.code in PROXIMITY_CODES:
            if not to_hearing_gateway:
                return Reason.DEVICE_AWAY
            return Reason.ROAMING if here == "gateway" else _back_or_onload(pod, ctx)
    if away and here == "gateway" and there != "gateway":
        return Reason.DEVICE_AWAY
    if to_hearing_gateway and target == ctx.nearest and here != "gateway":
        return _back_or_onload(pod, ctx)
    rank_here, rank_there = TIER_RANK.get(here or ""), TIER_RANK.get(there or "")
    if rank_here is not None and rank_there is not None:
        if rank_there < rank_here:
            return Reason.ONLOADING
        if rank_there == rank_here == TIER_RANK["gateway"]:
            return Reason.ROAMING
    return Reason.OFFLOADING


def _back_or_onload(pod: ManagedPod, ctx: Context) -> Reason:
    """Back down to the device's gateway: DeviceBack, unless the nearest decision
    predates the pod on its node (the device never left: the gateway has room again)."""
    since = ctx.device.nearest_since if ctx.device else None
    if since is not None and pod.started is not None and since <= pod.started:
        return Reason.ONLOADING
    return Reason.DEVICE_BACK


def _facts(
    work: _Work,
    ctx: Context,
    here: str | None,
    there: str | None,
    current: Verdict | None,
    target: Verdict | None,
) -> dict[str, Fact]:
    device, load, now = ctx.device, work.snapshot.load, work.now

    def rssi(node: str | None) -> float | None:
        s = device.sightings.get(node) if device is not None and node is not None else None
        return s.rssi if s is not None else None

    def peak(node: str | None) -> float | None:
        sample = load.get(node) if node is not None else None
        return sample.peak if sample is not None else None

    newest = max((s.last_seen for s in device.sightings.values()), default=None) if device else None
    decided = device.nearest_since if device is not None else None
    return {
        "why": current.reason if current is not None else None,
        "device": ctx.pod.device,
        "rssiFrom": rssi(here),
        "rssiTo": rssi(there),
        "loadFrom": peak(here),
        "loadTo": peak(there),
        "scoreFrom": current.score if current is not None else None,
        "scoreTo": target.score if target is not None else None,
        "sightingAge": now - newest if newest is not None else None,
        "decisionAge": now - decided if decided is not None else None,
        "policy": work.loaded.version,
    }
