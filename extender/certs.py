"""`cloud4iot certs`: the TLS the placement needs, without cert-manager.

One CA of our own signs three pairs, each written as a Secret with the keys the
Deployments mount (tls.crt, tls.key, ca.crt):

- cloud4iot-extender-tls: the extender's webhook (server; SAN cloud4iot-extender, the
  scheduler's tlsConfig.serverName); its ca.crt is also the extender's --client-ca;
- cloud4iot-scheduler-tls: kube-scheduler's client pair; its ca.crt verifies the extender;
- cloud4iot-extender-admission-tls: the narrowing webhook's serving pair
  (cloud4iot-extender.<namespace>.svc, what the apiserver dials);

and the CA goes into the MutatingWebhookConfiguration's caBundle. The CA itself is kept
in the Secret cloud4iot-ca and reused on every later run (kube-scheduler loads its CA
once: a new CA per run would need a scheduler restart); leaves are re-issued each run,
and the extender and the scheduler pick them up without a restart.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_SECRET = "cloud4iot-ca"
EXTENDER_SECRET = "cloud4iot-extender-tls"
SCHEDULER_SECRET = "cloud4iot-scheduler-tls"
ADMISSION_SECRET = "cloud4iot-extender-admission-tls"
WEBHOOK = "cloud4iot-narrowing"
SERVICE = "cloud4iot-extender"
CA_DAYS = 3650
LEAF_DAYS = 365
FIELD_MANAGER = "cloud4iot-certs"


@dataclass(frozen=True, slots=True)
class Pair:
    cert: bytes  # PEM
    key: bytes  # PEM

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(now: dt.datetime) -> Pair:
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("cloud4iot-ca"))
        .issuer_name(_name("cloud4iot-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue(ca: Pair, cn: str, dns: list[str], client: bool, now: dt.datetime) -> Pair:
    """A leaf signed by `ca`: serving (SANs `dns`) or client (extendedKeyUsage clientAuth)."""
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.certificate().subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(dns)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _sans(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def usable_ca(data: Mapping[str, Any] | None, now: dt.datetime) -> Pair | None:
    """The CA kept in the Secret (base64 data), if it is a CA valid for a year more."""
    if not data or "tls.crt" not in data or "tls.key" not in data:
        return None
    try:
        pair = Pair(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]))
        cert = pair.certificate()
        serialization.load_pem_private_key(pair.key, password=None)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return None
    if not constraints.ca or cert.not_valid_after_utc < now + dt.timedelta(days=LEAF_DAYS):
        return None
    return pair


def service_names(namespace: str) -> list[str]:
    base = f"{SERVICE}.{namespace}"
    return [SERVICE, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def leaf_secrets(
    ca: Pair, namespace: str, now: dt.datetime, extra_sans: Sequence[str] = ()
) -> dict[str, Pair]:
    """Secret name -> its pair; each Secret also carries ca.crt = the CA. `extra_sans`
    (DNS names or IP addresses) are added to both serving pairs."""
    names = [*service_names(namespace), *extra_sans]
    return {
        EXTENDER_SECRET: issue(ca, SERVICE, names, client=False, now=now),
        SCHEDULER_SECRET: issue(ca, "cloud4iot-scheduler", [], client=True, now=now),
        ADMISSION_SECRET: issue(ca, SERVICE, names, client=False, now=now),
    }


def _secret_body(name: str, namespace: str, pair: Pair, ca: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "cloud4iot"},
        },
        "data": {
            "tls.crt": base64.b64encode(pair.cert).decode(),
            "tls.key": base64.b64encode(pair.key).decode(),
            "ca.crt": base64.b64encode(ca).decode(),
        },
    }


def write(
    kubeconfig: Path | None,
    namespace: str,
    webhook: str = WEBHOOK,
    in_cluster: bool = False,
    extra_sans: Sequence[str] = (),
) -> list[str]:
    """Create or renew the Secrets and the caBundle; returns what was done, one line each.
    `kubeconfig` None: $KUBECONFIG or ~/.kube/config, as kubectl."""
    from kubernetes import client, config

    if in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=None if kubeconfig is None else str(kubeconfig)
        )
    core = client.CoreV1Api()
    now = dt.datetime.now(dt.UTC)
    done: list[str] = []
    try:
        kept = core.read_namespaced_secret(CA_SECRET, namespace).data
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        kept = None
    ca = usable_ca(kept, now)
    if ca is None:
        ca = make_ca(now)
        _put(core, _secret_body(CA_SECRET, namespace, ca, ca.cert))
        done.append(f"secret {namespace}/{CA_SECRET}: new CA")
    else:
        done.append(f"secret {namespace}/{CA_SECRET}: CA kept")
    for name, pair in leaf_secrets(ca, namespace, now, extra_sans).items():
        _put(core, _secret_body(name, namespace, pair, ca.cert))
        done.append(f"secret {namespace}/{name}: issued")
    admission = client.AdmissionregistrationV1Api()
    hook = admission.read_mutating_webhook_configuration(webhook)
    bundle = base64.b64encode(ca.cert).decode()
    patch = [
        {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
        for i in range(len(hook.webhooks or []))
    ]
    admission.patch_mutating_webhook_configuration(webhook, patch, field_manager=FIELD_MANAGER)
    done.append(f"mutatingwebhookconfiguration {webhook}: caBundle set")
    return done


def _put(core: Any, body: dict[str, Any]) -> None:
    from kubernetes import client

    meta = body["metadata"]
    try:
        core.create_namespaced_secret(meta["namespace"], body, field_manager=FIELD_MANAGER)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(
            meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER
        )
