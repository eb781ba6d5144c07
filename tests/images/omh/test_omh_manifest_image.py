"""The example manifest and the Dockerfile: what the demo relies on, and what they promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from omh_consolidator.config import ENV_VARS, from_env

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "manifests" / "examples" / "omh-consolidator.yaml"
DOCKERFILE = ROOT / "images" / "omh-consolidator" / "Dockerfile"
README = ROOT / "images" / "omh-consolidator" / "README.md"


def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())  # one document: the demo loads it so
    return doc


def container_env(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_what_the_demo_and_the_policy_rely_on_is_unchanged() -> None:
    doc = manifest()
    labels = {"app.kubernetes.io/name": "omh-consolidator", "cloud4iot.io/device": "patient-42-hr"}
    assert doc["kind"] == "Deployment"
    assert doc["metadata"]["name"] == "omh-consolidator-42"
    assert doc["metadata"]["namespace"] == "health"
    assert doc["metadata"]["labels"] == labels
    assert doc["spec"]["selector"]["matchLabels"] == labels
    template = doc["spec"]["template"]
    assert template["metadata"]["labels"] == labels
    assert template["metadata"]["annotations"] == {
        "cloud4iot.io/function": "mhealth-consolidator",
        "cloud4iot.io/device": "patient-42-hr",
        "cloud4iot.io/archs": "arm64,amd64",
    }
    assert template["spec"]["schedulerName"] == "cloud4iot-scheduler"
    assert template["spec"]["containers"][0]["image"] == "cloud4iot/omh-consolidator:0.1.0"


def test_the_env_names_the_devices_object_and_its_real_address() -> None:
    doc = manifest()
    env = container_env(doc)
    assert set(env) <= ENV_VARS, f"unknown settings: {set(env) - ENV_VARS}"
    assert env["DEVICE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['cloud4iot.io/device']"
    )
    device = doc["spec"]["template"]["metadata"]["annotations"]["cloud4iot.io/device"]
    devices = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((ROOT / "manifests" / "examples" / "devices.yaml").read_text())
    }
    assert env["DEVICE_ADDRESS"]["value"] == devices[device]["spec"]["address"]
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # what the pod would see parses (Downward API values filled in as the kubelet would)
    resolved = {k: v.get("value", "") for k, v in env.items()}
    resolved |= {"DEVICE_NAME": device, "NODE_NAME": "gw-home"}
    cfg = from_env(resolved)
    assert cfg.device_address == "C0:FF:EE:00:00:42"
    assert cfg.ingest_url is not None
    assert cfg.ingest_url.startswith("http")
    grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert cfg.drain_s < grace  # the drain fits in the grace period


def test_the_pod_runs_as_the_images_non_root_user_with_the_bus_socket_mounted() -> None:
    spec = manifest()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    user = re.search(r"^USER (\d+)$", DOCKERFILE.read_text(), re.M)
    assert user is not None
    assert int(user.group(1)) == sc["runAsUser"] != 0
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == set(volumes) == {"dbus", "queue"}
    assert mounts["dbus"]["mountPath"] == "/run/dbus"
    assert container_env(manifest())["DBUS_SYSTEM_BUS_ADDRESS"]["value"] == (
        "unix:path=/run/dbus/system_bus_socket"
    )
    assert container["ports"][0]["containerPort"] == from_env({"DEVICE_NAME": "d"}).metrics_port


def test_the_dockerfile_pins_what_it_installs() -> None:
    text = DOCKERFILE.read_text()
    (base,) = set(re.findall(r"^FROM (\S+)", text, re.M))
    assert re.search(r":\d+\.\d+", base), f"base image not pinned: {base}"
    run = re.search(r'pip install ((?:"[^"]+" *)+)', text)
    assert run is not None
    requirements = re.findall(r'"([^"]+)"', run.group(1))
    assert {r.split("==")[0] for r in requirements} == {"bleak", "aiohttp", "dbus-fast"}
    assert all(re.fullmatch(r"[a-z-]+==\d+(\.\d+)+", r) for r in requirements), requirements
    assert "COPY omh_consolidator /app/omh_consolidator" in text


def test_the_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = sorted(v for v in ENV_VARS if f"`{v}`" not in text)
    assert missing == []


def test_the_queue_is_on_the_gateways_disk_owned_by_the_consolidator() -> None:
    spec = manifest()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = container_env(manifest())
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert env["QUEUE_DIR"]["value"] == mounts["queue"]["mountPath"]
    volume = next(v for v in spec["volumes"] if v["name"] == "queue")
    assert volume["hostPath"]["path"].endswith("/patient-42-hr")  # one directory per device
    (init,) = spec["initContainers"]
    uid = container["securityContext"]["runAsUser"]
    assert f"chown {uid}:{uid} /queue" in init["command"][-1]
    assert init["volumeMounts"] == [{"name": "queue", "mountPath": "/queue"}]


def test_the_handover_service_reaches_this_devices_pods_on_the_handover_port() -> None:
    svc, policy = yaml.safe_load_all(
        (ROOT / "manifests" / "examples" / "omh-consolidator-handover.yaml").read_text()
    )
    doc = manifest()
    labels = doc["spec"]["selector"]["matchLabels"]
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["handover"]
    cfg = from_env(
        {k: v.get("value", "") for k, v in container_env(doc).items()} | {"DEVICE_NAME": "d"}
    )
    assert cfg.handover_port == port
    ((host, peer_port),) = cfg.handover_peers
    assert host.startswith(f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc")
    assert peer_port == svc["spec"]["ports"][0]["port"] == port
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == labels
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    handover_rule = policy["spec"]["ingress"][0]
    assert handover_rule["from"] == [{"podSelector": {"matchLabels": labels}}]
    assert handover_rule["ports"] == [{"port": port, "protocol": "TCP"}]


# --- the example DeviceClasses: every discovered strap's consolidator can start -----------

CLASSES = sorted((ROOT / "manifests" / "examples").glob("deviceclass-*.yaml"))
RBAC = ROOT / "manifests" / "examples" / "strap-functions-rbac.yaml"


def _resolve(env: list[dict[str, Any]], pod: dict[str, Any], node: str) -> dict[str, str]:
    """The container's env as the kubelet fills it in (Downward API fieldRefs)."""
    out: dict[str, str] = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = e["value"]
            continue
        path = e["valueFrom"]["fieldRef"]["fieldPath"]
        annotation = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
        if annotation is not None:
            out[e["name"]] = pod["metadata"]["annotations"][annotation.group(1)]
        else:
            assert path == "spec.nodeName", path
            out[e["name"]] = node
    return out


def test_both_example_classes_are_checked() -> None:
    assert {p.name for p in CLASSES} == {"deviceclass-hr-strap.yaml", "deviceclass-ward-strap.yaml"}


@pytest.mark.parametrize("path", CLASSES, ids=lambda p: p.name)
def test_every_discovered_straps_consolidator_starts_with_bus_and_queue(path: Path) -> None:
    from cloud4iot.deviceclass import parse_class
    from extender.controllers.discovery_plan import Discovered, function_deployments

    cls = parse_class({**yaml.safe_load(path.read_text()), "metadata": {"name": "c", "uid": "u"}})
    device = Discovered("c-c0ffee000042", "u2", "C0:FF:EE:00:00:42", "c", "approved", 0.0)
    rbac = list(yaml.safe_load_all(RBAC.read_text()))
    (role,) = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert {"apiGroups": ["cloud4iot.io"], "resources": ["devices"], "verbs": ["get"]} in role[
        "rules"
    ]
    (binding,) = [d for d in rbac if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    readers = {(s["namespace"], s["name"]) for s in binding["subjects"]}
    deployments = function_deployments(cls, device)
    assert deployments
    for dep in deployments:
        template = dep["spec"]["template"]
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = _resolve(c.get("env", []), template, "gw-home")
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes
                for var in re.findall(r"\$\((\w+)\)", m.get("subPathExpr", "")):
                    assert var in env, f"{c['name']}: subPathExpr needs {var} in its env"
                    assert env[var] == device.name  # one queue directory per Device
        for c in spec["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            env = _resolve(c.get("env", []), template, "gw-home")
            assert set(env) <= ENV_VARS, f"{where}: unknown settings {set(env) - ENV_VARS}"
            cfg = from_env(env)  # raised "set DEVICE_NAME ..." for every discovered strap
            assert cfg.device_name == device.name
            if cfg.device_address is None:  # read from the Device object: it may read it
                account = spec.get("serviceAccountName", "default")
                assert (dep["metadata"]["namespace"], account) in readers, where
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            assert "/run/dbus" in mounts, f"{where}: the reader can never reach BlueZ"
            assert volumes[mounts["/run/dbus"]["name"]]["hostPath"]["path"] == "/run/dbus"
            assert env["DBUS_SYSTEM_BUS_ADDRESS"] == "unix:path=/run/dbus/system_bus_socket"
            assert cfg.queue_dir is not None
            queue = mounts.get(str(cfg.queue_dir), {})
            assert "hostPath" in volumes.get(
                queue.get("name"), {}
            )  # the gateway's disk, not the pod's
            assert queue.get("subPathExpr") == "$(DEVICE_NAME)"
            assert c["securityContext"]["runAsUser"] == 65532
            assert_probed_on_healthz(c, cfg.metrics_port)


def assert_probed_on_healthz(container: dict[str, Any], metrics_port: int) -> None:
    """Readiness and liveness on /healthz, at the port the consolidator serves it on."""
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        assert probe is not None, f"{container['name']}: no {kind}"
        get = probe["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == metrics_port, (kind, get)
    # a wedged loop, not one slow fsync, restarts it: over 10 s of failing answers
    liveness = container["livenessProbe"]
    assert liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) >= 10


def test_the_example_consolidator_is_probed_on_healthz() -> None:
    """It had no probes: a wedged event loop ran on, and a rollout took the new pod for
    ready (and stopped the old one) before its queue and handover endpoint were up."""
    (container,) = manifest()["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "x") for e in container["env"]}
    assert_probed_on_healthz(container, from_env(env).metrics_port)
