"""The gateway monitor's apiserver client: asyncio streams, ssl and json of the standard
library, no aiohttp and no kubernetes client (their ~25 MB are most of a Pi-class
gateway's 40 MB budget, issue 23 item 4; BENCHMARKS.md "Gateway monitor: RSS and CPU").

It makes the few calls the monitor makes, under the kubernetes.aio method names the
monitor's modules call (so they take either client): list and watch a cluster-scoped
custom resource, get, merge-patch and server-side apply a status, get/create/replace a Lease,
list and watch one Secret by a field selector.
Credentials as the kubernetes client takes them: a kubeconfig (server, CA, bearer token
or token file, client certificate), else the pod's ServiceAccount, whose projected token
file is re-read when it changes (the kubelet rotates it). Errors: ``ApiError`` with the
HTTP ``status`` and ``reason`` (and the apiserver's message), as ``ApiException`` has;
connection failures and timeouts raise OSError / TimeoutError.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from cloud4iot.devices import MERGE_PATCH

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = 30.0  # seconds for one request, connect to last byte
WATCH_SLACK = 30.0  # a watch may stay silent for its timeoutSeconds plus this
IDLE_CONNECTIONS = 2  # kept open between requests (the publisher, Lease, candidates)
JSON = "application/json"


class ApiError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str = "", body: bytes = b"") -> None:
        super().__init__(f"HTTP {status} {reason}" + (f": {message}" if message else ""))
        self.status, self.reason, self.message, self.body = status, reason, message, body


@dataclass(slots=True)
class TokenFile:
    """A bearer token read from a file, read again when the file changes (a projected
    ServiceAccount token is replaced by the kubelet before it expires)."""

    path: Path
    _mtime: float | None = None
    _token: str = ""

    def token(self) -> str:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._token, self._mtime = self.path.read_text().strip(), mtime
        return self._token


@dataclass(slots=True)
class Endpoint:
    host: str
    port: int
    tls: ssl.SSLContext | None
    token: str | TokenFile | None = None
    server_hostname: str | None = None

    def bearer(self) -> str | None:
        return self.token.token() if isinstance(self.token, TokenFile) else self.token


def in_cluster(sa_dir: Path = SA_DIR, environ: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ValueError("not in a pod: KUBERNETES_SERVICE_HOST/PORT unset; pass --kubeconfig")
    tls = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    return Endpoint(host, int(port), tls, TokenFile(sa_dir / "token"))


def from_kubeconfig(path: Path) -> Endpoint:
    """The current context's cluster and user (the fields the devcluster, kubeadm and
    our install write; exec plugins and auth providers are not supported)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{path}: not a kubeconfig: invalid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a kubeconfig")
    base = path.parent

    def named(kind: str, name: object) -> dict[str, Any]:
        for item in doc.get(kind) or []:
            if isinstance(item, dict) and item.get("name") == name:
                entry = item.get(kind[:-1])
                return entry if isinstance(entry, dict) else {}
        raise ValueError(f"{path}: no {kind[:-1]} {name!r}")

    context = named("contexts", doc.get("current-context"))
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    url = urlsplit(str(cluster.get("server", "")))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{path}: cluster server {cluster.get('server')!r} is not a URL")
    tls = None
    if url.scheme == "https":
        tls = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            tls.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif cluster.get("certificate-authority"):
            tls.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        _client_cert(tls, user, base)
    token: str | TokenFile | None = user.get("token")
    if token is None and user.get("tokenFile"):
        token = TokenFile(base / user["tokenFile"])
    port = url.port or (443 if url.scheme == "https" else 80)
    return Endpoint(url.hostname, port, tls, token, cluster.get("tls-server-name"))


def _client_cert(tls: ssl.SSLContext, user: Mapping[str, Any], base: Path) -> None:
    if user.get("client-certificate-data"):
        # ssl loads chains from files only: a private temporary file, removed at once.
        pem = base64.b64decode(user["client-certificate-data"])
        pem += b"\n" + base64.b64decode(user.get("client-key-data", ""))
        fd, name = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            tls.load_cert_chain(name)
        finally:
            os.unlink(name)
    elif user.get("client-certificate"):
        key = user.get("client-key")
        tls.load_cert_chain(
            str(base / user["client-certificate"]), str(base / key) if key else None
        )


@dataclass(slots=True, eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class _Response:
    status: int
    reason: str
    headers: dict[str, str]
    conn: _Conn


class KubeApi:
    """HTTP/1.1 to one apiserver: requests over a few kept-alive connections, each
    watch on its own."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.endpoint, self.timeout = endpoint, timeout
        self._idle: list[_Conn] = []
        self._watches: set[_Conn] = set()

    @classmethod
    def connect(cls, kubeconfig: Path | None) -> KubeApi:
        return cls(in_cluster() if kubeconfig is None else from_kubeconfig(kubeconfig))

    async def close(self) -> None:
        for conn in [*self._idle, *self._watches]:
            conn.close()
        self._idle.clear()
        self._watches.clear()

    # --- the calls the monitor makes, named as kubernetes.aio names them ---------------

    async def list_cluster_custom_object(
        self, group: str, version: str, plural: str
    ) -> dict[str, Any]:
        return await self.request("GET", f"/apis/{group}/{version}/{plural}")

    async def get_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str
    ) -> dict[str, Any]:
        return await self.request("GET", f"/apis/{group}/{version}/{plural}/{_q(name)}/status")

    async def patch_cluster_custom_object_status(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        query: dict[str, str] = {}
        if field_manager is not None:
            query["fieldManager"] = field_manager
        if force is not None:
            query["force"] = "true" if force else "false"
        path = f"/apis/{group}/{version}/{plural}/{_q(name)}/status"
        return await self.request("PATCH", path, query, body, _content_type)

    async def read_namespaced_lease(self, name: str, namespace: str) -> dict[str, Any]:
        return await self.request("GET", _lease_path(namespace, name))

    async def create_namespaced_lease(self, namespace: str, body: Any) -> dict[str, Any]:
        return await self.request("POST", _lease_path(namespace), body=body)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: Any
    ) -> dict[str, Any]:
        return await self.request("PUT", _lease_path(namespace, name), body=body)

    async def watch_cluster_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (bookmarks on) until the server ends the watch; an ERROR event
        raises ApiError with its code (410 Gone: list again)."""
        path = f"/apis/{group}/{version}/{plural}"
        async for event in self._watch(path, {}, resource_version, timeout_seconds):
            yield event

    async def list_namespaced_secret(
        self, namespace: str, *, field_selector: str
    ) -> dict[str, Any]:
        """The Secrets a field selector picks (the monitor lists one by name: RBAC's
        resourceNames allow a list only so narrowed)."""
        query = {"fieldSelector": field_selector}
        return await self.request("GET", _secret_path(namespace), query)

    async def watch_namespaced_secret(
        self,
        namespace: str,
        *,
        field_selector: str,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """As watch_cluster_custom_object, for the Secrets a field selector picks."""
        query = {"fieldSelector": field_selector}
        path = _secret_path(namespace)
        async for event in self._watch(path, query, resource_version, timeout_seconds):
            yield event

    async def _watch(
        self,
        path: str,
        query: Mapping[str, str],
        resource_version: str,
        timeout_seconds: int,
    ) -> AsyncIterator[dict[str, Any]]:
        query = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        async for event in self.stream(path, query, timeout_seconds + WATCH_SLACK):
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiError(
                    int(status.get("code") or 500),
                    str(status.get("reason") or "Error"),
                    str(status.get("message") or ""),
                )
            yield event

    # --- HTTP ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """One request, its JSON answer; ApiError for an error status."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        async with asyncio.timeout(self.timeout):
            resp, payload = await self._exchange(method, path, query, data, content_type)
        if resp.status >= 400:
            raise _error(resp, payload)
        answer = json.loads(payload) if payload else {}
        return answer if isinstance(answer, dict) else {"value": answer}

    async def _exchange(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str,
    ) -> tuple[_Response, bytes]:
        # A kept-alive connection the server closed meanwhile: left out when its close
        # has arrived (at EOF), else it fails on first use, and then a read is tried
        # once more on a fresh connection. A write is not: the server may have got it
        # before the connection dropped, and a second POST or PUT then answers 409 for
        # what was done (found in review, 2026-12-07); the caller's own retry reads
        # the object again.
        conn: _Conn | None = None
        while self._idle and conn is None:
            idle = self._idle.pop()
            if idle.reader.at_eof() or idle.writer.is_closing():
                idle.close()
            else:
                conn = idle
        reused = conn is not None
        if conn is None:
            conn = await self._open()
        try:
            resp = await self._send(conn, method, path, query, data, content_type)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.close()
            if not reused or method != "GET":
                raise
            conn = await self._open()
            resp = await self._send(conn, method, path, query, data, content_type)
        except BaseException:
            conn.close()
            raise
        try:
            payload = await _read_body(resp)
        except BaseException:
            conn.close()
            raise
        if resp.headers.get("connection", "").lower() == "close" or len(self._idle) >= (
            IDLE_CONNECTIONS
        ):
            conn.close()
        else:
            self._idle.append(conn)
        return resp, payload

    async def stream(
        self, path: str, query: Mapping[str, str], idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of a streamed answer, on a connection of its own."""
        async with asyncio.timeout(self.timeout):
            conn = await self._open()
        self._watches.add(conn)
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self._send(conn, "GET", path, query, None, JSON)
            if resp.status >= 400:
                async with asyncio.timeout(self.timeout):
                    raise _error(resp, await _read_body(resp))
            pending = b""
            async for chunk in _chunks(resp, idle_timeout):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._watches.discard(conn)
            conn.close()

    async def _open(self) -> _Conn:
        ep = self.endpoint
        reader, writer = await asyncio.open_connection(
            ep.host,
            ep.port,
            ssl=ep.tls,
            server_hostname=(ep.server_hostname or ep.host) if ep.tls else None,
            limit=2**20,
        )
        return _Conn(reader, writer)

    async def _send(
        self,
        conn: _Conn,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str,
    ) -> _Response:
        target = path + ("?" + urlencode(query) if query else "")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.endpoint.host}:{self.endpoint.port}",
            "Accept: application/json",
            "User-Agent: cloud4iot-gateway-monitor",
        ]
        token = self.endpoint.bearer()
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if data is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        conn.writer.write(head + data if data is not None else head)
        await conn.writer.drain()
        status_line = await conn.reader.readuntil(b"\r\n")
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer: {status_line[:60]!r}")
        headers: dict[str, str] = {}
        while (line := await conn.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return _Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, conn)


def _q(name: str) -> str:
    return quote(name, safe="")


def _secret_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/secrets"


def _lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{_q(namespace)}/leases"
    return path if name is None else f"{path}/{_q(name)}"


def _error(resp: _Response, payload: bytes) -> ApiError:
    message, reason = "", resp.reason
    with contextlib.suppress(ValueError):
        status = json.loads(payload)
        if isinstance(status, dict):
            message = str(status.get("message") or "")
            reason = str(status.get("reason") or reason)
    return ApiError(resp.status, reason, message, payload)


async def _read_body(resp: _Response) -> bytes:
    return b"".join([chunk async for chunk in _chunks(resp, None)])


async def _chunks(resp: _Response, idle_timeout: float | None) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive: chunked, by Content-Length, or to the close."""
    reader = resp.conn.reader

    async def read(coro: Any) -> bytes:
        if idle_timeout is None:
            data: bytes = await coro
            return data
        async with asyncio.timeout(idle_timeout):
            data = await coro
            return data

    if resp.headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await read(reader.readuntil(b"\r\n"))
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await read(reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return
            chunk = await read(reader.readexactly(size + 2))
            yield chunk[:-2]
    elif "content-length" in resp.headers:
        left = int(resp.headers["content-length"])
        while left > 0:
            chunk = await read(reader.read(min(left, 65536)))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
    else:
        while chunk := await read(reader.read(65536)):
            yield chunk
        resp.headers["connection"] = "close"


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an apiserver error from either client (ApiError here,
    kubernetes.aio's ApiException in tests); None for connection failures."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def resource_version(obj: Any) -> str | None:
    """metadata.resourceVersion of an object as either client returns it (a dict here,
    a model with attributes from kubernetes.aio)."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        return str(version) if version is not None else None
    meta = getattr(obj, "metadata", None) or SimpleNamespace(resource_version=None)
    found: str | None = meta.resource_version
    return found
