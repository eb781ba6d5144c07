"""Manifests the end-to-end tests create."""

from __future__ import annotations

from typing import Any

from kubernetes import client

SCHEDULER = "cloud4iot-scheduler"
FUNCTION_ANNOTATION = "cloud4iot.io/function"


def deployment(
    name: str,
    *,
    replicas: int = 1,
    function: str | None = None,
    scheduler: str = SCHEDULER,
    node_selector: dict[str, str] | None = None,
    cpu: str = "100m",
    memory: str = "64Mi",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment of a stand-in IoT function (kwok never pulls the image)."""
    annotations = {**(annotations or {}), **({FUNCTION_ANNOTATION: function} if function else {})}
    pod_spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [
            {
                "name": "function",
                "image": "registry.invalid/cloud4iot/function:test",
                "resources": {"requests": {"cpu": cpu, "memory": memory}},
            }
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def bare_pod(
    name: str,
    annotations: dict[str, str],
    *,
    scheduler: str = SCHEDULER,
    spec: dict[str, Any] | None = None,
    cpu: str = "100m",
    memory: str = "64Mi",
) -> dict[str, Any]:
    """A Pod of a stand-in IoT function, without a controller; `spec` entries are added."""
    body: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [
            {
                "name": "function",
                "image": "registry.invalid/cloud4iot/function:test",
                "resources": {"requests": {"cpu": cpu, "memory": memory}},
            }
        ],
        **(spec or {}),
    }
    return {"metadata": {"name": name, "annotations": annotations}, "spec": body}


def create_pod(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the pod; the object as admitted (after mutation), in its JSON form."""
    created = client.CoreV1Api(api).create_namespaced_pod(namespace, manifest)
    out: dict[str, Any] = api.sanitize_for_serialization(created)
    return out
