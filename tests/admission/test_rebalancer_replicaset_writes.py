"""A bare ReplicaSet's move record, written by the rebalancer's own token on the real
apiserver under the shipped RBAC and policies (manifests/placement/rebalancer/rbac.yaml,
controller-writes/rebalancer-writes.yaml): the Evictor's eviction of its pod records the
move in the ReplicaSet's annotations (a new leader reads it there), and nothing else of
the ReplicaSet may change with that token."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from kubernetes.aio.client import ApiClient, AppsV1Api, CoreV1Api

from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION, MOVES_ANNOTATION
from rebalancer.evictor import Evictor
from rebalancer.model import Kind, Workload
from rebalancer.workloads import Workloads
from tests.admission.test_controller_writes_admission import (
    APPS,
    MERGE,
    REBALANCER,
    REBALANCER_WORKLOADS,
    _delete,
    _privileged,
    _template,
    allowed,
    as_sa,
    eviction_of_a_pod,
    refused,
)
from tests.admission.test_controller_writes_admission import admin as admin  # the fixture
from tests.waiting import eventually

pytestmark = pytest.mark.cluster


def _replicaset(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
        },
    }


async def test_the_rebalancer_records_a_bare_replicasets_move_and_changes_nothing_else(
    admin: ApiClient, devcluster: Any
) -> None:
    apps = AppsV1Api(admin)
    sa = await as_sa(devcluster, REBALANCER)
    reb = AppsV1Api(sa)
    evictor = Evictor(
        CoreV1Api(sa),
        reb,
        policy=cast(Any, None),
        index=cast(Any, None),
        workloads=Workloads(),
        metrics=cast(Any, None),
    )
    name = "writes-bare-rs"
    await _delete(apps.delete_namespaced_replica_set, name, APPS)
    await apps.create_namespaced_replica_set(APPS, _replicaset(name))
    try:
        evict = await eviction_of_a_pod(admin, Workload(Kind.REPLICA_SET, APPS, name, replicas=1))
        assert await allowed(lambda: evictor._act(evict, time.time()), "the RBAC") == "ok"

        async def recorded() -> bool:
            got = await apps.read_namespaced_replica_set(name, APPS)
            return LAST_MOVE_ANNOTATION in (got.metadata.annotations or {})

        await eventually(recorded, within=10, what="the move recorded on the ReplicaSet")
        got = await apps.read_namespaced_replica_set(name, APPS)
        assert MOVES_ANNOTATION in got.metadata.annotations
        assert got.spec.replicas == 1  # the record only
        # The token may not change anything else of a ReplicaSet.
        for patch in (
            {"spec": {"replicas": 0}},
            {"spec": {"template": _privileged(name)}},
            {"metadata": {"annotations": {"example.com/other": "1"}}},
        ):
            await refused(
                lambda p=patch: reb.patch_namespaced_replica_set(
                    name, APPS, p, dry_run="All", _content_type=MERGE
                ),
                REBALANCER_WORKLOADS,
            )
    finally:
        await _delete(apps.delete_namespaced_replica_set, name, APPS)
        await sa.close()
