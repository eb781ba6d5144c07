"""DiscoveryController.step against stand-in APIs: what it keeps between passes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace as Ns
from typing import Any

import pytest

from cloud4iot.deviceclass import DeviceClass, Filter, FunctionTemplate
from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from extender.controllers.discovery import DiscoveryController, saved_replicas
from extender.controllers.discovery_plan import Discovered
from extender.state.snapshot import DeviceFacts, NodeFacts, Sighting, Snapshot
from extender.state.store import StateStore

T = 1_800_000_000.0


class Api:
    """Accepts every write; a Deployment read finds it at one replica."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "read_namespaced_deployment":
                return Ns(spec=Ns(replicas=1), metadata=Ns(resource_version="1", annotations={}))
            return {}

        return call


def controller(
    api: Any,
    store: StateStore,
    cls: DeviceClass,
    discovered: Any = None,
    reports: Any = None,
    **options: Any,
) -> DiscoveryController:
    """A controller over stand-in reflectors, all listed (synced)."""
    return DiscoveryController(
        custom=api,
        apps=api,
        store=store,
        reports=reports or Ns(facts={}, synced=True),
        classes=Ns(facts={cls.name: cls}, synced=True),  # type: ignore[arg-type]
        discovered=discovered or Ns(facts={}, synced=True),
        **options,
    )


async def test_forgotten_devices_leave_nothing_behind_in_the_term() -> None:
    """Rotating addresses: one Device per address, placed, stowed, then forgotten. The
    controller's per-term memory follows the live Devices (it kept every uid)."""
    fn = FunctionTemplate("reader", "patients", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(
        name="hr", uid="c", filter=Filter(), forget_after=60.0, away_after=5.0, functions=(fn,)
    )
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), Api()
    discovered = Ns(facts={}, synced=True)
    ctl = controller(api, store, cls, discovered)

    def world(devices: dict[str, DeviceFacts], at: float) -> None:
        store.snapshot = Snapshot(
            nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
        )
        ctl.clock = lambda: at

    t = T
    for i in range(20):
        name = f"hr-{i:012x}"
        discovered.facts = {name: Discovered(name, f"uid-{i}", f"{i:012X}", "hr", "approved", t)}
        world({name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, t, True)})}, t)
        await ctl.step(T)
        assert ctl.placed == {f"uid-{i}"}  # its functions placed
        t += 10
        world({name: DeviceFacts(name, None, {})}, t)
        await ctl.step(T)
        assert ctl.stowed == {f"uid-{i}"}  # away: parked
        t += 60
        world({name: DeviceFacts(name, None, {})}, t)
        await ctl.step(T)  # forgotten: its Device deleted
        discovered.facts = {}
        t += 1
        world({}, t)
        await ctl.step(T)
    assert api.calls.count("delete_cluster_custom_object") == 20
    assert (ctl.placed, ctl.stowed, ctl.last_heard) == (set(), set(), {})


async def test_a_candidate_of_a_live_gateway_with_a_clock_behind_is_discovered() -> None:
    """The candidate's lastSeen is the gateway's clock; while the gateway's Lease is
    renewed (alive_at, our clock) a listed candidate counts as heard now."""
    from extender.state.reports import Candidate, ReportFacts

    cls = DeviceClass(name="hr", uid="c", filter=Filter())
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    behind = T - 120  # heard just now, stamped two minutes early by the gateway's clock
    candidate = Candidate("gw-a", "C4:00:00:00:00:01", "hr", -55, behind)
    reports = Ns(facts={"gw-a": ReportFacts("gw-a", {}, (candidate,))}, synced=True)

    async def creates(alive: dict[str, float] | None) -> int:
        store, api = StateStore(), Api()
        store.snapshot = Snapshot(nodes={"gw-a": gw}, nodes_synced=True, devices_synced=True)
        ctl = controller(api, store, cls, reports=reports, alive=alive, clock=lambda: T)
        await ctl.step(T)
        return api.calls.count("create_cluster_custom_object")

    assert await creates({"gw-a": T - 3}) == 1  # its Lease renewed 3 s ago
    assert await creates(None) == 0  # by the gateway's clock alone: 120 s old
    assert await creates({"gw-a": T - 600}) == 0  # a gateway silent for 10 minutes


class FailingApi(Api):
    """Every write fails (an apiserver refusing them, say a webhook down)."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise ConnectionError(name)

        return call


async def test_a_failure_no_longer_retried_is_forgotten() -> None:
    """Rotating addresses whose writes fail: the one-log-line-per-error memory keeps only
    what a pass still retries (it kept every Device's failed write for the process's life)."""
    fn = FunctionTemplate("reader", "patients", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(name="hr", uid="c", filter=Filter(), functions=(fn,))
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), FailingApi()
    discovered = Ns(facts={}, synced=True)
    ctl = controller(api, store, cls, discovered, clock=lambda: T)
    for i in range(5):
        name = f"hr-{i:012x}"
        discovered.facts = {name: Discovered(name, f"uid-{i}", f"{i:012X}", "hr", "approved", T)}
        devices = {name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, T, True)})}
        store.snapshot = Snapshot(
            nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
        )
        await ctl.step(T)
        assert ctl.failing  # its writes failed, each logged once
    discovered.facts = {}
    store.snapshot = Snapshot(nodes={"gw-a": gw}, nodes_synced=True, devices_synced=True)
    await ctl.step(T)
    await ctl.step(T)
    assert ctl.failing == {}  # nothing left to retry: nothing kept


async def test_devices_created_but_not_yet_watched_count_toward_the_cap() -> None:
    """Watch lag: the Devices a pass created are not in the next pass's list. They count
    toward the class's cap all the same (each lagging pass added up to 5 past it)."""
    from extender.state.reports import Candidate, ReportFacts

    cls = DeviceClass(name="hr", uid="c", filter=Filter(), max_devices=6)
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), Api()
    store.snapshot = Snapshot(nodes={"gw-a": gw}, nodes_synced=True, devices_synced=True)
    heard = tuple(Candidate("gw-a", f"C0:FF:EE:00:00:{i:02X}", "hr", -60 - i, T) for i in range(12))
    reports = Ns(facts={"gw-a": ReportFacts("gw-a", {}, heard)}, synced=True)
    ctl = controller(api, store, cls, reports=reports, clock=lambda: T)  # the watch lags
    for _ in range(4):
        await ctl.step(T)
    assert api.calls.count("create_cluster_custom_object") == 6  # the cap, not 5 + 5 + ...


@pytest.mark.parametrize(
    ("saved", "restored"),
    [("3", 3), ("0", 1), ("²", 1), ("1" * 5000, 1), ("99999", 10_000), ("-2", 1), ("", 1)],
)
def test_an_unpark_restores_a_sane_replica_count_whatever_the_annotation(
    saved: str, restored: int
) -> None:
    assert saved_replicas(saved) == restored


class NoNamespaceApi(Api):
    """The function's namespace does not exist yet: a Deployment create answers 404."""

    def __init__(self) -> None:
        super().__init__()
        self.namespace_exists = False

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            from kubernetes.aio.client.exceptions import ApiException

            self.calls.append(name)
            if not self.namespace_exists and name.endswith("namespaced_deployment"):
                raise ApiException(status=404, reason="Not Found")
            return {}

        return call


async def test_a_function_whose_namespace_is_missing_is_created_once_it_exists() -> None:
    """A create's 404 is the namespace missing, not the Deployment already there: the
    Device counted as placed and its function was never made in that term."""
    fn = FunctionTemplate("reader", "later", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(name="hr", uid="c", filter=Filter(), functions=(fn,))
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), NoNamespaceApi()
    name = "hr-c0ffee000001"
    discovered = Ns(facts={name: Discovered(name, "u", "C0FFEE000001", "hr", "approved", T)})
    discovered.synced = True
    devices = {name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, T, True)})}
    store.snapshot = Snapshot(
        nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
    )
    now = [T]
    ctl = controller(api, store, cls, discovered, clock=lambda: now[0])
    await ctl.step(T)
    assert ctl.placed == set()  # not done: retried
    assert "create Deployment later/reader-hr-c0ffee000001" in ctl.failing
    api.namespace_exists = True
    api.calls.clear()
    now[0] += 1.0  # its first backoff
    await ctl.step(T)
    assert api.calls == ["create_namespaced_deployment"]
    assert ctl.placed == {"u"}


async def test_a_device_denied_after_approval_loses_its_functions_once() -> None:
    """`cloud4iot devices deny` on an approved Device: the planner skipped every Device
    not approved, so its function kept running with the device denied."""
    fn = FunctionTemplate("reader", "patients", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(name="hr", uid="c", filter=Filter(), functions=(fn,))
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), Api()
    name = "hr-c0ffee000002"
    device = Discovered(name, "u", "C0FFEE000002", "hr", "approved", T)
    discovered = Ns(facts={name: device}, synced=True)
    devices = {name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, T, True)})}
    store.snapshot = Snapshot(
        nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
    )
    ctl = controller(api, store, cls, discovered, clock=lambda: T)
    await ctl.step(T)
    assert api.calls == ["create_namespaced_deployment"]
    discovered.facts = {name: replace(device, approval="denied")}
    api.calls.clear()
    for _ in range(3):
        await ctl.step(T)
    assert api.calls == ["delete_namespaced_deployment"]  # once, still heard
    # approved again: made again
    discovered.facts = {name: device}
    api.calls.clear()
    await ctl.step(T)
    assert api.calls == ["create_namespaced_deployment"]
    # a pending Device never had functions: nothing to delete
    discovered.facts = {name: replace(device, approval="pending")}
    api.calls.clear()
    await ctl.step(T)
    assert api.calls == []


def two_classes_one_address(
    address: str, discovered: Any = None
) -> tuple[Any, DiscoveryController]:
    """Two labelled gateways report one advert, each for another class: gw-a (-50 dBm)
    meets class aa's arrival RSSI (-60), gw-b (-70) only class bb's (-80)."""
    from extender.state.reports import Candidate, ReportFacts

    strict = DeviceClass(name="aa", uid="a", filter=Filter(), arrival_rssi=-60)
    loose = DeviceClass(name="bb", uid="b", filter=Filter(), arrival_rssi=-80)
    labels = {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"}
    nodes = {n: NodeFacts(n, "gateway", "arm64", labels) for n in ("gw-a", "gw-b")}
    reports = Ns(
        facts={
            "gw-a": ReportFacts("gw-a", {}, (Candidate("gw-a", address, "aa", -50, T),)),
            "gw-b": ReportFacts("gw-b", {}, (Candidate("gw-b", address, "bb", -70, T),)),
        },
        synced=True,
    )
    store, api = StateStore(), Api()
    store.snapshot = Snapshot(nodes=nodes, nodes_synced=True, devices_synced=True)
    ctl = controller(api, store, strict, discovered, reports=reports, clock=lambda: T)
    ctl.classes.facts["bb"] = loose
    return api, ctl


async def test_an_address_two_classes_match_is_one_device_while_the_watch_lags() -> None:
    """Two gateways match one advert to two classes (each class's arrival RSSI met by
    one of them). A pass makes the first class's Device; the next, before the watch
    shows it, made the other class's too: two Devices, two sets of functions, for one
    device."""
    api, ctl = two_classes_one_address("C0:FF:EE:00:00:07")
    for _ in range(3):  # the watch lags: no pass sees the Device made
        await ctl.step(T)
    assert api.calls.count("create_cluster_custom_object") == 1
    assert list(ctl.unseen) == ["aa-c0ffee000007"]  # the strongest gateway's class


async def test_an_address_stays_taken_until_both_watches_show_its_device() -> None:
    """The discovery watch shows the new Device before the state watch does (two
    reflectors, each at its own pace): until the state's Devices carry its address, the
    address must stay taken, or the other class's Device is made in that gap."""
    address = "C0:FF:EE:00:00:08"
    discovered = Ns(facts={}, synced=True)
    api, ctl = two_classes_one_address(address, discovered)
    await ctl.step(T)
    (name,) = ctl.unseen
    # our watch shows it; the state's Devices (where addresses are read) do not yet
    discovered.facts[name] = Discovered(
        name, "uid-aa", address.replace(":", ""), "aa", "approved", T
    )
    for _ in range(3):
        await ctl.step(T + 1)
    assert api.calls.count("create_cluster_custom_object") == 1
    assert name in ctl.unseen


async def test_a_write_that_keeps_failing_is_retried_less_and_less_often() -> None:
    """A template every create of which is refused (an admission policy, a 422): each
    pass resent it, one write a second per Device and function for as long as the class
    stood. Now 1 s doubling to 60 s, per write; still logged once."""
    fn = FunctionTemplate("reader", "kube-system", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(name="hr", uid="c", filter=Filter(), functions=(fn,))
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    store, api = StateStore(), FailingApi()
    name = "hr-c0ffee000003"
    device = Discovered(name, "u", "C0FFEE000003", "hr", "approved", T)
    devices = {name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, T, True)})}
    store.snapshot = Snapshot(
        nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
    )
    now = [T]
    ctl = controller(api, store, cls, Ns(facts={name: device}, synced=True), clock=lambda: now[0])
    for second in range(600):  # ten minutes of passes, the device heard all along
        now[0] = T + second
        sighting = Sighting("gw-a", -60.0, now[0], True)
        store.snapshot = replace(
            store.snapshot, devices={name: DeviceFacts(name, None, {"gw-a": sighting})}
        )
        await ctl.step(T)
    # sent at 0, 1, 3, 7, 15, 31, 63, then every 60 s: 15, not 600
    assert api.calls.count("create_namespaced_deployment") == 15
    assert ctl.writes == 15  # what the bench counts: writes sent, not the ones held back
    assert ctl.failing == {
        "create Deployment kube-system/reader-hr-c0ffee000003": "ConnectionError"
    }
    assert ctl.placed == set()


async def test_an_apiserver_that_never_answers_holds_a_pass_for_seconds_not_minutes() -> None:
    """A connection the apiserver accepts and never answers (a restart mid-request, a
    black-holed route): each discovery write waited the client's default 5 minutes,
    and with it every other Device's pass."""
    from kubernetes.aio.client import ApiClient, AppsV1Api, Configuration, CustomObjectsApi

    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pod = {"containers": [{"name": "reader", "image": "reader:1"}]}
    fn = FunctionTemplate("reader", "patients", {"replicas": 1, "template": {"spec": pod}})
    cls = DeviceClass(name="hr", uid="c", filter=Filter(), functions=(fn,))
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    name = "hr-c0ffee000004"
    device = Discovered(name, "u", "C0FFEE000004", "hr", "approved", T)
    devices = {name: DeviceFacts(name, None, {"gw-a": Sighting("gw-a", -60.0, T, True)})}
    store = StateStore()
    store.snapshot = Snapshot(
        nodes={"gw-a": gw}, nodes_synced=True, devices=devices, devices_synced=True
    )
    config = Configuration(host=f"http://127.0.0.1:{port}")
    try:
        async with ApiClient(config) as client:
            ctl = DiscoveryController(
                custom=CustomObjectsApi(client),
                apps=AppsV1Api(client),
                store=store,
                reports=Ns(facts={}, synced=True),  # type: ignore[arg-type]
                classes=Ns(facts={"hr": cls}, synced=True),  # type: ignore[arg-type]
                discovered=Ns(facts={name: device}, synced=True),  # type: ignore[arg-type]
                clock=lambda: T,
                request_timeout=0.5,
            )
            async with asyncio.timeout(10):
                await ctl.step(T)
            assert ctl.failing == {f"create Deployment patients/reader-{name}": "TimeoutError"}
    finally:
        for w in held:
            w.close()
        server.close()


@pytest.mark.parametrize(("period", "cycles"), [(2, 0), (4, 0), (12, 5)])
async def test_a_flapping_device_costs_at_most_one_delete_and_create_per_away_after(
    period: int, cycles: int
) -> None:
    """Heard for `period` seconds, unheard for as long, for two minutes (whenAway
    delete, awayAfter 5 s): gaps shorter than awayAfter cost nothing; longer ones one
    delete and one create each, never more."""
    fn = FunctionTemplate("reader", "patients", {"replicas": 1, "template": {"spec": {}}})
    cls = DeviceClass(
        name="hr", uid="c", filter=Filter(), when_away="delete", away_after=5.0, functions=(fn,)
    )
    gw = NodeFacts("gw-a", "gateway", "arm64", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"})
    name = "hr-c0ffee000005"
    device = Discovered(name, "u", "C0FFEE000005", "hr", "approved", T)
    store, api, now = StateStore(), Api(), [T]
    ctl = controller(api, store, cls, Ns(facts={name: device}, synced=True), clock=lambda: now[0])
    last = T
    for second in range(120):
        now[0] = T + second
        if (second // period) % 2 == 0:
            last = now[0]  # heard this second
        sighting = {"gw-a": Sighting("gw-a", -60.0, last, True)} if now[0] - last < 30 else {}
        store.snapshot = Snapshot(
            nodes={"gw-a": gw},
            nodes_synced=True,
            devices={name: DeviceFacts(name, None, sighting)},
            devices_synced=True,
        )
        await ctl.step(T)
    assert api.calls.count("delete_namespaced_deployment") == cycles
    # the first create, then one per return (the last gap ends the two minutes)
    assert api.calls.count("create_namespaced_deployment") == max(cycles, 1)
