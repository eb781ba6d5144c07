"""Gateway monitors writing their GatewayReports on the devcluster's real apiserver.

The gateways are the devcluster's labelled gateway nodes (gw-home, gw-hospital): the
elected extender makes their reports; a report of any other name would be deleted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import new_client_from_config

from bench import synthetic_traces
from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL, VERSION, gateway_field_manager
from devcluster.processes import free_port
from gateway_monitor import traces
from gateway_monitor.app import running
from gateway_monitor.publisher import PublishConfig
from gateway_monitor.report import report_body, write_report
from gateway_monitor.settings import Settings
from gateway_monitor.tracker import TrackerConfig
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
GW1, GW2 = "gw-home", "gw-hospital"


async def apply_sighting(api: CustomObjectsApi, device: str, node: str, rssi: int | None) -> None:
    """The node's monitor applies its report listing `device` (or nothing)."""
    heard = {} if rssi is None else {device: (rssi, time.time())}
    await write_report(api, node, report_body(node, heard, time.time()))


@pytest.fixture
async def api(devcluster: Any) -> AsyncIterator[CustomObjectsApi]:
    client = await new_client_from_config(config_file=str(devcluster.kubeconfig))
    yield CustomObjectsApi(client)
    await client.close()


@pytest.fixture
async def device(api: CustomObjectsApi) -> AsyncIterator[tuple[str, str]]:
    """A fresh Device with a random address; deleted afterwards."""
    name = f"patient-{uuid.uuid4().hex[:8]}"
    address = "C0:" + ":".join(f"{b:02X}" for b in uuid.uuid4().bytes[:5])
    await api.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Device",
            "metadata": {"name": name},
            "spec": {"address": address, "displayName": "test wearable"},
        },
    )
    yield name, address
    await api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


async def sightings(api: CustomObjectsApi, name: str) -> dict[str, dict[str, Any]]:
    """node -> entry of every gateway's report that lists device `name`."""
    reports = await api.list_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL)
    return {
        r["metadata"]["name"]: e
        for r in reports["items"]
        for e in (r.get("status") or {}).get("sightings") or []
        if e["device"] == name
    }


async def test_each_gateway_writes_only_its_own_report(
    api: CustomObjectsApi, device: tuple[str, str]
) -> None:
    name, _ = device
    await apply_sighting(api, name, GW1, -60)
    await apply_sighting(api, name, GW2, -80)
    seen = await sightings(api, name)
    assert {n: e["rssi"] for n, e in seen.items()} == {GW1: -60, GW2: -80}

    # gw1 moves on; gw2's report is another object, untouched
    await apply_sighting(api, name, GW1, -55)
    assert {n: e["rssi"] for n, e in (await sightings(api, name)).items()} == {GW1: -55, GW2: -80}
    obj = await api.get_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, GW1)
    # the report's status is written by gw1's monitor alone (a merge patch since 1c40ebc:
    # an Update; "Apply" only held when an earlier test had made the report by an apply)
    managers = {
        m["manager"] for m in obj["metadata"]["managedFields"] if m.get("subresource") == "status"
    }
    assert managers == {gateway_field_manager(GW1)}

    # an empty list gives up exactly gw1's entries
    await apply_sighting(api, name, GW1, None)
    assert set(await sightings(api, name)) == {GW2}
    await apply_sighting(api, name, GW2, None)
    assert await sightings(api, name) == {}
    # the Device itself is never written by a monitor
    dev = await api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    assert dev["spec"]["displayName"] == "test wearable"
    assert not (dev.get("status") or {}).get("sightings")


async def test_a_reports_managed_fields_do_not_grow_with_its_sightings(
    api: CustomObjectsApi,
) -> None:
    """The sightings list is atomic: the apiserver keeps one managedFields mark for the
    whole list, not an entry per device (which doubled every stored revision and every
    watch event of a busy gateway's report)."""
    now = time.time()
    heard = {f"busy-ward-{i:04d}": (-60 - i % 30, now) for i in range(300)}
    try:
        await write_report(api, GW1, report_body(GW1, heard, now))
        obj = await api.get_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, GW1)
        assert len(obj["status"]["sightings"]) == 300
        # The merge patch's entry (an earlier test's server-side apply under the same
        # manager may have left an Apply entry beside it, as an older monitor would).
        ours = [
            m
            for m in obj["metadata"]["managedFields"]
            if m["manager"] == gateway_field_manager(GW1) and m["operation"] == "Update"
        ]
        assert len(ours) == 1, obj["metadata"]["managedFields"]
        fields = json.dumps(ours[0]["fieldsV1"])
        assert "busy-ward" not in fields  # no per-device key
        assert len(fields) < 300, fields
        # One less device: the patch replaces the whole list, as a map merge did too.
        del heard["busy-ward-0000"]
        await write_report(api, GW1, report_body(GW1, heard, now))
        obj = await api.get_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, GW1)
        devices = [e["device"] for e in obj["status"]["sightings"]]
        assert devices == sorted(heard)
    finally:
        await write_report(api, GW1, report_body(GW1, {}, time.time()))


async def test_two_running_monitors_publish_and_remove_their_own_entries(
    api: CustomObjectsApi, device: tuple[str, str], devcluster: Any, tmp_path: Path
) -> None:
    name, address = device
    # Both gateways hear the wearable; gw1 much better. A stranger is loud at gw1.
    near = synthetic_traces.stationary(address, -60.0, duration=600.0, seed=1)
    stranger = synthetic_traces.stationary("DE:AD:BE:EF:00:01", -40.0, duration=600.0, seed=2)
    far = synthetic_traces.stationary(address, -72.0, duration=600.0, seed=3)
    traces.write_trace(tmp_path / "gw1.jsonl", sorted(near + stranger, key=lambda r: r.t))
    traces.write_trace(tmp_path / "gw2.jsonl", far)

    def settings(node: str) -> Settings:
        return Settings(
            node=node,
            replay=tmp_path / f"{'gw1' if node == GW1 else 'gw2'}.jsonl",
            speed=5.0,
            kubeconfig=devcluster.kubeconfig,
            tracker=TrackerConfig(),
            publish=PublishConfig(min_interval=0.5),
        )

    async with running(settings(GW1)) as gw1:
        async with running(settings(GW2)) as gw2:

            async def both() -> bool:
                return set(await sightings(api, name)) == {GW1, GW2}

            await eventually(both)
            seen = await sightings(api, name)
            assert seen[GW1]["rssi"] > seen[GW2]["rssi"]
            assert gw1.registry.synced
            assert gw2.publisher is not None
            assert gw2.publisher.reachable
        # gw2 shut down: its entry is gone, gw1's stays
        assert set(await sightings(api, name)) == {GW1}
        dropped = gw1.metrics.registry.get_sample_value(
            "cloud4iot_gateway_monitor_adverts_total", {"result": "dropped"}
        )
        assert dropped is not None
        assert dropped > 0
    assert await sightings(api, name) == {}


async def test_rbac_allows_exactly_what_the_monitor_needs(
    api: CustomObjectsApi, device: tuple[str, str], devcluster: Any
) -> None:
    """Apply the shipped RBAC, then act as the ServiceAccount through impersonation."""
    name, _ = device
    docs = [
        d
        for f in ("namespace.yaml", "rbac.yaml")
        for d in yaml.safe_load_all((REPO / "manifests/gateway-monitor" / f).read_text())
    ]
    admin: ApiClient = api.api_client
    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    for doc in docs:
        kind = doc["kind"]
        try:
            if kind == "Namespace":
                await core.create_namespace(doc)
            elif kind == "ServiceAccount":
                await core.create_namespaced_service_account(doc["metadata"]["namespace"], doc)
            elif kind == "ClusterRole":
                await rbac.create_cluster_role(doc)
            elif kind == "ClusterRoleBinding":
                await rbac.create_cluster_role_binding(doc)
        except ApiException as exc:
            if exc.status != 409:  # already there from an earlier run
                raise

    # The DaemonSet passes the apiserver's validation (server-side dry run, nothing runs).
    (daemonset,) = yaml.safe_load_all(
        (REPO / "manifests/gateway-monitor/daemonset.yaml").read_text()
    )
    created = await AppsV1Api(admin).create_namespaced_daemon_set(
        "cloud4iot-gateway", daemonset, dry_run="All"
    )
    assert created.spec.template.spec.node_selector == {"cloud4iot.io/tier": "gateway"}

    sa = await new_client_from_config(config_file=str(devcluster.kubeconfig))
    sa.set_default_header(
        "Impersonate-User", "system:serviceaccount:cloud4iot-gateway:cloud4iot-gateway-monitor"
    )
    # The node a monitor's pod-bound token carries: without it the report admission
    # policy refuses every write (test_report_admission.py uses real tokens).
    sa.set_default_header("Impersonate-Extra-authentication.kubernetes.io%2Fnode-name", GW1)
    as_monitor = CustomObjectsApi(sa)
    try:

        async def rbac_ready() -> bool:
            try:
                await as_monitor.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        await eventually(rbac_ready)
        await apply_sighting(as_monitor, name, GW1, -61)
        assert set(await sightings(api, name)) == {GW1}
        await apply_sighting(as_monitor, name, GW1, None)
        # ... but it may not write a Device's status (the old per-Device path), touch
        # the spec or delete Devices
        with pytest.raises(ApiException) as denied:
            await as_monitor.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, {"status": {"sightings": []}}
            )
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied:
            await as_monitor.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, {"spec": {"displayName": "hijacked"}}
            )
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied:
            await as_monitor.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert denied.value.status == 403
    finally:
        await sa.close()


async def test_console_script_publishes_and_removes_its_entry_on_sigterm(
    api: CustomObjectsApi, device: tuple[str, str], devcluster: Any, tmp_path: Path
) -> None:
    """The issue's contract: --node NAME --replay TRACE.jsonl --speed X --kubeconfig K."""
    name, address = device
    trace = tmp_path / "gw7.jsonl"
    traces.write_trace(trace, synthetic_traces.stationary(address, -62.0, duration=600.0, seed=5))
    script = Path(sys.executable).with_name("cloud4iot-gateway-monitor")
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "--node", GW1,
        "--replay", str(trace),
        "--speed", "10",
        "--kubeconfig", str(devcluster.kubeconfig),
        "--port", str(free_port()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:

        async def published() -> bool:
            return GW1 in await sightings(api, name)

        await eventually(
            published, 40, "the console script's first report"
        )  # imports take a while on a loaded CI
        entry = (await sightings(api, name))[GW1]
        assert -70 <= entry["rssi"] <= -54
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert GW1 not in await sightings(api, name)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
