"""The scorer's inputs and outputs: a pod's placement facts, the per-request context,
refusals and verdicts. Plain frozen data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from cloud4iot.policy.schema import FunctionClass, PlacementPolicy
from cloud4iot.vocabulary import (
    ARCHS_ANNOTATION,
    DEVICE_ANNOTATION,
    FUNCTION_ANNOTATION,
    MODE_ANNOTATION,
)
from extender.state.snapshot import DeviceFacts, Snapshot


class Code(StrEnum):
    """Why a node was kept or refused; bounded, so it can label metrics."""

    KEPT = "kept"
    UNMANAGED = "unmanaged"
    # permanent for this pod: preemption or waiting cannot fix them
    ARCH_MISMATCH = "arch_mismatch"
    NO_TIER = "no_tier_label"
    TIER_NOT_ALLOWED = "tier_not_allowed"
    UNKNOWN_CLASS = "unknown_class"
    NO_DEVICE_NAMED = "no_device_named"
    # transient: the world may change (load drops, the device moves, data arrives)
    UNKNOWN_NODE = "unknown_node"
    OVERLOADED = "overloaded"
    STALE_LOAD = "stale_load"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_HEARD = "device_not_heard"
    NOT_NEAREST = "not_nearest_gateway"
    HEARD_BY_GATEWAY = "device_heard_by_gateway"
    DEVICES_NOT_SYNCED = "devices_not_synced"


UNRESOLVABLE = frozenset(
    {
        Code.ARCH_MISMATCH,
        Code.NO_TIER,
        Code.TIER_NOT_ALLOWED,
        Code.UNKNOWN_CLASS,
        Code.NO_DEVICE_NAMED,
    }
)


# Transient refusals whose end no cluster event announces: kube-scheduler re-queues a
# pod that every node refused only on events it watches (Node and Pod changes; our
# nearest writer's node nudge covers the proximity codes), so a pod refused only for
# these would wait in the unschedulable pool for its 5-minute flush after the load
# dropped or the Device appeared. The webhook answers such a filter with an error
# instead, which kube-scheduler retries with its backoff (1-10 s).
UNANNOUNCED = frozenset(
    {
        Code.OVERLOADED,
        Code.STALE_LOAD,
        Code.UNKNOWN_DEVICE,
        Code.UNKNOWN_NODE,
        Code.DEVICES_NOT_SYNCED,
    }
)


class Refusal(NamedTuple):
    code: Code
    reason: str  # what `kubectl describe pod` shows
    unresolvable: bool


def refuse(code: Code, reason: str) -> Refusal:
    return Refusal(code, reason, code in UNRESOLVABLE)


@dataclass(frozen=True, slots=True)
class PodFacts:
    """The annotations of a pod that placement reads."""

    name: str
    namespace: str
    function: str | None = None
    device: str | None = None
    mode: str | None = None
    archs: frozenset[str] = frozenset()

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodFacts:
        meta = pod.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        ann = meta.get("annotations")
        ann = ann if isinstance(ann, Mapping) else {}

        def text(key: str) -> str | None:
            value = ann.get(key)
            return value.strip() or None if isinstance(value, str) else None

        archs = text(ARCHS_ANNOTATION)
        name = meta.get("name") or meta.get("generateName") or ""
        namespace = meta.get("namespace") or "default"
        return cls(
            name=name if isinstance(name, str) else "",
            namespace=namespace if isinstance(namespace, str) else "default",
            function=text(FUNCTION_ANNOTATION),
            device=text(DEVICE_ANNOTATION),
            mode=text(MODE_ANNOTATION),
            archs=frozenset(a.strip() for a in archs.split(",") if a.strip())
            if archs
            else frozenset(),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """Everything about one pod's evaluation that does not depend on the node.

    Built once per request so the per-node rules stay cheap at thousands of nodes.
    """

    pod: PodFacts
    cls: FunctionClass | None  # None: the pod names no class (or an unknown one)
    snapshot: Snapshot
    policy: PlacementPolicy
    now: float
    device: DeviceFacts | None = None
    # gateways that hear the pod's device now, with their RSSI
    heard: Mapping[str, float] = field(default_factory=dict)
    nearest: str | None = None
    # Precomputed from the class and mode (hot path: thousands of nodes per request).
    weights: tuple[float, ...] = ()  # one per scorer rule, in the rules' order
    allowed_tiers: frozenset[str] = frozenset()
    tier_part: Mapping[str, float] = field(default_factory=dict)
    gateway_needs_hearing: bool = False
    load_max_age: float = 0.0
    explain: bool = False  # build per-node score parts (explain, simulate); else skip


class Verdict(NamedTuple):
    """One node's answer. A NamedTuple: built thousands of times per request, and a
    frozen dataclass's __init__ costs several times more."""

    node: str
    feasible: bool
    score: int  # 0..10, the extender range; 0 when infeasible
    code: Code
    reason: str
    unresolvable: bool = False
    parts: Mapping[str, float] = MappingProxyType({})

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "feasible": self.feasible,
            "unresolvable": self.unresolvable,
            "score": self.score,
            "code": self.code.value,
            "reason": self.reason,
            "parts": dict(self.parts),
        }
