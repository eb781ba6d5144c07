"""DiscoveryController.step against stand-in APIs: what it keeps between passes."""

from __future__ import annotations

from types import SimpleNamespace as Ns
from typing import Any

from cloud4iot.deviceclass import DeviceClass, Filter, FunctionTemplate
from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from extender.controllers.discovery import DiscoveryController
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
    ctl = DiscoveryController(
        custom=api,
        apps=api,
        store=store,
        reports=Ns(facts={}, synced=True),  # type: ignore[arg-type]
        classes=Ns(facts={"hr": cls}, synced=True),  # type: ignore[arg-type]
        discovered=discovered,  # type: ignore[arg-type]
    )

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
