"""CertReloader in process: what each check reports, and what a handshake on the
live context then sees (client and server talk through memory buffers)."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from devcluster.certs import MtlsSet, Pair, make_ca, make_cert, make_mtls_set
from extender.tls import CertReloader, TlsError, TlsFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MtlsSet:
    return make_mtls_set(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def live(pki: MtlsSet, tmp_path: Path) -> CertReloader:
    files = TlsFiles(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    shutil.copyfile(pki.server.cert, files.cert)
    shutil.copyfile(pki.server.key, files.key)
    shutil.copyfile(pki.ca.cert, files.client_ca)  # type: ignore[arg-type]
    return CertReloader.open(files)


def handshake(server: ssl.SSLContext, ca: Path, client_pair: Pair) -> str:
    """Complete a handshake in memory; the serial the client was shown (hex)."""
    client = ssl.create_default_context(cafile=str(ca))
    client.load_cert_chain(client_pair.cert, client_pair.key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client certificate after the client is done;
            # one round of application data makes a refusal surface.
            c.write(b"x")
            s_in.write(c_out.read())
            assert s.read(1) == b"x"
            peer = c.getpeercert()
            assert peer
            return str(peer["serialNumber"])
    raise AssertionError("handshake did not finish")


def test_unchanged_files_are_not_reloaded(live: CertReloader) -> None:
    assert live.check_once() == "unchanged"
    assert live.reloads_ok == live.reloads_failed == 0


def test_mismatched_pair_is_refused_once_and_the_old_one_served(
    live: CertReloader, pki: MtlsSet, tmp_path: Path
) -> None:
    before = handshake(live.context, pki.ca.cert, pki.client)
    stray = make_cert(tmp_path / "stray", "extender", pki.ca, server=True)
    shutil.copyfile(stray.cert, live.files.cert)
    assert live.check_once() == "refused"
    assert "certificate and key refused" in (live.last_error or "")
    # The same bad files again: not refused (nor logged) a second time.
    assert live.check_once() == "unchanged"
    assert live.reloads_failed == 1
    assert handshake(live.context, pki.ca.cert, pki.client) == before
    # Its key arrives: the pair is complete, applied, and the error cleared.
    shutil.copyfile(stray.key, live.files.key)
    assert live.check_once() == "applied"
    assert live.last_error is None
    assert handshake(live.context, pki.ca.cert, pki.client) != before


def test_missing_file_is_refused_and_restoring_it_clears_the_error(
    live: CertReloader, pki: MtlsSet
) -> None:
    live.files.key.unlink()
    assert live.check_once() == "refused"
    assert "cannot read" in (live.last_error or "")
    shutil.copyfile(pki.server.key, live.files.key)
    assert live.check_once() == "applied"
    assert live.last_error is None


def test_a_new_client_ca_is_trusted_after_reload(
    live: CertReloader, pki: MtlsSet, tmp_path: Path
) -> None:
    new_ca = make_ca(tmp_path / "new", "new-ca")
    new_client = make_cert(tmp_path / "new", "kube-scheduler-2", new_ca, server=False)
    with pytest.raises(ssl.SSLError):
        handshake(live.context, pki.ca.cert, new_client)
    assert live.files.client_ca is not None
    shutil.copyfile(new_ca.cert, live.files.client_ca)
    assert live.check_once() == "applied"
    handshake(live.context, pki.ca.cert, new_client)
    # OpenSSL only adds trust anchors: the old CA stays trusted until a restart.
    handshake(live.context, pki.ca.cert, pki.client)


def test_a_bad_pair_at_start_is_an_error(pki: MtlsSet) -> None:
    with pytest.raises(TlsError, match="certificate and key refused"):
        CertReloader.open(TlsFiles(pki.server.cert, pki.client.key))
