"""`cloud4iot certs`' certificates (pure part): one CA signs the three pairs, each for
its use; a kept CA is reused, an unusable one is replaced. The Secrets and caBundle on
a real apiserver: tests/install/test_install.py."""

from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from extender.certs import (
    ADMISSION_SECRET,
    EXTENDER_SECRET,
    SCHEDULER_SECRET,
    leaf_secrets,
    make_ca,
    usable_ca,
)

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


def test_one_ca_signs_three_pairs_for_their_use() -> None:
    ca = make_ca(NOW)
    leaves = leaf_secrets(ca, "iot-placement", NOW)
    assert set(leaves) == {EXTENDER_SECRET, SCHEDULER_SECRET, ADMISSION_SECRET}
    for pair in leaves.values():
        pair.certificate().verify_directly_issued_by(ca.certificate())
    for name in (EXTENDER_SECRET, ADMISSION_SECRET):
        cert = leaves[name].certificate()
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "cloud4iot-extender" in sans.get_values_for_type(x509.DNSName)
        assert "cloud4iot-extender.iot-placement.svc" in sans.get_values_for_type(x509.DNSName)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = leaves[SCHEDULER_SECRET].certificate()
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


def test_a_kept_ca_is_reused_and_a_bad_one_is_not() -> None:
    ca = make_ca(NOW)
    data = {
        "tls.crt": base64.b64encode(ca.cert).decode(),
        "tls.key": base64.b64encode(ca.key).decode(),
    }
    assert usable_ca(data, NOW) == ca
    assert usable_ca(None, NOW) is None
    assert usable_ca({"tls.crt": data["tls.crt"]}, NOW) is None
    assert usable_ca({**data, "tls.crt": base64.b64encode(b"junk").decode()}, NOW) is None
    # A leaf is no CA; a CA with less than a leaf's lifetime left is replaced.
    leaf = leaf_secrets(ca, "ns", NOW)[EXTENDER_SECRET]
    as_leaf = {
        "tls.crt": base64.b64encode(leaf.cert).decode(),
        "tls.key": base64.b64encode(leaf.key).decode(),
    }
    assert usable_ca(as_leaf, NOW) is None
    assert usable_ca(data, NOW + dt.timedelta(days=3650 - 100)) is None
