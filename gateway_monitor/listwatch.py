"""The monitor's one list-then-watch loop over a cluster-scoped custom resource.

The Device registry and the DeviceClass book both follow their objects the same way:
list, hand the items over, watch from the list's resourceVersion (bookmarks on, the
server ends each watch after `watch_timeout`), list again on 410 Gone, back off on
any other error. Each caller says only what a list and an event mean to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud4iot.devices import GROUP, VERSION

log = logging.getLogger(__name__)


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
) -> None:
    """Forever: `on_list(items)` after each list, `on_event(type, object)` per watch
    event (ADDED, MODIFIED, DELETED; bookmarks are the watch's own). `api` is a
    kubernetes.aio CustomObjectsApi; `what` names the objects in log lines."""
    from kubernetes.aio import watch
    from kubernetes.aio.client.exceptions import ApiException

    failures = 0
    while True:
        try:
            listing = await api.list_cluster_custom_object(GROUP, VERSION, plural)
            on_list(listing.get("items", []))
            version = listing["metadata"]["resourceVersion"]
            failures = 0
            while True:
                w = watch.Watch()  # type: ignore[no-untyped-call]
                async with w.stream(  # type: ignore[no-untyped-call]
                    api.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    plural,
                    resource_version=version,
                    timeout_seconds=watch_timeout,
                    allow_watch_bookmarks=True,
                ) as stream:
                    async for event in stream:
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            on_event(event["type"], event["raw_object"])
                version = w.resource_version or version
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion was compacted away: list again
                log.info("%s watch expired; listing again", what)
                continue
            failures += 1
            on_error()
            log.warning("%s watch failed (HTTP %s); retrying", what, exc.status)
            await asyncio.sleep(backoff(failures))
        except Exception as exc:
            failures += 1
            on_error()
            log.warning("%s watch failed (%s); retrying", what, type(exc).__name__)
            await asyncio.sleep(backoff(failures))
