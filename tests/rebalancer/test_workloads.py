"""Pods, ReplicaSets and Deployments as the rebalancer reads them, and PodIndex.

Objects are the raw JSON dicts the reflectors hand to the parsers; every test
states the fields it depends on.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cloud4iot.vocabulary import (
    DEVICE_ANNOTATION,
    FUNCTION_ANNOTATION,
    LAST_MOVE_ANNOTATION,
    MODE_ANNOTATION,
    PARKED_ANNOTATION,
)
from rebalancer.workloads import (
    DeploymentRecord,
    MoveNote,
    PodIndex,
    PodRecord,
    deployment_of,
    move_note_json,
    replicaset_owner,
)


def pod_obj(
    name: str = "fn-abc",
    *,
    namespace: str | None = "health",
    node: str | None = "gw-home",
    function: str | None = "mhealth-consolidator",
    device: str | None = "patient",
    phase: str = "Running",
    ready: str | None = "True",
    deleting: bool = False,
    owner: tuple[str, str] | None = ("ReplicaSet", "fn-rs1"),
    controller: bool = True,
    started: Any = "2024-01-01T00:00:00Z",
) -> dict[str, Any]:
    annotations = {}
    if function is not None:
        annotations[FUNCTION_ANNOTATION] = function
    if device is not None:
        annotations[DEVICE_ANNOTATION] = device
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "annotations": annotations}
    if namespace is not None:
        meta["namespace"] = namespace
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": controller}
        ]
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:01:00Z"
    spec: dict[str, Any] = {"schedulerName": "cloud4iot-scheduler"}
    if node is not None:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if ready is not None:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": ready},
        ]
    if started is not None:
        status["startTime"] = started
    return {"metadata": meta, "spec": spec, "status": status}


# --- PodRecord.from_pod ---------------------------------------------------------------


def test_pod_record_reads_a_running_ready_managed_pod():
    p = PodRecord.from_pod(pod_obj())
    assert (p.key, p.uid, p.namespace, p.name) == (
        "health/fn-abc",
        "uid-fn-abc",
        "health",
        "fn-abc",
    )
    assert p.node == "gw-home"
    assert p.owner == ("ReplicaSet", "fn-rs1")
    assert (p.facts.function, p.facts.device) == ("mhealth-consolidator", "patient")
    assert p.ready is True
    assert p.deleting is False
    assert p.phase == "Running"
    assert p.started == 1704067200.0
    assert p.managed is True
    assert p.running is True


def test_pod_record_ready_needs_a_true_ready_condition():
    assert PodRecord.from_pod(pod_obj(ready="False")).ready is False
    assert PodRecord.from_pod(pod_obj(ready=None)).ready is False
    odd = pod_obj()
    odd["status"]["conditions"] = ["garbage", {"type": "Ready", "status": "True"}]
    assert PodRecord.from_pod(odd).ready is True


def test_a_deleting_pod_is_not_running():
    p = PodRecord.from_pod(pod_obj(deleting=True))
    assert p.deleting is True
    assert p.running is False
    assert p.managed is True  # still indexed: its deletion is news to the planner


@pytest.mark.parametrize(
    ("changes", "running"),
    [
        ({"phase": "Pending"}, False),
        ({"phase": "Succeeded"}, False),
        ({"node": None}, False),
        ({}, True),
    ],
)
def test_running_needs_a_node_and_phase_running(changes: dict[str, Any], running: bool):
    assert PodRecord.from_pod(pod_obj(**changes)).running is running


def test_pod_record_owner_is_the_controlling_reference_only():
    assert PodRecord.from_pod(pod_obj(owner=None)).owner is None
    assert PodRecord.from_pod(pod_obj(owner=("ReplicaSet", "x"), controller=False)).owner is None
    assert PodRecord.from_pod(pod_obj(owner=("StatefulSet", "db"))).owner == ("StatefulSet", "db")


def test_pod_record_defaults_and_unmanaged():
    p = PodRecord.from_pod(pod_obj(namespace=None, started=None, function=None))
    assert p.key == "default/fn-abc"
    assert p.started is None
    assert p.managed is False  # no class annotation: not ours to move
    assert PodRecord.from_pod(pod_obj(started="not a time")).started is None


def test_pod_record_without_a_name_is_refused():
    with pytest.raises(ValueError, match=r"metadata\.name"):
        PodRecord.from_pod({"metadata": {"namespace": "x"}})
    with pytest.raises(ValueError, match=r"metadata\.name"):
        PodRecord.from_pod({})


def test_replicaset_owner_is_its_controlling_deployment():
    def rs(owner: tuple[str, str] | None, controller: bool = True) -> dict[str, Any]:
        obj = pod_obj("fn-rs1", owner=owner, controller=controller)
        return {"metadata": obj["metadata"]}

    assert replicaset_owner(rs(("Deployment", "fn"))) == "fn"
    assert replicaset_owner(rs(("Deployment", "fn"), controller=False)) is None
    assert replicaset_owner(rs(("SomethingElse", "fn"))) is None
    assert replicaset_owner(rs(None)) is None


# --- DeploymentRecord.from_deployment -------------------------------------------------


def deployment_obj(
    name: str = "fn",
    *,
    replicas: Any = 1,
    strategy: dict[str, Any] | None = None,
    generation: int = 3,
    observed: int | None = 3,
    updated: int | None = None,
    ready: int | None = None,
    status_replicas: int | None = None,
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    n = replicas if isinstance(replicas, int) else 1
    spec: dict[str, Any] = {
        "template": {
            "metadata": {
                "annotations": {
                    FUNCTION_ANNOTATION: "mhealth-consolidator",
                    DEVICE_ANNOTATION: "patient",
                    MODE_ANNOTATION: "intensive",
                }
            }
        }
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if strategy is not None:
        spec["strategy"] = strategy
    status: dict[str, Any] = {
        "updatedReplicas": n if updated is None else updated,
        "readyReplicas": n if ready is None else ready,
        "replicas": n if status_replicas is None else status_replicas,
    }
    if observed is not None:
        status["observedGeneration"] = observed
    meta: dict[str, Any] = {"name": name, "namespace": "health", "generation": generation}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec, "status": status}


def test_deployment_record_basics_and_template_facts():
    d = DeploymentRecord.from_deployment(deployment_obj(replicas=2))
    assert (d.key, d.namespace, d.name, d.replicas) == ("health/fn", "health", "fn", 2)
    assert (d.template.function, d.template.device, d.template.mode) == (
        "mhealth-consolidator",
        "patient",
        "intensive",
    )
    assert (d.template.name, d.template.namespace) == ("fn", "health")
    assert d.parked_replicas is None
    assert d.last_move is None
    assert d.settled is True


def test_deployment_record_keeps_the_generation():
    assert DeploymentRecord.from_deployment(deployment_obj(generation=7)).generation == 7
    missing = deployment_obj()
    del missing["metadata"]["generation"]
    assert DeploymentRecord.from_deployment(missing).generation == 0


def test_default_strategy_surges_even_for_one_replica():
    # RollingUpdate with maxSurge 25 %: 25 % of 1 rounds up to 1 extra pod.
    assert DeploymentRecord.from_deployment(deployment_obj()).can_surge is True
    assert DeploymentRecord.from_deployment(deployment_obj(replicas=None)).replicas == 1


@pytest.mark.parametrize(
    ("strategy", "can_surge"),
    [
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, False),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "0%"}}, False),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "garbage%"}}, False),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, True),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "1%"}}, True),
        ({"type": "RollingUpdate"}, True),
        ({"type": "Recreate"}, False),
    ],
)
def test_can_surge_follows_the_strategy(strategy: dict[str, Any], can_surge: bool):
    d = DeploymentRecord.from_deployment(deployment_obj(strategy=strategy))
    assert d.can_surge is can_surge


def test_scaled_to_zero_judges_surge_as_for_one_replica():
    d = DeploymentRecord.from_deployment(deployment_obj(replicas=0))
    assert d.replicas == 0
    assert d.can_surge is True


@pytest.mark.parametrize(
    "changes",
    [
        {"observed": 2},  # the controller has not seen the last spec change
        {"observed": None},
        {"updated": 0},  # a rollout is replacing replicas
        {"ready": 0},  # the new replica is not Ready yet
        {"status_replicas": 2},  # the surge replica still exists
    ],
)
def test_not_settled_while_a_rollout_is_in_progress(changes: dict[str, Any]):
    assert DeploymentRecord.from_deployment(deployment_obj(**changes)).settled is False


def test_settled_when_observed_generation_is_ahead_and_counts_match():
    d = DeploymentRecord.from_deployment(deployment_obj(generation=3, observed=4, replicas=2))
    assert d.settled is True


@pytest.mark.parametrize(
    ("raw", "parked"),
    [("3", 3), ("0", 0), ("-1", None), ("2.5", None), ("", None), ("three", None), (3, None)],
)
def test_parked_replicas_annotation_is_digits_only(raw: Any, parked: int | None):
    d = DeploymentRecord.from_deployment(deployment_obj(annotations={PARKED_ANNOTATION: raw}))
    assert d.parked_replicas == parked


def test_last_move_round_trips_through_the_annotation():
    note = MoveNote(1_700_000_000.1234, "Roaming", "gw-home", "gw-hospital", "patient")
    raw = move_note_json(note)
    assert orjson.loads(raw) == {
        "at": 1_700_000_000.123,
        "reason": "Roaming",
        "from": "gw-home",
        "to": "gw-hospital",
        "device": "patient",
    }
    d = DeploymentRecord.from_deployment(deployment_obj(annotations={LAST_MOVE_ANNOTATION: raw}))
    assert d.last_move == MoveNote(
        1_700_000_000.123, "Roaming", "gw-home", "gw-hospital", "patient"
    )
    park = move_note_json(MoveNote(5.0, "DeviceAway", "gw-home", None, None))
    d = DeploymentRecord.from_deployment(deployment_obj(annotations={LAST_MOVE_ANNOTATION: park}))
    assert d.last_move == MoveNote(5.0, "DeviceAway", "gw-home", None, None)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"reason": "Roaming", "from": "a"}',  # no "at"
        '{"at": "soon", "reason": "Roaming", "from": "a"}',
        '{"at": 1, "from": "a"}',  # no reason
        "",
        42,
        None,
    ],
)
def test_garbage_last_move_is_tolerated(raw: Any):
    d = DeploymentRecord.from_deployment(deployment_obj(annotations={LAST_MOVE_ANNOTATION: raw}))
    assert d.last_move is None
    assert d.name == "fn"  # the rest of the record is intact


def test_deployment_of_follows_pod_replicaset_deployment():
    d = DeploymentRecord.from_deployment(deployment_obj())
    p = PodRecord.from_pod(pod_obj())
    assert deployment_of(p, {"health/fn-rs1": "fn"}, {"health/fn": d}) is d
    assert deployment_of(p, {"health/fn-rs1": None}, {"health/fn": d}) is None
    assert deployment_of(p, {}, {"health/fn": d}) is None
    bare = PodRecord.from_pod(pod_obj(owner=None))
    assert deployment_of(bare, {"health/fn-rs1": "fn"}, {"health/fn": d}) is None
    # A StatefulSet's pod is no Deployment's, even when a ReplicaSet of that name leads
    # to one: the rebalancer must not roll a Deployment for it.
    stateful = PodRecord.from_pod(pod_obj(owner=("StatefulSet", "fn-rs1")))
    assert stateful.owner == ("StatefulSet", "fn-rs1")
    assert deployment_of(stateful, {"health/fn-rs1": "fn"}, {"health/fn": d}) is None


# --- PodIndex ----------------------------------------------------------------------------


def rec(name: str, node: str | None = "gw-home", device: str | None = "patient", **kw: Any):
    return PodRecord.from_pod(pod_obj(name, node=node, device=device, **kw))


def assert_exact(index: PodIndex) -> None:
    """Every bucket holds exactly the keys of the indexed pods that belong in it."""
    by_device: dict[str, set[str]] = {}
    by_node: dict[str, set[str]] = {}
    by_owner: dict[tuple[str, str, str], set[str]] = {}
    for key, p in index.pods.items():
        if p.facts.device is not None:
            by_device.setdefault(p.facts.device, set()).add(key)
        if p.node is not None:
            by_node.setdefault(p.node, set()).add(key)
        if p.owner is not None:
            by_owner.setdefault((p.namespace, *p.owner), set()).add(key)
    assert dict(index.by_device) == by_device
    assert dict(index.by_node) == by_node
    assert dict(index.by_owner) == by_owner


def test_pod_index_add_modify_delete_keeps_every_bucket_exact():
    index = PodIndex()
    a = rec("a", node=None)  # pending: no node yet
    index.observe(a.key, None, a)
    assert_exact(index)
    assert index.by_device == {"patient": {"health/a"}}
    assert dict(index.by_node) == {}

    a2 = rec("a")  # scheduled to gw-home
    index.observe(a.key, a, a2)
    b = rec("b", device="engine", owner=("StatefulSet", "db"))
    index.observe(b.key, None, b)
    assert_exact(index)
    assert index.by_node == {"gw-home": {"health/a", "health/b"}}

    a3 = rec("a", node="gw-hospital", device="other")  # node and device change
    index.observe(a.key, a2, a3)
    assert_exact(index)
    assert index.by_node == {"gw-home": {"health/b"}, "gw-hospital": {"health/a"}}
    assert index.by_device == {"other": {"health/a"}, "engine": {"health/b"}}
    assert "patient" not in index.by_device  # empty buckets are dropped

    index.observe(b.key, b, None)
    assert_exact(index)
    assert set(index.pods) == {"health/a"}
    assert ("health", "StatefulSet", "db") not in index.by_owner

    index.observe(a.key, a3, None)
    assert_exact(index)
    assert index.pods == {}
    assert (dict(index.by_device), dict(index.by_node), dict(index.by_owner)) == ({}, {}, {})


def test_unmanaged_pods_are_never_indexed_and_losing_the_class_unindexes():
    index = PodIndex()
    plain = rec("plain", function=None)
    index.observe(plain.key, None, plain)
    assert index.pods == {}
    assert (dict(index.by_device), dict(index.by_node), dict(index.by_owner)) == ({}, {}, {})
    managed = rec("m")
    index.observe(managed.key, None, managed)
    unmanaged = rec("m", function=None)
    index.observe(managed.key, managed, unmanaged)
    assert index.pods == {}
    assert (dict(index.by_device), dict(index.by_node), dict(index.by_owner)) == ({}, {}, {})
    index.observe(managed.key, unmanaged, None)  # deleting an unindexed pod is harmless
    assert index.pods == {}


def test_a_relist_that_reports_an_unchanged_pod_keeps_it_indexed_once():
    index = PodIndex()
    a = rec("a")
    index.observe(a.key, None, a)
    index.observe(a.key, a, a)
    assert index.pods == {a.key: a}
    assert_exact(index)


def test_keys_for_unions_devices_nodes_and_owners():
    index = PodIndex()
    pods = [
        rec("a", node="gw-home", device="d1", owner=("ReplicaSet", "rs-a")),
        rec("b", node="gw-hospital", device="d1", owner=("ReplicaSet", "rs-b")),
        rec("c", node="edge-1", device="d2", owner=("ReplicaSet", "rs-a")),
        rec("d", node="cloud-1", device=None, owner=None),
    ]
    for p in pods:
        index.observe(p.key, None, p)
    assert index.keys_for() == set()
    assert index.keys_for(devices=["d1"]) == {"health/a", "health/b"}
    assert index.keys_for(nodes=["edge-1", "cloud-1"]) == {"health/c", "health/d"}
    assert index.keys_for(owners=[("health", "ReplicaSet", "rs-a")]) == {"health/a", "health/c"}
    assert index.keys_for(owners=[("other", "ReplicaSet", "rs-a")]) == set()
    assert index.keys_for(devices=["d2"], nodes=["gw-home"], owners=[]) == {"health/a", "health/c"}
    assert index.keys_for(devices=["nobody"], nodes=["nowhere"]) == set()
    # Lookups never create buckets.
    assert "nobody" not in index.by_device
    assert "nowhere" not in index.by_node


def test_the_moves_list_keeps_the_last_ten_in_order_and_survives_a_bad_value():
    import orjson

    from rebalancer.workloads import MOVES_KEPT, MoveNote, moves_json

    raw: str | None = None
    for i in range(MOVES_KEPT + 3):
        raw = moves_json(raw, MoveNote(float(i), "Roaming", f"gw-{i}", f"gw-{i + 1}", "d"))
    moves = orjson.loads(raw)
    assert [m["at"] for m in moves] == [float(i) for i in range(3, MOVES_KEPT + 3)]
    assert moves[-1] == {
        "at": 12.0,
        "reason": "Roaming",
        "from": "gw-12",
        "to": "gw-13",
        "device": "d",
    }
    assert len(raw) < 2000  # far below the 256 KiB annotation limit
    # Edited by hand into something else: the list starts afresh, the move is kept.
    for bad in ("not json", '{"a": 1}', "[1, 2]"):
        fresh = orjson.loads(moves_json(bad, MoveNote(1.0, "Offloading", "a", "b", None)))
        assert [m["reason"] for m in fresh] == ["Offloading"]


def test_a_deployment_record_carries_its_moves_annotation():
    from rebalancer.workloads import DeploymentRecord

    obj = {
        "metadata": {
            "name": "d",
            "namespace": "n",
            "annotations": {"cloud4iot.io/moves": '[{"at": 1}]'},
        },
        "spec": {"replicas": 1, "template": {"metadata": {}}},
    }
    assert DeploymentRecord.from_deployment(obj).moves == '[{"at": 1}]'
