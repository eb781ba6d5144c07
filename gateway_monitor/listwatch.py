"""The monitor's one list-then-watch loop (over a cluster-scoped custom resource, or one
Secret by name).

The Device registry, the DeviceClass book and the identity keys all follow their
objects the same way: list, hand the items over, watch from the list's resourceVersion
(bookmarks on, the server ends each watch after `watch_timeout`), list again on 410
Gone, back off on any other error. Each caller says only what a list and an event mean to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from cloud4iot.devices import GROUP, VERSION
from gateway_monitor.kubeapi import http_status

log = logging.getLogger(__name__)

SHORT_WATCH = 1.0  # seconds: a watch ending sooner with no event is backed off


Lister = Callable[[], Awaitable[Mapping[str, Any]]]
# (resourceVersion, timeoutSeconds) -> the watch's events
Watcher = Callable[[str, int], AsyncIterator[Mapping[str, Any]]]


def custom_objects(api: Any, plural: str) -> tuple[Lister, Watcher]:
    """List and watch calls for a cluster-scoped custom resource of ours."""

    def lister() -> Awaitable[Mapping[str, Any]]:
        result: Awaitable[Mapping[str, Any]] = api.list_cluster_custom_object(
            GROUP, VERSION, plural
        )
        return result

    def watcher(version: str, timeout: int) -> AsyncIterator[Mapping[str, Any]]:
        events: AsyncIterator[Mapping[str, Any]] = api.watch_cluster_custom_object(
            GROUP, VERSION, plural, resource_version=version, timeout_seconds=timeout
        )
        return events

    return lister, watcher


def one_secret(api: Any, namespace: str, name: str) -> tuple[Lister, Watcher]:
    """List and watch calls for one Secret, by name (fieldSelector metadata.name): a
    Role limited by resourceNames allows a list and a watch only so narrowed. The list
    is empty while the Secret does not exist."""
    selector = f"metadata.name={name}"

    def lister() -> Awaitable[Mapping[str, Any]]:
        result: Awaitable[Mapping[str, Any]] = api.list_namespaced_secret(
            namespace, field_selector=selector
        )
        return result

    def watcher(version: str, timeout: int) -> AsyncIterator[Mapping[str, Any]]:
        events: AsyncIterator[Mapping[str, Any]] = api.watch_namespaced_secret(
            namespace, field_selector=selector, resource_version=version, timeout_seconds=timeout
        )
        return events

    return lister, watcher


async def list_watch(
    api: Any,
    plural: str,
    *,
    what: str,
    on_list: Callable[[Sequence[Mapping[str, Any]]], None],
    on_event: Callable[[str, Mapping[str, Any]], None],
    backoff: Callable[[int], float],
    on_error: Callable[[], None] = lambda: None,
    watch_timeout: int = 300,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """`follow` a cluster-scoped custom resource of ours (`api` is the monitor's KubeApi)."""
    await follow(
        custom_objects(api, plural),
        what=what,
        on_list=on_list,
        on_event=on_event,
        backoff=backoff,
        on_error=on_error,
        watch_timeout=watch_timeout,
        clock=clock,
    )


async def follow(
    calls: tuple[Lister, Watcher],
    *,
    what: str,
    on_list: Callable[[Sequence[Mapping[str, Any]]], None],
    on_event: Callable[[str, Mapping[str, Any]], None],
    backoff: Callable[[int], float],
    on_error: Callable[[], None] = lambda: None,
    watch_timeout: int = 300,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Forever: `on_list(items)` after each list, `on_event(type, object)` per watch
    event (ADDED, MODIFIED, DELETED; bookmarks only move the resourceVersion on).
    `calls` list and watch the objects (custom_objects, one_secret); `what` names them
    in log lines."""
    lister, watcher = calls
    failures = 0
    short = 0  # watches in a row that ended at once with nothing in them
    while True:
        try:
            listing = await lister()
            on_list(listing.get("items", []))
            version = listing["metadata"]["resourceVersion"]
            failures = 0
            while True:
                began, events = clock(), 0
                async for event in watcher(version, watch_timeout):
                    events += 1
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(event["type"], obj)
                # A watch that ended at once and empty (a proxy closing it, a server
                # answering 200 with nothing) is not renewed at once: that loop made
                # thousands of requests a second (client-go's "very short watch").
                if events == 0 and clock() - began < SHORT_WATCH:
                    short += 1
                    await asyncio.sleep(backoff(short))
                else:
                    short = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status == 410:  # our resourceVersion was compacted away: list again
                log.info("%s watch expired; listing again", what)
                short += 1  # (at once the first time; a 410 on every relist backs off)
                if short > 1:
                    await asyncio.sleep(backoff(short - 1))
                continue
            failures += 1
            on_error()
            why = f"HTTP {status}" if status is not None else type(exc).__name__
            log.warning("%s watch failed (%s); retrying", what, why)
            await asyncio.sleep(backoff(failures))
