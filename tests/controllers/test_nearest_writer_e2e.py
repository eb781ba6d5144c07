"""The nearest writer's writes on the devcluster's apiserver, for Devices that are gone."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.devices import GROUP, PLURAL, VERSION
from extender.controllers.nearest_writer import NearestWriter
from extender.scoring.nearest import NearestState
from extender.state.store import StateStore
from tests.gateway_monitor.node_tokens import admin_client

pytestmark = pytest.mark.cluster


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    async with admin_client(devcluster.kubeconfig) as client:
        yield client


@pytest.mark.parametrize("gateway", ["gw-hospital", None])
async def test_a_nearest_write_for_a_deleted_device_is_refused_and_makes_nothing(
    admin: ApiClient, gateway: str | None
) -> None:
    """The Device deleted between the decision and its write: the server-side apply (or
    the merge patch removing it) of status.nearest is a 404, and no Device is made."""
    custom = CustomObjectsApi(admin)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {"address": "C0:FF:EE:26:00:01"},
    }
    await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    writer = NearestWriter(custom, None, None, StateStore())  # type: ignore[arg-type]
    now = time.time()
    with pytest.raises(ApiException) as refused:
        await writer._write(name, NearestState(gateway, since=now), now, -60.0)
    assert refused.value.status == 404
    with pytest.raises(ApiException) as absent:
        await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    assert absent.value.status == 404
