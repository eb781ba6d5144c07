"""The extender Deployment serves the webhook with mutual TLS from a Secret, and its
probes and scrape use the plain health port (they hold no client certificate)."""

from __future__ import annotations

from pathlib import Path

import yaml

from extender.cli import _extender_parser

ROOT = Path(__file__).resolve().parents[2]


def test_deployment_mounts_the_tls_secret_where_its_args_point() -> None:
    docs = {
        d["kind"]: d
        for d in yaml.safe_load_all(
            (ROOT / "manifests/placement/extender/deployment.yaml").read_text()
        )
    }
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = _extender_parser().parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    tls_dir = mounts["tls"]
    assert volumes["tls"]["secret"]["secretName"] == "cloud4iot-extender-tls"
    assert {args.tls_cert.parent, args.tls_key.parent, args.client_ca.parent} == {Path(tls_dir)}
    assert (args.tls_cert.name, args.tls_key.name, args.client_ca.name) == (
        "tls.crt",
        "tls.key",
        "ca.crt",
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "https": args.port,
        "health": args.health_port,
        "admission": args.admission_port,
    }
    # The narrowing webhook's listener: its own serving Secret, where its args point,
    # behind the Service port the MutatingWebhookConfiguration calls.
    admission_dir = Path(mounts["admission-tls"])
    assert volumes["admission-tls"]["secret"]["secretName"] == "cloud4iot-extender-admission-tls"
    assert (args.admission_cert, args.admission_key) == (
        admission_dir / "tls.crt",
        admission_dir / "tls.key",
    )
    service_ports = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    hook = yaml.safe_load(
        (ROOT / "manifests/placement/extender/narrowing-webhook.yaml").read_text()
    )
    (webhook,) = hook["webhooks"]
    called = webhook["clientConfig"]["service"]
    assert (called["name"], called["namespace"]) == (
        docs["Service"]["metadata"]["name"],
        docs["Service"]["metadata"]["namespace"],
    )
    assert service_ports["admission"]["port"] == called["port"]
    assert service_ports["admission"]["targetPort"] == "admission"
    assert called["path"] == "/admit"
    assert webhook["failurePolicy"] == "Ignore"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(args.health_port)
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "https"
    # The non-root user can read the Secret's files through its group.
    assert pod["spec"]["securityContext"]["fsGroup"] == pod["spec"]["securityContext"]["runAsUser"]
