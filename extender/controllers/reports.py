"""The elected keeper of GatewayReports: one per node labelled a gateway, and no other.

Gateway monitors may not create or delete reports (RBAC), only write the status of
the one named as their node (admission policy), so which nodes have a report, and so
which nodes may vote at all, is decided here from the admin's node label
(GATEWAY_LABEL, which kubelets cannot set on themselves): a labelled node gets its
report, a node that loses the label, or is deleted, loses it.

Runs in the extender's leadership term beside the nearest writer. Reads the nodes from
the Snapshot and the reports from their reflector; one create or delete per change,
retried on the next pass (every second) when it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.devices import API_VERSION, GROUP, REPORT_KIND, REPORT_PLURAL, VERSION
from extender.state.kube import Reflector
from extender.state.reports import ReportFacts, gateway_nodes
from extender.state.snapshot import NodeFacts
from extender.state.store import StateStore

log = logging.getLogger(__name__)

PASS = 1.0  # seconds between passes
MANAGED_BY = {"app.kubernetes.io/managed-by": "cloud4iot-extender"}


def plan_reports(
    nodes: Mapping[str, NodeFacts], reports: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(reports to create, reports to delete): exactly the labelled gateways have one."""
    gateways, have = gateway_nodes(nodes), set(reports)
    return sorted(gateways - have), sorted(have - gateways)


def new_report(node: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": REPORT_KIND,
        "metadata": {"name": node, "labels": dict(MANAGED_BY)},
    }


@dataclass(slots=True, eq=False)
class ReportKeeper:
    custom: Any  # kubernetes.aio CustomObjectsApi
    store: StateStore
    reports: Reflector[ReportFacts]
    interval: float = PASS
    failing: dict[tuple[str, str], str] = field(default_factory=dict)  # (verb, node) -> error

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.interval)

    async def step(self) -> None:
        """One pass: create and delete what the plan says (nothing until both lists are in)."""
        snapshot = self.store.snapshot
        if not (snapshot.nodes_synced and self.reports.synced):
            return
        create, delete = plan_reports(snapshot.nodes, self.reports.facts)
        # A failure of a write no longer planned (its node relabelled or deleted) is
        # forgotten: the map holds only what this pass will retry.
        planned = {("create", n) for n in create} | {("delete", n) for n in delete}
        for key in self.failing.keys() - planned:
            del self.failing[key]
        for node in create:
            await self._act("create", node)
        for node in delete:
            await self._act("delete", node)

    async def _act(self, verb: str, node: str) -> None:
        from kubernetes.aio.client.exceptions import ApiException

        try:
            if verb == "create":
                await self.custom.create_cluster_custom_object(
                    GROUP, VERSION, REPORT_PLURAL, new_report(node)
                )
            else:
                await self.custom.delete_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, node)
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status in (404, 409):  # already done (our watch will tell)
                self.failing.pop((verb, node), None)
                return
            self._failed(verb, node, f"HTTP {exc.status} {exc.reason}")
            return
        except Exception as exc:
            self._failed(verb, node, type(exc).__name__)
            return
        self.failing.pop((verb, node), None)
        log.info("%s GatewayReport %s", "created" if verb == "create" else "deleted", node)

    def _failed(self, verb: str, node: str, error: str) -> None:
        if self.failing.get((verb, node)) != error:  # one line per node and kind of error
            log.warning("could not %s GatewayReport %s: %s (retrying)", verb, node, error)
        self.failing[(verb, node)] = error
