"""The report keeper's plan: exactly the nodes labelled gateways have a GatewayReport."""

from __future__ import annotations

from typing import Any

from cloud4iot.vocabulary import GATEWAY_LABEL, TIER_LABEL
from extender.controllers.reports import ReportKeeper, plan_reports
from extender.state.kube import Reflector
from extender.state.snapshot import NodeFacts, Snapshot
from extender.state.store import StateStore


def node(name: str, labels: dict[str, str]) -> NodeFacts:
    return NodeFacts(name=name, tier=labels.get(TIER_LABEL), arch=None, labels=labels)


NODES = {
    "gw-a": node("gw-a", {TIER_LABEL: "gateway", GATEWAY_LABEL: "true"}),
    # the tier label alone (a kubelet may set it on itself) does not make a gateway
    "gw-self-made": node("gw-self-made", {TIER_LABEL: "gateway"}),
    "cloud-1": node("cloud-1", {TIER_LABEL: "cloud"}),
}


def test_labelled_gateways_get_a_report_and_every_other_report_goes() -> None:
    assert plan_reports(NODES, []) == (["gw-a"], [])
    assert plan_reports(NODES, ["gw-a"]) == ([], [])
    assert plan_reports(NODES, ["gw-a", "cloud-1", "gw-self-made", "gone"]) == (
        [],
        ["cloud-1", "gone", "gw-self-made"],
    )


class Custom:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def create_cluster_custom_object(self, *args: Any) -> None:
        self.calls.append(("create", args[3]["metadata"]["name"]))

    async def delete_cluster_custom_object(self, *args: Any) -> None:
        self.calls.append(("delete", args[3]))


async def test_nothing_is_done_before_both_lists_are_in() -> None:
    custom, store = Custom(), StateStore()
    reports: Reflector[Any] = Reflector("gatewayreports", None, None, None)  # type: ignore[arg-type]
    keeper = ReportKeeper(custom=custom, store=store, reports=reports)
    store.snapshot = Snapshot().with_nodes(NODES, synced=False)
    reports.facts = {"cloud-1": None}
    await keeper.step()
    assert custom.calls == []  # nodes not listed yet: cloud-1 might be a gateway
    store.snapshot = store.snapshot.with_nodes(NODES, synced=True)
    await keeper.step()
    assert custom.calls == []  # reports not listed yet
    reports.synced = True
    await keeper.step()
    assert custom.calls == [("create", "gw-a"), ("delete", "cloud-1")]


class RefusingCustom(Custom):
    async def create_cluster_custom_object(self, *args: Any) -> None:
        raise ConnectionError("refused")


async def test_a_failure_no_longer_planned_is_forgotten() -> None:
    custom, store = RefusingCustom(), StateStore()
    reports: Reflector[Any] = Reflector("gatewayreports", None, None, None)  # type: ignore[arg-type]
    reports.synced = True
    keeper = ReportKeeper(custom=custom, store=store, reports=reports)
    store.snapshot = Snapshot().with_nodes(NODES, synced=True)
    await keeper.step()
    assert keeper.failing == {("create", "gw-a"): "ConnectionError"}
    store.snapshot = Snapshot().with_nodes({"cloud-1": NODES["cloud-1"]}, synced=True)
    await keeper.step()  # gw-a deleted before its report could be made
    assert keeper.failing == {}
