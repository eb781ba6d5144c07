"""Pods, ReplicaSets and Deployments reduced to what the rebalancer reads, the
indexes that keep its work per event independent of the number of pods, and the
move record it writes on a workload (MoveNote).

Only pods of our scheduler are watched (a field selector on spec.schedulerName);
a pod's workload is resolved Pod -> ReplicaSet -> Deployment from the caches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cloud4iot.devices import parse_time
from cloud4iot.replicas import MAX_PARKED_REPLICAS, saved_count
from cloud4iot.vocabulary import (
    LAST_MOVE_ANNOTATION,
    MOVES_ANNOTATION,
    NARROWED_ANNOTATION,
    PARKED_ANNOTATION,
)
from extender.scoring.model import PodFacts
from extender.state.pods import pinned_nodes
from rebalancer.model import Kind, ManagedPod, MoveRecord, Reason, Workload


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise ValueError("object has no metadata.name")
    return meta


def _controller(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


@dataclass(frozen=True, slots=True)
class PodRecord:
    key: str  # namespace/name
    uid: str
    namespace: str
    name: str
    node: str | None
    facts: PodFacts
    owner: tuple[str, str] | None  # (kind, name) of the controlling owner
    ready: bool
    deleting: bool
    phase: str
    started: float | None = None  # status.startTime
    # Nodes the narrowing webhook pinned the pod to (empty: not narrowed), and when it
    # was created: a pending pod whose pin went stale is recreated by the rebalancer.
    pins: tuple[str, ...] = ()
    created: float | None = None

    @classmethod
    def from_pod(cls, obj: Mapping[str, Any], observed_at: float = 0.0) -> PodRecord:
        meta = _meta(obj)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
            if isinstance(c, Mapping)
        )
        namespace = str(meta.get("namespace") or "default")
        annotations = meta.get("annotations") or {}
        return cls(
            key=f"{namespace}/{meta['name']}",
            uid=str(meta.get("uid") or ""),
            namespace=namespace,
            name=str(meta["name"]),
            node=spec.get("nodeName") or None,
            facts=PodFacts.from_pod(obj),
            owner=_controller(meta),
            ready=ready,
            deleting=meta.get("deletionTimestamp") is not None,
            phase=str(status.get("phase") or ""),
            started=parse_time(status.get("startTime")),
            pins=pinned_nodes(obj) if NARROWED_ANNOTATION in annotations else (),
            created=parse_time(meta.get("creationTimestamp")),
        )

    @property
    def managed(self) -> bool:
        return self.facts.function is not None

    @property
    def running(self) -> bool:
        return self.node is not None and self.phase == "Running" and not self.deleting


def replicaset_owner(obj: Mapping[str, Any], observed_at: float = 0.0) -> str | None:
    """The Deployment controlling a ReplicaSet, or None."""
    owner = _controller(_meta(obj))
    return owner[1] if owner is not None and owner[0] == "Deployment" else None


def _scaled(value: Any, replicas: int, round_up: bool) -> int | None:
    """An int-or-percent of a rolling update as a pod count, as the Deployment controller
    resolves it (GetScaledValueFromIntOrPercent): an int as is, "N%" of `replicas`
    rounded up (maxSurge) or down (maxUnavailable); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        digits = value[:-1]
        if not (digits.isascii() and digits.isdecimal()) or len(digits) > 9:
            return None  # the apiserver accepts only an integer percentage
        scaled = int(digits) * replicas
        return -(-scaled // 100) if round_up else scaled // 100
    return None


def make_before_break(strategy: Mapping[str, Any], replicas: int) -> bool:
    """Whether a rollout of a Deployment with this strategy keeps its `replicas` pods
    available throughout: RollingUpdate with maxSurge > 0 and maxUnavailable resolving
    to 0 (the defaults, 25 % each, do for 1 to 3 replicas). Any other rollout may delete
    an old pod before its replacement is Ready, with no disruption budget consulted."""
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    rolling = strategy.get("rollingUpdate") or {}
    if not isinstance(rolling, Mapping):
        return False
    surge = _scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    return surge is not None and surge > 0 and unavailable == 0


@dataclass(frozen=True, slots=True)
class MoveNote:
    """The last move of a workload as recorded on it, so a new leader knows it."""

    at: float
    reason: str
    from_node: str
    to_node: str | None
    device: str | None


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    key: str  # namespace/name
    namespace: str
    name: str
    replicas: int
    can_surge: bool
    settled: bool  # the last rollout is complete: every replica updated and ready
    parked_replicas: int | None
    template: PodFacts  # the pod template's annotations
    last_move: MoveNote | None
    generation: int = 0  # metadata.generation: a spec change (rollout, scale) bumps it
    moves: str | None = None  # the cloud4iot.io/moves annotation as found (appended to)
    paused: bool = False  # spec.paused: a template change rolls nothing out

    @classmethod
    def from_deployment(cls, obj: Mapping[str, Any], observed_at: float = 0.0) -> DeploymentRecord:
        meta = _meta(obj)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        replicas = spec.get("replicas")
        replicas = replicas if isinstance(replicas, int) else 1
        generation = meta.get("generation")
        strategy = spec.get("strategy") or {}
        paused = spec.get("paused") is True
        # Paused: the controller makes no ReplicaSet for a changed template, so a rollout
        # would move nothing and hold the workload unsettled until resumed; evict instead.
        can_surge = (
            not paused
            and isinstance(strategy, Mapping)
            and make_before_break(strategy, max(replicas, 1))
        )
        settled = (
            (status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
            and (status.get("updatedReplicas") or 0) == replicas
            and (status.get("readyReplicas") or 0) == replicas
            and (status.get("replicas") or 0) == replicas
        )
        annotations = meta.get("annotations") or {}
        parked = annotations.get(PARKED_ANNOTATION)
        template = dict(spec.get("template") or {})
        template_meta = dict(template.get("metadata") or {})
        template_meta.setdefault("name", meta["name"])
        template_meta.setdefault("namespace", meta.get("namespace"))
        namespace = str(meta.get("namespace") or "default")
        annotations = meta.get("annotations") or {}
        return cls(
            key=f"{namespace}/{meta['name']}",
            namespace=namespace,
            name=str(meta["name"]),
            replicas=replicas,
            can_surge=can_surge,
            settled=settled,
            parked_replicas=parked_replicas(parked),
            template=PodFacts.from_pod({"metadata": template_meta}),
            last_move=_move_note(annotations.get(LAST_MOVE_ANNOTATION)),
            generation=generation if isinstance(generation, int) else 0,
            moves=_text(annotations.get(MOVES_ANNOTATION)),
            paused=paused,
        )


def parked_replicas(value: Any) -> int | None:
    """The replica count saved by a park (`cloud4iot.io/parked-replicas`): a decimal of
    0..MAX_PARKED_REPLICAS, else None (not parked by us)."""
    count = saved_count(value)
    return count if count is not None and count <= MAX_PARKED_REPLICAS else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def last_move_of(obj: Mapping[str, Any]) -> MoveNote | None:
    """The move recorded on a workload object (any kind) as the apiserver returns it."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return _move_note(annotations.get(LAST_MOVE_ANNOTATION))


def _move_note(raw: Any) -> MoveNote | None:
    if not isinstance(raw, str):
        return None
    try:
        doc = orjson.loads(raw)
        at = float(doc["at"])
        if not math.isfinite(at):
            return None  # garbage: it would hold the workload for ever
        return MoveNote(
            at=at,
            reason=str(doc["reason"]),
            from_node=str(doc["from"]),
            to_node=doc.get("to"),
            device=doc.get("device"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _note_doc(note: MoveNote) -> dict[str, Any]:
    return {
        "at": round(note.at, 3),
        "reason": note.reason,
        "from": note.from_node,
        "to": note.to_node,
        "device": note.device,
    }


def move_note_json(note: MoveNote) -> str:
    return orjson.dumps(_note_doc(note)).decode()


# Moves kept on a workload for `cloud4iot explain --history`: Events expire after the
# apiserver's --event-ttl (1 h by default); this record lasts as long as the workload,
# and at ~110 bytes a move, 10 moves stay far below the 256 KiB annotation limit.
MOVES_KEPT = 10


def moves_json(previous: str | None, note: MoveNote, keep: int = MOVES_KEPT) -> str:
    """The workload's list of moves with `note` appended, the oldest dropped past
    `keep`; an unreadable previous value (edited by hand) starts the list afresh."""
    try:
        old = orjson.loads(previous) if previous else []
    except orjson.JSONDecodeError:
        old = []
    kept = [m for m in old if isinstance(m, dict)] if isinstance(old, list) else []
    return orjson.dumps([*kept, _note_doc(note)][-keep:]).decode()


@dataclass(slots=True)
class PodIndex:
    """Managed pods by key, and the keys by device, node and workload owner.

    Kept current per watch event (`observe`), so finding the pods a Device or a
    node change affects costs what those pods cost, not what the cluster holds.
    """

    pods: dict[str, PodRecord] = field(default_factory=dict)
    by_device: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_node: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_owner: defaultdict[tuple[str, str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )

    def observe(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        if old is not None:
            self.pods.pop(key, None)
            for bucket, value in self._buckets(old):
                members = bucket.get(value)
                if members is not None:
                    members.discard(key)
                    if not members:
                        del bucket[value]
        if new is not None and new.managed:
            self.pods[key] = new
            for bucket, value in self._buckets(new):
                bucket[value].add(key)

    def _buckets(self, pod: PodRecord) -> Iterable[tuple[defaultdict[Any, set[str]], Any]]:
        if pod.facts.device is not None:
            yield self.by_device, pod.facts.device
        if pod.node is not None:
            yield self.by_node, pod.node
        if pod.owner is not None:
            yield self.by_owner, (pod.namespace, *pod.owner)

    def keys_for(
        self,
        devices: Iterable[str] = (),
        nodes: Iterable[str] = (),
        owners: Iterable[tuple[str, str, str]] = (),
    ) -> set[str]:
        keys: set[str] = set()
        for d in devices:
            keys |= self.by_device.get(d, set())
        for n in nodes:
            keys |= self.by_node.get(n, set())
        for o in owners:
            keys |= self.by_owner.get(o, set())
        return keys


def deployment_of(
    pod: PodRecord,
    replicasets: Mapping[str, str | None],
    deployments: Mapping[str, DeploymentRecord],
) -> DeploymentRecord | None:
    if pod.owner is None or pod.owner[0] != "ReplicaSet":
        return None
    owner = replicasets.get(f"{pod.namespace}/{pod.owner[1]}")
    return deployments.get(f"{pod.namespace}/{owner}") if owner else None


@dataclass(slots=True)
class Workloads:
    """The watched owners: ReplicaSet -> Deployment, Deployments, and what changes mark."""

    replicasets: dict[str, str | None] = field(default_factory=dict)  # ns/rs -> deployment
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    rs_of: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Deployments scaled to zero by a park, and the devices they wait for.
    parked: dict[str, DeploymentRecord] = field(default_factory=dict)
    parked_devices: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def observe_deployment(self, key: str, new: DeploymentRecord | None) -> None:
        old = self.parked.pop(key, None)
        if old is not None and old.template.device is not None:
            waiting = self.parked_devices[old.template.device]
            waiting.discard(key)
            if not waiting:
                del self.parked_devices[old.template.device]
        if new is None:
            self.deployments.pop(key, None)
            return
        self.deployments[key] = new
        if new.parked_replicas is not None and new.replicas == 0:
            self.parked[key] = new
            if new.template.device is not None:
                self.parked_devices[new.template.device].add(key)

    def generation(self, key: str) -> int | None:
        d = self.deployments.get(key)
        return d.generation if d is not None else None

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

    def workload(
        self,
        pod: PodRecord,
        in_flight: Callable[[str], bool] = lambda key: False,
        index: PodIndex | None = None,
    ) -> Workload:
        """The owner that recreates `pod`; a Deployment whose change is `in_flight` (by
        key: made, not yet shown by the watch) counts as not settled. A StatefulSet (not
        watched) is judged by its pods in `index`: see statefulset_workload."""
        if pod.owner is None:
            return Workload(Kind.POD, pod.namespace, pod.name)
        kind, name = pod.owner
        if kind == "ReplicaSet":
            deployment = deployment_of(pod, self.replicasets, self.deployments)
            if deployment is None:
                return Workload(Kind.REPLICA_SET, pod.namespace, name)
            return deployment_workload(deployment, in_flight(deployment.key))
        if kind == "StatefulSet":
            return statefulset_workload(pod.namespace, name, index)
        return Workload(Kind.POD, pod.namespace, pod.name)  # nothing would recreate it elsewhere


def statefulset_workload(namespace: str, name: str, index: PodIndex | None) -> Workload:
    """A StatefulSet as its managed pods in `index` show it: as many replicas as pods,
    settled while every one runs Ready (a sibling down, starting or leaving: evicting
    another could take the function's last Ready replica). A replica the controller has
    not created yet is not seen (the StatefulSet is not watched); one the rebalancer
    evicted is waited for (Evictor.owner_recovering)."""
    if index is None:
        return Workload(Kind.STATEFUL_SET, namespace, name)
    keys = index.by_owner.get((namespace, "StatefulSet", name), ())
    replicas = [index.pods[k] for k in keys if k in index.pods]
    return Workload(
        Kind.STATEFUL_SET,
        namespace,
        name,
        replicas=max(len(replicas), 1),
        settled=all(r.ready and r.running for r in replicas),
    )


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


def moves_on_record(
    deployments: Iterable[DeploymentRecord],
    owners: Iterable[Mapping[str, Any]] = (),
    *,
    now: float,
) -> tuple[MoveRecord, ...]:
    """The last move of each Deployment, and of each StatefulSet or bare ReplicaSet in
    `owners` (objects as the apiserver returns them), as recorded on it: a new term's
    memory. A move stamped after `now` (the last leader's clock ahead of ours, ours
    stepped back, an edited annotation) counts as made `now`: it must not hold its
    workload for the skew on top of the cooldown."""
    notes = [(deployment_workload(d).key, d.last_move) for d in deployments]
    for obj in owners:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        kind = Kind.REPLICA_SET if obj.get("kind") == Kind.REPLICA_SET.value else Kind.STATEFUL_SET
        notes.append((Workload(kind, namespace, name).key, last_move_of(obj)))
    records = []
    for key, note in notes:
        if note is None:
            continue
        try:
            reason = Reason(note.reason)
        except ValueError:
            continue
        at = min(note.at, now)
        records.append(MoveRecord(key, note.device, note.from_node, note.to_node, reason, at))
    return tuple(sorted(records, key=lambda r: r.at))


def parked_facts(deployments: Iterable[DeploymentRecord]) -> list[tuple[Workload, PodFacts]]:
    return [
        (deployment_workload(d), d.template)
        for d in deployments
        if d.parked_replicas is not None and d.replicas == 0
    ]
