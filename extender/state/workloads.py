"""Pods, ReplicaSets and Deployments reduced to what the rebalancer reads, and the
indexes that keep its work per event independent of the number of pods.

Only pods of our scheduler are watched (a field selector on spec.schedulerName);
a pod's workload is resolved Pod -> ReplicaSet -> Deployment from the caches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cloud4iot.devices import parse_time
from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION, NARROWED_ANNOTATION, PARKED_ANNOTATION
from extender.scoring.model import PodFacts


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


REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def required_node_affinity(spec: Mapping[str, Any]) -> Any:
    """spec.affinity.nodeAffinity.requiredDuringScheduling... as found; None if absent."""
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    return node_affinity.get(REQUIRED) if isinstance(node_affinity, Mapping) else None


def required_terms(spec: Mapping[str, Any]) -> list[Any]:
    """Its nodeSelectorTerms when they are a list, else none."""
    required = required_node_affinity(spec)
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    return terms if isinstance(terms, list) else []


def pinned_nodes(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The nodes a pod's required node affinity names by `metadata.name In`, in order."""
    spec = obj.get("spec")
    names: dict[str, None] = {}
    for term in required_terms(spec) if isinstance(spec, Mapping) else ():
        for f in (term.get("matchFields") or []) if isinstance(term, Mapping) else ():
            by_name = isinstance(f, Mapping) and f.get("key") == "metadata.name"
            if by_name and f.get("operator") == "In":
                names.update(dict.fromkeys(str(v) for v in f.get("values") or []))
    return tuple(names)


def replicaset_owner(obj: Mapping[str, Any], observed_at: float = 0.0) -> str | None:
    """The Deployment controlling a ReplicaSet, or None."""
    owner = _controller(_meta(obj))
    return owner[1] if owner is not None and owner[0] == "Deployment" else None


def _surge(value: Any, replicas: int) -> int:
    """maxSurge as a pod count: an int, or a percentage of replicas rounded up."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(float(value[:-1]) * replicas / 100)
        except ValueError:
            return 0
    return 0


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

    @classmethod
    def from_deployment(cls, obj: Mapping[str, Any], observed_at: float = 0.0) -> DeploymentRecord:
        meta = _meta(obj)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        replicas = spec.get("replicas")
        replicas = replicas if isinstance(replicas, int) else 1
        generation = meta.get("generation")
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
        can_surge = rolling and _surge(surge, max(replicas, 1)) > 0
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
            parked_replicas=int(parked) if isinstance(parked, str) and parked.isdigit() else None,
            template=PodFacts.from_pod({"metadata": template_meta}),
            last_move=_move_note(annotations.get(LAST_MOVE_ANNOTATION)),
            generation=generation if isinstance(generation, int) else 0,
        )


def _move_note(raw: Any) -> MoveNote | None:
    if not isinstance(raw, str):
        return None
    try:
        doc = orjson.loads(raw)
        return MoveNote(
            at=float(doc["at"]),
            reason=str(doc["reason"]),
            from_node=str(doc["from"]),
            to_node=doc.get("to"),
            device=doc.get("device"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def move_note_json(note: MoveNote) -> str:
    return orjson.dumps(
        {
            "at": round(note.at, 3),
            "reason": note.reason,
            "from": note.from_node,
            "to": note.to_node,
            "device": note.device,
        }
    ).decode()


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
