"""HTTPS for the webhook, with optional client certificates (mutual TLS), and
certificate reload without a restart.

kube-scheduler has no other way to authenticate to an extender than a client
certificate (its extender `tlsConfig.certFile`/`keyFile`); with `--client-ca` a
client without a certificate signed by that CA is refused during the handshake.

Reload polls the files' content, as the policy reload does (a Secret volume's
`..data` symlink swap, editors that replace files). A changed set is first loaded
into a throwaway context; only when that succeeds is the same set of bytes loaded
into the live context, which affects every new handshake (a connection copies the
certificate from its context when it starts). A bad pair is refused with a log
line and the one in force stays. The bytes are loaded from in-memory files, so a
swap between reading the certificate and the key can never mix two pairs.

CA rotation: OpenSSL can add trust anchors to a live context but not remove
them, so a changed `--client-ca` adds its certificates (both CAs are trusted
during a rotation); dropping an old CA takes a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloud4iot.filewatch import watch_file

log = logging.getLogger(__name__)

# Certificates and keys are small; anything larger is not one.
MAX_PEM_BYTES = 1024 * 1024


class TlsError(ValueError):
    """The certificate, key or CA cannot be used (unreadable, not PEM, mismatched)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.client_ca or b""):
            h.update(hashlib.sha256(part).digest())
        return h.hexdigest()


def _read(files: TlsFiles) -> _Material:
    def one(path: Path) -> bytes:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_PEM_BYTES + 1)
        except OSError as exc:
            raise TlsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if len(data) > MAX_PEM_BYTES:
            raise TlsError(f"{path}: larger than {MAX_PEM_BYTES} bytes")
        return data

    ca = one(files.client_ca) if files.client_ca is not None else None
    return _Material(cert=one(files.cert), key=one(files.key), client_ca=ca)


@contextlib.contextmanager
def _as_files(material: _Material) -> Iterator[tuple[str, str]]:
    """Paths OpenSSL can read holding exactly these bytes: anonymous memory files
    on Linux (nothing written to disk, works on a read-only root filesystem),
    private temporary files elsewhere."""
    fds: list[int] = []
    try:
        if hasattr(os, "memfd_create"):
            paths = []
            for name, data in (("cert", material.cert), ("key", material.key)):
                fd = os.memfd_create(f"cloud4iot-{name}", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, data)
                paths.append(f"/proc/self/fd/{fd}")
            yield paths[0], paths[1]
        else:  # pragma: no cover - not Linux
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                for path, data in ((cert, material.cert), (key, material.key)):
                    path.touch(mode=0o600)
                    path.write_bytes(data)
                yield str(cert), str(key)
    finally:
        for fd in fds:
            os.close(fd)


def _load(context: ssl.SSLContext, material: _Material) -> None:
    """Load the pair (and the client CA) into `context`; TlsError on any problem."""
    try:
        with _as_files(material) as (cert, key):
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"certificate and key refused: {exc}") from exc
    if material.client_ca is not None:
        try:
            context.load_verify_locations(cadata=material.client_ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise TlsError(f"client CA refused: {exc}") from exc


def _new_context(require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(slots=True)
class CertReloader:
    """The live server context and the files it came from."""

    files: TlsFiles
    context: ssl.SSLContext
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_error: str | None = None
    _seen: str = field(default="", repr=False)

    @classmethod
    def open(cls, files: TlsFiles) -> CertReloader:
        """Build the context at start: a bad pair here is fatal (TlsError)."""
        material = _read(files)
        context = _new_context(files.client_ca is not None)
        _load(context, material)
        return cls(files=files, context=context, _seen=material.digest)

    def check_once(self) -> str:
        """Re-read the files; load them if they changed and are valid. Blocking I/O.

        Returns "unchanged", "applied" or "refused"; a refusal keeps the pair in force.
        """
        checked = self._prepare()
        return checked if isinstance(checked, str) else self._apply(checked)

    def _prepare(self) -> _Material | str:
        """Read the files and try them on a throwaway context: a changed, valid set,
        or the outcome ("unchanged", "refused"). Touches only the throwaway context."""
        try:
            material = _read(self.files)
        except TlsError as exc:
            return self._refuse(str(exc), str(exc))
        digest = material.digest
        if digest == self._seen:
            return "unchanged"
        try:
            _load(_new_context(material.client_ca is not None), material)
        except TlsError as exc:
            return self._refuse(digest, str(exc))
        return material

    def _apply(self, material: _Material) -> str:
        # Same bytes, same outcome: the throwaway accepted them, so will the live
        # context (which a half-failed load_cert_chain would leave without a key).
        try:
            _load(self.context, material)
        except TlsError as exc:  # pragma: no cover - only if OpenSSL changed its mind
            return self._refuse(material.digest, str(exc))
        self._seen, self.last_error = material.digest, None
        self.reloads_ok += 1
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return "applied"

    def _refuse(self, seen: str, why: str) -> str:
        if seen == self._seen:  # the same problem as at the last check: said once
            return "unchanged"
        self._seen, self.last_error = seen, why
        self.reloads_failed += 1
        log.error("TLS reload refused, keeping the certificate in force: %s", why)
        return "refused"

    async def watch(self, interval: float, on_result: Callable[[str], None] | None = None) -> None:
        """Re-check every `interval` seconds, forever. Reading and trying the files
        runs off the event loop; the live context is changed on it, between
        handshakes (an SSL_CTX must not change under a concurrent SSL_new)."""
        await watch_file(
            interval,
            self._prepare,
            on_result,
            apply=self._apply,
            what="TLS reload",
            keeps="the certificate in force",
        )
