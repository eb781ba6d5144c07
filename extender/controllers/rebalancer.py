"""The rebalancer's actor: when to plan, for which pods, and applying the plan.

Planning is `rebalance_plan.plan` (pure); this module does the I/O around it:

* Triggers. Watch hooks mark pods dirty per event, found through indexes, so the
  work of an event is the work of the pods it affects: a Device change marks the
  pods serving that device; a pod change marks that pod; a Deployment change
  (a rollout completed) marks its pods; a node's load crossing a class limit
  marks the pods on that node and the pods of devices that node hears. A policy
  change, and every `spec.rebalance.interval`, plans every managed pod. Holds
  that time alone lifts (dwell, settle, cooldown, rates) are re-planned when due.
* Moves. A rollout is a pod-template annotation on the Deployment (the new
  replica is placed by the scheduler through the extender; the old one goes when
  the new one is Ready); an eviction goes through the Eviction API, so
  PodDisruptionBudgets hold (a 429 is a refusal, retried on later plans); a park
  or unpark patches the Deployment's replicas. The move is recorded on the
  workload (annotation `cloud4iot.io/last-move`), so a new leader keeps the
  cooldowns of the last one and never moves a pod twice. Until the watches show
  a move (a later Deployment generation, the evicted pod leaving; at most
  IN_FLIGHT) it is in flight: the workload counts as mid-rollout and the pod as
  leaving, so a plan made before the caches catch up cannot repeat it.
* Every move leaves an Event on the pod and on its owner. `dry_run` plans, logs
  and emits the Events ("would ..."), and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cloud4iot.devices import rfc3339
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION, MOVED_ANNOTATION, PARKED_ANNOTATION
from extender.admission.narrow import stale_pin
from extender.controllers.rebalance_model import (
    Action,
    Held,
    Kind,
    ManagedPod,
    Memory,
    Move,
    MoveRecord,
    Reason,
    Workload,
)
from extender.controllers.rebalance_plan import plan
from extender.metrics import RebalancerMetrics
from extender.scoring.model import PodFacts
from extender.state.snapshot import DeviceFacts, LoadSample
from extender.state.store import StateStore
from extender.state.workloads import (
    DeploymentRecord,
    MoveNote,
    PodIndex,
    PodRecord,
    deployment_of,
    move_note_json,
)

log = logging.getLogger(__name__)

COMPONENT = "cloud4iot-rebalancer"
REPINNED = "Repinned"  # Event reason and move label: a pending pod recreated (stale pin)
TICK = 1.0  # re-plan due holds at least this often
COALESCE = 0.2  # after a trigger: let the watch's snapshot publish catch up
MERGE_PATCH = "application/merge-patch+json"
# A move made but not yet shown by the watches holds its workload (or pod) for at
# most this long: a watch that never shows it must not hold it for good.
IN_FLIGHT = 60.0


@dataclass(slots=True)
class Workloads:
    """The watched owners: ReplicaSet -> Deployment, Deployments, and what changes mark."""

    replicasets: dict[str, str | None] = field(default_factory=dict)  # ns/rs -> deployment
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    rs_of: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Deployments scaled to zero by a park, and the devices they wait for.
    parked: dict[str, DeploymentRecord] = field(default_factory=dict)
    parked_devices: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Deployments this actor changed (rollout, park, unpark): key -> (the generation
    # the change was made on, when). Until the watch shows a later generation the
    # change is in flight and the workload not settled, whatever the cache says.
    changed: dict[str, tuple[int, float]] = field(default_factory=dict)

    def observe_deployment(self, key: str, new: DeploymentRecord | None) -> None:
        old = self.parked.pop(key, None)
        if old is not None and old.template.device is not None:
            waiting = self.parked_devices[old.template.device]
            waiting.discard(key)
            if not waiting:
                del self.parked_devices[old.template.device]
        if new is None:
            self.deployments.pop(key, None)
            self.changed.pop(key, None)
            return
        self.deployments[key] = new
        mark = self.changed.get(key)
        if mark is not None and new.generation > mark[0]:
            del self.changed[key]
        if new.parked_replicas is not None and new.replicas == 0:
            self.parked[key] = new
            if new.template.device is not None:
                self.parked_devices[new.template.device].add(key)

    def generation(self, key: str) -> int | None:
        d = self.deployments.get(key)
        return d.generation if d is not None else None

    def changing(self, key: str, now: float, generation: int | None) -> None:
        """A change of Deployment `key` was just made on `generation` (read before the
        call: the watch may deliver the change before the call returns)."""
        if generation is not None:
            d = self.deployments.get(key)
            if d is not None and d.generation > generation:
                return  # the watch already shows it
            self.changed[key] = (generation, now)

    def in_flight(self, d: DeploymentRecord, now: float) -> bool:
        mark = self.changed.get(d.key)
        return mark is not None and now - mark[1] < IN_FLIGHT

    def observe_rs(self, key: str, old: str | None, new: str | None) -> None:
        namespace, _, name = key.partition("/")
        if new is None:
            self.replicasets.pop(key, None)
        else:
            self.replicasets[key] = new
        if old is not None:
            owned = self.rs_of.get(f"{namespace}/{old}")
            if owned is not None:
                owned.discard(name)
                if not owned:
                    del self.rs_of[f"{namespace}/{old}"]
        if new is not None:
            self.rs_of[f"{namespace}/{new}"].add(name)

    def owners_of(self, deployment_key: str) -> list[tuple[str, str, str]]:
        namespace = deployment_key.partition("/")[0]
        return [(namespace, "ReplicaSet", rs) for rs in self.rs_of.get(deployment_key, ())]

    def workload(self, pod: PodRecord, now: float) -> Workload:
        if pod.owner is None:
            return Workload(Kind.POD, pod.namespace, pod.name)
        kind, name = pod.owner
        if kind == "ReplicaSet":
            deployment = deployment_of(pod, self.replicasets, self.deployments)
            if deployment is None:
                return Workload(Kind.REPLICA_SET, pod.namespace, name)
            return deployment_workload(deployment, self.in_flight(deployment, now))
        if kind == "StatefulSet":
            return Workload(Kind.STATEFUL_SET, pod.namespace, name)
        return Workload(Kind.POD, pod.namespace, pod.name)  # nothing would recreate it elsewhere


def deployment_workload(d: DeploymentRecord, in_flight: bool = False) -> Workload:
    return Workload(
        Kind.DEPLOYMENT,
        d.namespace,
        d.name,
        can_surge=d.can_surge,
        replicas=d.replicas,
        settled=d.settled and not in_flight,
        parked_replicas=d.parked_replicas,
    )


def managed_pod(pod: PodRecord, workload: Workload) -> ManagedPod | None:
    if not pod.running or pod.node is None:
        return None
    return ManagedPod(
        uid=pod.uid,
        name=pod.name,
        namespace=pod.namespace,
        node=pod.node,
        facts=pod.facts,
        workload=workload,
        ready=pod.ready,
        deleting=pod.deleting,
        started=pod.started,
    )


def moves_on_record(deployments: Iterable[DeploymentRecord]) -> tuple[MoveRecord, ...]:
    """The last move of each Deployment as recorded on it: a new term's memory."""
    records = []
    for d in deployments:
        note = d.last_move
        if note is None:
            continue
        try:
            reason = Reason(note.reason)
        except ValueError:
            continue
        key = deployment_workload(d).key
        records.append(MoveRecord(key, note.device, note.from_node, note.to_node, reason, note.at))
    return tuple(sorted(records, key=lambda r: r.at))


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


@dataclass(slots=True)
class Rebalancer:
    core: Any  # kubernetes.aio CoreV1Api
    apps: Any  # kubernetes.aio AppsV1Api
    policy: PolicyStore
    store: StateStore
    index: PodIndex
    workloads: Workloads
    metrics: RebalancerMetrics
    dry_run: bool = False
    identity: str = COMPONENT
    memory: Memory = field(default_factory=Memory)
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
    _seeded: bool = False  # memory holds the moves recorded on the Deployments
    _evicted: dict[str, float] = field(default_factory=dict)  # pod uid -> when, until it leaves
    _gone: set[str] = field(default_factory=set)  # uids the watch shows gone: forget them
    # owner (namespace, kind, name) -> (when, evicted pod key, its uid): until the owner
    # has every replica Ready again, its other replicas are not evicted.
    _evicting: dict[tuple[str, str, str], tuple[float, str, str]] = field(default_factory=dict)
    _pretend: dict[str, float] = field(default_factory=dict)  # dry run: pod uid -> "moved" at
    _repinned: dict[str, float] = field(default_factory=dict)  # pod uid -> deleted at (stale pin)

    # --- triggers (watch hooks; cheap, called per event) ----------------------

    def observe_pod(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        self.index.observe(key, old, new)
        if old is not None and (new is None or new.deleting or new.uid != old.uid):
            self._evicted.pop(old.uid, None)  # the watch shows it leaving
            if self.leading and (new is None or new.uid != old.uid):
                self._gone.add(old.uid)
        if new is not None and new.managed:
            self._mark([key])
            if new.owner is not None and (owner := (new.namespace, *new.owner)) in self._evicting:
                self._mark(self.index.by_owner.get(owner, ()))  # its replicas may go on

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
                    await self.step(time.time())
                except Exception:
                    log.exception("rebalance step failed; retrying next tick")
        finally:
            self.leading = False

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
            records = moves_on_record(self.workloads.deployments.values())
            self.memory, self._seeded = replace(self.memory, moves=records), True
        pods, full = self._collect(now)
        await self._repin(pods, now)
        if self._gone:
            self._forget(self._gone)
            for uid in self._gone:
                self._pretend.pop(uid, None)
                self._repinned.pop(uid, None)
            self._gone = set()
        for owner, (at, _, _) in list(self._evicting.items()):
            if now - at >= IN_FLIGHT:  # owners nobody plans any more (deleted workloads)
                del self._evicting[owner]
        devices = self.store.snapshot.devices
        if any(d not in devices for d in self.memory.unheard_since):
            # Park timers of deleted Devices (the Device's own pods go with their workloads).
            self.memory = self.memory.forget(devices=set(self.memory.unheard_since) - set(devices))
        parked = parked_facts(
            d for d in self.workloads.parked.values() if not self.workloads.in_flight(d, now)
        )
        candidates = [
            self._leaving(m, now) for p in pods if (m := managed_pod(p, self._workload(p, now)))
        ]
        if not candidates and not parked:
            return
        started = time.perf_counter()
        loaded = self.policy.current
        # Off the event loop: a full pass scores every pod on every node (seconds at
        # thousands of each), and the Lease must keep being renewed meanwhile. Losing
        # it cancels this step here, before anything of the plan is applied.
        result = await asyncio.to_thread(
            plan, candidates, self.store.snapshot, loaded, self.memory, now, parked
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
            await self._apply(move, now, loaded.version)

    def _workload(self, pod: PodRecord, now: float) -> Workload:
        workload = self.workloads.workload(pod, now)
        if workload.settled and self._owner_recovering(pod, now):
            return replace(workload, settled=False)
        return workload

    def _forget(self, uids: set[str]) -> None:
        """Pods that are gone or leaving: their pending moves and counted holds."""
        self.memory = self.memory.forget(uids)
        for uid in uids:
            self._held.pop(uid, None)

    def _leaving(self, pod: ManagedPod, now: float) -> ManagedPod:
        """A pod the watch still shows running but on its way out (evicted, or of a
        Deployment scaled to zero) is leaving: nothing to judge."""
        if pod.workload.kind is Kind.DEPLOYMENT and pod.workload.replicas == 0:
            return replace(pod, deleting=True)
        pretended = self._pretend.get(pod.uid)
        if pretended is not None:
            if now - pretended < self.policy.current.policy.spec.rebalance.cooldown:
                return replace(pod, deleting=True)
            del self._pretend[pod.uid]
        at = self._evicted.get(pod.uid)
        if at is None:
            return pod
        if now - at >= IN_FLIGHT:
            del self._evicted[pod.uid]
            return pod
        return replace(pod, deleting=True)

    def _note_holds(self, held: Iterable[Held], by_uid: Mapping[str, PodRecord]) -> None:
        for h in held:
            if h.pod is not None and self._held.get(h.pod) != h.limit.value:
                self._held[h.pod] = h.limit.value
                self.metrics.held.labels(h.limit.value).inc()
                log.info("%s", h)
            if h.until is not None and h.pod is not None and h.pod in by_uid:
                self._due[by_uid[h.pod].key] = h.until

    # --- applying a move ---------------------------------------------------------

    async def _apply(self, move: Move, now: float, policy_version: str) -> None:
        from kubernetes.aio.client.exceptions import ApiException

        message = move.message()
        if self.dry_run:
            log.info("dry-run: would %s", message)
            self.metrics.moves.labels(move.reason.value, move.action.value, "dry-run").inc()
            # As if it had moved: the same move is not announced again every dwell,
            # only when the cooldown is over (then it is planned again).
            if move.pod is not None:
                self._pretend[move.pod.uid] = now
                cooldown = self.policy.current.policy.spec.rebalance.cooldown
                self._due[f"{move.pod.namespace}/{move.pod.name}"] = now + cooldown
            await self._events(move, f"dry-run: would {message}")
            return
        key = f"{move.workload.namespace}/{move.workload.name}"
        generation = self.workloads.generation(key)
        try:
            done = await self._act(move, now)
        except ApiException as exc:  # the apiserver answered: it did not happen
            log.warning("%s failed: %s", message, exc)
            done = False
        except Exception as exc:
            # No answer (a timeout, a dropped connection): it may have happened. Keep it
            # recorded and in flight, so it is neither repeated at once nor uncounted.
            log.warning("%s: outcome unknown (%s); treated as made", message, exc)
            self._in_flight(move, now, generation)
            self.metrics.moves.labels(move.reason.value, move.action.value, "unknown").inc()
            return
        if not done:
            self._unrecord(move, now)
            self.metrics.moves.labels(move.reason.value, move.action.value, "failed").inc()
            return
        log.info("%s", message)
        self._in_flight(move, now, generation)
        self.metrics.moves.labels(move.reason.value, move.action.value, "ok").inc()
        await self._events(move, message)

    def _in_flight(self, move: Move, now: float, generation: int | None) -> None:
        """Until the watches show a move it must not be made again (the cache still
        shows the Deployment settled or parked, the evicted pod running), and after an
        eviction the owner's other replicas wait until every replica is back."""
        if move.action is Action.EVICT:
            if move.pod is not None:
                self._evicted[move.pod.uid] = now
                record = self.index.pods.get(f"{move.pod.namespace}/{move.pod.name}")
                if record is not None and record.owner is not None:
                    owner = (record.namespace, *record.owner)
                    self._evicting[owner] = (now, record.key, record.uid)
        elif move.workload.kind is Kind.DEPLOYMENT:
            key = f"{move.workload.namespace}/{move.workload.name}"
            self.workloads.changing(key, now, generation)

    def _owner_recovering(self, pod: PodRecord, now: float) -> bool:
        """Whether the owner of `pod` still recovers from one of our evictions: the
        evicted replica not yet replaced by a Ready one, or any replica not Ready."""
        if pod.owner is None:
            return False
        owner = (pod.namespace, *pod.owner)
        entry = self._evicting.get(owner)
        if entry is None:
            return False
        at, key, uid = entry
        replicas = [
            self.index.pods[k] for k in self.index.by_owner.get(owner, ()) if k in self.index.pods
        ]
        back = self.index.pods.get(key)
        waiting = (
            (back is None and pod.owner[0] == "StatefulSet")  # recreated under the same name
            or (back is not None and back.uid == uid)  # still the evicted one
            or any(not (r.ready and r.running) for r in replicas)
        )
        if waiting and now - at < IN_FLIGHT:
            return True
        del self._evicting[owner]
        return False

    def _unrecord(self, move: Move, now: float) -> None:
        """A move that did not happen must not count against cooldowns and rates."""
        moves = tuple(
            r for r in self.memory.moves if not (r.workload == move.workload.key and r.at == now)
        )
        self.memory = replace(self.memory, moves=moves)

    def _note(self, move: Move, now: float) -> str:
        device = move.pod.facts.device if move.pod else None
        return move_note_json(
            MoveNote(now, move.reason.value, move.from_node or "", move.to_node, device)
        )

    async def _act(self, move: Move, now: float) -> bool:
        from kubernetes.aio.client.exceptions import ApiException

        w = move.workload
        note = self._note(move, now)
        if move.action is Action.ROLLOUT:
            stamp = f"{move.reason.value} {move.from_node} -> {move.to_node} at {rfc3339(now)}"
            body: dict[str, Any] = {
                "metadata": {"annotations": {LAST_MOVE_ANNOTATION: note}},
                "spec": {"template": {"metadata": {"annotations": {MOVED_ANNOTATION: stamp}}}},
            }
            await self._patch(w, body)
            return True
        if move.action is Action.PARK:
            parked = {PARKED_ANNOTATION: str(w.replicas), LAST_MOVE_ANNOTATION: note}
            await self._patch(w, {"metadata": {"annotations": parked}, "spec": {"replicas": 0}})
            return True
        if move.action is Action.UNPARK:
            replicas = w.parked_replicas or 1
            restored: dict[str, str | None] = {PARKED_ANNOTATION: None, LAST_MOVE_ANNOTATION: note}
            await self._patch(
                w, {"metadata": {"annotations": restored}, "spec": {"replicas": replicas}}
            )
            return True
        assert move.pod is not None
        pod = move.pod
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        try:
            await self.core.create_namespaced_pod_eviction(
                pod.name, pod.namespace, eviction, _request_timeout=10
            )
        except ApiException as exc:
            if exc.status == 429:  # a PodDisruptionBudget says not now
                log.info(
                    "eviction of %s/%s refused by a disruption budget", pod.namespace, pod.name
                )
                self.metrics.held.labels("disruption-budget").inc()
                return False
            raise
        if w.kind in (Kind.DEPLOYMENT, Kind.STATEFUL_SET):
            with contextlib.suppress(Exception):  # the record helps a new leader; not vital
                await self._patch(w, {"metadata": {"annotations": {LAST_MOVE_ANNOTATION: note}}})
        return True

    async def _patch(self, w: Workload, body: dict[str, Any]) -> None:
        call = (
            self.apps.patch_namespaced_deployment
            if w.kind is Kind.DEPLOYMENT
            else self.apps.patch_namespaced_stateful_set
        )
        await call(w.name, w.namespace, body, _content_type=MERGE_PATCH, _request_timeout=10)

    async def _events(self, move: Move, message: str) -> None:
        targets: list[tuple[str, str, str, str, str | None]] = []
        if move.pod is not None:
            targets.append(("v1", "Pod", move.pod.namespace, move.pod.name, move.pod.uid))
        kind = move.workload.kind
        if kind is not Kind.POD:
            api = "apps/v1"
            targets.append((api, kind.value, move.workload.namespace, move.workload.name, None))
        await self._record(targets, move.reason.value, message)

    async def _record(
        self, targets: Sequence[tuple[str, str, str, str, str | None]], reason: str, message: str
    ) -> None:
        """One Event per (apiVersion, kind, namespace, name, uid) target."""
        stamp = rfc3339(time.time())
        for api_version, kind_name, namespace, name, uid in targets:
            involved = {
                "apiVersion": api_version,
                "kind": kind_name,
                "namespace": namespace,
                "name": name,
            }
            if uid:
                involved["uid"] = uid
            event = {
                "metadata": {"generateName": f"{name}.", "namespace": namespace},
                "involvedObject": involved,
                "reason": reason,
                "message": message[:1024],
                "type": "Normal",
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.identity,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            try:
                await self.core.create_namespaced_event(namespace, event, _request_timeout=10)
            except Exception as exc:  # an Event is a courtesy; the move stands
                log.warning(
                    "could not record event on %s %s/%s: %s", kind_name, namespace, name, exc
                )

    # --- stale pins (admission narrowing) ----------------------------------------

    async def _repin(self, pods: Iterable[PodRecord], now: float) -> None:
        """Recreate pending pods whose narrowing pin went stale (extender/admission).

        The webhook pins a pod to its best nodes once, at creation; if the pod is
        still pending after `rebalance.dwell` and none of those nodes is feasible any
        more while others are (its device moved, they filled up), evicting it lets its
        controller create a replacement, which is pinned afresh. Only pods with a
        controller: a bare pod would be lost. Evicted with a uid precondition."""
        from kubernetes.aio.client.exceptions import ApiException

        loaded = self.policy.current
        grace = loaded.policy.spec.rebalance.dwell
        snapshot = self.store.snapshot
        for pod in pods:
            if pod.node is not None or pod.deleting or pod.owner is None or not pod.managed:
                continue
            if pod.uid in self._repinned or pod.uid in self._gone:
                continue
            if pod.created is not None and now < pod.created + grace:
                self._due[pod.key] = pod.created + grace
                continue
            why = stale_pin(pod.facts, pod.pins, snapshot, loaded.policy, now)
            if why is None:
                continue
            message = f"recreate pending pod {pod.key}: {why}"
            target = [("v1", "Pod", pod.namespace, pod.name, pod.uid)]
            if self.dry_run:
                log.info("dry-run: would %s", message)
                self.metrics.moves.labels(REPINNED, "recreate", "dry-run").inc()
                self._repinned[pod.uid] = now
                await self._record(target, REPINNED, f"dry-run: would {message}")
                continue
            # The Eviction API, as for moves (no extra RBAC): a Pending pod is evicted
            # without a disruption budget check; the uid precondition keeps a replacement
            # of the same name safe.
            eviction = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"preconditions": {"uid": pod.uid}},
            }
            try:
                await self.core.create_namespaced_pod_eviction(
                    pod.name, pod.namespace, eviction, _request_timeout=10
                )
            except ApiException as exc:
                if exc.status in (404, 409):  # gone already, or another pod of that name
                    continue
                self.metrics.moves.labels(REPINNED, "recreate", "failed").inc()
                log.warning("could not %s: %s", message, exc)
                continue
            log.info("%s", message)
            self._repinned[pod.uid] = now
            self.metrics.moves.labels(REPINNED, "recreate", "ok").inc()
            await self._record(target, REPINNED, message)


def parked_facts(deployments: Iterable[DeploymentRecord]) -> list[tuple[Workload, PodFacts]]:
    return [
        (deployment_workload(d), d.template)
        for d in deployments
        if d.parked_replicas is not None and d.replicas == 0
    ]
