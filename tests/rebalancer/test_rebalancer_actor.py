"""The rebalancer's actor against recording fakes of CoreV1Api and AppsV1Api.

Pods, ReplicaSets, Deployments and Devices reach the actor through its observe_*
hooks with the records the reflectors would build from the objects' JSON, and the
Snapshot is published into the StateStore as the node, device and load sources
would, so each test drives `step(now)` exactly as the run loop does, with time
passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.policy.loader import LoadedPolicy, parse_policy
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import (
    DEVICE_ANNOTATION,
    FUNCTION_ANNOTATION,
    LAST_MOVE_ANNOTATION,
    MOVED_ANNOTATION,
    MOVES_ANNOTATION,
    PARKED_ANNOTATION,
    TIER_LABEL,
)
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Sighting, Snapshot
from extender.state.store import StateStore
from rebalancer.actor import Rebalancer, crossed
from rebalancer.evictor import COMPONENT, IN_FLIGHT, MERGE_PATCH
from rebalancer.metrics import RebalancerMetrics
from rebalancer.model import MoveRecord, Reason
from rebalancer.workloads import (
    DeploymentRecord,
    MoveNote,
    PodRecord,
    Workloads,
    move_note_json,
    moves_on_record,
)

POLICY_PATH = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
NOW = 1_800_000_000.0
NS = "health"
NODES = {"gw-home": "gateway", "gw-hospital": "gateway", "edge-1": "edge", "cloud-1": "cloud"}
PARK_CLASS = "parked-reader"
COOLDOWN = 120.0  # default.yaml's spec.rebalance.cooldown
AWAY_AFTER = 120.0  # default.yaml's spec.rebalance.deviceAwayAfter


def policy_text(name: str = "actor-test", **rebalance: Any) -> str:
    """default.yaml with no dwell, a class that parks, and `rebalance` overrides."""
    doc = yaml.safe_load(POLICY_PATH.read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["rebalance"].update({"dwell": "0s", **rebalance})
    parked = dict(doc["spec"]["classes"]["mhealth-consolidator"])
    parked["whenDeviceAway"] = "park"
    doc["spec"]["classes"][PARK_CLASS] = parked
    return yaml.safe_dump(doc, sort_keys=False)


def loaded_policy(name: str = "actor-test", **rebalance: Any) -> LoadedPolicy:
    return parse_policy(policy_text(name, **rebalance), "actor-test.yaml")


# --- fakes of the Kubernetes API -----------------------------------------------------------


@dataclass
class FakeResponse:
    """What a `*_without_preload_content` call returns: an aiohttp response."""

    status: int
    body: bytes
    released: bool = False

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        self.released = True


@dataclass
class FakeApps:
    patches: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    # StatefulSets as the apiserver returns them (namespace, name) -> JSON; a status
    # answers every read instead when set
    statefulsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    statefulset_status: int | None = None
    reads: list[tuple[str, str]] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)

    # bare ReplicaSets as the apiserver returns them, likewise (their move records)
    replicasets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def read_namespaced_replica_set_without_preload_content(
        self, name: str, namespace: str, **kw: Any
    ) -> FakeResponse:
        return self._read(self.replicasets, namespace, name)

    async def read_namespaced_stateful_set_without_preload_content(
        self, name: str, namespace: str, **kw: Any
    ) -> FakeResponse:
        return self._read(self.statefulsets, namespace, name)

    def _read(
        self, objs: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str
    ) -> FakeResponse:
        self.reads.append((namespace, name))
        obj = objs.get((namespace, name))
        if self.statefulset_status is not None:
            resp = FakeResponse(self.statefulset_status, b'{"kind":"Status"}')
        elif obj is None:
            resp = FakeResponse(404, b'{"kind":"Status","reason":"NotFound"}')
        else:
            resp = FakeResponse(200, orjson.dumps(obj))
        self.responses.append(resp)
        return resp

    async def patch_namespaced_deployment(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.content_types.append(kw.get("_content_type", ""))
        self.patches.append(("Deployment", namespace, name, body))
        return {}

    async def patch_namespaced_stateful_set(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.content_types.append(kw.get("_content_type", ""))
        self.patches.append(("StatefulSet", namespace, name, body))
        return {}

    async def patch_namespaced_replica_set(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.content_types.append(kw.get("_content_type", ""))
        self.patches.append(("ReplicaSet", namespace, name, body))
        return {}


# The eviction subresource's 429 for a disruption budget (k8s pkg/registry/core/pod/
# storage/eviction.go): a Status naming the budget in its causes.
BUDGET_429 = orjson.dumps({
    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests",
    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
    "details": {"causes": [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget consolidator needs 1 healthy pods and has 1 currently",
    }]},
    "code": 429,
}).decode()  # fmt: skip
# API Priority and Fairness (or max-in-flight) rejecting a request: plain text.
THROTTLE_429 = "Too many requests, please try again later.\n"


def api_error(status: int, body: str | None = None, retry_after: int | None = None) -> ApiException:
    """An ApiException as kubernetes.aio raises it for an answer (body, headers)."""
    exc = ApiException(status=status, reason="Too Many Requests" if status == 429 else "Error")
    exc.body = body
    exc.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return exc


@dataclass
class FakeCore:
    evictions: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    evict_status: int | None = None  # answer evictions with this error status
    # a 429's body (a disruption budget's unless set) and Retry-After
    evict_body: str | None = None
    evict_retry_after: int | None = None

    async def create_namespaced_pod_eviction(
        self, name: str, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.evictions.append((namespace, name, body))
        if self.evict_status is not None:
            answer = self.evict_body
            if answer is None and self.evict_status == 429:
                answer = BUDGET_429
            raise api_error(self.evict_status, answer, self.evict_retry_after)
        return {}

    async def create_namespaced_event(
        self, namespace: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        assert body["metadata"]["namespace"] == namespace
        self.events.append(body)
        return {}


# --- objects as the reflectors see them ---------------------------------------------------


def pod_obj(
    name: str, node: str | None, function: str | None, device: str | None, rs: str | None
) -> dict[str, Any]:
    annotations = {}
    if function is not None:
        annotations[FUNCTION_ANNOTATION] = function
    if device is not None:
        annotations[DEVICE_ANNOTATION] = device
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "annotations": annotations,
    }
    if rs is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True}
        ]
    return {
        "metadata": meta,
        "spec": {"schedulerName": "cloud4iot-scheduler", "nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "startTime": "2027-01-15T07:00:00Z",
        },
    }


def deployment_obj(
    name: str,
    function: str,
    device: str | None,
    replicas: int = 1,
    max_surge: Any = None,
    annotations: Mapping[str, str] | None = None,
    generation: int = 1,
    observed: int = 1,
    max_unavailable: Any = None,
    paused: bool = False,
) -> dict[str, Any]:
    """With `max_surge`, a RollingUpdate strategy: make-before-break (maxUnavailable 0)
    when it surges, else maxUnavailable 1 (the apiserver refuses both 0)."""
    if max_unavailable is None:
        max_unavailable = 1 if max_surge in (0, "0%") else 0
    template_annotations = {FUNCTION_ANNOTATION: function}
    if device is not None:
        template_annotations[DEVICE_ANNOTATION] = device
    spec: dict[str, Any] = {
        "replicas": replicas,
        "template": {"metadata": {"annotations": template_annotations}},
    }
    if paused:
        spec["paused"] = True
    if max_surge is not None:
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
        }
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": generation,
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
        },
    }


def wearable(
    name: str = "patient",
    heard: Mapping[str, float] | None = None,
    nearest: str | None = "gw-hospital",
    since: float | None = NOW - 60,
    at: float = NOW,
) -> DeviceFacts:
    """By default: the patient walked from home to the hospital a minute ago."""
    if heard is None:
        heard = {"gw-home": -80.0, "gw-hospital": -55.0}
    return DeviceFacts(
        name=name,
        address=None,
        sightings={n: Sighting(n, rssi, at) for n, rssi in heard.items()},
        nearest=nearest,
        nearest_since=since,
    )


def loads(at: float = NOW, **cpu: float) -> dict[str, LoadSample]:
    """Every node at 30 % cpu and memory unless named otherwise (cpu)."""
    return {n: LoadSample(cpu=cpu.get(n.replace("-", "_"), 0.3), memory=0.3, at=at) for n in NODES}


@dataclass
class World:
    dry_run: bool = False
    core: FakeCore = field(default_factory=FakeCore)
    apps: FakeApps = field(default_factory=FakeApps)
    store: StateStore = field(default_factory=StateStore)
    metrics: RebalancerMetrics = field(default_factory=RebalancerMetrics)
    policy: PolicyStore = field(
        default_factory=lambda: PolicyStore(path=POLICY_PATH, current=loaded_policy())
    )
    rebalancer: Rebalancer = field(init=False)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    devices: dict[str, DeviceFacts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store.snapshot = Snapshot(
            nodes={n: NodeFacts(n, t, "arm64", {TIER_LABEL: t}) for n, t in NODES.items()},
            load=loads(),
            nodes_synced=True,
            devices_synced=True,
            load_refreshed_at=NOW,
        )
        self.rebalancer = Rebalancer.create(
            self.core, self.apps, self.policy, self.store, self.metrics, dry_run=self.dry_run
        )
        self.rebalancer.leading = True  # as in a term (`run` sets it); a standby apart

    # The device reflector: observe first, then publish the snapshot.
    def show(self, *devices: DeviceFacts) -> None:
        for d in devices:
            self.rebalancer.observe_device(d.name, self.devices.get(d.name), d)
            self.devices[d.name] = d
        self.store.snapshot = self.store.snapshot.with_devices(dict(self.devices))

    def forget_device(self, name: str) -> None:
        self.rebalancer.observe_device(name, self.devices.pop(name), None)
        self.store.snapshot = self.store.snapshot.with_devices(dict(self.devices))

    def set_load(self, load: Mapping[str, LoadSample], at: float = NOW) -> None:
        self.store.snapshot = self.store.snapshot.with_load(load, at)

    def pod(
        self,
        name: str,
        node: str | None,
        function: str = "mhealth-consolidator",
        device: str | None = "patient",
        rs: str | None = None,
    ) -> PodRecord:
        record = PodRecord.from_pod(pod_obj(name, node, function, device, rs))
        self.rebalancer.observe_pod(record.key, self.pods.get(record.key), record)
        self.pods[record.key] = record
        return record

    def delete_pod(self, key: str) -> None:
        self.rebalancer.observe_pod(key, self.pods.pop(key), None)

    def deployment(self, name: str, **kw: Any) -> DeploymentRecord:
        function = kw.pop("function", "mhealth-consolidator")
        device = kw.pop("device", "patient")
        record = DeploymentRecord.from_deployment(deployment_obj(name, function, device, **kw))
        key = f"{NS}/{name}"
        self.rebalancer.observe_deployment(
            key, self.rebalancer.workloads.deployments.get(key), record
        )
        return record

    def deploy(
        self,
        name: str,
        node: str,
        function: str = "mhealth-consolidator",
        device: str | None = "patient",
        **kw: Any,
    ) -> PodRecord:
        """A Deployment, its ReplicaSet and one running pod, in the reflectors' order."""
        rs = f"{name}-rs1"
        self.rebalancer.observe_replicaset(f"{NS}/{rs}", None, name)
        self.deployment(name, function=function, device=device, **kw)
        return self.pod(f"{rs}-p1", node, function, device, rs)

    def moves(self, reason: str, action: str, result: str) -> float:
        labels = {"reason": reason, "action": action, "result": result}
        return (
            self.metrics.registry.get_sample_value("cloud4iot_rebalancer_moves_total", labels) or 0
        )

    def held(self, limit: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "cloud4iot_rebalancer_moves_held_total", {"limit": limit}
        )
        return value or 0

    async def step(self, now: float) -> None:
        await self.rebalancer.step(now)


@pytest.fixture
def world() -> World:
    return World()


def annotations_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body["metadata"]["annotations"]


def note_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(orjson.loads(annotations_of(body)[LAST_MOVE_ANNOTATION]))


def events_by_kind(events: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out = {e["involvedObject"]["kind"]: e for e in events}
    assert len(out) == len(list(events)), "one Event per object"
    return out


# --- moves ------------------------------------------------------------------------------------


async def test_roaming_a_deployment_that_can_surge_is_one_rollout_with_events(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)

    assert world.core.evictions == []
    ((kind, namespace, name, body),) = world.apps.patches
    assert (kind, namespace, name) == ("Deployment", NS, "consolidator")
    assert world.apps.content_types == [MERGE_PATCH]
    assert set(body) == {"metadata", "spec"}
    stamp = body["spec"]["template"]["metadata"]["annotations"][MOVED_ANNOTATION]
    assert stamp == "Roaming gw-home -> gw-hospital at 2027-01-15T08:00:00Z"
    assert note_of(body) == {
        "at": NOW,
        "reason": "Roaming",
        "from": "gw-home",
        "to": "gw-hospital",
        "device": "patient",
    }
    # The bounded list of moves (explain --history) starts with this one.
    moves = orjson.loads(body["metadata"]["annotations"]["cloud4iot.io/moves"])
    assert moves == [note_of(body)]
    events = events_by_kind(world.core.events)
    assert set(events) == {"Pod", "Deployment"}
    on_pod, on_deployment = events["Pod"], events["Deployment"]
    assert on_pod["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": NS,
        "name": pod.name,
        "uid": pod.uid,
    }
    assert on_deployment["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": NS,
        "name": "consolidator",
    }
    for e in (on_pod, on_deployment):
        assert e["reason"] == "Roaming"
        assert e["type"] == "Normal"
        assert e["source"] == {"component": COMPONENT}
        assert e["reportingComponent"] == COMPONENT
        assert e["message"].startswith(
            f"Roaming (rollout) Deployment/{NS}/consolidator pod {pod.name}: gw-home -> gw-hospital"
        )
    assert world.moves("Roaming", "rollout", "ok") == 1
    assert world.rebalancer.plans == 1


async def test_no_second_rollout_while_the_first_runs(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(world.apps.patches) == 1

    # The watch delivers the patched Deployment (generation 2, not yet observed by the
    # controller); the Deployment change and then a device heartbeat re-plan the pod.
    world.deployment("consolidator", generation=2, observed=1)
    assert pod.key in world.rebalancer.dirty  # a Deployment change marks its pods
    await world.step(NOW + 1)
    assert world.held("rollout-in-progress") == 1
    world.show(wearable(at=NOW + 2))
    await world.step(NOW + 2)
    assert len(world.apps.patches) == 1
    assert world.moves("Roaming", "rollout", "ok") == 1
    assert len(world.core.events) == 2


async def test_a_rollout_in_progress_holds_the_move(world: World):
    world.show(wearable())
    world.rebalancer.observe_replicaset(f"{NS}/fn-rs1", None, "fn")
    record = DeploymentRecord.from_deployment(
        deployment_obj("fn", "mhealth-consolidator", "patient", generation=2, observed=1)
    )
    world.rebalancer.observe_deployment(f"{NS}/fn", None, record)
    world.pod("fn-rs1-p1", "gw-home", rs="fn-rs1")
    await world.step(NOW)
    assert world.apps.patches == []
    assert world.held("rollout-in-progress") == 1


async def test_max_surge_zero_evicts_and_records_the_move(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home", max_surge=0)
    await world.step(NOW)

    ((namespace, name, body),) = world.core.evictions
    assert (namespace, name) == (NS, pod.name)
    assert body == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": NS},
        "deleteOptions": {"preconditions": {"uid": pod.uid}},
    }
    # Only the record of the move is patched: no rollout.
    ((_, _, deployment, patch),) = world.apps.patches
    assert deployment == "consolidator"
    assert set(patch) == {"metadata"}
    assert note_of(patch)["reason"] == "Roaming"
    assert set(events_by_kind(world.core.events)) == {"Pod", "Deployment"}
    assert world.moves("Roaming", "evict", "ok") == 1
    assert [r.workload for r in world.rebalancer.memory.moves] == [f"Deployment/{NS}/consolidator"]


async def test_an_eviction_refused_by_a_disruption_budget_is_forgotten(world: World):
    world.core.evict_status = 429
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home", max_surge="0%")
    await world.step(NOW)

    assert [name for _, name, _ in world.core.evictions] == [pod.name]
    assert world.apps.patches == []
    # Not made: a Warning on the pod and its Deployment (docs/operations.md), not a Normal.
    assert [(e["type"], e["reason"], e["involvedObject"]["kind"]) for e in world.core.events] == [
        ("Warning", "MoveBlocked", "Pod"),
        ("Warning", "MoveBlocked", "Deployment"),
    ]
    assert "PodDisruptionBudget" in world.core.events[0]["message"]
    assert "gw-home -> gw-hospital" in world.core.events[0]["message"]
    assert world.moves("Roaming", "evict", "failed") == 1
    assert world.moves("Roaming", "evict", "ok") == 0
    assert world.held("disruption-budget") == 1
    # Planned again and refused again at once: counted, but not warned twice.
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")
    await world.step(NOW + 1)
    assert world.held("disruption-budget") == 2
    assert len(world.core.events) == 2
    world.core.events.clear()
    workload = f"Deployment/{NS}/consolidator"
    assert not [r for r in world.rebalancer.memory.moves if r.workload == workload]

    # Not held by its own refused move: the next plan of the pod tries again.
    world.core.evict_status = None
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")
    await world.step(NOW + 2)
    assert len(world.core.evictions) == 3
    assert world.moves("Roaming", "evict", "ok") == 1
    assert {e["type"] for e in world.core.events} == {"Normal"}


async def test_another_eviction_refusal_is_a_failed_move_without_a_budget_hold(world: World):
    world.core.evict_status = 403
    world.show(wearable())
    world.deploy("consolidator", "gw-home", max_surge=0)
    await world.step(NOW)
    assert world.moves("Roaming", "evict", "failed") == 1
    assert world.held("disruption-budget") == 0
    assert [(e["type"], e["reason"]) for e in world.core.events] == [
        ("Warning", "MoveFailed"),
        ("Warning", "MoveFailed"),
    ]
    assert "could not" in world.core.events[0]["message"]
    assert "403" in world.core.events[0]["message"]
    assert world.rebalancer.memory.moves == ()


async def test_dry_run_changes_nothing_and_says_what_it_would_do():
    world = World(dry_run=True)
    world.show(wearable())
    world.deploy("consolidator", "gw-home")
    world.deploy("reader", "gw-home", function="mhealth-consolidator", max_surge=0)
    await world.step(NOW)

    assert world.apps.patches == []
    assert world.core.evictions == []
    assert len(world.core.events) == 4  # pod and Deployment, for each of the two moves
    for e in world.core.events:
        assert e["message"].startswith("dry-run: would Roaming (")
        assert e["reason"] == "Roaming"
    assert world.moves("Roaming", "rollout", "dry-run") == 1
    assert world.moves("Roaming", "evict", "dry-run") == 1
    assert world.moves("Roaming", "rollout", "ok") == 0


async def test_park_when_away_then_unpark_when_heard_again(world: World):
    world.show(wearable(heard={}, nearest=None, since=None))  # never heard
    pod = world.deploy("reader", "gw-home", function=PARK_CLASS, replicas=2)
    await world.step(NOW)
    assert world.apps.patches == []
    assert world.held("device-away-wait") == 1

    await world.step(NOW + AWAY_AFTER)  # the hold's due time re-plans the pod
    ((_, _, name, park),) = world.apps.patches
    assert name == "reader"
    assert park["spec"] == {"replicas": 0}
    assert annotations_of(park)[PARKED_ANNOTATION] == "2"
    assert note_of(park)["reason"] == "DeviceAway"
    assert note_of(park)["to"] is None
    assert world.moves("DeviceAway", "park", "ok") == 1
    assert {e["reason"] for e in world.core.events} == {"DeviceAway"}

    # The Deployment controller scales it down; the watches deliver both.
    world.deployment(
        "reader",
        function=PARK_CLASS,
        replicas=0,
        generation=2,
        observed=2,
        annotations={
            PARKED_ANNOTATION: "2",
            LAST_MOVE_ANNOTATION: annotations_of(park)[LAST_MOVE_ANNOTATION],
        },
    )
    world.delete_pod(pod.key)
    await world.step(NOW + AWAY_AFTER + 1)  # still away: stays parked
    assert len(world.apps.patches) == 1

    # The patient is back at home.
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW + 200, at=NOW + 206))
    assert world.rebalancer.wake.is_set()
    await world.step(NOW + 206)
    assert len(world.apps.patches) == 2
    _, _, name, unpark = world.apps.patches[1]
    assert name == "reader"
    assert unpark["spec"] == {"replicas": 2}
    assert PARKED_ANNOTATION in annotations_of(unpark)
    assert annotations_of(unpark)[PARKED_ANNOTATION] is None  # merge-patch: delete it
    assert note_of(unpark)["reason"] == "DeviceBack"
    assert world.apps.content_types == [MERGE_PATCH, MERGE_PATCH]
    assert world.moves("DeviceBack", "unpark", "ok") == 1
    (back,) = [e for e in world.core.events if e["reason"] == "DeviceBack"]
    assert back["involvedObject"]["kind"] == "Deployment"  # no pod to name


# --- triggers ---------------------------------------------------------------------------------


async def test_a_device_change_marks_only_the_pods_of_that_device(world: World):
    a = world.deploy("a", "gw-home", device="dev-a")
    b = world.deploy("b", "gw-home", device="dev-b")
    await world.step(NOW)  # the first full pass
    world.rebalancer.dirty.clear()
    world.rebalancer.wake.clear()

    world.show(wearable("dev-a"))
    assert world.rebalancer.dirty == {a.key}
    assert b.key not in world.rebalancer.dirty
    assert world.rebalancer.wake.is_set()
    world.show(wearable("dev-nobody-runs"))
    assert world.rebalancer.dirty == {a.key}


async def test_a_pod_event_marks_that_pod_and_an_unmanaged_one_nothing(world: World):
    a = world.pod("a", "gw-home")
    world.pod("b", "gw-hospital")
    world.rebalancer.dirty.clear()
    world.pod("a", "gw-hospital")
    assert world.rebalancer.dirty == {a.key}
    plain = PodRecord.from_pod(pod_obj("plain", "gw-home", None, "dev-a", None))
    world.rebalancer.observe_pod(plain.key, None, plain)
    assert world.rebalancer.dirty == {a.key}
    assert plain.key not in world.rebalancer.index.pods


async def test_a_deployment_change_marks_the_pods_of_its_replicasets(world: World):
    a1 = world.deploy("a", "gw-home")
    a2 = world.pod("a-rs2-p1", "gw-hospital", rs="a-rs2")
    world.rebalancer.observe_replicaset(f"{NS}/a-rs2", None, "a")
    world.deploy("b", "gw-home")
    world.rebalancer.dirty.clear()
    world.deployment("a", generation=2, observed=2)
    assert world.rebalancer.dirty == {a1.key, a2.key}
    # A ReplicaSet that changes owner leaves the old Deployment's set.
    world.rebalancer.dirty.clear()
    world.rebalancer.observe_replicaset(f"{NS}/a-rs2", "a", None)
    world.deployment("a", generation=3, observed=3)
    assert world.rebalancer.dirty == {a1.key}


def test_crossed_sees_a_limit_crossed_either_way_and_nothing_else():
    def sample(cpu: float | None, memory: float | None = 0.2) -> LoadSample:
        return LoadSample(cpu=cpu, memory=memory, at=NOW)

    limits = [0.85, 0.9, 0.85]
    before = {"up": sample(0.8), "down": sample(0.95), "calm": sample(0.3), "hot": sample(0.91)}
    after = {"up": sample(0.86), "down": sample(0.5), "calm": sample(0.7), "hot": sample(0.99)}
    assert crossed(before, after, limits) == {"up", "down"}
    # Memory counts as cpu does; between two limits is a crossing of one.
    assert crossed({"m": sample(0.1, 0.8)}, {"m": sample(0.1, 0.87)}, limits) == {"m"}
    assert crossed({"m": sample(0.1, 0.86)}, {"m": sample(0.1, 0.95)}, limits) == {"m"}
    assert crossed({"m": sample(0.1, 0.86)}, {"m": sample(0.1, 0.88)}, limits) == set()
    # A value at the limit is not above it.
    assert crossed({"e": sample(0.85)}, {"e": sample(0.84)}, limits) == set()
    # Appearing, vanishing, or losing a reading changes what the scorer knows.
    assert crossed({}, {"new": sample(0.1)}, limits) == {"new"}
    assert crossed({"gone": sample(0.1)}, {}, limits) == {"gone"}
    assert crossed({"n": sample(0.1)}, {"n": sample(None)}, limits) == {"n"}
    assert crossed({"n": sample(0.1)}, {"n": sample(0.2)}, []) == set()


async def test_a_load_crossing_marks_the_pods_on_that_node_and_of_devices_it_hears(world: World):
    world.show(
        wearable("near-home", heard={"gw-home": -60.0}, nearest="gw-home"),
        wearable("far", heard={"gw-hospital": -60.0}, nearest="gw-hospital"),
    )
    on_home = world.deploy("on-home", "gw-home", function="anonymiser", device="far")
    heard = world.deploy("heard", "edge-1", device="near-home")
    elsewhere = world.deploy("elsewhere", "gw-hospital", device="far")
    world.rebalancer._collect(NOW)  # the first (full) pass takes in the first load
    world.rebalancer.dirty.clear()

    world.set_load(loads(gw_home=0.5, gw_hospital=0.6))  # stays below every limit
    pods, full = world.rebalancer._collect(NOW + 1)
    assert (pods, full) == ([], False)

    world.set_load(loads(gw_home=0.95, gw_hospital=0.6))  # over gw-home's 0.85 and 0.90
    pods, full = world.rebalancer._collect(NOW + 2)
    assert not full
    assert {p.key for p in pods} == {on_home.key, heard.key}
    assert elsewhere.key not in {p.key for p in pods}

    pods, _ = world.rebalancer._collect(NOW + 3)  # the same load again: nothing new
    assert pods == []
    world.set_load(loads(gw_home=0.5))  # back under
    pods, _ = world.rebalancer._collect(NOW + 4)
    assert {p.key for p in pods} == {on_home.key, heard.key}


async def test_a_policy_change_and_the_interval_plan_every_pod(world: World):
    keys = {world.deploy(n, "gw-home", device=f"dev-{n}").key for n in ("a", "b", "c")}
    pods, full = world.rebalancer._collect(NOW)
    assert full
    assert {p.key for p in pods} == keys

    pods, full = world.rebalancer._collect(NOW + 1)
    assert (pods, full) == ([], False)

    world.policy.current = loaded_policy("changed")
    pods, full = world.rebalancer._collect(NOW + 2)
    assert full
    assert {p.key for p in pods} == keys
    pods, full = world.rebalancer._collect(NOW + 3)
    assert not full

    interval = world.policy.current.policy.spec.rebalance.interval
    pods, full = world.rebalancer._collect(NOW + 2 + interval - 0.5)
    assert not full
    pods, full = world.rebalancer._collect(NOW + 2 + interval)
    assert full
    assert {p.key for p in pods} == keys


async def test_a_held_move_is_re_planned_when_its_hold_may_lift(world: World):
    world.show(wearable(since=NOW - 1))  # the nearest decision is 1 s old: settle is 5 s
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert world.apps.patches == []
    assert world.held("settle") == 1
    pods, _ = world.rebalancer._collect(NOW + 3)
    assert pods == []  # not due yet
    await world.step(NOW + 4)  # settle ends at NOW + 4
    assert [name for _, _, name, _ in world.apps.patches] == ["consolidator"]
    assert pod.key not in world.rebalancer._due


async def test_not_synced_does_nothing_and_plans_a_full_pass_later(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    world.rebalancer._collect(NOW)  # a full pass happened earlier in the term
    world.rebalancer.dirty.clear()
    assert world.rebalancer.full_pass is False

    world.rebalancer.synced = lambda: False
    await world.step(NOW + 1)
    assert world.apps.patches == []
    assert world.core.events == []
    assert world.rebalancer.plans == 0
    assert world.rebalancer.full_pass is True

    world.rebalancer.synced = lambda: True
    pods, full = world.rebalancer._collect(NOW + 2)
    assert full
    assert [p.key for p in pods] == [pod.key]


# --- a new leader keeps the last one's cooldowns -----------------------------------------------


def recorded(at: float, reason: str = "Offloading", to: str | None = "edge-1") -> str:
    return move_note_json(MoveNote(at, reason, "gw-home", to, None))


def test_moves_on_record_reads_the_last_move_of_each_deployment():
    def record(name: str, note: str | None) -> DeploymentRecord:
        annotations = {LAST_MOVE_ANNOTATION: note} if note is not None else {}
        return DeploymentRecord.from_deployment(
            deployment_obj(name, "anonymiser", None, annotations=annotations)
        )

    seeded = moves_on_record(
        [
            record("late", recorded(NOW - 10, "Roaming", "gw-hospital")),
            record("none", None),
            record("garbage", "{not json"),
            record("unknown-reason", recorded(NOW - 5, "Teleporting")),
            record("early", recorded(NOW - 100)),
        ],
        now=NOW,
    )
    assert seeded == (
        MoveRecord(
            f"Deployment/{NS}/early", None, "gw-home", "edge-1", Reason.OFFLOADING, NOW - 100
        ),
        MoveRecord(
            f"Deployment/{NS}/late", None, "gw-home", "gw-hospital", Reason.ROAMING, NOW - 10
        ),
    )


async def start_term(world: World) -> None:
    """Begin a leadership term (run) and stop it before its first step."""
    task = asyncio.create_task(world.rebalancer.run())
    await asyncio.sleep(0)
    assert world.rebalancer.leading
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not world.rebalancer.leading


@pytest.mark.parametrize("on_record", [True, False])
async def test_a_new_leader_holds_an_optional_move_within_the_recorded_cooldown(
    world: World, on_record: bool
):
    # anonymiser prefers the edge: on gw-home it scores 2, on edge-1 6 (an optional move).
    annotations = {LAST_MOVE_ANNOTATION: recorded(NOW - 30)} if on_record else {}
    world.deploy("anon", "gw-home", function="anonymiser", device=None, annotations=annotations)
    await start_term(world)
    await world.step(NOW)
    if on_record:
        assert world.apps.patches == []
        assert world.held("cooldown-workload") == 1
        assert world.rebalancer._due  # re-planned when the cooldown ends
        assert min(world.rebalancer._due.values()) == NOW - 30 + COOLDOWN
    else:  # the control: nothing on record, the move is made once the extender has
        # had one load refresh (5 s) to read the same picture
        assert world.apps.patches == []
        await world.step(NOW + 5)
        ((_, _, name, body),) = world.apps.patches
        assert name == "anon"
        assert note_of(body)["reason"] == "Offloading"
        assert note_of(body)["to"] == "edge-1"


def statefulset(world: World, name: str, node: str, note: str | None) -> None:
    """A StatefulSet as the apiserver returns it (its move record in its annotations),
    with one running replica the pod reflector shows."""
    annotations = {LAST_MOVE_ANNOTATION: note, MOVES_ANNOTATION: f"[{note}]"} if note else {}
    world.apps.statefulsets[(NS, name)] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"replicas": 1},
    }
    obj = pod_obj(f"{name}-0", node, "anonymiser", None, None)
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "controller": True}
    ]
    record = PodRecord.from_pod(obj)
    world.rebalancer.observe_pod(record.key, world.pods.get(record.key), record)
    world.pods[record.key] = record


@pytest.mark.parametrize("on_record", [True, False])
async def test_a_new_leader_reads_a_statefulsets_move_record_and_holds_it_in_cooldown(
    world: World, on_record: bool
):
    # The last leader moved the replica 30 s ago and recorded it on the StatefulSet; a new
    # term must not move it again (anonymiser prefers the edge: an optional move).
    statefulset(world, "anon", "gw-home", recorded(NOW - 30) if on_record else None)
    await start_term(world)
    await world.step(NOW)
    assert world.apps.reads == [(NS, "anon")]
    assert all(r.released for r in world.apps.responses)
    if on_record:
        assert [r.workload for r in world.rebalancer.memory.moves] == [f"StatefulSet/{NS}/anon"]
        for t in (5, 60):
            await world.step(NOW + t)
        assert world.core.evictions == []
        assert world.held("cooldown-workload") >= 1
        assert min(world.rebalancer._due.values()) == NOW - 30 + COOLDOWN
        await world.step(NOW - 30 + COOLDOWN)  # the cooldown is over: now it may move
        assert [name for _, name, _ in world.core.evictions] == ["anon-0"]
    else:  # the control: nothing on record, the move is made after one load refresh
        await world.step(NOW + 5)
        assert [name for _, name, _ in world.core.evictions] == ["anon-0"]
    # Read once per term (not per step), and once more by the move, to append it to the
    # bounded list of moves recorded on the StatefulSet (not watched).
    assert world.apps.reads == [(NS, "anon")] * 2
    assert all(r.released for r in world.apps.responses)
    ((kind, _, _, body),) = world.apps.patches
    assert kind == "StatefulSet"
    moves = orjson.loads(body["metadata"]["annotations"][MOVES_ANNOTATION])
    assert [m["at"] for m in moves] == ([NOW - 30] if on_record else []) + [note_of(body)["at"]]


async def test_a_new_leader_that_cannot_read_the_statefulsets_does_not_plan(world: World):
    statefulset(world, "anon", "gw-home", recorded(NOW - 30))
    world.apps.statefulset_status = 500
    await start_term(world)
    for t in (0, 5, 10):
        await world.step(NOW + t)
    assert world.core.evictions == []
    assert world.rebalancer.memory.moves == ()
    world.apps.statefulset_status = None  # the apiserver answers again
    await world.step(NOW + 15)
    assert [r.workload for r in world.rebalancer.memory.moves] == [f"StatefulSet/{NS}/anon"]
    await world.step(NOW + 20)
    assert world.core.evictions == []
    assert world.held("cooldown-workload") >= 1


async def test_a_statefulset_deleted_meanwhile_holds_nothing(world: World):
    statefulset(world, "anon", "gw-home", recorded(NOW - 30))
    del world.apps.statefulsets[(NS, "anon")]  # 404
    await start_term(world)
    await world.step(NOW)
    assert world.rebalancer.memory.moves == ()


async def test_a_term_won_before_the_deployments_listed_still_keeps_the_recorded_cooldowns(
    world: World,
):
    # A leader that hands the Lease back on shutdown lets a starting replica win it at
    # once, while its reflectors are still listing: the records arrive after the term began.
    world.rebalancer.synced = lambda: False
    await start_term(world)
    await world.step(NOW - 1)
    annotations = {LAST_MOVE_ANNOTATION: recorded(NOW - 30)}
    world.deploy("anon", "gw-home", function="anonymiser", device=None, annotations=annotations)
    world.rebalancer.synced = lambda: True
    await world.step(NOW)
    assert world.apps.patches == []
    assert world.held("cooldown-workload") == 1
    assert [r.workload for r in world.rebalancer.memory.moves] == [f"Deployment/{NS}/anon"]


# --- a move in flight: made, but not yet shown by the watches ----------------------------


async def test_no_second_rollout_before_the_watch_shows_the_first(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(world.apps.patches) == 1

    # A device heartbeat and a pod status update re-plan the pod; the Deployment watch
    # has not delivered the patched object yet (the cache still says settled).
    world.show(wearable(at=NOW + 1))
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")
    await world.step(NOW + 1)
    # An event from before the patch (the same generation) arrives late.
    world.deployment("consolidator", generation=1, observed=1)
    await world.step(NOW + 2)
    assert len(world.apps.patches) == 1
    assert world.held("rollout-in-progress") == 1

    # The controller completes the rollout: the old pod goes, the new one runs.
    world.deployment("consolidator", generation=2, observed=2)
    world.delete_pod(pod.key)
    world.pod("consolidator-rs2-p1", "gw-hospital", rs="consolidator-rs2")
    world.rebalancer.observe_replicaset(f"{NS}/consolidator-rs2", None, "consolidator")
    await world.step(NOW + 3)
    assert len(world.apps.patches) == 1
    assert world.moves("Roaming", "rollout", "ok") == 1
    assert len(world.core.events) == 2


async def test_a_change_the_watch_never_shows_holds_the_workload_only_for_a_while(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")
    await world.step(NOW + IN_FLIGHT - 1)
    assert len(world.apps.patches) == 1
    world.pod(pod.name, "gw-home", rs="consolidator-rs1")
    await world.step(NOW + IN_FLIGHT)  # then the cache is trusted again
    assert len(world.apps.patches) == 2


async def test_no_second_unpark_before_the_watch_shows_the_first(world: World):
    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW - 60))
    annotations = {PARKED_ANNOTATION: "2"}
    world.rebalancer.observe_replicaset(f"{NS}/reader-rs1", None, "reader")
    world.deployment(
        "reader", function=PARK_CLASS, replicas=0, generation=4, observed=4, annotations=annotations
    )
    await world.step(NOW)
    assert [body["spec"] for _, _, _, body in world.apps.patches] == [{"replicas": 2}]
    # Parked Deployments are planned on every step: the next tick comes before the watch.
    await world.step(NOW + 1.2)
    await world.step(NOW + 2.4)
    assert len(world.apps.patches) == 1
    assert world.moves("DeviceBack", "unpark", "ok") == 1
    # The watch shows the restored Deployment: nothing left to unpark.
    world.deployment("reader", function=PARK_CLASS, replicas=2, generation=5, observed=5)
    await world.step(NOW + 3.6)
    assert len(world.apps.patches) == 1


async def test_no_second_park_before_the_watch_shows_the_first(world: World):
    world.show(wearable(heard={}, nearest=None, since=None))
    pod = world.deploy("reader", "gw-home", function=PARK_CLASS, replicas=2)
    await world.step(NOW)
    await world.step(NOW + AWAY_AFTER)
    assert len(world.apps.patches) == 1
    world.pod(pod.name, "gw-home", function=PARK_CLASS, rs="reader-rs1")  # still running
    await world.step(NOW + AWAY_AFTER + 1)
    assert len(world.apps.patches) == 1
    assert world.moves("DeviceAway", "park", "ok") == 1


async def test_no_second_eviction_before_the_watch_shows_the_pod_leaving(world: World):
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home", max_surge=0)
    await world.step(NOW)
    assert len(world.core.evictions) == 1
    world.show(wearable(at=NOW + 1))  # a heartbeat re-plans the pod, still shown running
    await world.step(NOW + 1)
    assert len(world.core.evictions) == 1
    assert world.moves("Roaming", "evict", "ok") == 1
    assert len(world.core.events) == 2
    # The watch shows it leaving, and its replacement on the hospital's gateway.
    world.delete_pod(pod.key)
    world.pod("consolidator-rs1-p2", "gw-hospital", rs="consolidator-rs1")
    await world.step(NOW + 2)
    assert len(world.core.evictions) == 1
    assert world.rebalancer.evictor.evicted == {}


async def test_a_parked_deployment_whose_pod_still_shows_keeps_its_replica_count(world: World):
    # Parked by a previous step (or leader); the Deployment watch shows it scaled to
    # zero while the pod watch still shows the old pod running.
    world.show(wearable(heard={}, nearest=None, since=None))
    park = recorded(NOW - AWAY_AFTER - 10, "DeviceAway", None)
    pod = world.deploy(
        "reader",
        "gw-home",
        function=PARK_CLASS,
        replicas=0,
        generation=5,
        observed=5,
        annotations={PARKED_ANNOTATION: "3", LAST_MOVE_ANNOTATION: park},
    )
    await world.step(NOW)
    await world.step(NOW + AWAY_AFTER)
    assert world.apps.patches == []  # already parked: nothing to write
    world.delete_pod(pod.key)

    world.show(wearable(heard={"gw-home": -50.0}, nearest="gw-home", since=NOW + 200, at=NOW + 206))
    await world.step(NOW + 206)
    (unpark,) = [body for _, _, _, body in world.apps.patches]
    assert unpark["spec"] == {"replicas": 3}


async def test_a_pod_the_watch_shows_gone_is_forgotten(world: World):
    world.show(wearable(since=NOW - 1))  # settle holds the move: it stays pending
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert pod.uid in world.rebalancer.memory.pending
    assert pod.uid in world.rebalancer._held
    world.delete_pod(pod.key)
    await world.step(NOW + 1)
    assert pod.uid not in world.rebalancer.memory.pending
    assert pod.uid not in world.rebalancer._held


async def test_a_dry_run_move_of_a_pod_the_watch_shows_gone_is_forgotten():
    world = World(dry_run=True)
    world.show(wearable())
    pod = world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert world.moves("Roaming", "rollout", "dry-run") == 1
    assert pod.uid in world.rebalancer.evictor.pretend  # "moved", as far as the dry run goes
    world.delete_pod(pod.key)
    await world.step(NOW + 1)
    assert pod.uid not in world.rebalancer.evictor.pretend  # uids never come back: no leak


async def test_the_park_timer_of_a_deleted_device_is_forgotten(world: World):
    world.show(wearable(heard={}, nearest=None, since=None))  # never heard: the timer starts
    pod = world.deploy("reader", "gw-home", function=PARK_CLASS)
    await world.step(NOW)
    assert "patient" in world.rebalancer.memory.unheard_since
    world.forget_device("patient")  # the Device is deleted, and its function with it
    world.delete_pod(pod.key)
    await world.step(NOW + 1)
    assert "patient" not in world.rebalancer.memory.unheard_since


async def test_a_standby_keeps_its_caches_but_collects_no_work(world: World):
    world.rebalancer.leading = False
    for i in range(50):  # pods come and go under new names, as Deployments do
        pod = world.deploy(f"fn{i}", "gw-home")
        world.delete_pod(pod.key)
    world.show(wearable())
    assert world.rebalancer.dirty == set()
    assert world.rebalancer._gone == set()
    assert not world.rebalancer.wake.is_set()
    kept = world.deploy("kept", "gw-home")
    assert kept.key in world.rebalancer.index.pods  # the index stays current for a new term


# --- review findings: one replica at a time, dry run, unknown outcomes, races -------------


def sts_pod(world: World, name: str, uid: str, node: str = "gw-home") -> PodRecord:
    obj = pod_obj(name, node, "mhealth-consolidator", "patient", None)
    obj["metadata"]["uid"] = uid
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "eng", "controller": True}
    ]
    record = PodRecord.from_pod(obj)
    world.rebalancer.observe_pod(record.key, world.pods.get(record.key), record)
    world.pods[record.key] = record
    return record


async def test_a_statefulset_loses_one_replica_at_a_time_until_it_is_back(world: World):
    world.show(wearable())  # both replicas' gateway is no longer the nearest: forced moves
    sts_pod(world, "eng-0", "u0")
    sts_pod(world, "eng-1", "u1")
    await world.step(NOW)
    assert len(world.core.evictions) == 1
    first = world.core.evictions[0][1]
    for t in (2, 4):  # the gateways' heartbeats re-plan both replicas every time
        world.show(wearable(at=NOW + t))
        await world.step(NOW + t)
    assert len(world.core.evictions) == 1  # the first replica is not back: the other waits
    # The controller recreates it under the same name, elsewhere, and it becomes Ready.
    world.delete_pod(f"{NS}/{first}")
    sts_pod(world, first, "u-new", node="gw-hospital")
    await world.step(NOW + 6)
    assert len(world.core.evictions) == 2
    assert world.core.evictions[1][1] != first


async def test_a_dry_run_announces_a_move_once_per_cooldown():
    world = World(dry_run=True)
    world.show(wearable())
    world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(world.core.events) == 2  # pod and Deployment
    for t in range(1, 120, 3):  # heartbeats re-plan the pod all along (full passes too)
        world.show(wearable(at=NOW + t))
        await world.step(NOW + t)
    assert len(world.core.events) == 2
    await world.step(NOW + 121)  # the default cooldown (2m) is over: said again
    assert len(world.core.events) == 4
    assert world.apps.patches == []


async def test_a_move_whose_answer_never_came_stays_recorded_and_is_not_repeated(world: World):
    async def timeout(*args: Any, **kw: Any) -> dict[str, Any]:
        raise TimeoutError

    world.apps.patch_namespaced_deployment = timeout  # type: ignore[method-assign]
    world.show(wearable())
    world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert world.moves("Roaming", "rollout", "unknown") == 1
    assert [r.workload for r in world.rebalancer.memory.moves] == [f"Deployment/{NS}/consolidator"]
    attempts = world.moves("Roaming", "rollout", "unknown")
    await world.step(NOW + 5)  # in flight: not tried again
    assert world.moves("Roaming", "rollout", "unknown") == attempts


async def test_a_watch_event_faster_than_the_patch_answer_does_not_leave_it_in_flight(
    world: World,
):
    real = world.apps.patch_namespaced_deployment

    async def patch_then_watch(name: str, namespace: str, body: Any, **kw: Any) -> Any:
        answer = await real(name, namespace, body, **kw)
        world.deployment(name, generation=2, observed=1)  # delivered before the answer
        return answer

    world.apps.patch_namespaced_deployment = patch_then_watch  # type: ignore[method-assign]
    world.show(wearable())
    world.deploy("consolidator", "gw-home")
    await world.step(NOW)
    assert len(world.apps.patches) == 1
    assert world.rebalancer.evictor.changed == {}  # the watch already showed the change


def test_deleted_replicasets_leave_no_record() -> None:
    workloads = Workloads()
    for i in range(100):
        workloads.observe_rs(f"{NS}/rs{i}", None, "dep")
        workloads.observe_rs(f"{NS}/orphan{i}", None, None)  # no Deployment owns it
    for i in range(100):
        workloads.observe_rs(f"{NS}/rs{i}", "dep", None)
        workloads.observe_rs(f"{NS}/orphan{i}", None, None)
    assert workloads.replicasets == {}
    assert dict(workloads.rs_of) == {}
