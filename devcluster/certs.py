"""Throwaway certificates for mutual TLS between kube-scheduler and the extender,
made with the `openssl` command line (dev tooling and tests only: short-lived
P-256 keys, unencrypted, never for production)."""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 2


class CertError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertError("the openssl command is needed (Debian package openssl)")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise CertError(f"openssl {args[0]} failed:\n{result.stderr}")


def _key_args(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key)]


def make_ca(directory: Path, name: str) -> Pair:
    """A self-signed CA: `<name>.crt` and `<name>.key` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req",
        "-x509",
        *_key_args(pair.key),
        "-out",
        str(pair.cert),
        "-subj",
        f"/CN={name}",
        "-days",
        str(DAYS),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return pair


def make_cert(
    directory: Path,
    name: str,
    ca: Pair,
    *,
    server: bool,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    serial: int | None = None,
) -> Pair:
    """A leaf signed by `ca`: a server certificate for `hosts` (IP and DNS names in
    its subjectAltName), or a client certificate with CN `name`."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    _openssl("req", "-new", *_key_args(pair.key), "-out", str(csr), "-subj", f"/CN={name}")
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    if server:
        sans = []
        for host in hosts:
            try:
                ipaddress.ip_address(host)
                sans.append(f"IP:{host}")
            except ValueError:
                sans.append(f"DNS:{host}")
        lines += ["extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(sans)]
    else:
        lines.append("extendedKeyUsage=clientAuth")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-set_serial",
        str(serial if serial is not None else secrets.randbits(63)),
        "-days",
        str(DAYS),
        "-extfile",
        str(ext),
        "-out",
        str(pair.cert),
    )
    csr.unlink()
    ext.unlink()
    return pair


@dataclass(frozen=True, slots=True)
class MtlsSet:
    """Everything both ends need: the CA, the extender's server pair, and
    kube-scheduler's client pair."""

    ca: Pair
    server: Pair
    client: Pair


def make_mtls_set(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> MtlsSet:
    ca = make_ca(directory, "ca")
    return MtlsSet(
        ca=ca,
        server=make_cert(directory, "extender", ca, server=True, hosts=hosts),
        client=make_cert(directory, "kube-scheduler", ca, server=False),
    )
