"""`cloud4iot-extender` over HTTPS with client certificates (mutual TLS), as a process:
who gets in, and certificate reload without a restart."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from devcluster.certs import MtlsSet, Pair, make_ca, make_cert, make_mtls_set
from devcluster.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "simulate"
POLL_S = 0.2  # --tls-poll-interval of the extender under test


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> MtlsSet:
    return make_mtls_set(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pair, Pair]:
    """A CA nobody told the extender about, and a client certificate it signed."""
    directory = tmp_path_factory.mktemp("other-pki")
    ca = make_ca(directory, "other-ca")
    return ca, make_cert(directory, "intruder", ca, server=False)


@dataclass
class Served:
    port: int
    health_port: int
    cert: Path  # the files the extender reads (copies this test may replace)
    key: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture
def served(certs: MtlsSet, tmp_path: Path) -> Iterator[Served]:
    """The extender on HTTPS requiring client certificates signed by the test CA."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copyfile(certs.server.cert, cert)
    shutil.copyfile(certs.server.key, key)
    port, health_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "extender",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--client-ca",
        str(certs.ca.cert),
        "--tls-poll-interval",
        str(POLL_S),
        "--health-port",
        str(health_port),
    ]
    log = (tmp_path / "extender.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "extender.log").read_text()
                assert time.monotonic() < deadline, "extender did not start"
                time.sleep(0.2)
        yield Served(port, health_port, cert, key, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def client_context(ca: Path | None, client: Pair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def filter_request() -> bytes:
    nodes = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())["nodes"]
    pod = yaml.safe_load((EXAMPLES / "pod-mhealth.yaml").read_text())
    return orjson.dumps({"Pod": pod, "Nodes": {"items": nodes}})


def post_filter(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> tuple[int, dict]:
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    try:
        conn.request("POST", "/filter", body=filter_request())
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read())
    finally:
        conn.close()


def served_serial(port: int, certs: MtlsSet) -> int:
    """The serial number of the certificate a new connection is shown."""
    context = client_context(certs.ca.cert, certs.client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        peer = tls.getpeercert()
    assert peer
    return int(str(peer["serialNumber"]), 16)


def serial_of(cert: Path) -> int:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-serial"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().split("=", 1)[1], 16)


def replace(src: Path, dst: Path) -> None:
    """Swap a file in at once, as a Secret volume update does."""
    tmp = dst.with_suffix(".new")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def readyz(served: Served) -> dict:
    url = f"http://127.0.0.1:{served.health_port}/readyz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return orjson.loads(resp.read())


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_client_with_ca_and_certificate_gets_filter_answer(served: Served, certs: MtlsSet) -> None:
    for host in ("127.0.0.1", "localhost"):  # both names are in the server's SAN
        status, body = post_filter(served.port, client_context(certs.ca.cert, certs.client), host)
        assert status == 200
        assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["edge-1"]


def test_client_without_certificate_is_refused(served: Served, certs: MtlsSet) -> None:
    # TLS 1.3 finishes the client's side of the handshake before the server checks
    # the client certificate: the refusal arrives as an alert on the first read.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        post_filter(served.port, client_context(certs.ca.cert, None))


def test_client_certificate_from_another_ca_is_refused(
    served: Served, certs: MtlsSet, other_ca: tuple[Pair, Pair]
) -> None:
    _, intruder = other_ca
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        post_filter(served.port, client_context(certs.ca.cert, intruder))


def test_client_not_trusting_the_ca_fails_verification(
    served: Served, certs: MtlsSet, other_ca: tuple[Pair, Pair]
) -> None:
    wrong_ca, _ = other_ca
    with pytest.raises(ssl.SSLCertVerificationError):
        post_filter(served.port, client_context(wrong_ca.cert, certs.client))


def test_tls_1_2_is_accepted_and_older_versions_are_not(served: Served, certs: MtlsSet) -> None:
    context = client_context(certs.ca.cert, certs.client)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # Go's default minimum
    assert post_filter(served.port, context)[0] == 200
    old = client_context(certs.ca.cert, certs.client)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        post_filter(served.port, old)


def test_health_port_is_plain_http_and_serves_no_webhook(served: Served) -> None:
    assert readyz(served)["ready"] is True
    req = urllib.request.Request(
        f"http://127.0.0.1:{served.health_port}/filter", data=filter_request(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code in (404, 405)


def test_replaced_certificate_is_served_without_restart(
    served: Served, certs: MtlsSet, tmp_path: Path
) -> None:
    before = served_serial(served.port, certs)
    assert before == serial_of(certs.server.cert)
    renewed = make_cert(tmp_path / "renewed", "extender", certs.ca, server=True)
    assert serial_of(renewed.cert) != before
    # Key first, then certificate: for a moment the pair on disk does not match.
    replace(renewed.key, served.key)
    replace(renewed.cert, served.cert)
    wait_until(
        "the renewed certificate on new connections",
        lambda: served_serial(served.port, certs) == serial_of(renewed.cert),
    )
    assert served.proc.poll() is None  # the same process, never restarted
    status, _ = post_filter(served.port, client_context(certs.ca.cert, certs.client))
    assert status == 200
    assert readyz(served)["degraded"] == []


def test_broken_replacement_keeps_the_old_certificate(
    served: Served, certs: MtlsSet, tmp_path: Path
) -> None:
    before = served_serial(served.port, certs)
    # A new certificate without its key: the pair on disk does not match.
    stray = make_cert(tmp_path / "stray", "extender", certs.ca, server=True)
    replace(stray.cert, served.cert)
    wait_until(
        "the refusal in /readyz",
        lambda: any(d.startswith("tls:") for d in readyz(served)["degraded"]),
    )
    assert served_serial(served.port, certs) == before
    status, _ = post_filter(served.port, client_context(certs.ca.cert, certs.client))
    assert status == 200
    # Garbage in place of the certificate: refused too, the old one still served.
    served.cert.write_text("not a certificate\n")
    time.sleep(POLL_S * 5)
    assert served_serial(served.port, certs) == before
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{served.health_port}/metrics", timeout=5
    ).read()
    assert b'cloud4iot_extender_tls_reloads_total{result="refused"} 2.0' in metrics
    # The good pair back: applied, and the refusal cleared.
    replace(certs.server.cert, served.cert)
    wait_until("the refusal to clear", lambda: readyz(served)["degraded"] == [])
    assert served_serial(served.port, certs) == before


def test_mismatched_pair_at_start_exits_with_a_message(certs: MtlsSet) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "extender",
            "--port",
            str(free_port()),
            "--tls-cert",
            str(certs.server.cert),
            "--tls-key",
            str(certs.client.key),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "certificate and key refused" in proc.stderr


def test_client_ca_without_a_server_certificate_is_a_usage_error(certs: MtlsSet) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "extender", "--client-ca", str(certs.ca.cert)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "--client-ca needs --tls-cert" in proc.stderr
