"""Real cert-manager for the cert-manager overlay: its CRDs and controllers, as a host process.

The CRDs are the ones github.com/cert-manager/cert-manager ships in deploy/crds (the module
devcluster/go/certmanager builds from), so the apiserver validates every object of the
overlay against cert-manager's own schemas. The controllers (issuers, the
CertificateRequest approver and the selfSigned and CA issuers, the Certificate trigger,
key manager, request manager, issuing, readiness and revision managers) and cainjector's
webhook reconcilers run unmodified in one process (devcluster/go/certmanager/cmd/
cert-manager). What is not cert-manager's install: it runs with the admin's kubeconfig
(its RBAC is its chart's, not ours), without leader election, and without its admission
webhook (which only defaults and validates; the CRD schemas still apply).
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from kubernetes import client

from tests.install.render import ROOT, find

if TYPE_CHECKING:
    from tests.install.test_install import Install

# The Secrets `cloud4iot certs` writes; under the overlay cert-manager writes them.
SECRETS = (
    "cloud4iot-ca",
    "cloud4iot-extender-tls",
    "cloud4iot-scheduler-tls",
    "cloud4iot-extender-admission-tls",
)
CRD_NAMES = (
    "certificaterequests.cert-manager.io",
    "certificates.cert-manager.io",
    "clusterissuers.cert-manager.io",
    "issuers.cert-manager.io",
    "orders.acme.cert-manager.io",
    "challenges.acme.cert-manager.io",
)


def _build(flag: str) -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "devcluster" / "build.sh"), flag],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def binary() -> Path:
    path = _build("--print-cert-manager-dir") / "cert-manager"
    assert path.is_file(), f"{path} missing: build it with `make devcluster-build`"
    return path


def crd_dir() -> Path:
    path = _build("--cert-manager-crds")
    assert (path / "cert-manager.io_certificates.yaml").is_file(), path
    return path


def install(inst: Install) -> None:
    """cert-manager as an admin has it before applying the overlay: its CRDs established
    and its controllers running. The Secrets of the overlays before are removed, so
    every pair below is cert-manager's."""
    inst.sh(f"kubectl apply --server-side -f {crd_dir()}")
    ext = client.ApiextensionsV1Api(inst.api)

    def established() -> bool:
        for name in CRD_NAMES:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    _wait("cert-manager's CRDs established", established)
    core = client.CoreV1Api(inst.api)
    for name in SECRETS:
        try:
            core.delete_namespaced_secret(name, inst.ns)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
    inst.start(
        "cert-manager",
        [str(binary()), f"--kubeconfig={inst.cluster.kubeconfig}", "--v=2"],
        {},
    )


def certificates(inst: Install) -> list[dict[str, Any]]:
    return [d for d in inst.docs if d["kind"] == "Certificate"]


def ready(inst: Install, name: str) -> dict[str, Any] | None:
    cert: dict[str, Any] = client.CustomObjectsApi(inst.api).get_namespaced_custom_object(
        "cert-manager.io", "v1", inst.ns, "certificates", name
    )
    conditions = (cert.get("status") or {}).get("conditions") or []
    ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return cert if ok else None


def wait_issued(inst: Install) -> bytes:
    """Every Certificate of the overlay Ready, its Secret cert-manager's, and the
    narrowing webhook's caBundle injected by cainjector; the CA certificate."""
    for doc in certificates(inst):
        name = doc["metadata"]["name"]
        inst.serving("cert-manager", f"Certificate {name} Ready", lambda n=name: ready(inst, n), 90)
    core = client.CoreV1Api(inst.api)
    for doc in certificates(inst):
        secret = core.read_namespaced_secret(doc["spec"]["secretName"], inst.ns)
        annotations = secret.metadata.annotations or {}
        assert annotations.get("cert-manager.io/certificate-name") == doc["metadata"]["name"]
        assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret.data), sorted(secret.data)
    ca = base64.b64decode(core.read_namespaced_secret("cloud4iot-ca", inst.ns).data["tls.crt"])
    hooks = client.AdmissionregistrationV1Api(inst.api)

    def injected() -> bool:
        hook = hooks.read_mutating_webhook_configuration("cloud4iot-narrowing")
        bundle = hook.webhooks[0].client_config.ca_bundle
        return bool(bundle) and base64.b64decode(bundle) == ca

    inst.serving("cert-manager", "the narrowing webhook's caBundle injected", injected, 60)
    return ca


def add_loopback_san(inst: Install) -> None:
    """HOST: the webhook is reached at 127.0.0.1, so the admission Certificate also names
    that address; cert-manager re-issues it from the same CA."""
    name = "cloud4iot-extender-admission"
    secret_name = find(inst.docs, "Certificate", name)["spec"]["secretName"]
    client.CustomObjectsApi(inst.api).patch_namespaced_custom_object(
        "cert-manager.io",
        "v1",
        inst.ns,
        "certificates",
        name,
        {"spec": {"ipAddresses": ["127.0.0.1"]}},
    )
    core = client.CoreV1Api(inst.api)

    def reissued() -> bool:
        data = core.read_namespaced_secret(secret_name, inst.ns).data
        cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]

    inst.serving("cert-manager", "the admission pair re-issued with 127.0.0.1", reissued, 90)
    inst.serving("cert-manager", f"Certificate {name} Ready again", lambda: ready(inst, name), 60)


def _wait(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
