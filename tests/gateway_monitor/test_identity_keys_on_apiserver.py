"""The wearables' IRKs in the Secret cloud4iot-identity-keys, on the real devcluster
apiserver: `cloud4iot devices approve --irk` stores them (store_key: created, then
merged key by key); the gateway monitors' ServiceAccount, through the monitor's own
client, reads and watches that Secret (the registry follows it) and no other Secret;
the shipped read-only cloud4iot-explain role, which lists Devices, cannot read it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as sync_client
from kubernetes.aio.client import (
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.aio.client.exceptions import ApiException

from cloud4iot.devices import GROUP, IDENTITY_KEYS_SECRET, MERGE_PATCH, PLURAL, VERSION
from extender.approve import store_key
from gateway_monitor.irk import make_rpa, parse_irk
from gateway_monitor.kubeapi import ApiError, KubeApi
from gateway_monitor.registry import DeviceSpec, Registry, watch_identity_keys
from tests.gateway_monitor.node_tokens import (
    NAMESPACE,
    admin_client,
    bearer_client,
    node_bound_clients,
)
from tests.gateway_monitor.test_kubeapi_on_apiserver import bearer, token_kubeconfig
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

HOME = "gw-home"
EXPLAIN_ROLE = Path(__file__).resolve().parents[2] / "manifests/placement/explain-role.yaml"
IRK_A = "ec0234a357c8ad05341010a60a397d9b"
IRK_B = "00112233445566778899aabbccddeeff"
BY_NAME = f"metadata.name={IDENTITY_KEYS_SECRET}"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"


async def status_of(call: Any) -> int:
    """200, or the HTTP status the call raised (either client)."""
    try:
        await call
    except (ApiError, ApiException) as exc:
        return int(exc.status)
    return 200


async def test_only_the_monitors_read_and_watch_the_identity_keys(
    devcluster: Any, kube_api: sync_client.ApiClient, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    band, strap, other = f"band-{tag}", f"strap-{tag}", f"not-the-keys-{tag}"
    core_sync = sync_client.CoreV1Api(kube_api)
    async with (
        admin_client(devcluster.kubeconfig) as admin,
        node_bound_clients(admin, [HOME]) as ids,
    ):
        core = CoreV1Api(admin)
        await core.create_namespaced_secret(
            NAMESPACE, {"metadata": {"name": other}, "stringData": {band: IRK_B}}
        )
        token_file = tmp_path / "token"
        token_file.write_text(bearer(ids.clients[HOME]))
        config = token_kubeconfig(Path(devcluster.kubeconfig), tmp_path / "kubeconfig", token_file)
        monitor = KubeApi.connect(config)
        registry = Registry(NAMESPACE)
        registry.replace_all(
            [DeviceSpec(band, "C0:00:00:00:00:01"), DeviceSpec(strap, "C0:00:00:00:00:02")]
        )
        errors: list[int] = []
        watch = None
        try:
            # as approve stores it, with the admin's credentials (created if absent)
            await asyncio.to_thread(store_key, core_sync, NAMESPACE, band, IRK_A.upper())

            async def readable() -> bool:  # (the new Role may take a moment to apply)
                return (
                    await status_of(
                        monitor.list_namespaced_secret(NAMESPACE, field_selector=BY_NAME)
                    )
                    == 200
                )

            await eventually(readable, what="the monitor's Role in force")
            listing = await monitor.list_namespaced_secret(NAMESPACE, field_selector=BY_NAME)
            (secret,) = listing["items"]
            assert base64.b64decode(secret["data"][band]).decode() == IRK_A
            assert (
                await status_of(monitor.request("GET", f"{SECRETS}/{IDENTITY_KEYS_SECRET}")) == 200
            )

            # no other Secret: by name, by list, by list narrowed to it, elsewhere
            assert await status_of(monitor.request("GET", f"{SECRETS}/{other}")) == 403
            assert await status_of(monitor.request("GET", SECRETS)) == 403
            assert (
                await status_of(
                    monitor.list_namespaced_secret(
                        NAMESPACE, field_selector=f"metadata.name={other}"
                    )
                )
                == 403
            )
            assert await status_of(monitor.request("GET", "/api/v1/secrets")) == 403
            assert (
                await status_of(
                    monitor.list_namespaced_secret("kube-system", field_selector=BY_NAME)
                )
                == 403
            )
            # ... nor may it write the keys
            patch = {"data": {band: base64.b64encode(IRK_B.encode()).decode()}}
            assert (
                await status_of(
                    monitor.request(
                        "PATCH",
                        f"{SECRETS}/{IDENTITY_KEYS_SECRET}",
                        body=patch,
                        content_type=MERGE_PATCH,
                    )
                )
                == 403
            )

            # the monitor's watch: the registry follows the Secret as keys are added
            watch = asyncio.create_task(
                watch_identity_keys(
                    monitor,
                    registry,
                    NAMESPACE,
                    backoff=lambda _n: 0.2,
                    on_error=lambda: errors.append(1),
                )
            )
            await eventually(
                lambda: registry.irk(band) == parse_irk(IRK_A), what="band's key listed"
            )
            assert registry.lookup(make_rpa(parse_irk(IRK_A), b"\x12\x34\x56")) == band
            await asyncio.sleep(0.5)  # the watch is open
            await asyncio.to_thread(store_key, core_sync, NAMESPACE, strap, IRK_B)
            await eventually(
                lambda: registry.irk(strap) == parse_irk(IRK_B), what="strap's key watched"
            )
            assert registry.irk(band) == parse_irk(IRK_A)  # merged: band's key kept
            assert errors == []

            # the shipped read-only explain role lists Devices but cannot read the keys
            rbac = RbacAuthorizationV1Api(admin)
            role = yaml.safe_load(EXPLAIN_ROLE.read_text())
            assert role["metadata"]["name"] == "cloud4iot-explain"
            role["metadata"]["name"] = f"cloud4iot-explain-{tag}"
            await rbac.create_cluster_role(role)
            reader = f"explainer-{tag}"
            await core.create_namespaced_service_account("default", {"metadata": {"name": reader}})
            await rbac.create_cluster_role_binding(
                {
                    "metadata": {"name": role["metadata"]["name"]},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role["metadata"]["name"],
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": reader, "namespace": "default"}
                    ],
                }
            )
            review = await core.create_namespaced_service_account_token(
                reader,
                "default",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"audiences": []},
                },
            )
            explainer = bearer_client(admin, review.status.token)
            try:
                custom, as_reader = CustomObjectsApi(explainer), CoreV1Api(explainer)

                async def lists_devices() -> bool:
                    return (
                        await status_of(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))
                        == 200
                    )

                await eventually(lists_devices, what="the explain role in force")
                assert (
                    await status_of(
                        as_reader.read_namespaced_secret(IDENTITY_KEYS_SECRET, NAMESPACE)
                    )
                    == 403
                )
                assert (
                    await status_of(
                        as_reader.list_namespaced_secret(NAMESPACE, field_selector=BY_NAME)
                    )
                    == 403
                )
            finally:
                await explainer.close()
                await rbac.delete_cluster_role_binding(role["metadata"]["name"])
                await rbac.delete_cluster_role(role["metadata"]["name"])
                await core.delete_namespaced_service_account(reader, "default")
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await monitor.close()
            await core.delete_namespaced_secret(other, NAMESPACE)
            with contextlib.suppress(ApiException):  # our keys only: others' stay
                await core.patch_namespaced_secret(
                    IDENTITY_KEYS_SECRET,
                    NAMESPACE,
                    {"data": {band: None, strap: None}},
                    _content_type=MERGE_PATCH,
                )
