"""A refused policy reload leaves a Warning Event on the refusing component's Pod.

Pure parts (the message, the Event, the Pod from the Downward API), then both services
as they run: their app on the devcluster's real apiserver, a policy file edited badly,
the Event found the way `kubectl describe pod` finds it (by the Pod's uid).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cloud4iot.policy.loader import PolicyError, Problem
from cloud4iot.policy.store import PolicyStore
from cloud4iot.reload_events import (
    MESSAGE_MAX,
    REASON,
    PodRef,
    refused_event,
    refused_message,
)
from devcluster import kube
from extender.app import create_app
from extender.settings import Settings
from extender.state.store import StateStore
from rebalancer.app import create_rebalancer_app
from rebalancer.settings import RebalancerSettings
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"


def test_the_message_names_file_line_field_and_the_policy_kept() -> None:
    error = PolicyError(
        [
            Problem("/etc/cloud4iot/policy.yaml", 12, "spec.weights.proximity", "must be >= 0"),
            Problem("/etc/cloud4iot/policy.yaml", 3, "", "unknown key 'spek'"),
        ]
    )
    message = refused_message(error, "default@0123456789ab")
    assert message == (
        "policy reload refused, keeping default@0123456789ab: "
        "/etc/cloud4iot/policy.yaml:3: unknown key 'spek'; "
        "/etc/cloud4iot/policy.yaml:12: spec.weights.proximity: must be >= 0"
    )


def test_many_problems_are_counted_and_the_message_bounded() -> None:
    problems = [Problem("p.yaml", n, f"spec.f{n}", "x" * 400) for n in range(1, 9)]
    message = refused_message(PolicyError(problems), "default@0123")
    assert len(message) == MESSAGE_MAX
    assert "p.yaml:1: spec.f1" in message
    short = [Problem("p.yaml", n, f"spec.f{n}", "bad") for n in range(1, 9)]
    assert refused_message(PolicyError(short), "v").endswith("p.yaml:5: spec.f5: bad (and 3 more)")


def test_the_event_is_a_warning_on_the_pod_with_its_uid() -> None:
    pod = PodRef("cloud4iot-system", "cloud4iot-extender-7d9f-abcde", "u-1")
    event = refused_event(pod, "cloud4iot-extender", "i-1", "why", 0.0)
    assert event["type"] == "Warning"
    assert event["reason"] == REASON
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "cloud4iot-system",
        "name": "cloud4iot-extender-7d9f-abcde",
        "uid": "u-1",
    }
    assert event["metadata"]["namespace"] == "cloud4iot-system"
    assert event["reportingComponent"] == "cloud4iot-extender"


def test_the_pod_comes_from_the_downward_api_or_there_is_none() -> None:
    env = {"POD_NAMESPACE": "ns", "POD_NAME": "p", "POD_UID": "u"}
    assert PodRef.from_env(env) == PodRef("ns", "p", "u")
    assert PodRef.from_env({"POD_NAMESPACE": "ns"}) is None  # a host process: no Event
    assert PodRef.from_env({"POD_NAME": "p"}) is None


def _a_pod(kube_api: client.ApiClient, namespace: str) -> Any:
    body = {
        "metadata": {"name": f"svc-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "c", "image": "cloud4iot/extender:0.1.0"}]},
    }
    return client.CoreV1Api(kube_api).create_namespaced_pod(
        namespace, kube.model(client.V1Pod, body)
    )


def _app(kind: str, policy: Path, kubeconfig: Path) -> Any:
    if kind == "extender":
        settings = Settings(
            policy_path=policy,
            kubeconfig=kubeconfig,
            leader_election=False,  # the devcluster's own extender holds the Lease
            policy_poll_interval=0.2,
        )
        return create_app(settings, policy=PolicyStore.open(policy), state=StateStore())
    return create_rebalancer_app(
        RebalancerSettings(
            policy_path=policy,
            kubeconfig=kubeconfig,
            dry_run=True,  # it may win its own Lease here: it must change nothing
            lease_name=f"t-{uuid.uuid4().hex[:8]}",
            policy_poll_interval=0.2,
        )
    )


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["extender", "rebalancer"])
async def test_a_refused_reload_is_a_warning_on_the_pod_and_each_new_refusal_another(
    aiohttp_client: Any,
    devcluster: Any,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    pod = _a_pod(kube_api, namespace)
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    monkeypatch.setenv("POD_NAME", pod.metadata.name)
    monkeypatch.setenv("POD_UID", pod.metadata.uid)
    policy = tmp_path / "policy.yaml"
    good = DEFAULT.read_text()
    policy.write_text(good)
    await aiohttp_client(_app(kind, policy, Path(devcluster.kubeconfig)))
    core = client.CoreV1Api(kube_api)

    def warnings() -> list[Any]:
        # as `kubectl describe pod` finds them: by the object's kind, name and uid
        selector = (
            f"involvedObject.kind=Pod,involvedObject.name={pod.metadata.name},"
            f"involvedObject.uid={pod.metadata.uid}"
        )
        items = core.list_namespaced_event(namespace, field_selector=selector).items
        return [e for e in items if e.reason == REASON]

    await asyncio.sleep(1.0)
    assert warnings() == []  # a good policy records nothing
    # a field the schema refuses, on a line of its own
    policy.write_text(good + "bogusTopLevelKey: 1\n")
    await eventually(lambda: len(warnings()) == 1, 20, "the PolicyRefused Warning", interval=0.2)
    (event,) = warnings()
    assert event.type == "Warning"
    assert event.involved_object.namespace == namespace
    line = len(good.splitlines()) + 1
    assert f"{policy}:{line}: bogusTopLevelKey" in event.message
    assert event.message.startswith("policy reload refused, keeping default@")
    # unchanged bad bytes: no second Event; another bad edit: another one
    await asyncio.sleep(1.0)
    assert len(warnings()) == 1
    policy.write_text(good + "bogusTopLevelKey: 2\n")
    await eventually(lambda: len(warnings()) == 2, 20, "a second Warning", interval=0.2)
    # fixed: nothing more
    policy.write_text(good)
    await asyncio.sleep(1.0)
    assert len(warnings()) == 2
