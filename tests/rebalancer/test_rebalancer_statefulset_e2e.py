"""A StatefulSet replica's move record survives a leader change, on the devcluster.

A StatefulSet is moved by evicting its replica (recreated under the same name by the
controller, placed by the scheduler through the extender); the move is recorded on the
StatefulSet. A new leader reads it back at the start of its term, so when the wearable
comes straight back, the replica is not sent back inside the cooldown (no ping-pong) just
because the leader changed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
import yaml
from kubernetes import client
from rebalancer_e2e_helpers import (
    Radio,
    extra_rebalancer,
    fast_policy,
    function_deployment,
    only_pod,
    policy_version,
    readyz,
    until,
)

from cloud4iot.vocabulary import LAST_MOVE_ANNOTATION
from devcluster import kube
from devcluster.cluster import Devcluster
from tests.state.cluster_helpers import create_device, device_status

pytestmark = pytest.mark.cluster
MHEALTH = "mhealth-consolidator"
COOLDOWN = 60.0  # longer than a leader change (a 15 s lease) with room to watch the hold


@contextmanager
def long_cooldown(cluster: Devcluster) -> Iterator[None]:
    original = cluster.policy_file.read_text()
    doc = yaml.safe_load(fast_policy(original))
    doc["spec"]["rebalance"]["cooldown"] = f"{COOLDOWN:.0f}s"
    doc["metadata"]["name"] = "e2e-sts"
    cluster.write_policy(yaml.safe_dump(doc, sort_keys=False))
    try:
        for url in (cluster.extender_url, cluster.rebalancer_url):
            until("the policy", lambda u=url: policy_version(u).startswith("e2e-sts@"), 30)
        yield
    finally:
        cluster.write_policy(original)


def nearest(api: client.ApiClient, device: str) -> str | None:
    node = (device_status(api, device).get("nearest") or {}).get("node")
    return node if isinstance(node, str) else None


def statefulset(name: str, device: str) -> dict[str, object]:
    spec = function_deployment(name, MHEALTH, device)["spec"]
    spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_new_leader_does_not_send_a_statefulset_replica_back_inside_the_cooldown(
    devcluster: Devcluster, kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    radio = Radio(kube_api)
    try:
        with long_cooldown(devcluster), extra_rebalancer(devcluster) as standby:
            device = f"dev-{uuid.uuid4().hex[:8]}"
            create_device(kube_api, device, f"C0:FF:EE:{uuid.uuid4().hex[:2]}:00:02".upper())
            radio.set(device, "gw-home", -55)
            until("gw-home nearest", lambda: nearest(kube_api, device) == "gw-home")
            apps.create_namespaced_stateful_set(namespace, statefulset("eng", device))
            app = "app=eng"
            first = until("eng-0 bound", lambda: only_pod(kube_api, namespace, app), 60)
            assert kube.node_of(first) == "gw-home"

            radio.set(device, "gw-hospital", -50)
            radio.set(device, "gw-home", -80)

            def on(node: str, uid: str | None = None) -> client.V1Pod | None:
                pod = only_pod(kube_api, namespace, app)
                if pod is None or kube.node_of(pod) != node:
                    return None
                return pod if uid is None or pod.metadata.uid == uid else None

            moved = until("eng-0 on gw-hospital", lambda: on("gw-hospital"), 90)

            def note() -> dict[str, object] | None:
                sts = apps.read_namespaced_stateful_set("eng", namespace)
                raw = (sts.metadata.annotations or {}).get(LAST_MOVE_ANNOTATION)
                return orjson.loads(raw) if raw else None

            record = until("the move recorded on the StatefulSet", note, 30)
            assert record["from"] == "gw-home"
            moved_at = float(record["at"])  # type: ignore[arg-type]

            leader = devcluster.state().components["rebalancer"].pid
            assert leader is not None
            os.killpg(os.getpgid(leader), signal.SIGKILL)  # a crash: no Lease handed back
            try:
                radio.set(device, "gw-home", -50)  # the patient walks straight back
                radio.set(device, "gw-hospital", -80)
                until("the standby leads", lambda: readyz(standby)["leading"], 40)
                led_at = time.time()
                until("gw-home nearest again", lambda: nearest(kube_api, device) == "gw-home")
                hold_until = moved_at + COOLDOWN - 3
                # the new leader must have planned with the wearable back for a while
                assert hold_until - max(led_at, time.time()) > 10, "leader change too slow"
                while time.time() < hold_until:
                    assert on("gw-hospital", moved.metadata.uid) is not None, (
                        f"moved back {time.time() - moved_at:.0f}s after the first move,"
                        f" inside the {COOLDOWN:.0f}s cooldown"
                    )
                    time.sleep(0.5)
                # the hold was the cooldown: once over, the replica follows the wearable
                until("eng-0 back on gw-home", lambda: on("gw-home"), 60)
            finally:
                devcluster.start_component("rebalancer")
        until(
            "the devcluster's rebalancer leads again",
            lambda: readyz(devcluster.rebalancer_url)["leading"],
            40,
        )
    finally:
        radio.close()
