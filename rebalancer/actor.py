"""The rebalancer's actor: when to plan, for which pods; the evictor applies the plan.

Planning is `plan.plan` and `repin.plan_repins` (pure); moves are made by
`evictor.Evictor`, which also keeps the record of moves in flight. Here:

* Triggers. Watch hooks mark pods dirty per event, found through indexes, so the
  work of an event is the work of the pods it affects: a Device change marks the
  pods serving that device; a pod change marks that pod; a Deployment change
  (a rollout completed) marks its pods; a node's load crossing a class limit
  marks the pods on that node and the pods of devices that node hears. A policy
  change, and every `spec.rebalance.interval`, plans every managed pod. Holds
  that time alone lifts (dwell, settle, cooldown, rates) are re-planned when due.
* The planner's memory for the term: seeded from the moves recorded on the
  workloads (a new leader keeps the last one's cooldowns), a move that did not
  happen taken back out of it. Deployments' records come with their watch;
  StatefulSets' (not watched) are read once at the start of a term, which plans
  nothing until they are.
* Time. `now` is the wall clock, which the objects' stamps are on; a step of it
  (NTP, a resumed VM), told from the monotonic clock, moves every in-memory stamp
  with it, so a dwell, cooldown, rate window or backoff keeps its length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from cloud4iot.policy.store import PolicyStore
from extender.scoring import TableCache
from extender.state.snapshot import DeviceFacts, LoadSample
from extender.state.store import StateStore
from rebalancer.evictor import Evictor
from rebalancer.metrics import RebalancerMetrics
from rebalancer.model import Action, Held, Memory, Move, Workload
from rebalancer.plan import plan
from rebalancer.repin import plan_repins
from rebalancer.workloads import (
    DeploymentRecord,
    PodIndex,
    PodRecord,
    Workloads,
    managed_pod,
    moves_on_record,
    parked_facts,
)

log = logging.getLogger(__name__)

TICK = 1.0  # re-plan due holds at least this often
COALESCE = 0.2  # after a trigger: let the watch's snapshot publish catch up


def crossed(
    before: Mapping[str, LoadSample], after: Mapping[str, LoadSample], limits: Iterable[float]
) -> set[str]:
    """Nodes whose cpu or memory crossed any of `limits` (either way) between two refreshes."""
    levels = sorted(set(limits))
    out = set()
    for node in before.keys() | after.keys():
        old, new = before.get(node), after.get(node)
        for attr in ("cpu", "memory"):
            a = getattr(old, attr) if old else None
            b = getattr(new, attr) if new else None
            if (a is None) != (b is None) or (
                a is not None and b is not None and any((a > lv) != (b > lv) for lv in levels)
            ):
                out.add(node)
                break
    return out


SLEW = 0.001  # NTP slews at most 500 ppm: a wall clock gaining more than this stepped
STEP_MIN = 1.0  # and by at least this much (a plan taking long is not a step)


def clock_step(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How far the wall clock stepped between two (wall, monotonic) readings: what it
    moved beyond the monotonic clock, or 0.0 within slewing."""
    (wall0, mono0), (wall1, mono1) = before, after
    step = (wall1 - wall0) - (mono1 - mono0)
    return step if abs(step) > max(STEP_MIN, SLEW * abs(mono1 - mono0)) else 0.0


def _serving(pod: PodRecord | None) -> tuple[str, bool] | None:
    """What a replica's siblings are judged on (statefulset_workload): it, Ready, running."""
    return None if pod is None else (pod.uid, pod.ready and pod.running)


@dataclass(slots=True)
class Rebalancer:
    policy: PolicyStore
    store: StateStore
    index: PodIndex
    workloads: Workloads
    metrics: RebalancerMetrics
    evictor: Evictor
    memory: Memory = field(default_factory=Memory)
    # The scorer's per-kind verdict tables: planning and the stale-pin check share them.
    tables: TableCache = field(default_factory=TableCache)
    dirty: set[str] = field(default_factory=set)  # pod keys to plan
    full_pass: bool = True
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    leading: bool = False
    plans: int = 0
    # Whether every cache has listed once: before that a Deployment's pod would look
    # like a bare ReplicaSet's, and a device's sightings like nothing.
    synced: Callable[[], bool] = lambda: True
    _due: dict[str, float] = field(default_factory=dict)  # pod key -> when a hold may lift
    _held: dict[str, str] = field(default_factory=dict)  # pod uid -> last limit counted
    _last_full: float = float("-inf")
    _policy_digest: str = ""
    _load: Mapping[str, LoadSample] = field(default_factory=dict)
    _seeded: bool = False  # memory holds the moves recorded on the workloads
    _gone: set[str] = field(default_factory=set)  # uids the watch shows gone: forget them
    _clock: tuple[float, float] | None = None  # the last tick's (wall, monotonic) readings

    @classmethod
    def create(
        cls,
        core: object,  # kubernetes.aio CoreV1Api
        apps: object,  # kubernetes.aio AppsV1Api
        policy: PolicyStore,
        store: StateStore,
        metrics: RebalancerMetrics,
        dry_run: bool = False,
        identity: str | None = None,
    ) -> Rebalancer:
        """An actor and its evictor over fresh indexes."""
        index, workloads = PodIndex(), Workloads()
        evictor = Evictor(core, apps, policy, index, workloads, metrics, dry_run)
        if identity is not None:
            evictor.identity = identity
        return cls(policy, store, index, workloads, metrics, evictor)

    # --- triggers (watch hooks; cheap, called per event) ----------------------

    def observe_pod(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        self.index.observe(key, old, new)
        self.evictor.observe_pod(old, new)
        if self.leading and old is not None and (new is None or new.uid != old.uid):
            self._gone.add(old.uid)
        if new is not None and new.managed:
            self._mark([key])
            evicting = self.evictor.evicting
            if new.owner is not None and (owner := (new.namespace, *new.owner)) in evicting:
                self._mark(self.index.by_owner.get(owner, ()))  # its replicas may go on
        if _serving(old) != _serving(new):
            # A StatefulSet is settled by its pods: a replica up or down re-plans its siblings.
            for p in (old, new):
                if p is not None and p.owner is not None and p.owner[0] == "StatefulSet":
                    self._mark(self.index.by_owner.get((p.namespace, *p.owner), ()))

    def observe_device(self, name: str, old: DeviceFacts | None, new: DeviceFacts | None) -> None:
        self._mark(self.index.by_device.get(name, ()))
        if name in self.workloads.parked_devices:
            self.wake.set()

    def observe_replicaset(self, key: str, old: str | None, new: str | None) -> None:
        self.workloads.observe_rs(key, old, new)

    def observe_deployment(
        self, key: str, old: DeploymentRecord | None, new: DeploymentRecord | None
    ) -> None:
        self.workloads.observe_deployment(key, new)
        self.evictor.observe_deployment(key, new)
        self._mark(self.index.keys_for(owners=self.workloads.owners_of(key)))
        if key in self.workloads.parked:
            self.wake.set()

    def _mark(self, keys: Iterable[str]) -> None:
        if not self.leading:
            return  # a standby keeps only its caches; a new term starts with a full pass
        before = len(self.dirty)
        self.dirty.update(keys)
        if len(self.dirty) != before:
            self.wake.set()

    # --- the loop --------------------------------------------------------------

    async def run(self) -> None:
        """One leadership term: runs until cancelled."""
        self.leading = True
        # The recorded moves are read on the first synced step: a Lease handed back
        # on shutdown is won at once, before the Deployments have listed.
        self.memory, self._seeded = Memory(), False
        self.full_pass = True
        self._held.clear()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):
                        await self.wake.wait()
                await asyncio.sleep(COALESCE)
                self.wake.clear()
                try:
                    await self.tick(time.time(), time.monotonic())
                except Exception:
                    log.exception("rebalance step failed; retrying next tick")
        finally:
            self.leading = False

    async def tick(self, wall: float, mono: float) -> None:
        """One step at these readings of the wall and the monotonic clock. A step of the
        wall clock since the last tick (this term's or the last one's) moves every
        in-memory stamp with it: what was measured keeps its age (dwell, cooldowns,
        rates, backoffs, in-flight moves), while `now` stays the wall clock that the
        objects' stamps (sightings, Leases, move records) are compared with."""
        last, self._clock = self._clock, (wall, mono)
        step = clock_step(last, (wall, mono)) if last is not None else 0.0
        if step:
            log.warning("the wall clock stepped %+.1fs; in-memory times moved with it", step)
            self.shift(step)
        await self.step(wall)

    def shift(self, by: float) -> None:
        """Every in-memory stamp of the actor and the evictor moved by `by` seconds."""
        self.memory = self.memory.shifted(by)
        self._due = {k: t + by for k, t in self._due.items()}
        self._last_full += by
        self.evictor.shift(by)

    def _collect(self, now: float) -> tuple[list[PodRecord], bool]:
        """The pods to plan now, and whether this is a full pass."""
        loaded = self.policy.current
        spec = loaded.policy.spec
        full = (
            self.full_pass
            or loaded.digest != self._policy_digest
            or now - self._last_full >= spec.rebalance.interval
        )
        load = self.store.snapshot.load
        if load is not self._load:
            limits = [
                v
                for c in spec.classes.values()
                for v in (c.load_limits.cpu, c.load_limits.memory)
                if v is not None
            ]
            nodes = crossed(self._load, load, limits)
            self._load = load
            if nodes:
                heard = {
                    d.name
                    for d in self.store.snapshot.devices.values()
                    if nodes.intersection(d.sightings)
                }
                self.dirty |= self.index.keys_for(devices=heard, nodes=nodes)
        due = [k for k, t in self._due.items() if t <= now]
        if full:
            self.full_pass, self._policy_digest, self._last_full = False, loaded.digest, now
            keys: Iterable[str] = list(self.index.pods)
        else:
            keys = self.dirty | set(due)
        self.dirty = set()
        for k in due:
            self._due.pop(k, None)
        pods = [self.index.pods[k] for k in keys if k in self.index.pods]
        return pods, full

    async def step(self, now: float) -> None:
        if not self.synced():
            self.full_pass = True  # plan everything once the caches are complete
            return
        if not self._seeded:  # a new term: keep the last leader's cooldowns
            # StatefulSets and bare ReplicaSets keep their move records in annotations
            # no watch of ours holds: read them once.
            owners = sorted(
                (kind, ns, name)
                for ns, kind, name in self.index.by_owner
                if kind == "StatefulSet"
                or (kind == "ReplicaSet" and self.workloads.replicasets.get(f"{ns}/{name}") is None)
            )
            recorded = await self.evictor.recorded_owners(owners)
            if recorded is None:
                return  # unread: a workload could be moved again inside its cooldown
            records = moves_on_record(self.workloads.deployments.values(), recorded, now=now)
            self.memory, self._seeded = replace(self.memory, moves=records), True
        pods, full = self._collect(now)
        loaded = self.policy.current
        evictor = self.evictor
        repins = plan_repins(
            pods,
            lambda p: self._workload(p, now),
            self.store.snapshot,
            loaded.policy,
            now,
            skip=evictor.repinned.keys() | self._gone,
            tables=self.tables,
        )
        self._due.update(repins.due)
        for move in repins.moves:
            until = evictor.backing_off(move.workload.key, now)
            if until is None:
                await self._apply(move, now)
            elif move.pod is not None:  # its owner's last move was refused: again then
                self._due[f"{move.pod.namespace}/{move.pod.name}"] = until
        if self._gone:
            self._forget(self._gone)
            evictor.forget(self._gone)
            self._gone = set()
        evictor.expire(now)
        devices, served = self.store.snapshot.devices, self.index.by_device
        if any(d not in devices and d not in served for d in self.memory.unheard_since):
            # Park timers of deleted Devices no pod serves any more. A function whose Device
            # was deleted keeps its timer: it is away for good, and parks when it is due.
            gone = {d for d in self.memory.unheard_since if d not in devices and d not in served}
            self.memory = self.memory.forget(devices=gone)
        parked = [
            (w, facts)
            for w, facts in parked_facts(
                d
                for d in self.workloads.parked.values()
                if not evictor.deployment_in_flight(d.key, now)
            )
            if evictor.backing_off(w.key, now) is None  # planned every step: no _due
        ]
        candidates = []
        for p in pods:
            m = managed_pod(p, self._workload(p, now))
            if m is None:
                continue
            until = evictor.backing_off(m.workload.key, now)
            if until is not None:  # its last move was refused: planned again then
                self._due[p.key] = until
                continue
            candidates.append(evictor.leaving(m, now))
        if not candidates and not parked:
            return
        started = time.perf_counter()
        loaded = self.policy.current
        # Off the event loop: a full pass scores every pod on every node (seconds at
        # thousands of each), and the Lease must keep being renewed meanwhile. Losing
        # it cancels this step here, before anything of the plan is applied.
        result = await asyncio.to_thread(
            plan, candidates, self.store.snapshot, loaded, self.memory, now, parked, self.tables
        )
        self.metrics.plan_seconds.labels("full" if full else "event").observe(
            time.perf_counter() - started
        )
        self.plans += 1
        self.memory = result.memory
        leaving = {p.uid for p in candidates if p.deleting}
        if leaving:
            self._forget(leaving)
        self._note_holds(result.held, {p.uid: p for p in pods})
        for move in result.moves:
            await self._apply(move, now)

    async def _apply(self, move: Move, now: float) -> None:
        outcome = await self.evictor.apply(move, now)
        if outcome in ("failed", "blocked", "moot") and move.action is not Action.RECREATE:
            self._unrecord(move, now)
        elif outcome == "dry-run" and move.pod is not None and move.action is not Action.RECREATE:
            # As if it had moved: the same move is not announced again every dwell,
            # only when the cooldown is over (then it is planned again).
            cooldown = self.policy.current.policy.spec.rebalance.cooldown
            self._due[f"{move.pod.namespace}/{move.pod.name}"] = now + cooldown

    def _unrecord(self, move: Move, now: float) -> None:
        """A move that did not happen must not count against cooldowns and rates (a
        refused one's backoff holds it instead). The plan appended its record last; an
        older record of the workload counted as made `now` (stamped in the future) stays."""
        moves = list(self.memory.moves)
        for i in range(len(moves) - 1, -1, -1):
            if moves[i].workload == move.workload.key and moves[i].at == now:
                del moves[i]
                break
        self.memory = replace(self.memory, moves=tuple(moves))

    def _workload(self, pod: PodRecord, now: float) -> Workload:
        workload = self.workloads.workload(
            pod, lambda key: self.evictor.deployment_in_flight(key, now), self.index
        )
        if workload.settled and self.evictor.owner_recovering(pod, now):
            return replace(workload, settled=False)
        return workload

    def _forget(self, uids: set[str]) -> None:
        """Pods that are gone or leaving: their pending moves and counted holds."""
        self.memory = self.memory.forget(uids)
        for uid in uids:
            self._held.pop(uid, None)

    def _note_holds(self, held: Iterable[Held], by_uid: Mapping[str, PodRecord]) -> None:
        for h in held:
            if h.pod is not None and self._held.get(h.pod) != h.limit.value:
                self._held[h.pod] = h.limit.value
                self.metrics.held.labels(h.limit.value).inc()
                log.info("%s", h)
            if h.until is not None and h.pod is not None and h.pod in by_uid:
                self._due[by_uid[h.pod].key] = h.until
