"""What the extender's and the rebalancer's tokens may write
(manifests/placement/controller-writes; docs/security.md).

On the devcluster's real apiserver, with the shipped policies and the shipped
ClusterRoles: requests made as the ServiceAccounts (system:serviceaccount:<ns>:<name>
in system:serviceaccounts, by impersonation). The attacks of the security review
(a stolen token labels a node a voting gateway, runs a privileged host-mounting
Deployment in kube-system, rewrites a Deployment's pod template) are refused by the
policies, not only left undone; the writes the real code makes (the nudge, discovery's
Device and function Deployments with their park, restore and delete, the rebalancer's
rollout, park, unpark and eviction records on a Deployment and a StatefulSet) still
pass, made by that code (DiscoveryController, Evictor) through the impersonating clients.

Attempts that should be refused are dry runs where the API allows it, so a missing
policy shows as a failed test, not as a changed cluster.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes.aio.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.aio.client.configuration import Configuration
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import load_kube_config

from cloud4iot.deviceclass import CLASS_PLURAL, parse_class
from cloud4iot.devices import API_VERSION, GROUP, KIND, PLURAL, VERSION, rfc3339
from cloud4iot.vocabulary import (
    CLASS_LABEL,
    DEVICE_ANNOTATION,
    DISCOVERY_PARKED_ANNOTATION,
    GATEWAY_LABEL,
    LAST_MOVE_ANNOTATION,
    MOVED_ANNOTATION,
    NUDGE_ANNOTATION,
    PARKED_ANNOTATION,
    TIER_LABEL,
)
from devcluster import kube
from devcluster.cluster import CONTROLLER_WRITES_ADMISSION
from extender.controllers.discovery import DiscoveryController, discovered_facts
from extender.controllers.discovery_plan import NewDevice, function_deployments, new_device
from extender.scoring.model import PodFacts
from rebalancer.evictor import Evictor
from rebalancer.model import Action, Kind, ManagedPod, Move, Reason, Workload
from rebalancer.workloads import Workloads
from tests.gateway_monitor.node_tokens import admin_client
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SYSTEM = "cloud4iot-system"
RENAMED = "iot-placement"  # manifests/overlays/namespaces
EXTENDER, REBALANCER = "cloud4iot-extender", "cloud4iot-rebalancer"
APPS = "controller-writes-test"  # an ordinary namespace the functions run in
OURS = "controller-writes-ours"  # labelled as ours, as the gateway monitors' namespace is
NODE = "cloud-2"
EXTENDER_NODES = "cloud4iot-extender-node-writes"
EXTENDER_DEPLOYMENTS = "cloud4iot-extender-deployment-writes"
EXTENDER_DEVICES = "cloud4iot-extender-device-writes"
REBALANCER_WORKLOADS = "cloud4iot-rebalancer-workload-writes"
REBALANCER_EVICTIONS = "cloud4iot-rebalancer-evictions"
MERGE = "application/merge-patch+json"

PRIVILEGED_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "writes-evil"}},
    "spec": {
        "hostPID": True,
        "containers": [
            {
                "name": "x",
                "image": "registry.invalid/evil:1",
                "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "host", "mountPath": "/host"}],
            }
        ],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    },
}


def _privileged(app: str) -> dict[str, Any]:
    """PRIVILEGED_TEMPLATE for a workload selecting app=`app` (else a 422 answers first)."""
    return {**PRIVILEGED_TEMPLATE, "metadata": {"labels": {"app": app}}}


def _template(app: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}, "annotations": {"cloud4iot.io/function": "fn"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/good:1"}], **spec},
    }


def _deployment(name: str, replicas: int = 1, **template: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template or _template(name),
        },
    }


@pytest.fixture
async def admin(devcluster: Any) -> AsyncIterator[ApiClient]:
    """The admin client, with the policies, the shipped RBAC of both ServiceAccounts
    (also for the namespace an overlay renames them to) and the functions' namespace."""
    with kube.api_client(devcluster.kubeconfig) as api:  # what `devcluster up` installs
        for path in CONTROLLER_WRITES_ADMISSION:
            kube.install_admission_policies(api, path)
        for namespace in (APPS, SYSTEM, RENAMED):
            kube.ensure_namespace(api, namespace)
    async with admin_client(devcluster.kubeconfig) as client:
        labelled = {
            "metadata": {"name": OURS, "labels": {"app.kubernetes.io/part-of": "cloud4iot"}}
        }
        await _create_or_replace(
            CoreV1Api(client).create_namespace, CoreV1Api(client).replace_namespace, labelled
        )
        rbac = RbacAuthorizationV1Api(client)
        for part in ("extender", "rebalancer"):
            for doc in yaml.safe_load_all((MANIFESTS / f"placement/{part}/rbac.yaml").read_text()):
                if doc["kind"] == "ClusterRole":
                    await _create_or_replace(
                        rbac.create_cluster_role, rbac.replace_cluster_role, doc
                    )
                elif doc["kind"] == "ClusterRoleBinding":
                    renamed = yaml.safe_load(yaml.safe_dump(doc))
                    renamed["metadata"]["name"] += "-renamed"
                    renamed["subjects"][0]["namespace"] = RENAMED
                    for binding in (doc, renamed):
                        await _create_or_replace(
                            rbac.create_cluster_role_binding,
                            rbac.replace_cluster_role_binding,
                            binding,
                        )
        yield client


async def _create_or_replace(
    create: Callable[..., Awaitable[Any]], replace: Callable[..., Awaitable[Any]], doc: Any
) -> None:
    try:
        await create(doc)
    except ApiException as exc:
        if exc.status != 409:
            raise
        await replace(doc["metadata"]["name"], doc)


async def as_sa(devcluster: Any, name: str, namespace: str = SYSTEM) -> ApiClient:
    config = type.__call__(Configuration)
    await load_kube_config(
        config_file=str(devcluster.kubeconfig), client_configuration=config, persist_config=False
    )
    client = ApiClient(config)
    client.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{name}")
    client.set_default_header("Impersonate-Group", "system:serviceaccounts")
    return client


async def refused(attempt: Callable[[], Awaitable[Any]], policy: str, within: float = 30) -> str:
    """The body of the 403 `policy` answers `attempt` with. Retried while the RBAC and
    policy caches catch up (a 403 of the authorizer); an attempt that succeeds, or a
    refusal by anything else, fails the test once `within` has passed."""
    said = ""

    async def denied() -> bool:
        nonlocal said
        try:
            await attempt()
        except ApiException as exc:
            said = f"HTTP {exc.status}: {exc.body}"
            return exc.status == 403 and policy in str(exc.body)
        said = "allowed"
        return False

    try:
        await eventually(denied, within=within, interval=0.5, what=f"{policy} to refuse")
    except AssertionError:
        pytest.fail(f"not refused by {policy}; last answer: {said}")
    return said


async def allowed(attempt: Callable[[], Awaitable[Any]], what: str) -> Any:
    """`attempt`'s result, retried while RBAC's cache catches up (a 403 naming no policy)."""
    result: Any = None

    async def ok() -> bool:
        nonlocal result
        try:
            result = await attempt()
        except ApiException as exc:
            if exc.status == 403 and "cloud4iot-" not in str(exc.body):
                return False
            raise
        return True

    await eventually(ok, within=30, interval=0.5, what=what)
    return result


async def _delete(call: Callable[..., Awaitable[Any]], *args: Any) -> None:
    try:
        await call(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise


# --- the extender: nodes --------------------------------------------------------------


async def test_the_extender_token_only_annotates_nodes(admin: ApiClient, devcluster: Any) -> None:
    """Review f3a: the nudge (`patch nodes`) must not let the token mint a voting gateway,
    change a tier or taint a node; the nudge itself passes (nearest_writer._nudge)."""
    core = CoreV1Api(admin)
    ext = CoreV1Api(await as_sa(devcluster, EXTENDER))
    try:
        for patch in (
            {"metadata": {"labels": {GATEWAY_LABEL: "true", TIER_LABEL: "gateway"}}},
            {"metadata": {"labels": {TIER_LABEL: None}}},
            {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}},
            {"spec": {"unschedulable": True}},
            {"metadata": {"annotations": {"example.com/other": "1"}}},
        ):
            await refused(
                lambda p=patch: ext.patch_node(NODE, p, dry_run="All", _content_type=MERGE),
                EXTENDER_NODES,
            )
        # Not a dry run: the attack as the reviewer made it leaves the node unchanged.
        said = await refused(
            lambda: ext.patch_node(
                NODE, {"metadata": {"labels": {GATEWAY_LABEL: "true"}}}, _content_type=MERGE
            ),
            EXTENDER_NODES,
        )
        assert "only a node's cloud4iot.io/ annotations" in said, said
        labels = (await core.read_node(NODE)).metadata.labels
        assert GATEWAY_LABEL not in labels, labels
        assert labels[TIER_LABEL] == "cloud", labels
        # The nudge, as nearest_writer._nudge sends it.
        stamp = rfc3339(time.time())
        await ext.patch_node(
            NODE, {"metadata": {"annotations": {NUDGE_ANNOTATION: stamp}}}, _content_type=MERGE
        )
        assert (await core.read_node(NODE)).metadata.annotations[NUDGE_ANNOTATION] == stamp
    finally:
        await ext.api_client.close()


# --- the extender: Deployments and Devices ---------------------------------------------


async def test_the_extender_token_cannot_run_a_privileged_deployment_anywhere(
    admin: ApiClient, devcluster: Any
) -> None:
    """Review f3b: create/patch/delete deployments cluster-wide are held to the function
    Deployments of discovered Devices, outside the cluster's and the project's
    namespaces, with no host access."""
    apps = AppsV1Api(admin)
    ext = AppsV1Api(await as_sa(devcluster, EXTENDER))
    evil = _deployment("writes-evil", **PRIVILEGED_TEMPLATE)
    evil["spec"]["selector"] = {"matchLabels": {"app": "writes-evil"}}
    owned = {
        "labels": {
            "app.kubernetes.io/managed-by": "cloud4iot-extender",
            CLASS_LABEL: "writes-class",
            DEVICE_ANNOTATION: "writes-device",
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "writes-device",
                "uid": "00000000-0000-0000-0000-000000000001",
                "controller": True,
            }
        ],
    }
    dressed = yaml.safe_load(yaml.safe_dump(evil))  # with every label discovery sets
    dressed["metadata"].update(owned)
    dressed["spec"]["selector"]["matchLabels"][DEVICE_ANNOTATION] = "writes-device"
    dressed["spec"]["template"]["metadata"]["labels"][DEVICE_ANNOTATION] = "writes-device"
    try:
        for namespace in ("kube-system", SYSTEM, OURS):
            said = await refused(
                lambda ns=namespace: ext.create_namespaced_deployment(ns, evil, dry_run="All"),
                EXTENDER_DEPLOYMENTS,
            )
            assert f"namespace {namespace}" in said, said
            await refused(
                lambda ns=namespace: ext.create_namespaced_deployment(ns, dressed, dry_run="All"),
                EXTENDER_DEPLOYMENTS,
            )
        # Elsewhere: not without discovery's labels and owner, not privileged even with them.
        said = await refused(
            lambda: ext.create_namespaced_deployment(APPS, evil, dry_run="All"),
            EXTENDER_DEPLOYMENTS,
        )
        assert "function Deployments of discovered Devices" in said, said
        for spec in (
            {"hostPID": True},
            {"hostNetwork": True},
            {"volumes": [{"name": "h", "hostPath": {"path": "/var/run"}}]},
            {"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}]},
            {
                "containers": [
                    {
                        "name": "c",
                        "image": "i",
                        "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                    }
                ]
            },
            {
                "initContainers": [
                    {"name": "i", "image": "i", "ports": [{"containerPort": 22, "hostPort": 22}]}
                ]
            },
        ):
            body = yaml.safe_load(yaml.safe_dump(dressed))
            body["spec"]["template"]["spec"] = {
                "containers": [{"name": "c", "image": "registry.invalid/good:1"}],
                **spec,
            }
            await refused(
                lambda b=body: ext.create_namespaced_deployment(APPS, b, dry_run="All"),
                EXTENDER_DEPLOYMENTS,
            )
        # Someone else's Deployment: not scaled, not rewritten, not deleted.
        victim = _deployment("writes-victim", replicas=0)  # no pods to wait for
        await _delete(apps.delete_namespaced_deployment, "writes-victim", APPS)
        await apps.create_namespaced_deployment(APPS, victim)
        for patch in (
            {"spec": {"replicas": 3}},
            {"spec": {"template": _privileged("writes-victim")}},
        ):
            await refused(
                lambda p=patch: ext.patch_namespaced_deployment(
                    "writes-victim", APPS, p, dry_run="All", _content_type=MERGE
                ),
                EXTENDER_DEPLOYMENTS,
            )
        await refused(
            lambda: ext.delete_namespaced_deployment("writes-victim", APPS, dry_run="All"),
            EXTENDER_DEPLOYMENTS,
        )
    finally:
        await _delete(apps.delete_namespaced_deployment, "writes-victim", APPS)
        await ext.api_client.close()


async def test_a_function_runs_under_default_or_an_opted_in_service_account(
    admin: ApiClient, devcluster: Any
) -> None:
    """Review (sec 3): a stolen extender token must not run a function Deployment under a
    powerful ServiceAccount of an application namespace: only `default` (or none) and
    ServiceAccounts an admin named cloud4iot-function-*; the deprecated alias
    `serviceAccount` too, which the apiserver takes when serviceAccountName is empty."""
    ext = AppsV1Api(await as_sa(devcluster, EXTENDER))
    device = "writes-sa-device"
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "writes-sa",
            "labels": {
                "app.kubernetes.io/managed-by": "cloud4iot-extender",
                CLASS_LABEL: "writes-class",
                DEVICE_ANNOTATION: device,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": device,
                    "uid": "00000000-0000-0000-0000-000000000002",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {DEVICE_ANNOTATION: device}},
            "template": {"metadata": {"labels": {DEVICE_ANNOTATION: device}}},
        },
    }

    def with_spec(**spec: Any) -> dict[str, Any]:
        out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(body))
        out["spec"]["template"]["spec"] = {
            "containers": [{"name": "c", "image": "registry.invalid/good:1"}],
            **spec,
        }
        return out

    try:
        for spec in (
            {"serviceAccountName": "powerful"},
            {"serviceAccount": "powerful"},
        ):
            one = with_spec(**spec)
            said = await refused(
                lambda b=one: ext.create_namespaced_deployment(APPS, b, dry_run="All"),
                EXTENDER_DEPLOYMENTS,
            )
            assert "default ServiceAccount or one named cloud4iot-function-" in said, said
        for spec in (
            {},
            {"serviceAccountName": "default"},
            {"serviceAccountName": "cloud4iot-function-reader"},
        ):
            one = with_spec(**spec)
            made = await allowed(
                lambda b=one: ext.create_namespaced_deployment(APPS, b, dry_run="All"),
                f"a function under {spec or 'no ServiceAccount'}",
            )
            assert made.metadata.name == "writes-sa"
    finally:
        await ext.api_client.close()


async def test_the_extender_token_deletes_only_discovered_devices(
    admin: ApiClient, devcluster: Any
) -> None:
    """`delete devices` is for the Devices discovery made (CLASS_LABEL): a Device an
    admin registered is not the token's to delete, nor may it create one."""
    custom = CustomObjectsApi(admin)
    ext = CustomObjectsApi(await as_sa(devcluster, EXTENDER))
    name = "writes-registered"
    registered = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"address": "C4:00:00:00:01:01"},
    }
    await _delete(custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name)
    await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, registered)
    try:
        said = await refused(
            lambda: ext.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name, dry_run="All"),
            EXTENDER_DEVICES,
        )
        assert f"only discovered Devices (labelled {CLASS_LABEL}), not {name}" in said, said
        other = {**registered, "metadata": {"name": "writes-minted"}}
        await refused(
            lambda: ext.create_cluster_custom_object(GROUP, VERSION, PLURAL, other, dry_run="All"),
            EXTENDER_DEVICES,
        )
        assert await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    finally:
        await _delete(custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name)
        await ext.api_client.close()


def _device_class(name: str, when_away: str) -> dict[str, Any]:
    """A class the devcluster's own (admin) discovery controller leaves alone: nothing
    reports its candidates, and its Devices are neither away nor forgotten for an hour."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {
            "discovery": {"serviceUUIDs": ["180D"]},
            "admission": "auto",
            "maxDevices": 2,
            "whenAway": when_away,
            "awayAfter": "1h",
            "forgetAfter": "1h",
            "functions": [
                {
                    "name": "reader",
                    "namespace": APPS,
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "writes-reader"}},
                        "template": {
                            "metadata": {
                                "labels": {"app": "writes-reader"},
                                "annotations": {"cloud4iot.io/function": "mhealth-consolidator"},
                            },
                            "spec": {
                                "containers": [
                                    {"name": "reader", "image": "registry.invalid/reader:1"}
                                ]
                            },
                        },
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize("when_away", ["park", "delete"])
async def test_discoverys_own_writes_pass_as_the_extender(
    admin: ApiClient, devcluster: Any, when_away: str
) -> None:
    """The discovery controller's code, with the extender's token: it creates a Device,
    instantiates its function, parks and restores it (or deletes and re-creates it) and
    forgets the Device; nothing is refused."""
    custom, apps = CustomObjectsApi(admin), AppsV1Api(admin)
    sa = await as_sa(devcluster, EXTENDER)
    ext_custom, ext_apps = CustomObjectsApi(sa), AppsV1Api(sa)
    cls_name = f"writes-{when_away}"
    await _delete(custom.delete_cluster_custom_object, GROUP, VERSION, CLASS_PLURAL, cls_name)
    await custom.create_cluster_custom_object(
        GROUP, VERSION, CLASS_PLURAL, _device_class(cls_name, when_away)
    )
    cls = parse_class(
        await custom.get_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, cls_name)
    )
    ctl = DiscoveryController(
        custom=ext_custom,
        apps=ext_apps,
        store=cast(Any, None),
        reports=cast(Any, None),
        classes=cast(Any, None),
        discovered=cast(Any, None),
    )
    new = NewDevice(f"{cls_name}-c40000000201", "C4:00:00:00:02:01", cls_name, "approved", NODE)
    try:
        # discovery's create, as step() sends it
        made = await allowed(
            lambda: ext_custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, new_device(new, cls)
            ),
            "the extender's RBAC",
        )
        device = discovered_facts(made)
        (function,) = function_deployments(cls, device)
        name = function["metadata"]["name"]
        await passes(ctl, lambda: ctl._place(cls, device, [NODE]))
        dep = await apps.read_namespaced_deployment(name, APPS)
        assert dep.spec.replicas == 2
        assert dep.metadata.labels[CLASS_LABEL] == cls_name
        await passes(ctl, lambda: ctl._stow(cls, device, time.time()))
        if when_away == "park":
            dep = await apps.read_namespaced_deployment(name, APPS)
            assert dep.spec.replicas == 0
            assert dep.metadata.annotations[DISCOVERY_PARKED_ANNOTATION] == "2"
        else:
            await _gone(apps, name)
        await passes(ctl, lambda: ctl._place(cls, device, [NODE]))  # restored / re-created
        dep = await apps.read_namespaced_deployment(name, APPS)
        assert dep.spec.replicas == 2
        assert DISCOVERY_PARKED_ANNOTATION not in (dep.metadata.annotations or {})
        assert not ctl.failing, ctl.failing
        # forgotten, as step() sends it
        await ext_custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, new.name)
    finally:
        await _delete(custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, new.name)
        await _delete(custom.delete_cluster_custom_object, GROUP, VERSION, CLASS_PLURAL, cls_name)
        await sa.close()


async def passes(ctl: DiscoveryController, step: Callable[[], Awaitable[bool]]) -> None:
    """Run a discovery step until done, as the controller does each pass: a park or a
    restore is a patch with the resourceVersion read just before, so the Deployment
    controller's status update in between answers 409 and the next pass retries. Any
    other failure (a refusal: HTTP 403) fails at once."""

    async def done() -> bool:
        if await step():
            return True
        assert all("409" in e for e in ctl.failing.values()), ctl.failing
        return False

    await eventually(done, within=30, interval=1, what="the step done")


async def _gone(apps: AppsV1Api, name: str) -> None:
    async def gone() -> bool:
        try:
            await apps.read_namespaced_deployment(name, APPS)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await eventually(gone, within=20, what=f"{name} deleted")


# --- the rebalancer ---------------------------------------------------------------------


async def test_the_rebalancer_token_cannot_rewrite_a_workloads_pods(
    admin: ApiClient, devcluster: Any
) -> None:
    """Review f3c: `patch deployments/statefulsets` is held to replicas and cloud4iot.io/
    annotations; the template, its labels and the selector stay the owner's, and so do
    the template's placement annotations (only cloud4iot.io/rebalanced may change)."""
    apps = AppsV1Api(admin)
    reb = AppsV1Api(await as_sa(devcluster, REBALANCER))
    name = "writes-victim"
    await _delete(apps.delete_namespaced_deployment, name, "kube-system")
    await apps.create_namespaced_deployment("kube-system", _deployment(name, replicas=0))
    await _delete(apps.delete_namespaced_stateful_set, name, APPS)
    await apps.create_namespaced_stateful_set(APPS, _statefulset(name))
    try:
        for patch in (
            {"spec": {"template": _privileged(name)}},
            {"spec": {"template": {"spec": {"serviceAccountName": "kube-proxy"}}}},
            {"spec": {"template": {"metadata": {"labels": {"extra": "x"}}}}},
            {"spec": {"template": {"metadata": {"annotations": {"cloud4iot.io/function": "x"}}}}},
            {"metadata": {"labels": {"team": "x"}}},
            {"metadata": {"annotations": {"example.com/other": "1"}}},
            {"spec": {"paused": True}},
        ):
            await refused(
                lambda p=patch: reb.patch_namespaced_deployment(
                    name, "kube-system", p, dry_run="All", _content_type=MERGE
                ),
                REBALANCER_WORKLOADS,
            )
        said = await refused(
            lambda: reb.patch_namespaced_stateful_set(
                name,
                APPS,
                {"spec": {"template": _privileged(name)}},
                dry_run="All",
                _content_type=MERGE,
            ),
            REBALANCER_WORKLOADS,
        )
        assert "pod template spec" in said, said
        # Not a dry run: the reviewer's attack leaves the Deployment as it was.
        await refused(
            lambda: reb.patch_namespaced_deployment(
                name, "kube-system", {"spec": {"template": _privileged(name)}}
            ),
            REBALANCER_WORKLOADS,
        )
        got = await apps.read_namespaced_deployment(name, "kube-system")
        assert got.spec.template.spec.containers[0].image == "registry.invalid/good:1"
        assert not got.spec.template.spec.host_pid
        # Evictions: not in the cluster's nor the project's namespaces (the pod need not
        # exist: admission answers first).
        for namespace in ("kube-system", SYSTEM):
            await refused(
                lambda ns=namespace: CoreV1Api(reb.api_client).create_namespaced_pod_eviction(
                    "any",
                    ns,
                    {"metadata": {"name": "any", "namespace": ns}},
                    dry_run="All",
                ),
                REBALANCER_EVICTIONS,
            )
    finally:
        await _delete(apps.delete_namespaced_deployment, name, "kube-system")
        await _delete(apps.delete_namespaced_stateful_set, name, APPS)
        await reb.api_client.close()


def _statefulset(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
        },
    }


async def test_the_rebalancers_own_moves_pass_as_the_rebalancer(
    admin: ApiClient, devcluster: Any
) -> None:
    """The evictor's code, with the rebalancer's token: a rollout, a park and an unpark
    of a Deployment and of a StatefulSet, and an eviction with its move record."""
    apps = AppsV1Api(admin)
    sa = await as_sa(devcluster, REBALANCER)
    evictor = Evictor(
        CoreV1Api(sa),
        AppsV1Api(sa),
        policy=cast(Any, None),
        index=cast(Any, None),
        workloads=Workloads(),
        metrics=cast(Any, None),
    )
    name = "writes-moved"
    await _delete(apps.delete_namespaced_deployment, name, APPS)
    await _delete(apps.delete_namespaced_stateful_set, name, APPS)
    await apps.create_namespaced_deployment(APPS, _deployment(name, replicas=2))
    await apps.create_namespaced_stateful_set(APPS, _statefulset(name))
    try:
        for kind, read in (
            (Kind.DEPLOYMENT, apps.read_namespaced_deployment),
            (Kind.STATEFUL_SET, apps.read_namespaced_stateful_set),
        ):
            replicas = (await read(name, APPS)).spec.replicas
            workload = Workload(kind, APPS, name, replicas=replicas)

            def move(action: Action, w: Workload = workload) -> Move:
                return Move(action, Reason.ROAMING, w, None, "gw-home", "gw-hospital", {})

            now, rollout = time.time(), move(Action.ROLLOUT)
            await allowed(lambda m=rollout, t=now: evictor._act(m, t), "the RBAC")
            got = await read(name, APPS)
            assert MOVED_ANNOTATION in got.spec.template.metadata.annotations
            assert LAST_MOVE_ANNOTATION in got.metadata.annotations
            assert await evictor._act(move(Action.PARK), now) == "ok"
            got = await read(name, APPS)
            assert got.spec.replicas == 0
            assert got.metadata.annotations[PARKED_ANNOTATION] == str(replicas)
            parked = Workload(kind, APPS, name, replicas=0, parked_replicas=replicas)
            assert await evictor._act(move(Action.UNPARK, parked), now) == "ok"
            got = await read(name, APPS)
            assert got.spec.replicas == replicas
            assert PARKED_ANNOTATION not in got.metadata.annotations

        # An eviction of one of the Deployment's pods, then its move record.
        evict = await eviction_of_a_pod(admin, Workload(Kind.DEPLOYMENT, APPS, name, replicas=2))
        before = (await apps.read_namespaced_deployment(name, APPS)).metadata.annotations
        assert await evictor._act(evict, time.time()) == "ok"
        after = (await apps.read_namespaced_deployment(name, APPS)).metadata.annotations
        assert after[LAST_MOVE_ANNOTATION] != before[LAST_MOVE_ANNOTATION]
    finally:
        await _delete(apps.delete_namespaced_deployment, name, APPS)
        await _delete(apps.delete_namespaced_stateful_set, name, APPS)
        await sa.close()


async def eviction_of_a_pod(admin: ApiClient, workload: Workload) -> Move:
    """The rebalancer's eviction of one pod of `workload` (selected by app=<its name>),
    once the controller has made one."""
    core = CoreV1Api(admin)

    async def a_pod() -> Any:
        selector = f"app={workload.name}"
        pods = (await core.list_namespaced_pod(workload.namespace, label_selector=selector)).items
        return next((p for p in pods if p.metadata.owner_references), None)

    await eventually(a_pod, within=30, what=f"a pod of {workload.key}")
    pod = await a_pod()
    managed = ManagedPod(
        pod.metadata.uid,
        pod.metadata.name,
        workload.namespace,
        pod.spec.node_name or "",
        PodFacts.from_pod(admin.sanitize_for_serialization(pod)),
        workload,
    )
    return Move(Action.EVICT, Reason.ROAMING, workload, managed, "gw-home", "gw-hospital", {})


# --- a renamed namespace ---------------------------------------------------------------


async def test_the_policies_hold_the_tokens_in_a_renamed_namespace(
    admin: ApiClient, devcluster: Any
) -> None:
    """The namespaces overlay moves both ServiceAccounts to iot-placement: the policies
    match them by name there too, and "its own namespace" follows the username."""
    sa_ext = await as_sa(devcluster, EXTENDER, RENAMED)
    sa_reb = await as_sa(devcluster, REBALANCER, RENAMED)
    ext, reb = AppsV1Api(sa_ext), CoreV1Api(sa_reb)
    try:
        await refused(
            lambda: CoreV1Api(sa_ext).patch_node(
                NODE,
                {"metadata": {"labels": {GATEWAY_LABEL: "true"}}},
                dry_run="All",
                _content_type=MERGE,
            ),
            EXTENDER_NODES,
        )
        said = await refused(
            lambda: ext.create_namespaced_deployment(
                RENAMED, _deployment("writes-evil", **PRIVILEGED_TEMPLATE), dry_run="All"
            ),
            EXTENDER_DEPLOYMENTS,
        )
        assert f"namespace {RENAMED}" in said, said
        await refused(
            lambda: reb.create_namespaced_pod_eviction(
                "any", RENAMED, {"metadata": {"name": "any", "namespace": RENAMED}}, dry_run="All"
            ),
            REBALANCER_EVICTIONS,
        )
    finally:
        await sa_ext.close()
        await sa_reb.close()


async def test_the_policies_type_check_against_the_resources_they_match(
    admin: ApiClient, devcluster: Any
) -> None:
    """The apiserver checks each expression against the schema of every kind the policy
    matches (a field of one kind read on another, a typo) and reports warnings only:
    there must be none."""
    from kubernetes.aio.client import AdmissionregistrationV1Api

    api = AdmissionregistrationV1Api(admin)
    names = (
        EXTENDER_NODES,
        EXTENDER_DEPLOYMENTS,
        EXTENDER_DEVICES,
        REBALANCER_WORKLOADS,
        REBALANCER_EVICTIONS,
    )
    checked: dict[str, Any] = {}

    async def all_checked() -> bool:
        for name in names:
            policy = await api.read_validating_admission_policy(name)
            status = policy.status
            if status is None or status.observed_generation != policy.metadata.generation:
                return False
            checked[name] = status.type_checking
        return True

    await eventually(all_checked, within=30, interval=0.5, what="the policies type-checked")
    warnings = {
        name: [(w.field_ref, w.warning) for w in (tc.expression_warnings or [])]
        for name, tc in checked.items()
        if tc is not None
    }
    assert not any(warnings.values()), "\n".join(f"{n}: {w}" for n, w in warnings.items())
