"""The install an admin does (README, "Deploying on a cluster"), proven on the devcluster.

For the base and the namespaces, kube-prometheus, kube-prometheus-stack and cert-manager
overlays (with real cert-manager: tests/install/certmanager.py): the README's commands, verbatim, with the kubectl
built from k8s.io/kubectl v0.36.3 (server-side apply). Each part then runs as a host
process (kwok runs no containers) with the args and env of its rendered Deployment or
DaemonSet, its mounts filled from the ConfigMaps and Secrets in the cluster (the
Secrets `cloud4iot certs` made), and a kubeconfig holding a TokenRequest token of ITS
ServiceAccount (the monitors': bound to the DaemonSet's pod on their gateway). The second
kube-scheduler runs from the rendered ConfigMap with the devcluster's kube-scheduler
binary (v1.36.3, the image's tag). A classed pod of a Deployment is then narrowed by the
webhook, placed through the extender over mutual TLS by that scheduler, and roams when
its device moves; the default scheduler keeps placing its pods.

What differs from a pod, and only that (HOST below): every port is a free loopback
port; `--in-cluster` becomes `--kubeconfig`; the scheduler dials the extender at
127.0.0.1 (serverName stays cloud4iot-extender, so the extender's certificate is
verified); the webhook calls https://127.0.0.1 (the admission pair gets an extra
127.0.0.1 SAN from a second `cloud4iot certs` run, which also proves the CA is kept);
the monitors replay BLE traces instead of scanning; `--prometheus-url` is a real
Prometheus labelled like the overlay's stack (tests/install/stacks.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster import kube
from devcluster.cluster import KUBE_VERSION, Devcluster
from devcluster.processes import free_port
from tests.install import certmanager, stacks
from tests.install.render import ROOT, find, kubectl, render

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
# The README's commands, verbatim (tests/layout/test_readme_install.py compares them);
# {overlay} is manifests/ or manifests/overlays/namespaces/, {ns} its placement namespace.
README_COMMANDS = (
    "kubectl apply --server-side -k {overlay}",
    "cloud4iot certs --namespace {ns}",
)
OVERLAYS = {
    "": ("cloud4iot-system", "cloud4iot-gateway"),
    "namespaces": ("iot-placement", "iot-gateways"),
    "kube-prometheus": ("cloud4iot-system", "cloud4iot-gateway"),
    "kube-prometheus-stack": ("cloud4iot-system", "cloud4iot-gateway"),
    "cert-manager": ("cloud4iot-system", "cloud4iot-gateway"),
}
# The overlays that read load from a Prometheus stack: the stack whose series shape the
# test's Prometheus takes (tests/install/stacks.py) and the preset the overlay must pass.
PROMETHEUS_OVERLAYS = {
    "kube-prometheus": "kube-prometheus",
    "kube-prometheus-stack": "kube-prometheus-stack",
}
DEVICE = "patient-42-hr"
ADDRESS = "C0:FF:EE:00:00:42"


def wait(what: str, check: Any, timeout: float = 90, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError:
            raise  # a failure, not a service that is not up yet
        except Exception as exc:  # a probe that is not up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


@dataclass
class Install:
    overlay: str
    ns: str
    gw_ns: str
    cluster: Devcluster
    api: client.ApiClient
    work: Path
    env: dict[str, str]
    prometheus_url: str | None = None  # HOST: the stack-shaped Prometheus on loopback
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    kubeconfigs: dict[str, Path] = field(default_factory=dict)

    @property
    def docs(self) -> tuple[dict[str, Any], ...]:
        return render(self.overlay)

    def sh(self, command: str) -> str:
        """A README command: `kubectl` is the built one, `cloud4iot` this venv's."""
        argv = command.split()
        exe = {"kubectl": str(kubectl()), "cloud4iot": str(BIN / "cloud4iot")}[argv[0]]
        out = subprocess.run(
            [exe, *argv[1:]], env=self.env, capture_output=True, text=True, cwd=ROOT
        )
        assert out.returncode == 0, f"{command}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def token_kubeconfig(self, sa: str, ns: str, pod: str | None = None) -> Path:
        """A kubeconfig with a TokenRequest token of the ServiceAccount (bound to `pod`)."""
        bound = f" --bound-object-kind Pod --bound-object-name {pod}" if pod else ""
        token = self.sh(f"kubectl create token {sa} -n {ns} --duration 2h{bound}").strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        path = self.work / f"kubeconfig-{sa}{'-' + pod if pod else ''}"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
            "current-context": "c",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def materialize(
        self, pod: dict[str, Any], container: dict[str, Any], name: str
    ) -> dict[str, str]:
        """Each volumeMount's files from the cluster's ConfigMap or Secret: mountPath -> dir."""
        core = client.CoreV1Api(self.api)
        ns = pod["_ns"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts: dict[str, str] = {}
        for m in container.get("volumeMounts", []):
            v = volumes[m["name"]]
            if "configMap" in v:
                files = core.read_namespaced_config_map(v["configMap"]["name"], ns).data
            elif "secret" in v:
                data = core.read_namespaced_secret(v["secret"]["secretName"], ns).data
                files = {k: base64.b64decode(b).decode() for k, b in data.items()}
            else:
                continue  # hostPath, emptyDir: nothing of ours
            items = v.get("configMap", {}).get("items")
            if items:
                files = {i["path"]: files[i["key"]] for i in items}
            target = self.work / name / m["mountPath"].strip("/")
            target.mkdir(parents=True, exist_ok=True)
            for key, text in files.items():
                (target / key).write_text(text)
            mounts[m["mountPath"]] = str(target)
        return mounts

    def host_argv(
        self,
        kind: str,
        name: str,
        exe: Path,
        kubeconfig: Path,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """The container's args and env as a host process (HOST adaptations only)."""
        doc = find(self.docs, kind, name)
        pod = {**doc["spec"]["template"]["spec"], "_ns": doc["metadata"]["namespace"]}
        (container,) = pod["containers"]
        mounts = self.materialize(pod, container, name)
        env: dict[str, str] = {}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
                env[e["name"]] = doc["metadata"]["namespace"]
            elif e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
                env[e["name"]] = name  # no Pod object here: uid stays unset
        env.update(extra_env or {})
        args = []
        for a in container.get("args", []):
            a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
            flag, eq, value = a.partition("=")
            for path in sorted(mounts, key=len, reverse=True):  # the longest mount first
                if value.startswith(path + "/"):
                    a = f"{flag}{eq}{mounts[path]}{value[len(path) :]}"
                    break
            if flag in ("--port", "--health-port", "--admission-port"):
                self.ports[f"{name}{flag}"] = port = free_port()
                a = f"{flag}={port}"
            if a == "--in-cluster":
                a = f"--kubeconfig={kubeconfig}"
            if flag == "--prometheus-url":
                assert self.prometheus_url, f"{name}: {a} but no Prometheus stack for this overlay"
                a = f"{flag}={self.prometheus_url}"
            args.append(a)
        return [str(exe), *args], env, mounts

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.work / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work,
            start_new_session=True,
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def serving(self, name: str, what: str, check: Any, timeout: float = 60) -> Any:
        """wait(), failing at once with the log when the process has exited."""

        def probe() -> Any:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)[-4000:]}")
            return check()

        try:
            return wait(what, probe, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {name} log:\n{self.log(name)[-4000:]}") from None

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.load(resp)


def _trace(path: Path, rssi: int, seconds: int = 1800) -> Path:
    lines = [
        json.dumps({"t": i * 0.5, "address": ADDRESS, "rssi": rssi}) for i in range(seconds * 2)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    """A devcluster of its own with no extender: only the default scheduler runs in it
    (its profile knows nothing of ours); the install brings the second one."""
    c = Devcluster(
        f"install-{os.getpid()}",
        state_root=tmp_path_factory.mktemp("install-cluster"),
        with_extender=False,
        sighting_admission=False,  # the manifests bring it
        default_scheduler_only=True,  # no profile of ours, its own Lease held
    )
    c.up()
    try:
        yield c
    finally:
        c.down(keep_logs=os.environ.get("CLOUD4IOT_KEEP_LOGS") == "1")
        assert c.leftover_processes() == []


@pytest.fixture(scope="module", params=list(OVERLAYS), ids=[o or "base" for o in OVERLAYS])
def install(
    request: pytest.FixtureRequest, cluster: Devcluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    overlay: str = request.param
    ns, gw_ns = OVERLAYS[overlay]
    work = tmp_path_factory.mktemp(f"install-{overlay or 'base'}")
    with kube.api_client(cluster.kubeconfig) as api:
        inst = Install(
            overlay,
            ns,
            gw_ns,
            cluster,
            api,
            work,
            {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        )
        folder = "manifests/" + (f"overlays/{overlay}/" if overlay else "")
        if overlay in PROMETHEUS_OVERLAYS:
            # The stack is installed first (its namespace holds the overlay's
            # NetworkPolicy); a real Prometheus with the stack's labels stands for it.
            inst.prometheus_url = stacks.start(inst, PROMETHEUS_OVERLAYS[overlay])
        if overlay == "cert-manager":
            # cert-manager is installed first; it issues the pairs `cloud4iot certs` makes.
            certmanager.install(inst)
            inst.sh(README_COMMANDS[0].format(overlay=folder, ns=ns))
            certmanager.wait_issued(inst)
        else:
            for command in README_COMMANDS:
                inst.sh(command.format(overlay=folder, ns=ns))
        try:
            _run_parts(inst)
            yield inst
        finally:
            for name in list(inst.procs):
                inst.stop(name)
            # HOST: the webhook was pointed at loopback; the next install applies its own.
            client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(
                "cloud4iot-narrowing"
            )


def _run_parts(inst: Install) -> None:
    core, apps = client.CoreV1Api(inst.api), client.AppsV1Api(inst.api)
    hook = client.AdmissionregistrationV1Api(inst.api).read_mutating_webhook_configuration(
        "cloud4iot-narrowing"
    )
    ca = base64.b64decode(core.read_namespaced_secret("cloud4iot-ca", inst.ns).data["tls.crt"])
    assert base64.b64decode(hook.webhooks[0].client_config.ca_bundle) == ca  # caBundle set
    # HOST: the webhook is reached at 127.0.0.1, so its pair also names that address; a
    # second run keeps the CA (kube-scheduler would need a restart for a new one).
    if inst.overlay == "cert-manager":
        certmanager.add_loopback_san(inst)
    else:
        out = inst.sh(f"cloud4iot certs --namespace {inst.ns} --extra-san 127.0.0.1")
        assert "CA kept" in out
    assert (
        base64.b64decode(core.read_namespaced_secret("cloud4iot-ca", inst.ns).data["tls.crt"]) == ca
    )

    # The DaemonSet's pods, one per gateway (kwok "runs" them): the monitors' tokens bind to them.
    def monitor_pods() -> dict[str, str]:
        pods = core.list_namespaced_pod(
            inst.gw_ns, label_selector="app.kubernetes.io/name=cloud4iot-gateway-monitor"
        ).items
        return {
            p.spec.node_name: p.metadata.name
            for p in pods
            if p.spec.node_name and p.status.phase == "Running"
        }

    inst.monitor_pods = wait(
        "a monitor pod on each gateway", lambda: len(monitor_pods()) == 2 and monitor_pods()
    )  # type: ignore[attr-defined]
    for sa in ("cloud4iot-extender", "cloud4iot-rebalancer", "cloud4iot-scheduler"):
        inst.kubeconfigs[sa] = inst.token_kubeconfig(sa, inst.ns)

    argv, env, _ = inst.host_argv(
        "Deployment",
        "cloud4iot-extender",
        BIN / "cloud4iot-extender",
        inst.kubeconfigs["cloud4iot-extender"],
    )
    inst.start("extender", [*argv, "--host=127.0.0.1"], env)
    health = inst.ports["cloud4iot-extender--health-port"]
    inst.serving(
        "extender",
        "the extender ready",
        lambda: _get_json(f"http://127.0.0.1:{health}/readyz")["ready"],
    )

    argv, env, _ = inst.host_argv(
        "Deployment",
        "cloud4iot-rebalancer",
        BIN / "cloud4iot-rebalancer",
        inst.kubeconfigs["cloud4iot-rebalancer"],
    )
    inst.start("rebalancer", [*argv, "--host=127.0.0.1"], env)
    rport = inst.ports["cloud4iot-rebalancer--port"]
    inst.serving(
        "rebalancer",
        "the rebalancer ready",
        lambda: _get_json(f"http://127.0.0.1:{rport}/readyz")["ready"],
    )

    # The second kube-scheduler from the rendered ConfigMap, as its Deployment runs it.
    sched = find(inst.docs, "Deployment", "cloud4iot-scheduler")
    (container,) = sched["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.k8s.io/kube-scheduler:{KUBE_VERSION}"
    argv, env, mounts = inst.host_argv(
        "Deployment",
        "cloud4iot-scheduler",
        Path(inst.cluster.state().bin_dir) / "kube-scheduler",
        inst.kubeconfigs["cloud4iot-scheduler"],
    )
    config_path = Path(mounts["/etc/kubernetes/cloud4iot-scheduler"]) / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["clientConnection"]["kubeconfig"] = str(
        inst.kubeconfigs["cloud4iot-scheduler"]
    )  # in-cluster
    (ext,) = config["extenders"]
    assert ext["tlsConfig"]["serverName"] == "cloud4iot-extender"
    ext["urlPrefix"] = f"https://127.0.0.1:{inst.ports['cloud4iot-extender--port']}"  # HOST
    for key in ("certFile", "keyFile", "caFile"):
        ext["tlsConfig"][key] = ext["tlsConfig"][key].replace(
            "/etc/kubernetes/cloud4iot", mounts["/etc/kubernetes/cloud4iot"]
        )
    config_path.write_text(yaml.safe_dump(config))
    kc = inst.kubeconfigs["cloud4iot-scheduler"]
    inst.start(
        "scheduler",
        [
            *argv,
            f"--secure-port={free_port()}",
            "--bind-address=127.0.0.1",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        ],
        env,
    )
    coordination = client.CoordinationV1Api(inst.api)
    wait(
        "the second scheduler's Lease held",
        lambda: (
            coordination.read_namespaced_lease("cloud4iot-scheduler", inst.ns).spec.holder_identity
        ),
        60,
    )

    # HOST: the apiserver calls the extender's admission port on loopback.
    admission = inst.ports["cloud4iot-extender--admission-port"]
    client.AdmissionregistrationV1Api(inst.api).patch_mutating_webhook_configuration(
        "cloud4iot-narrowing",
        [
            {
                "op": "replace",
                "path": "/webhooks/0/clientConfig",
                "value": {
                    "url": f"https://127.0.0.1:{admission}/admit",
                    "caBundle": base64.b64encode(ca).decode(),
                },
            }
        ],
    )
    # The device, heard at home.
    custom = client.CustomObjectsApi(inst.api)
    try:
        custom.create_cluster_custom_object(
            "cloud4iot.io",
            "v1alpha1",
            "devices",
            {
                "apiVersion": "cloud4iot.io/v1alpha1",
                "kind": "Device",
                "metadata": {"name": DEVICE},
                "spec": {"address": ADDRESS},
            },
        )
    except client.ApiException as exc:
        if exc.status != 409:  # the base's run made it
            raise
    start_monitor(inst, "gw-home", -55)
    start_monitor(inst, "gw-hospital", -95)
    del apps


def start_monitor(inst: Install, node: str, rssi: int) -> None:
    pod = inst.monitor_pods[node]  # type: ignore[attr-defined]
    kc = inst.token_kubeconfig("cloud4iot-gateway-monitor", inst.gw_ns, pod=pod)
    argv, env, _ = inst.host_argv(
        "DaemonSet",
        "cloud4iot-gateway-monitor",
        BIN / "cloud4iot-gateway-monitor",
        kc,
        {"NODE_NAME": node, "KUBECONFIG": str(kc)},
    )
    # HOST: a loopback port, and a replayed radio.
    trace = _trace(inst.work / f"trace-{node}.jsonl", rssi)
    inst.start(
        f"monitor-{node}",
        [*argv, "--host=127.0.0.1", f"--port={free_port()}", f"--replay={trace}"],
        env,
    )


def nearest(inst: Install) -> str | None:
    dev = client.CustomObjectsApi(inst.api).get_cluster_custom_object(
        "cloud4iot.io", "v1alpha1", "devices", DEVICE
    )
    node = ((dev.get("status") or {}).get("nearest") or {}).get("node")
    return node if isinstance(node, str) else None


def sightings(inst: Install) -> dict[str, int]:
    """node -> RSSI of every gateway's report that lists the device."""
    reports = client.CustomObjectsApi(inst.api).list_cluster_custom_object(
        "cloud4iot.io", "v1alpha1", "gatewayreports"
    )
    return {
        r["metadata"]["name"]: e["rssi"]
        for r in reports["items"]
        for e in (r.get("status") or {}).get("sightings") or []
        if e["device"] == DEVICE
    }


def test_a_classed_pod_is_narrowed_placed_over_mtls_and_roams(install: Install) -> None:
    inst = install
    wait("the home gateway's sighting", lambda: "gw-home" in sightings(inst), 60)
    # ... and the extender's decision from it: the Device outlives an overlay's run on this
    # cluster, so a previous run's decision (gw-hospital, after its roam) is there first.
    wait("the extender's decision gw-home", lambda: nearest(inst) == "gw-home", 30)
    app_ns = f"apps-{inst.overlay or 'base'}"
    kube.create_namespace(inst.api, app_ns)
    labels = {"app": "consolidator"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "consolidator", "namespace": app_ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "cloud4iot.io/function": "mhealth-consolidator",
                        "cloud4iot.io/device": DEVICE,
                        "cloud4iot.io/archs": "arm64,amd64",
                    },
                },
                "spec": {
                    "schedulerName": "cloud4iot-scheduler",
                    "containers": [{"name": "c", "image": "example/consolidator:1"}],
                },
            },
        },
    }
    client.AppsV1Api(inst.api).create_namespaced_deployment(app_ns, deployment)
    core = client.CoreV1Api(inst.api)

    def running_on() -> dict[str, Any]:
        pods = core.list_namespaced_pod(app_ns, label_selector="app=consolidator").items
        return {
            p.spec.node_name: p
            for p in pods
            if p.spec.node_name
            and p.status.phase == "Running"
            and not p.metadata.deletion_timestamp
        }

    first = wait("the pod placed", lambda: running_on(), 90)
    assert list(first) == ["gw-home"], list(first)
    pod = first["gw-home"]
    assert "cloud4iot.io/narrowed" in (pod.metadata.annotations or {})  # the webhook pinned it
    events = core.list_namespaced_event(
        app_ns, field_selector=f"involvedObject.name={pod.metadata.name}"
    ).items
    assert any(
        e.reason == "Scheduled"
        and (e.reporting_component or e.source.component or "").startswith("cloud4iot-scheduler")
        for e in events
    ), [(e.reason, e.reporting_component, e.source.component) for e in events]
    # Over mutual TLS: the extender answered filter requests from the scheduler.
    health = inst.ports["cloud4iot-extender--health-port"]
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=3).read().decode()
    )
    filtered = [
        line
        for line in metrics.splitlines()
        if line.startswith("cloud4iot_extender_requests_total{")
        and 'verb="filter"' in line
        and 'code="200"' in line
    ]
    assert filtered, metrics[:2000]
    assert sum(float(line.split()[-1]) for line in filtered) >= 1

    # The patient walks to the hospital: home stops hearing the strap, the hospital hears it.
    inst.stop("monitor-gw-home")
    inst.stop("monitor-gw-hospital")
    start_monitor(inst, "gw-hospital", -50)
    wait("the move to gw-hospital", lambda: list(running_on()) == ["gw-hospital"], 180, 1)

    # The default scheduler keeps working beside ours.
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": app_ns},
        "spec": {"containers": [{"name": "c", "image": "example/plain:1"}]},
    }
    core.create_namespaced_pod(app_ns, plain)
    wait(
        "a default-scheduler pod bound",
        lambda: core.read_namespaced_pod("plain", app_ns).spec.node_name,
        60,
    )
    # Our scheduler holds its own Lease in its namespace, never the default's.
    coordination = client.CoordinationV1Api(inst.api)
    assert coordination.read_namespaced_lease("cloud4iot-scheduler", inst.ns).spec.holder_identity
    for lease in ("cloud4iot-extender", "cloud4iot-rebalancer"):
        assert coordination.read_namespaced_lease(lease, inst.ns).spec.holder_identity
    with pytest.raises(client.ApiException):
        coordination.read_namespaced_lease("cloud4iot-scheduler", "kube-system")
    # Both schedulers elected, each on its own Lease.
    default = coordination.read_namespaced_lease("kube-scheduler", "kube-system").spec
    ours = coordination.read_namespaced_lease("cloud4iot-scheduler", inst.ns).spec
    assert default.holder_identity
    assert ours.holder_identity
    assert default.holder_identity != ours.holder_identity
    # Nothing was refused to any part: a missing RBAC rule shows as "forbidden".
    for name in [*list(inst.procs), "monitor-gw-home"]:
        assert "forbidden" not in inst.log(name).lower(), (name, inst.log(name)[-3000:])


def _metrics(port: int) -> dict[str, float]:
    """/metrics as {'name{label="v",...}': value}, labels in the order exposed."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


SOURCE_UP = 'cloud4iot_extender_source_up{source="prometheus"}'
WITHOUT_NODE = "cloud4iot_extender_prometheus_series_without_node"
NODES_WITHOUT = "cloud4iot_extender_nodes_without_metrics"


def test_the_overlays_prometheus_preset_finds_every_nodes_load(install: Install) -> None:
    """Under a Prometheus overlay the extender and the rebalancer, run with its rendered
    args against a Prometheus labelled like that stack, know every node's load; the
    policy's own `by (node)` queries (no preset) find none there, and say so. The base
    reads no Prometheus at all."""
    inst = install
    health = inst.ports["cloud4iot-extender--health-port"]
    ready = _get_json(f"http://127.0.0.1:{health}/readyz")
    stack = PROMETHEUS_OVERLAYS.get(inst.overlay)
    if stack is None:
        assert _metrics(health).get(SOURCE_UP, 0) == 0  # no Prometheus: load-aware off
        assert not [d for d in ready["degraded"] if d.startswith("prometheus")], ready
        return
    nodes = len(client.CoreV1Api(inst.api).list_node().items)

    def loaded(port: int) -> dict[str, float]:
        m = _metrics(port)
        return m if m.get(SOURCE_UP) == 1 and m.get(NODES_WITHOUT) == 0 else {}

    m = inst.serving(
        "extender", f"every node's load from the {stack} Prometheus", lambda: loaded(health)
    )
    assert m[WITHOUT_NODE] == 0, m[WITHOUT_NODE]
    assert m['cloud4iot_extender_cached_objects{kind="node"}'] == nodes
    ready = _get_json(f"http://127.0.0.1:{health}/readyz")
    assert not [d for d in ready["degraded"] if d.startswith("prometheus")], ready
    rport = inst.ports["cloud4iot-rebalancer--port"]
    # The rebalancer reads the same stack with the same preset (its rendered args).
    rport = inst.ports["cloud4iot-rebalancer--port"]
    inst.serving(
        "rebalancer",
        "the rebalancer's Prometheus source up",
        lambda: _metrics(rport).get('cloud4iot_rebalancer_source_up{source="prometheus"}') == 1,
    )
    rready = _get_json(f"http://127.0.0.1:{rport}/readyz")
    assert not [d for d in rready["degraded"] if d.startswith("prometheus")], rready

    # The same extender without the preset: the policy's `by (node)` finds no node here.
    ports = dict(inst.ports)
    argv, env, _ = inst.host_argv(
        "Deployment",
        "cloud4iot-extender",
        BIN / "cloud4iot-extender",
        inst.kubeconfigs["cloud4iot-extender"],
    )
    bare_health, inst.ports = inst.ports["cloud4iot-extender--health-port"], ports
    assert f"--prometheus-preset={stack}" in argv
    argv = [a for a in argv if not a.startswith("--prometheus-preset")]
    inst.start("extender-no-preset", [*argv, "--host=127.0.0.1"], env)
    try:
        m = inst.serving(
            "extender-no-preset",
            "the series without a node reported",
            # every node unknown (none called unloaded), once the node cache synced
            lambda: (
                (m := _metrics(bare_health)).get(WITHOUT_NODE, 0) > 0
                and m.get(NODES_WITHOUT) == nodes
                and m
            ),
        )
        ready = _get_json(f"http://127.0.0.1:{bare_health}/readyz")
        assert any(
            d.startswith("prometheus") and "none carries the node label 'node'" in d
            for d in ready["degraded"]
        ), ready
    finally:
        inst.stop("extender-no-preset")


# What each ServiceAccount may do, per `kubectl auth can-i --list` with its own token.
NEEDED = {
    "cloud4iot-extender": [
        "nodes",
        "devices.cloud4iot.io",
        "devices.cloud4iot.io/status",
        "gatewayreports.cloud4iot.io",
        "leases.coordination.k8s.io",
    ],
    "cloud4iot-rebalancer": [
        "pods",
        "pods/eviction",
        "deployments.apps",
        "leases.coordination.k8s.io",
        "events",
    ],
    "cloud4iot-scheduler": ["pods/binding", "leases.coordination.k8s.io"],
    "cloud4iot-gateway-monitor": ["devices.cloud4iot.io", "gatewayreports.cloud4iot.io/status"],
}


@pytest.mark.parametrize("sa", sorted(NEEDED))
def test_each_service_account_has_the_least_it_needs(install: Install, sa: str) -> None:
    inst = install
    ns = inst.gw_ns if sa == "cloud4iot-gateway-monitor" else inst.ns
    kc = inst.token_kubeconfig(sa, ns)
    env = {**inst.env, "KUBECONFIG": str(kc)}

    def can_i(*args: str) -> str:
        out = subprocess.run(
            [str(kubectl()), "auth", "can-i", *args], env=env, capture_output=True, text=True
        )
        return out.stdout.strip()

    listed = can_i("--list", "-n", ns)
    resources = {line.split()[0] for line in listed.splitlines()[1:] if line.strip()}
    for needed in NEEDED[sa]:
        assert needed in resources, (sa, needed, listed)
    for other in (ns, "default", "kube-system"):
        assert can_i("get", "secrets", "-n", other) == "no", (sa, other)
        assert can_i("list", "secrets", "-n", other) == "no", (sa, other)
        assert can_i("create", "pods/exec", "-n", other) == "no", (sa, other)
    assert can_i("list", "secrets", "--all-namespaces") == "no"
    if sa == "cloud4iot-gateway-monitor":
        # the wearables' identity keys, by name alone, read only (docs/security.md)
        (line,) = [ln for ln in listed.splitlines() if ln.split()[:1] == ["secrets"]]
        assert "[cloud4iot-identity-keys]" in line, line
        assert can_i("get", "secret/cloud4iot-identity-keys", "-n", ns) == "yes"
        assert can_i("watch", "secret/cloud4iot-identity-keys", "-n", ns) == "yes"
        assert can_i("patch", "secret/cloud4iot-identity-keys", "-n", ns) == "no"
        assert can_i("get", "secret/other", "-n", ns) == "no"
    else:
        assert "secrets" not in resources
    assert "pods/exec" not in resources
    # Leases: its own by name, nobody else's (create cannot be limited by name).
    own = {
        "cloud4iot-extender": "cloud4iot-extender",
        "cloud4iot-rebalancer": "cloud4iot-rebalancer",
        "cloud4iot-scheduler": "cloud4iot-scheduler",
    }.get(sa)
    if own:
        assert can_i("update", f"leases.coordination.k8s.io/{own}", "-n", ns) == "yes"
        if sa != "cloud4iot-scheduler":  # system:kube-scheduler grants that name anywhere
            assert can_i("update", "leases.coordination.k8s.io/kube-scheduler", "-n", ns) == "no"
        others = {"cloud4iot-extender", "cloud4iot-rebalancer", "cloud4iot-scheduler"} - {own}
        for lease in sorted(others):
            assert can_i("update", f"leases.coordination.k8s.io/{lease}", "-n", ns) == "no"
    assert (
        can_i("update", "leases.coordination.k8s.io/cloud4iot-extender", "-n", "kube-system")
        == "no"
    )
