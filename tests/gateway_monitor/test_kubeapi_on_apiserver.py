"""The monitor's own apiserver client (gateway_monitor.kubeapi, issue 23 item 4) against
the real devcluster apiserver: list and watch (a watch from a compacted-away version is
410 Gone, and list_watch lists again), a projected token file re-read when it changes,
server-side apply conflicts and force, and the sighting authorization: with a token
bound to a pod on its node the monitor writes its own report and Lease, and the
apiserver's admission policies refuse another gateway's, as a clear ApiError."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio.client import ApiClient

from cloud4iot.devices import (
    API_VERSION,
    APPLY_PATCH,
    GROUP,
    PLURAL,
    REPORT_KIND,
    REPORT_PLURAL,
    VERSION,
    gateway_field_manager,
)
from gateway_monitor.kubeapi import ApiError, KubeApi, from_kubeconfig
from gateway_monitor.lease import LeaseConfig, LeaseRenewer, lease_body
from gateway_monitor.listwatch import list_watch
from gateway_monitor.report import report_body, write_report
from tests.gateway_monitor.node_tokens import (
    NAMESPACE,
    UNBOUND,
    admin_client,
    node_bound_clients,
)
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

HOME, HOSPITAL = "gw-home", "gw-hospital"


def token_kubeconfig(admin_kubeconfig: Path, out: Path, token_file: Path) -> Path:
    """The admin kubeconfig's server and CA, but as a user only the token in
    `token_file` (how a monitor outside a pod would be given its identity)."""
    doc = yaml.safe_load(admin_kubeconfig.read_text())
    base = admin_kubeconfig.parent
    for cluster in doc["clusters"]:
        ca = cluster["cluster"].get("certificate-authority")
        if ca:
            cluster["cluster"]["certificate-authority"] = str(base / ca)
    doc["users"] = [
        {"name": u["name"], "user": {"tokenFile": str(token_file)}} for u in doc["users"]
    ]
    out.write_text(yaml.safe_dump(doc))
    return out


def bearer(client: ApiClient) -> str:
    return str(client.configuration.api_key["BearerToken"])


@pytest.fixture
async def admin_api(devcluster: Any) -> AsyncIterator[KubeApi]:
    api = KubeApi(from_kubeconfig(Path(devcluster.kubeconfig)))
    yield api
    await api.close()


@pytest.fixture
async def tokens(devcluster: Any) -> AsyncIterator[dict[str, str]]:
    """node (or UNBOUND) -> a token of the shipped ServiceAccount bound to a monitor
    pod on that node (what kubelet projects into the DaemonSet's pod)."""
    async with (
        admin_client(devcluster.kubeconfig) as admin,
        node_bound_clients(admin, (HOME, HOSPITAL), unbound=True) as ids,
    ):
        yield {key: bearer(c) for key, c in ids.clients.items()}


async def test_list_then_watch_resumes_after_410_gone(admin_api: KubeApi) -> None:
    """A resourceVersion the apiserver no longer has is 410 Gone on the watch; the
    loop lists again (not a failure) and then sees new Devices as they come."""
    stale = {"first": True}

    class StaleOnce(KubeApi):
        async def list_cluster_custom_object(
            self, group: str, version: str, plural: str
        ) -> dict[str, Any]:
            listing = await super().list_cluster_custom_object(group, version, plural)
            if stale.pop("first", False):
                listing["metadata"]["resourceVersion"] = "1"  # long compacted away
            return listing

    api = StaleOnce(admin_api.endpoint)
    lists: list[int] = []
    events: list[tuple[str, str]] = []
    errors: list[int] = []

    def on_list(items: Sequence[Mapping[str, Any]]) -> None:
        lists.append(len(items))

    def on_event(kind: str, obj: Mapping[str, Any]) -> None:
        events.append((kind, obj["metadata"]["name"]))

    task = asyncio.create_task(
        list_watch(
            api,
            PLURAL,
            what="Device",
            on_list=on_list,
            on_event=on_event,
            backoff=lambda _n: 0.1,
            on_error=lambda: errors.append(1),
        )
    )
    name = f"kubeapi-{uuid.uuid4().hex[:8]}"
    try:
        await eventually(lambda: len(lists) >= 2, what="a second list after 410 Gone")
        await asyncio.sleep(0.5)  # the watch from the fresh list is open
        await admin_api.request(
            "POST",
            f"/apis/{GROUP}/{VERSION}/{PLURAL}",
            body={
                "apiVersion": API_VERSION,
                "kind": "Device",
                "metadata": {"name": name},
                "spec": {"address": "C0:" + ":".join(f"{b:02X}" for b in os.urandom(5))},
            },
        )
        await eventually(lambda: ("ADDED", name) in events, what="the new Device's event")
        assert errors == []  # 410 is a re-list, not an error
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()
        with contextlib.suppress(ApiError):
            await admin_api.request("DELETE", f"/apis/{GROUP}/{VERSION}/{PLURAL}/{name}")


async def test_ssa_conflict_without_force_and_takeover_with_force(admin_api: KubeApi) -> None:
    name = f"kubeapi-{uuid.uuid4().hex[:8]}"
    path = f"/apis/{GROUP}/{VERSION}/{REPORT_PLURAL}"
    await admin_api.request(
        "POST",
        path,
        body={"apiVersion": API_VERSION, "kind": REPORT_KIND, "metadata": {"name": name}},
    )
    try:
        # The client's server-side apply (the candidates' write; the report itself is a
        # merge patch, whose Update manager a first apply reports as "before-first-apply").
        await admin_api.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            REPORT_PLURAL,
            name,
            report_body(name, {"patient-1": (-60, time.time())}, time.time()),
            field_manager=gateway_field_manager(name),
            force=True,
            _content_type=APPLY_PATCH,
        )
        other = report_body(name, {"patient-1": (-70, time.time())}, time.time())
        with pytest.raises(ApiError) as conflict:
            await admin_api.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                REPORT_PLURAL,
                name,
                other,
                field_manager="someone-else",
                force=False,
                _content_type=APPLY_PATCH,
            )
        assert conflict.value.status == 409
        assert gateway_field_manager(name) in str(conflict.value)  # who holds the fields
        taken = await admin_api.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            REPORT_PLURAL,
            name,
            other,
            field_manager="someone-else",
            force=True,
            _content_type=APPLY_PATCH,
        )
        assert taken["status"]["sightings"][0]["rssi"] == -70
    finally:
        await admin_api.request("DELETE", f"{path}/{name}")


async def test_sighting_authorization_through_the_monitors_client(
    devcluster: Any, tokens: dict[str, str], tmp_path: Path
) -> None:
    """A projected token file: re-read when the kubelet replaces it. With the unbound
    token every write is refused (403, the policy's message in the error); after the
    file holds the gw-home pod's token, the same client writes gw-home's report and
    Lease, and the apiserver still refuses gw-hospital's."""
    token_file = tmp_path / "token"
    token_file.write_text(tokens[UNBOUND])
    config = token_kubeconfig(Path(devcluster.kubeconfig), tmp_path / "kubeconfig", token_file)
    api = KubeApi.connect(config)
    try:
        now = time.time()
        with pytest.raises(ApiError) as denied:
            await write_report(api, HOME, report_body(HOME, {}, now))
        assert denied.value.status == 403
        assert "no node association found for the gateway monitor" in str(denied.value)

        token_file.write_text(tokens[HOME])  # the kubelet rotates the projected token
        stat = token_file.stat()
        os.utime(token_file, (stat.st_atime, stat.st_mtime + 5))  # coarse mtime clocks

        async def home_writes() -> bool:
            try:
                await write_report(api, HOME, report_body(HOME, {"patient-1": (-60, now)}, now))
            except ApiError as exc:
                if exc.status == 403 and "cannot" in exc.message:  # RBAC cache catching up
                    return False
                raise
            return True

        await eventually(home_writes, what="gw-home's own report written")
        with pytest.raises(ApiError) as other:
            await write_report(api, HOSPITAL, report_body(HOSPITAL, {"patient-1": (-40, now)}, now))
        assert other.value.status == 403
        assert "may write only the report named gw-home, not gw-hospital" in str(other.value)

        config_lease = LeaseConfig()
        with contextlib.suppress(ApiError):
            await api.request(
                "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{HOME}"
            )
        assert await LeaseRenewer(api, HOME, NAMESPACE, config_lease).renew()
        with pytest.raises(ApiError) as lease_denied:
            await api.create_namespaced_lease(
                NAMESPACE, lease_body(HOSPITAL, NAMESPACE, now, config_lease.duration)
            )
        assert lease_denied.value.status == 403
        assert f"not {NAMESPACE}/{HOSPITAL}" in str(lease_denied.value)
    finally:
        await api.close()
