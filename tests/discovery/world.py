"""What the discovery e2e tests read back from the apiserver."""

from __future__ import annotations

from typing import Any

from kubernetes.aio.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from cloud4iot.devices import GROUP, PLURAL, VERSION
from cloud4iot.vocabulary import CLASS_LABEL


async def devices_of(custom: CustomObjectsApi, cls: str) -> dict[str, dict[str, Any]]:
    """The class's Devices by name."""
    items = await custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, label_selector=f"{CLASS_LABEL}={cls}"
    )
    return {d["metadata"]["name"]: d for d in items["items"]}


async def deployments(apps: AppsV1Api, namespace: str) -> dict[str, Any]:
    """The namespace's Deployments by name."""
    listing = await apps.list_namespaced_deployment(namespace)
    return {d.metadata.name: d for d in listing.items}


async def device_reasons(core: CoreV1Api, name: str) -> set[str]:
    """The reasons of the Events recorded on the Device (in `default`)."""
    events = await core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}"
    )
    return {e.reason for e in events.items if e.involved_object.kind == "Device"}
