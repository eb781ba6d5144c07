"""The live loops and `cloud4iot replay` make the same nearest decisions on one recording.

Live: per gateway the monitor as its app wires it (that gateway's adverts fed by the
product's ``ReplaySource`` at speed 1, the product's
Settings defaults for the tracker, the publish plan and the tick), ``Publisher.run``,
and the elected writer's ``NearestWriter.run`` woken by Device changes as the
extender's reflector wakes it; an in-memory apiserver applies each gateway's sighting
entry and the writer's status.nearest. All of it runs on an event loop whose clock is
virtual (tests/replay/virtual_loop.py), so the live loops keep their own timing
(0.25 s ticks, the publisher's wake-ups, the writer's 1 s tick) without waiting.
Replay: ``replay.chain.run_chain`` on the same recording (its own stepping).

The recording is the first 4 minutes of the flat's calib1 walk (tests/data/ble-flat,
CC BY 4.0, see the README there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloud4iot.policy.loader import LoadedPolicy, load_policy
from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import GATEWAY_LABEL
from extender.controllers.nearest_writer import NearestWriter
from extender.state import kube
from extender.state.devices import device_facts
from extender.state.kube import ClusterReflectors, cluster_reflectors
from extender.state.snapshot import NodeFacts
from extender.state.store import StateStore
from gateway_monitor.backoff import backoff_delays
from gateway_monitor.cli import build_parser, settings_from_args
from gateway_monitor.lease import LeaseRenewer
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Publisher, PublishPlan
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.scanner import ReplaySource
from gateway_monitor.traces import TraceRecord
from gateway_monitor.tracker import Tracker
from replay.chain import EPOCH, Timeline, run_chain
from replay.inputs import Advert, Recording, read_csv_adverts
from tests.replay.helpers import DATA
from tests.replay.virtual_loop import run_virtual

POLICY = load_policy("policies/default.yaml")
MINUTES = 10.0
NAMESPACE = "cloud4iot-gateway"  # the monitors' (and their Leases') namespace
TAIL = 5.0  # seconds run after the last advert, as replay's ChainConfig.tail
SLACK = 0.01  # seconds: the same instants, but for float rounding on two clocks


def clip(rec: Recording, seconds: float) -> Recording:
    """The first ``seconds``, each advert moved by a distinct few microseconds.

    The flat's times are rounded to the millisecond, so an advert often falls on the
    same instant as a timer (a publisher's wake-up 2.000 s after an advert, a monitor
    tick on the 0.25 s grid); which runs first is then the event loop's heap order,
    an accident no radio reproduces. Distinct instants make the order defined."""
    kept = [a for a in rec.adverts if a.t < seconds]
    moved = [Advert(a.t + (k % 9973) * 1e-6, a.gateway, a.device, a.rssi)
             for k, a in enumerate(kept)]  # fmt: skip
    moved.sort(key=lambda a: a.t)
    return Recording(adverts=moved, addresses=dict(rec.addresses))


class _Apiserver:
    """What the extender would see: each gateway's GatewayReport (its whole list per
    apply) and Lease renewals, and status.nearest by the writer. Each write reaches the
    extender's own reflector of that resource as a watch event (GatewayReports, the
    gateways' Leases, Devices; each coalesces its snapshot publishes to one per 0.1 s,
    each publish wakes the writer), as on a cluster."""

    def __init__(self, cluster: ClusterReflectors, wall: Callable[[], float]) -> None:
        self.cluster, self.wall = cluster, wall
        self.nearest: dict[str, dict[str, Any]] = {}
        self.decisions: dict[str, Timeline] = {}

    async def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Any, **kw: Any
    ) -> None:
        await asyncio.sleep(0)  # a round trip yields to the loop
        status = body.get("status") or {}
        if plural == "gatewayreports":  # a gateway's whole report
            obj = {"metadata": {"name": name, "resourceVersion": "1"}, "status": status}
            self.cluster.reports._apply({"type": "MODIFIED", "object": obj}, "1")
            return
        if status.get("nearest") is None:
            self.nearest.pop(name, None)
        else:
            self.nearest[name] = dict(status["nearest"])
        node_now = self.nearest.get(name, {}).get("node")
        line = self.decisions.setdefault(name, [])
        if (line[-1][1] if line else None) != node_now:
            line.append((self.wall() - EPOCH, node_now))
        # The watch event the extender's Device reflector receives for this write.
        self.cluster.devices._apply({"type": "MODIFIED", "object": device_object(
            name, self.nearest.get(name))}, "1")  # fmt: skip

    # The Lease calls of the monitor's LeaseRenewer (CoordinationV1Api).
    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        from kubernetes.aio.client.exceptions import ApiException

        await asyncio.sleep(0)
        raise ApiException(status=404, reason="Not Found")

    async def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        await asyncio.sleep(0)
        assert self.cluster.leases is not None
        self.cluster.leases._apply({"type": "MODIFIED", "object": body}, "1")
        return SimpleNamespace(metadata=SimpleNamespace(resource_version="1"))

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return await self.create_namespaced_lease(namespace, body)


def device_object(name: str, nearest: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "resourceVersion": "1"}, "status": {}}
    if nearest is not None:
        obj["status"]["nearest"] = nearest
    return obj


class _Core:
    """The calls the writer's nudge and the reflectors' setup make (never listed here)."""

    async def patch_node(self, *_: Any, **__: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return None


async def _live(rec: Recording, policy: LoadedPolicy, trace: Path) -> dict[str, Timeline]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()  # the trace's second 0 (every source starts in this loop turn)
    assert t0 == 0.0, "the reflectors' time.time() (the live fixture) assumes it"

    def wall() -> float:
        return EPOCH + loop.time() - t0

    store, changed = StateStore(), asyncio.Event()
    cluster = cluster_reflectors(
        _Core(), _Core(), store, on_devices=changed.set, coordination=_Core(),
        gateway_namespace=NAMESPACE,
    )  # fmt: skip
    assert cluster.leases is not None
    # Never listed here: the writes below are their watch events, so count them synced.
    cluster.devices.synced = cluster.reports.synced = cluster.leases.synced = True
    # The Devices exist before the monitors start (as listed at the extender's start).
    for name in rec.addresses:
        facts = device_facts(device_object(name, None), wall())
        cluster.devices.facts[name] = facts
        cluster.sightings.observe_device(name, None, facts)
    # The recording's gateways are labelled gateways (only their sightings count).
    cluster.sightings.set_nodes(
        {
            gw: NodeFacts(name=gw, tier="gateway", arch=None, labels={GATEWAY_LABEL: "true"})
            for gw in rec.gateways
        }
    )
    api = _Apiserver(cluster, wall)
    tasks: list[asyncio.Task[None]] = []
    devices = [f"--device={d}={a}" for d, a in rec.addresses.items()]
    sources: list[ReplaySource] = []
    for gw in rec.gateways:
        settings = settings_from_args(
            build_parser().parse_args(["--node", gw, "--replay", str(trace), *devices])
        )
        # The product's replay source, fed in memory (a trace file rounds to the ms).
        source = ReplaySource(
            [TraceRecord(a.t, rec.addresses[a.device], a.rssi) for a in rec.adverts
             if a.gateway == gw],
            speed=1.0,
        )  # fmt: skip
        registry = Registry()
        lease = LeaseRenewer(api, gw, NAMESPACE, settings.lease, wall=wall)
        publisher = Publisher(
            api,
            gw,
            PublishPlan(settings.publish),
            backoff=backoff_delays(),
            clock=loop.time,
            liveness=partial(getattr, lease, "healthy"),  # as the monitor app wires it
        )
        monitor = Monitor(
            gw,
            Tracker(settings.effective_tracker()),
            registry,
            publisher,
            Metrics(),
            clock=source.clock,
            wall=wall,
        )
        registry.replace_all(DeviceSpec(n, a.upper()) for n, a in settings.static_devices.items())

        async def tick(m: Monitor = monitor, every: float = settings.tick_interval) -> None:
            while True:  # the app's _ticker
                await asyncio.sleep(every)
                m.tick()

        tasks += [
            asyncio.create_task(lease.run()),
            asyncio.create_task(source.run(monitor.on_advert)),
            asyncio.create_task(publisher.run()),
            asyncio.create_task(tick()),
        ]
        sources.append(source)
    writer = NearestWriter(
        custom=api,
        core=_Core(),
        policy=PolicyStore(path=Path(policy.source), current=policy),
        store=store,
        clock=wall,
    )
    tasks.append(asyncio.create_task(writer.run(changed)))
    for s in sources:
        await s.finished.wait()
    await asyncio.sleep(rec.span[1] + TAIL - (loop.time() - t0))
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return api.decisions


def _compare(live: Timeline, replayed: Timeline) -> None:
    assert [n for _, n in live] == [n for _, n in replayed]
    for (t_live, _), (t_replay, _) in zip(live, replayed, strict=True):
        assert abs(t_live - t_replay) <= SLACK, (t_live, t_replay)


@pytest.fixture(scope="module")
def recording() -> Recording:
    return clip(read_csv_adverts(DATA / "calib1.adverts.csv.gz"), MINUTES * 60)


@pytest.fixture(scope="module")
def live(recording: Recording, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Timeline]:
    trace = tmp_path_factory.mktemp("trace") / "empty.jsonl"  # for the monitor's flags
    trace.write_text("")
    # The reflectors time what they see (a report's cap, a Lease renewal) by time.time():
    # here, the virtual loop's wall (its second 0 is the trace's, see _live).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            kube, "time", SimpleNamespace(time=lambda: EPOCH + asyncio.get_running_loop().time())
        )
        decisions: dict[str, Timeline] = run_virtual(_live(recording, POLICY, trace))
        return decisions


def test_live_loops_and_replay_decide_the_same(
    recording: Recording, live: dict[str, Timeline]
) -> None:
    replayed = asyncio.run(run_chain(recording, POLICY)).decisions
    assert set(live) == set(replayed)
    for device, line in replayed.items():
        assert len(line) >= 5, "a walk past several anchors: decisions to compare"
        _compare(live[device], line)


def test_a_perturbed_recording_is_told_apart(
    recording: Recording, live: dict[str, Timeline]
) -> None:
    # One gateway reads 6 dB hotter on the replay side only: the comparison must see it.
    loud = recording.gateways[0]
    hot = Recording(
        adverts=[
            Advert(a.t, a.gateway, a.device, a.rssi + (6 if a.gateway == loud else 0))
            for a in recording.adverts
        ],
        addresses=dict(recording.addresses),
    )
    replayed = asyncio.run(run_chain(hot, POLICY)).decisions
    with pytest.raises(AssertionError):
        _compare(live["tag"], replayed["tag"])
