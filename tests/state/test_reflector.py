"""The Node/Device reflectors, driven by a fake list/watch call (no cluster).

The fake stands in for a kubernetes.aio `*_without_preload_content` function: it
returns scripted responses shaped like aiohttp's ClientResponse (`status`,
`read()`, `content.iter_any()`, `release()`) and records each call's arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from extender.state import kube
from extender.state.devices import device_facts
from extender.state.kube import Reflector, node_facts, publish_devices, publish_nodes
from extender.state.snapshot import DeviceFacts, NodeFacts
from extender.state.store import StateStore
from tests.replay.virtual_loop import run_virtual

Obj = dict[str, Any]
Gap = float | list[float]  # seconds before each chunk: one for all, or one per chunk


# --- fakes -------------------------------------------------------------------


class FakeContent:
    def __init__(
        self, chunks: Iterable[bytes], fail: BaseException | None, gap: Gap, hang: bool
    ) -> None:
        self.chunks, self.fail, self.hang = list(chunks), fail, hang
        self.gaps = list(gap) if isinstance(gap, list) else [gap] * len(self.chunks)
        self.sent_at: list[float] = []  # loop time each chunk was handed over

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk, gap in zip(self.chunks, self.gaps, strict=True):
            # Hand control to the loop between chunks, as a real socket read does.
            await asyncio.sleep(gap)
            self.sent_at.append(asyncio.get_running_loop().time())
            yield chunk
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await asyncio.Event().wait()  # an open watch with nothing more to say


class FakeResponse:
    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        chunks: Iterable[bytes] = (),
        fail: BaseException | None = None,
        gap: Gap = 0.0,
        hang: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status, self.body, self.headers = status, body, dict(headers or {})
        self.content = FakeContent(chunks, fail, gap, hang)
        self.released = 0

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        self.released += 1


class Hang:
    """A scripted step: the watch stays open with nothing to say (until cancelled)."""


@dataclass
class FakeApi:
    """A list/watch callable answering from a script; idles once the script is done."""

    script: list[FakeResponse | Hang | BaseException]  # an exception is raised by the call
    calls: list[dict[str, Any]] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if not self.script or isinstance(self.script[0], Hang):
            if self.script:
                self.script.pop(0)
            self.idle.set()
            await asyncio.Event().wait()  # never set: like a quiet watch
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, FakeResponse)
        self.responses.append(step)
        return step

    def kinds(self) -> list[str]:
        return ["watch" if c.get("watch") else "list" for c in self.calls]


def device(
    name: str, rssi: float = -60.0, rv: str = "1", seen: str = "2026-01-01T00:00:00Z"
) -> Obj:
    return {
        "apiVersion": "cloud4iot.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": name, "resourceVersion": rv},
        "spec": {"address": "AA:BB:CC:00:00:01"},
        "status": {
            "sightings": [{"node": f"gw-{i}", "rssi": rssi - i, "lastSeen": seen} for i in range(3)]
        },
    }


def node(name: str, tier: str = "edge") -> Obj:
    # Bulky parts a real Node carries; the cache must not keep them.
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {"cloud4iot.io/tier": tier, "kubernetes.io/arch": "arm64"},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}] * 20,
        },
        "status": {
            "images": [{"names": [f"img-{i}"], "sizeBytes": 10**8} for i in range(50)],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def sized(obj: Obj) -> Obj:
    """A Node with status.allocatable (kept, as a read-only mapping, for the room check)."""
    obj["status"]["allocatable"] = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return obj


def list_body(items: list[Obj], rv: str) -> bytes:
    return orjson.dumps({"metadata": {"resourceVersion": rv}, "items": items})


def listed(items: list[Obj], rv: str = "10") -> FakeResponse:
    return FakeResponse(body=list_body(items, rv))


def event(kind: str, obj: Obj) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


def bookmark(rv: str) -> bytes:
    return event("BOOKMARK", {"kind": "Device", "metadata": {"resourceVersion": rv}})


def gone() -> bytes:
    return event(
        "ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    )


def watched(
    *chunks: bytes, fail: BaseException | None = None, gap: Gap = 0.0, hang: bool = False
) -> FakeResponse:
    return FakeResponse(chunks=chunks, fail=fail, gap=gap, hang=hang)


@dataclass
class Harness:
    api: FakeApi
    reflector: Reflector[DeviceFacts]
    store: StateStore
    published: list[dict[str, DeviceFacts]]
    parsed: list[str]
    sleeps: list[float]
    published_at: list[float]  # loop time of each publish


def device_harness(
    script: list[FakeResponse | Hang | BaseException], interval: float = 0.1
) -> Harness:
    store = StateStore()
    published: list[dict[str, DeviceFacts]] = []
    parsed: list[str] = []
    sleeps: list[float] = []
    published_at: list[float] = []

    def parse(obj: Mapping[str, Any], observed_at: float) -> DeviceFacts:
        parsed.append(obj["metadata"]["name"])
        return device_facts(obj, observed_at=observed_at)

    def publish(facts: dict[str, DeviceFacts]) -> None:
        published.append(facts)
        published_at.append(asyncio.get_running_loop().time())
        publish_devices(store, facts)

    async def no_wait(delay: float) -> None:
        sleeps.append(delay)  # the backoff asked for; the test does not wait it out
        await asyncio.sleep(0)

    api = FakeApi(script)
    reflector = Reflector("devices", api, parse, publish, publish_interval=interval, sleep=no_wait)
    return Harness(api, reflector, store, published, parsed, sleeps, published_at)


async def run_script(reflector: Reflector[Any], api: FakeApi, settle: float = 0.15) -> None:
    """Run `reflector` through `api`'s script, let a pending publish land, stop it."""
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(api.idle.wait(), 5)
        await asyncio.sleep(settle)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_idle(h: Harness, settle: float = 0.15) -> None:
    """Run the reflector through its script, let a pending publish land, stop it."""
    await run_script(h.reflector, h.api, settle)
    assert all(r.released == 1 for r in h.api.responses), "every response released once"


async def wait_for(cond: Callable[[], bool], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()  # its time is virtual under run_virtual
    deadline = loop.time() + within
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def rssi_of(facts: Mapping[str, DeviceFacts], name: str) -> float:
    return facts[name].sightings["gw-0"].rssi


# --- tests -------------------------------------------------------------------


async def test_initial_list_publishes_facts_and_sets_synced() -> None:
    h = device_harness([listed([device("a"), device("b")], rv="10"), Hang()])
    assert not h.store.snapshot.devices_synced
    await until_idle(h)
    snap = h.store.snapshot
    assert snap.devices_synced
    assert set(snap.devices) == {"a", "b"}
    assert snap.devices["a"] == device_facts(device("a"))
    assert h.api.kinds() == ["list", "watch"]
    assert h.api.calls[1]["resource_version"] == "10"
    assert h.api.calls[1]["allow_watch_bookmarks"] is True
    assert h.reflector.synced
    assert h.reflector.last_error is None
    assert len(h.published) == 1


async def test_node_cache_keeps_only_name_and_labels() -> None:
    store = StateStore()
    api = FakeApi(
        [listed([node("n1"), node("n2", "cloud")]), watched(event("DELETED", node("n1"))), Hang()]
    )
    nodes = Reflector("nodes", api, node_facts, lambda facts: publish_nodes(store, facts))
    await run_script(nodes, api)
    assert store.snapshot.nodes_synced
    assert list(store.snapshot.nodes) == ["n2"]
    facts = nodes.facts["n2"]
    assert isinstance(facts, NodeFacts)
    assert facts.tier == "cloud"
    assert facts.arch == "arm64"
    assert dict(facts.labels) == node("n2", "cloud")["metadata"]["labels"]
    assert all(r.released == 1 for r in api.responses)


async def test_a_node_heartbeat_publishes_nothing_and_keeps_the_facts_identity() -> None:
    """A MODIFIED Node whose kept facts did not change (a kubelet's status report, every
    5 minutes per node: ~17 a second at 5,000 nodes) publishes no snapshot; a label
    change still does."""
    beat = sized(node("n1"))
    beat["metadata"]["resourceVersion"] = "11"
    beat["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastHeartbeatTime": "t"}]
    relabelled = sized(node("n1", "cloud"))
    relabelled["metadata"]["resourceVersion"] = "12"
    store = StateStore()
    published: list[dict[str, NodeFacts]] = []

    def publish(facts: dict[str, NodeFacts]) -> None:
        published.append(facts)
        publish_nodes(store, facts)

    api = FakeApi(
        [
            listed([sized(node("n1")), node("n2")]),
            watched(event("MODIFIED", beat), event("MODIFIED", beat), gap=0.2),
            Hang(),
        ]
    )
    nodes = Reflector("nodes", api, node_facts, publish, skip_unchanged=True)
    await run_script(nodes, api)
    assert len(published) == 1  # the list's only
    assert nodes.unchanged == 2
    assert published[0]["n1"] is nodes.facts["n1"]  # the listed object, not an equal copy
    assert api.calls[-1]["resource_version"] == "11"  # the heartbeats still advance it

    api = FakeApi([listed([sized(node("n1"))]), watched(event("MODIFIED", relabelled)), Hang()])
    nodes = Reflector("nodes", api, node_facts, publish, skip_unchanged=True)
    published.clear()
    await run_script(nodes, api)
    assert len(published) == 2
    assert store.snapshot.nodes["n1"].tier == "cloud"
    assert nodes.unchanged == 0
    # As the extender wires them: Nodes only; reports and Leases see every write.
    api_stub = SimpleNamespace(
        list_node_without_preload_content=None,
        list_cluster_custom_object_without_preload_content=None,
        list_namespaced_lease_without_preload_content=None,
    )
    wired = kube.cluster_reflectors(
        api_stub, api_stub, StateStore(), coordination=api_stub, gateway_namespace="g"
    )
    assert [r.name for r in wired.watches if r.skip_unchanged] == ["nodes"]


async def test_added_modified_deleted_update_one_entry_each() -> None:
    h = device_harness(
        [
            listed([device("a"), device("b")]),
            watched(
                event("ADDED", device("c", rv="11")),
                event("MODIFIED", device("a", rssi=-40, rv="12")),
                event("DELETED", device("b", rv="13")),
            ),
            Hang(),
        ]
    )
    await until_idle(h)
    devices = h.store.snapshot.devices
    assert set(devices) == {"a", "c"}
    assert rssi_of(devices, "a") == -40
    # Only the changed objects were parsed again, not the whole cache.
    assert h.parsed == ["a", "b", "c", "a"]
    # The next watch resumes after the last event.
    assert h.api.calls[-1]["resource_version"] == "13"
    # The snapshot published at the list is left as it was (snapshots are frozen).
    assert set(h.published[0]) == {"a", "b"}
    assert rssi_of(h.published[0], "a") == -60


async def test_bookmark_only_advances_the_resource_version() -> None:
    h = device_harness([listed([device("a")], rv="10"), watched(bookmark("50")), Hang()])
    await until_idle(h)
    assert h.api.kinds() == ["list", "watch", "watch"]
    assert h.api.calls[2]["resource_version"] == "50"
    assert len(h.published) == 1  # the list's only
    assert h.parsed == ["a"]


async def test_json_line_split_across_chunks() -> None:
    first = event("MODIFIED", device("a", rssi=-41, rv="11"))
    second = event("ADDED", device("b", rv="12"))
    third = event("ADDED", device("c", rv="13"))
    chunks = [first[:7], first[7:30], first[30:] + second[:5], second[5:] + third, b"\n"]
    h = device_harness([listed([device("a")]), watched(*chunks), Hang()])
    await until_idle(h)
    devices = h.store.snapshot.devices
    assert set(devices) == {"a", "b", "c"}
    assert rssi_of(devices, "a") == -41
    assert h.api.calls[-1]["resource_version"] == "13"


async def test_a_cut_off_last_line_is_dropped_and_the_next_watch_resumes_before_it() -> None:
    whole = event("MODIFIED", device("a", rssi=-41, rv="11"))
    cut = event("MODIFIED", device("a", rssi=-99, rv="12"))[:-20]
    h = device_harness([listed([device("a")]), watched(whole, cut), Hang()])
    await until_idle(h)
    assert rssi_of(h.store.snapshot.devices, "a") == -41
    assert h.api.calls[-1]["resource_version"] == "11"


async def test_error_event_410_relists_after_a_pause_and_releases() -> None:
    h = device_harness(
        [
            listed([device("a")], rv="10"),
            watched(event("MODIFIED", device("a", rssi=-45, rv="11")), gone()),
            listed([device("a", rssi=-50), device("z")], rv="20"),
            Hang(),
        ]
    )
    await until_idle(h)
    assert h.api.kinds() == ["list", "watch", "list", "watch"]
    assert h.api.calls[3]["resource_version"] == "20"
    assert h.sleeps == [kube.RELIST_DELAY]
    assert set(h.store.snapshot.devices) == {"a", "z"}
    assert rssi_of(h.store.snapshot.devices, "a") == -50
    assert h.reflector.last_error is None


async def test_http_410_relists_after_a_pause_and_releases() -> None:
    h = device_harness(
        [
            listed([device("a")], rv="10"),
            FakeResponse(status=410),
            listed([device("b")], rv="20"),
            Hang(),
        ]
    )
    await until_idle(h)
    assert h.api.kinds() == ["list", "watch", "list", "watch"]
    assert h.sleeps == [kube.RELIST_DELAY]
    assert set(h.store.snapshot.devices) == {"b"}


async def test_repeated_410_backs_off_with_capped_growth_and_resets_after_progress() -> None:
    script: list[FakeResponse | Hang] = []
    for _ in range(6):
        script += [listed([device("a")]), FakeResponse(status=410)]
    # A watch that delivered events before expiring: back to the short pause.
    script += [listed([device("a")]), watched(event("MODIFIED", device("a", rv="11")), gone())]
    script += [listed([device("a")]), Hang()]
    h = device_harness(script)
    await until_idle(h)
    assert h.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 1.0]
    assert kube.MAX_RELIST_DELAY == 8.0


async def test_http_error_backs_off_and_keeps_the_last_published_state() -> None:
    h = device_harness(
        [
            listed([device("a")], rv="10"),
            FakeResponse(status=500, body=b"etcd unavailable"),  # watch
            FakeResponse(status=503, body=b"apiserver restarting"),  # relist
            Hang(),  # the next relist hangs: the apiserver is still away
        ]
    )
    await until_idle(h)
    assert h.api.kinds() == ["list", "watch", "list", "list"]
    assert len(h.sleeps) == 2
    assert 0.8 <= h.sleeps[0] <= 1.2
    assert 1.6 <= h.sleeps[1] <= 2.4
    assert h.reflector.last_error is not None
    assert "503" in h.reflector.last_error
    # Requests keep being answered from the last good state.
    assert set(h.store.snapshot.devices) == {"a"}
    assert h.store.snapshot.devices_synced


async def refused_by_aiohttp() -> BaseException:
    """The exception aiohttp (under kubernetes.aio) raises when nothing listens on the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    async with aiohttp.ClientSession() as session:
        try:
            await session.get(f"http://127.0.0.1:{port}/api/v1/devices")
        except aiohttp.ClientError as exc:
            return exc
    raise AssertionError(f"something answered on port {port}")


async def test_a_refused_connection_is_retried_every_two_seconds_at_most() -> None:
    # The apiserver is restarting: each reconnect is refused. The retries stay
    # short, so the reflector sees it back within REFUSED_BACKOFF (not after 30 s).
    refused = await refused_by_aiohttp()
    h = device_harness([listed([device("a")], rv="10"), *[refused] * 8, listed([]), Hang()])
    await until_idle(h)
    assert kube.is_refused(refused)
    assert len(h.sleeps) == 8
    assert 0.8 <= h.sleeps[0] <= 1.2
    assert all(1.6 <= d <= kube.REFUSED_BACKOFF * 1.2 for d in h.sleeps[1:]), h.sleeps
    assert h.reflector.last_error is None  # the relist after it succeeded
    assert set(h.store.snapshot.devices) == set()


async def test_other_errors_still_back_off_to_the_cap_and_retry_after_is_honoured() -> None:
    # A failing apiserver that answers is asked less and less often; once it says
    # when to come back (a starting apiserver's 429 does), that is when we retry.
    failing = [FakeResponse(status=500, body=b"etcd unavailable") for _ in range(7)]
    initializing = FakeResponse(
        status=429, body=b"storage is (re)initializing", headers={"Retry-After": "1"}
    )
    h = device_harness([*failing, initializing, listed([device("a")]), Hang()])
    await until_idle(h)
    assert len(h.sleeps) == 8
    nominal = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 1.0]
    assert all(0.8 * n <= d <= 1.2 * n for d, n in zip(h.sleeps, nominal, strict=True)), h.sleeps
    assert set(h.store.snapshot.devices) == {"a"}


def test_retry_delay_after_refusals_keeps_doubling_from_there_on_other_errors() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    wrapped = OSError("cannot connect")
    wrapped.__cause__ = refused
    delays = [0.0]
    for exc in (refused, refused, refused, wrapped, RuntimeError("503"), RuntimeError("503")):
        delays.append(kube.retry_delay(exc, delays[-1]))
    assert delays[1:] == [1.0, 2.0, 2.0, 2.0, 4.0, 8.0]
    assert kube.retry_delay(kube.HttpStatusError("x", 503, retry_after=120.0), 2.0) == 30.0
    assert kube.retry_after({"Retry-After": "soon"}) is None
    assert not kube.is_refused(ConnectionResetError("reset by peer"))


async def test_exception_mid_stream_backs_off_keeps_applied_events_and_releases() -> None:
    cut = ConnectionResetError("connection reset by peer")
    h = device_harness(
        [
            listed([device("a")], rv="10"),
            watched(event("MODIFIED", device("a", rssi=-44, rv="11")), fail=cut),
            Hang(),  # relist hangs
        ]
    )
    await until_idle(h)
    assert h.api.kinds() == ["list", "watch", "list"]
    assert len(h.sleeps) == 1
    assert 0.8 <= h.sleeps[0] <= 1.2
    assert h.reflector.last_error == "ConnectionResetError: connection reset by peer"
    assert rssi_of(h.store.snapshot.devices, "a") == -44


async def test_list_error_releases_the_response() -> None:
    h = device_harness([FakeResponse(status=403, body=b"forbidden"), Hang()])
    await until_idle(h)
    assert h.api.responses[0].released == 1
    assert not h.store.snapshot.devices_synced
    assert not h.reflector.synced


async def test_cancel_mid_watch_releases_the_response() -> None:
    h = device_harness([listed([device("a")]), watched(event("ADDED", device("b")), hang=True)])
    task = asyncio.create_task(h.reflector.run())
    await wait_for(lambda: "b" in h.store.snapshot.devices)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [r.released for r in h.api.responses] == [1, 1]


async def test_a_burst_publishes_far_fewer_snapshots_yet_the_last_one_is_exact() -> None:
    n_devices, n_events = 200, 1000
    objects = {f"d{i}": device(f"d{i}") for i in range(n_devices)}
    chunks = []
    for k in range(n_events):
        name = f"d{k % n_devices}"
        objects[name] = device(name, rssi=-30 - k % 50, rv=str(100 + k))
        chunks.append(event("MODIFIED", objects[name]))
    initial = [device(f"d{i}") for i in range(n_devices)]
    # One event per chunk, ~1 ms apart: a heartbeat storm lasting about a second.
    h = device_harness([listed(initial), watched(*chunks, gap=0.001), Hang()])
    await until_idle(h)
    publishes = len(h.published) - 1  # minus the list's
    assert 1 <= publishes <= n_events // 20, publishes
    assert dict(h.store.snapshot.devices) == {n: device_facts(o) for n, o in objects.items()}


def test_a_lone_event_is_published_promptly() -> None:
    # On virtual time (the reflector's coalescing timer runs on the loop's clock), so
    # the bounds are the reflector's own, whatever the machine's load.
    run_virtual(lone_events_published_promptly())


async def lone_events_published_promptly() -> None:
    interval = 0.1
    h = device_harness(
        [
            listed([device("a")]),
            # The first event lands just after the list's publish (so it waits out
            # the rest of the interval), the second after a quiet spell longer than
            # the bound below: neither may wait for a later event.
            watched(
                event("MODIFIED", device("a", rssi=-41, rv="11")),
                event("MODIFIED", device("a", rssi=-42, rv="12")),
                gap=[0.0, 1.5],
            ),
            Hang(),
        ],
        interval,
    )
    task = asyncio.create_task(h.reflector.run())
    try:
        await wait_for(lambda: len(h.api.responses) == 2)
        content = h.api.responses[1].content
        # The first waits out the rest of the interval the list's publish began; the
        # second, after a quiet spell, is published at once.
        for want, bound in ((-41, interval), (-42, 0.0)):
            await wait_for(lambda want=want: rssi_of(h.store.snapshot.devices, "a") == want)
            delay = h.published_at[-1] - content.sent_at[-1]
            assert 0.0 <= delay <= bound + 1e-9, f"published {delay * 1000:.1f} ms after the event"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_sightings_last_seen_is_capped_at_observation_time() -> None:
    ahead = "2099-01-01T00:00:00Z"  # a gateway whose clock runs far ahead
    h = device_harness(
        [
            listed([device("a", seen=ahead)]),
            watched(event("ADDED", device("b", seen=ahead))),
            Hang(),
        ]
    )
    before = time.time()
    await until_idle(h)
    after = time.time()
    for name in ("a", "b"):
        for s in h.store.snapshot.devices[name].sightings.values():
            assert before <= s.last_seen <= after


async def test_unnamed_or_malformed_objects_are_skipped() -> None:
    nameless = device("x")
    del nameless["metadata"]["name"]
    h = device_harness(
        [
            listed([device("a"), nameless]),
            watched(event("ADDED", nameless), event("ADDED", device("b"))),
            Hang(),
        ]
    )
    await until_idle(h)
    assert set(h.store.snapshot.devices) == {"a", "b"}
