"""The base and every overlay render, and what a `namespace:` field cannot fix is right
in each: binding subjects, the webhook's Service, Lease namespaces, the sighting rule,
the certificates' names, the Prometheus flags. (The install test applies the base and
the namespaces overlay to the devcluster; cert-manager and the Prometheus stacks do not
run there, so their overlays are checked here, rendered.)"""

from __future__ import annotations

import pytest
import yaml

from cloud4iot.policy.loader import load_policy
from extender.cli import _extender_parser
from extender.state.prometheus import PRESETS
from rebalancer.cli import parser as _rebalancer_parser
from tests.install.render import MANIFESTS, find, render

ALL = ("", "namespaces", "cert-manager", "kube-prometheus", "kube-prometheus-stack")
NAMESPACES = {
    "": ("cloud4iot-system", "cloud4iot-gateway"),
    "namespaces": ("iot-placement", "iot-gateways"),
}
# Subjects that are not ours: kube-prometheus' Prometheus runs as ServiceAccount
# prometheus-k8s in `monitoring` (its prometheus-prometheus.yaml) and may list pods only
# where it holds a Role (its own: default, kube-system, monitoring), so that overlay
# binds it a Role in each namespace our PodMonitors are in. The stack's chart gives its
# Prometheus a ClusterRole and needs none.
FOREIGN = {"kube-prometheus": {("prometheus-k8s", "monitoring")}}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


@pytest.mark.parametrize("overlay", ALL)
def test_subjects_and_the_webhook_follow_their_namespaces(overlay: str) -> None:
    docs = render(overlay)
    accounts = {
        d["metadata"]["name"]: d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    assert set(accounts) == {
        "cloud4iot-scheduler",
        "cloud4iot-extender",
        "cloud4iot-rebalancer",
        "cloud4iot-gateway-monitor",
    }
    for d in docs:
        for s in d.get("subjects") or []:
            if (s["name"], s["namespace"]) in FOREIGN.get(overlay, set()):
                continue
            assert s["namespace"] == accounts[s["name"]], (d["kind"], d["metadata"]["name"])
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in d["metadata"], d["metadata"]["name"]
        else:
            assert d["metadata"]["namespace"], d["metadata"]["name"]
    service = find(docs, "Service", "cloud4iot-extender")
    hook = find(docs, "MutatingWebhookConfiguration", "cloud4iot-narrowing")
    assert (
        hook["webhooks"][0]["clientConfig"]["service"]["namespace"]
        == service["metadata"]["namespace"]
    )
    # The one object outside our namespaces: the scheduler's reader binding.
    rb = find(docs, "RoleBinding", "cloud4iot-scheduler-extension-apiserver-authentication-reader")
    assert rb["metadata"]["namespace"] == "kube-system"
    assert rb["roleRef"]["name"] == "extension-apiserver-authentication-reader"


@pytest.mark.parametrize("overlay", ["kube-prometheus", "kube-prometheus-stack"])
def test_the_stacks_prometheus_may_discover_the_podmonitors_pods(overlay: str) -> None:
    docs = render(overlay)
    monitored = {d["metadata"]["namespace"] for d in docs if d["kind"] == "PodMonitor"}
    assert monitored == {"cloud4iot-system", "cloud4iot-gateway"}
    bound = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
        in d["subjects"]
    }
    if overlay == "kube-prometheus-stack":
        assert not bound  # its chart's ClusterRole already covers every namespace
        for kind in ("PodMonitor", "PrometheusRule"):  # its default selectors
            for d in docs:
                if d["kind"] == kind:
                    assert d["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        return
    assert bound == monitored
    for namespace in monitored:
        (role,) = [
            d
            for d in docs
            if d["kind"] == "Role"
            and d["metadata"]["namespace"] == namespace
            and d["metadata"]["name"] == "prometheus-k8s-cloud4iot"
        ]
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
        ]


@pytest.mark.parametrize("overlay", ["", "namespaces"])
def test_every_namespaced_object_is_in_the_overlays_namespaces(overlay: str) -> None:
    docs = render(overlay)
    placement, gateway = NAMESPACES[overlay]
    spaces = {d["metadata"].get("namespace") for d in docs} - {None}
    assert spaces == {placement, gateway, "kube-system"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} == {placement, gateway}
    if overlay:
        text = yaml.safe_dump_all(docs)
        assert "cloud4iot-system" not in text
        assert "namespace: cloud4iot-gateway\n" not in text


@pytest.mark.parametrize("overlay", ALL)
def test_the_policy_is_one_generated_configmap_per_namespace(overlay: str) -> None:
    docs = render(overlay)
    maps = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cloud4iot-policy"
    ]
    shipped = (MANIFESTS / "policy" / "policy.yaml").read_text()
    assert len(maps) == 2
    assert all(m["data"] == {"policy.yaml": shipped} for m in maps)
    for kind, name in (
        ("Deployment", "cloud4iot-extender"),
        ("Deployment", "cloud4iot-rebalancer"),
        ("DaemonSet", "cloud4iot-gateway-monitor"),
    ):
        pod = find(docs, kind, name)["spec"]["template"]["spec"]
        (volume,) = [
            v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "cloud4iot-policy"
        ]
        assert not volume["configMap"].get("optional", False), name


@pytest.mark.parametrize("overlay", ALL)
def test_the_second_scheduler(overlay: str) -> None:
    docs = render(overlay)
    dep = find(docs, "Deployment", "cloud4iot-scheduler")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.k8s.io/kube-scheduler:v1.36.3"
    assert "--leader-elect-resource-namespace=$(POD_NAMESPACE)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    config_map = find(docs, "ConfigMap", volumes["config"]["configMap"]["name"])
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["leaderElection"] == {"leaderElect": True, "resourceName": "cloud4iot-scheduler"}
    (ext,) = config["extenders"]
    assert ext["urlPrefix"] == "https://cloud4iot-extender:8888"
    assert ext["tlsConfig"]["caFile"].startswith("/etc/kubernetes/cloud4iot/")
    assert volumes["tls"]["secret"]["secretName"] == "cloud4iot-scheduler-tls"
    role = find(docs, "Role", "cloud4iot-scheduler-lease")
    assert {"resourceNames": ["cloud4iot-scheduler"], "verbs": ["get", "update"]}.items() <= role[
        "rules"
    ][1].items()


@pytest.mark.parametrize("overlay", ALL)
def test_the_services_args_parse_and_leases_follow_the_pod(overlay: str) -> None:
    docs = render(overlay)
    for name, parser in (
        ("cloud4iot-extender", _extender_parser()),
        ("cloud4iot-rebalancer", _rebalancer_parser()),
    ):
        (c,) = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        args = parser.parse_args(c["args"])
        assert args.lease_namespace == "$(POD_NAMESPACE)"
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        if overlay.startswith("kube-prometheus"):
            assert args.prometheus_preset == overlay
            assert args.prometheus_preset in PRESETS
            assert args.prometheus_url.endswith(".monitoring.svc:9090")
        else:
            assert args.prometheus_url is None
            assert args.prometheus_preset is None


def test_cert_manager_issues_the_secrets_the_pods_mount() -> None:
    docs = render("cert-manager")
    certs = {d["spec"]["secretName"]: d for d in docs if d["kind"] == "Certificate"}
    mounted = {
        v["secret"]["secretName"]
        for d in docs
        if d["kind"] == "Deployment"
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert mounted <= set(certs)
    assert certs["cloud4iot-scheduler-tls"]["spec"]["usages"] == ["client auth"]
    assert certs["cloud4iot-extender-tls"]["spec"]["dnsNames"] == ["cloud4iot-extender"]
    ns = find(docs, "Service", "cloud4iot-extender")["metadata"]["namespace"]
    assert certs["cloud4iot-extender-admission-tls"]["spec"]["dnsNames"] == [
        f"cloud4iot-extender.{ns}.svc"
    ]
    hook = find(docs, "MutatingWebhookConfiguration", "cloud4iot-narrowing")
    admission = certs["cloud4iot-extender-admission-tls"]["metadata"]
    assert (
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == f"{admission['namespace']}/{admission['name']}"
    )
    assert certs["cloud4iot-ca"]["spec"]["isCA"] is True


def test_the_shipped_policy_is_valid() -> None:
    load_policy(MANIFESTS / "policy" / "policy.yaml")


CONTROLLER_WRITES = {
    "cloud4iot-extender-node-writes",
    "cloud4iot-extender-deployment-writes",
    "cloud4iot-extender-device-writes",
    "cloud4iot-rebalancer-workload-writes",
    "cloud4iot-rebalancer-evictions",
}


@pytest.mark.parametrize("overlay", ALL)
def test_every_overlay_holds_the_controllers_tokens_to_their_writes(overlay: str) -> None:
    """placement/controller-writes is cluster-scoped, so each overlay lists it itself; its
    policies name the ServiceAccounts without a namespace (an overlay renames it) and rely
    on the project's namespaces keeping their part-of label."""
    docs = render(overlay)
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        names = {d["metadata"]["name"] for d in docs if d["kind"] == kind}
        assert names >= CONTROLLER_WRITES, (kind, CONTROLLER_WRITES - names)
    for name in CONTROLLER_WRITES:
        text = yaml.safe_dump(find(docs, "ValidatingAdmissionPolicy", name))
        assert "cloud4iot-system" not in text, name
        assert "cloud4iot-gateway'" not in text, name
    for ns in (d for d in docs if d["kind"] == "Namespace"):
        assert ns["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cloud4iot"


WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


@pytest.mark.parametrize("overlay", ALL)
def test_every_part_runs_unprivileged_with_its_own_service_account(overlay: str) -> None:
    """Review (sec 4): no part runs as uid 0 (the gateway monitor included: uid 0 on the
    host's system bus is the host's root, whatever its capabilities), each with every
    capability dropped, no privilege escalation, a read-only root, seccomp RuntimeDefault,
    no host namespace and a ServiceAccount of its own; the only host path is the
    monitor's D-Bus directory, mounted read-only."""
    docs = render(overlay)
    accounts = []
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        accounts.append(pod.get("serviceAccountName"))
        assert not [k for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)], what
        host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        if doc["metadata"]["name"] == "cloud4iot-gateway-monitor":
            assert host_paths == {"dbus": "/run/dbus"}, what
        else:
            assert not host_paths, what
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, what
            assert isinstance(uid, int), (what, uid)
            assert uid != 0, what
            assert sc.get("allowPrivilegeEscalation") is False, what
            assert sc.get("privileged", False) is False, what
            assert sc.get("readOnlyRootFilesystem") is True, what
            assert sc.get("capabilities") == {"drop": ["ALL"]}, what
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile"))
            assert seccomp == {"type": "RuntimeDefault"}, what
            for mount in c.get("volumeMounts", []):
                if mount["name"] in host_paths:
                    assert mount.get("readOnly") is True, (what, mount)
    assert len(accounts) == 4, accounts  # scheduler, extender, rebalancer, gateway monitor
    assert None not in accounts, accounts
    assert len(set(accounts)) == len(accounts), accounts
