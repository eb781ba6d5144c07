"""Kubernetes watches that keep the snapshot's nodes and devices current.

List, then watch from the list's resourceVersion; on 410 Gone relist; on any
other error keep serving the last state and retry with capped exponential
backoff. Objects are read as raw JSON (orjson), not the client's models: at
5,000 nodes model deserialisation would dominate the refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from extender.keys import METRICS, POLICY, SETTINGS, STATE
from extender.state.devices import GROUP, PLURAL, VERSION, device_facts
from extender.state.snapshot import DeviceFacts, NodeFacts
from extender.state.store import StateStore

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # server-side watch timeout; the client's is a bit longer
MAX_BACKOFF = 30.0


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410): relist."""


ListCall = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class Reflector:
    """A list+watch loop for one resource, feeding a name -> object dict."""

    name: str
    call: ListCall  # a *_without_preload_content list function
    on_change: Callable[[dict[str, dict[str, Any]], bool], None]
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    synced: bool = False
    last_error: str | None = None
    last_event: float | None = None

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._list()
                backoff = 1.0
                while True:
                    version = await self._watch(version)
            except WatchExpiredError:
                log.info("%s watch expired, relisting", self.name)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s list/watch failed (%s); retry in %.0fs", self.name, exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(MAX_BACKOFF, backoff * 2)

    async def _list(self) -> str:
        resp = await self.call(_request_timeout=60)
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"list {self.name}: HTTP {resp.status}: {body[:200]!r}")
        data = orjson.loads(body)
        self.objects = {o["metadata"]["name"]: o for o in data.get("items") or []}
        self.synced, self.last_error, self.last_event = True, None, time.time()
        self.on_change(self.objects, True)
        version: str = data["metadata"]["resourceVersion"]
        return version

    async def _watch(self, version: str) -> str:
        resp = await self.call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
        )
        if resp.status == 410:
            raise WatchExpiredError
        if resp.status != 200:
            raise RuntimeError(f"watch {self.name}: HTTP {resp.status}")
        buffer = b""
        # Split lines ourselves: a Node can exceed aiohttp's readline limit.
        async for chunk in resp.content.iter_any():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    version = self._apply(orjson.loads(line), version)
        return version

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError
            raise RuntimeError(f"watch {self.name}: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        new_version: str = meta.get("resourceVersion") or version
        if kind == "BOOKMARK":
            return new_version
        name = meta.get("name")
        if not isinstance(name, str):
            return new_version
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        self.last_event = time.time()
        self.on_change(self.objects, False)
        return new_version


def publish_nodes(store: StateStore, objects: Mapping[str, Mapping[str, Any]]) -> None:
    nodes: dict[str, NodeFacts] = {}
    for name, obj in objects.items():
        try:
            nodes[name] = NodeFacts.from_node(obj)
        except ValueError:
            log.warning("ignoring node %s without a name", name)
    store.snapshot = store.snapshot.with_nodes(nodes, synced=True)


def publish_devices(store: StateStore, objects: Mapping[str, Mapping[str, Any]]) -> None:
    devices: dict[str, DeviceFacts] = {}
    for name, obj in objects.items():
        try:
            devices[name] = device_facts(obj)
        except ValueError:
            log.warning("ignoring device %s without a name", name)
    store.snapshot = store.snapshot.with_devices(devices)


async def api_client(settings: Any) -> Any:
    """A kubernetes.aio ApiClient from a kubeconfig or the pod's service account."""
    from kubernetes.aio import config
    from kubernetes.aio.client import ApiClient, Configuration

    if settings.in_cluster:
        cfg = Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return ApiClient(configuration=cfg)
    return await config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(settings.kubeconfig)
    )


async def kube_state(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: node and device reflectors, plus the elected nearest writer."""
    from kubernetes.aio import client

    from extender.state.election import LeaseElector, default_identity, run_elected
    from extender.state.nearest_writer import NearestWriter

    store, settings = app[STATE], app[SETTINGS]
    api = await api_client(settings)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    writer = NearestWriter(custom=custom, core=core, policy=app[POLICY], store=store)
    device_changed = asyncio.Event()

    def on_devices(objects: dict[str, dict[str, Any]], relisted: bool) -> None:
        publish_devices(store, objects)
        device_changed.set()

    nodes = Reflector(
        "nodes", core.list_node_without_preload_content, lambda o, _: publish_nodes(store, o)
    )
    devices = Reflector(
        "devices",
        lambda **kw: custom.list_cluster_custom_object_without_preload_content(
            GROUP, VERSION, PLURAL, **kw
        ),
        on_devices,
    )
    tasks = [
        asyncio.create_task(nodes.run(), name="watch-nodes"),
        asyncio.create_task(devices.run(), name="watch-devices"),
        asyncio.create_task(_health_loop(store, (nodes, devices)), name="kube-health"),
    ]
    if settings.leader_election:
        elector = LeaseElector(
            client.CoordinationV1Api(api),
            settings.lease_namespace,
            settings.lease_name,
            default_identity(),
        )
        elected = run_elected(
            elector,
            lambda: writer.run(device_changed),
            on_change=lambda leading: app[METRICS].leader.set(1 if leading else 0),
        )
        tasks.append(asyncio.create_task(elected, name="nearest-writer"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await api.close()


async def _health_loop(store: StateStore, reflectors: tuple[Reflector, ...]) -> None:
    while True:
        health = store.health("kubernetes")
        errors = [f"{r.name}: {r.last_error}" for r in reflectors if r.last_error]
        health.ok = not errors and all(r.synced for r in reflectors)
        health.detail = "; ".join(errors) or ("synced" if health.ok else "syncing")
        if health.ok:
            health.last_success = time.time()
        await asyncio.sleep(1.0)
