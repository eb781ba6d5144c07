"""Load simulator: node_exporter-shaped metrics for the devcluster's fake nodes.

Exports, for every node of the topology, with a `node="<node name>"` label:

- `node_cpu_seconds_total{node, cpu="0".., mode="idle|user|system"}`: counters
  that grow as if each CPU were busy for the node's current CPU load fraction;
- `node_memory_MemTotal_bytes{node}` and `node_memory_MemAvailable_bytes{node}`.

So `1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[5s]))` in
Prometheus gives back the CPU load set here (once the window is filled).
Unlike node_exporter, every sample carries the timestamp at which its value was
computed: a scrape answered late (a busy CI machine) then does not skew rates.

The load of a node comes from, in order of precedence:
1. a manual value, `PUT /load/<node>` with `{"cpu": 0.9, "memory": 0.5}`
   (either key; fractions 0..1), removed again with `DELETE /load/<node>`,
   or all at once with `DELETE /load`;
2. with `--follow-pods`: the CPU and memory requests of the pods bound to the
   node (read from the apiserver every second) over the node's capacity, on top
   of the idle load;
3. the idle load (`--idle-load`, default 0.05).

`GET /load` shows every node's current load and where it comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from devcluster.topology import DEFAULT_TOPOLOGY, NodeSpec, load_topology, parse_quantity

log = logging.getLogger("cloud4iot.loadsim")

# Busy CPU time is split between user and system like a typical workload.
USER_SHARE = 0.85
# Memory a node uses with no pods (OS, kubelet, runtime).
IDLE_MEMORY = 0.10
POLL_INTERVAL_S = 1.0


@dataclass
class NodeLoad:
    """One node's load and the CPU-time counters it has accumulated so far."""

    spec: NodeSpec
    cpu: float
    memory: float
    source: str = "idle"
    manual_cpu: float | None = None
    manual_memory: float | None = None
    idle_seconds: float = 0.0
    busy_seconds: float = 0.0
    updated_at: float = field(default_factory=time.time)

    @property
    def cpus(self) -> int:
        # node_exporter has one series per logical CPU; fractional capacity
        # ("500m") still shows up as one CPU.
        return max(1, math.ceil(self.spec.cpu_cores))

    def advance(self, now: float) -> None:
        """Accumulate per-CPU time up to `now` at the load in force until now."""
        elapsed = max(0.0, now - self.updated_at)
        self.idle_seconds += elapsed * (1.0 - self.cpu)
        self.busy_seconds += elapsed * self.cpu
        self.updated_at = now


class LoadModel:
    """All nodes' loads; every change first closes the counters at the old load."""

    def __init__(
        self,
        nodes: Iterable[NodeSpec],
        idle_load: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.idle_load = idle_load
        now = clock()
        self.nodes = {
            n.name: NodeLoad(n, cpu=idle_load, memory=IDLE_MEMORY, updated_at=now) for n in nodes
        }
        self._pod_load: dict[str, tuple[float, float]] = {}

    def set_manual(self, node: str, cpu: float | None, memory: float | None) -> None:
        load = self.nodes[node]
        if cpu is not None:
            load.manual_cpu = cpu
        if memory is not None:
            load.manual_memory = memory
        self._refresh(load)

    def clear_manual(self, node: str | None = None) -> None:
        for load in self.nodes.values() if node is None else [self.nodes[node]]:
            load.manual_cpu = load.manual_memory = None
            self._refresh(load)

    def set_pod_requests(self, requests: dict[str, tuple[float, int]]) -> None:
        """Loads from the pods' requests per node: (CPU cores, memory bytes)."""
        self._pod_load = {}
        for name, load in self.nodes.items():
            cores, mem = requests.get(name, (0.0, 0))
            self._pod_load[name] = (
                min(1.0, self.idle_load + cores / load.spec.cpu_cores),
                min(1.0, IDLE_MEMORY + mem / load.spec.memory_bytes),
            )
            self._refresh(load)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"cpu": load.cpu, "memory": load.memory, "source": load.source}
            for name, load in self.nodes.items()
        }

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        cpu = CounterMetricFamily(
            "node_cpu_seconds",
            "Seconds the CPUs spent in each mode (simulated).",
            labels=["node", "cpu", "mode"],
        )
        total = GaugeMetricFamily(
            "node_memory_MemTotal_bytes",
            "Memory information field MemTotal_bytes.",
            labels=["node"],
        )
        available = GaugeMetricFamily(
            "node_memory_MemAvailable_bytes",
            "Memory information field MemAvailable_bytes.",
            labels=["node"],
        )
        for name, load in self.nodes.items():
            load.advance(now)
            busy = load.busy_seconds
            for i in range(load.cpus):
                cpu.add_metric([name, str(i), "idle"], load.idle_seconds, timestamp=now)
                cpu.add_metric([name, str(i), "user"], busy * USER_SHARE, timestamp=now)
                cpu.add_metric([name, str(i), "system"], busy * (1.0 - USER_SHARE), timestamp=now)
            mem_total = load.spec.memory_bytes
            total.add_metric([name], mem_total, timestamp=now)
            available.add_metric([name], round(mem_total * (1.0 - load.memory)), timestamp=now)
        return [cpu, total, available]

    def _refresh(self, load: NodeLoad) -> None:
        load.advance(self._clock())
        pods = self._pod_load.get(load.spec.name)
        base_cpu, base_mem = pods if pods is not None else (self.idle_load, IDLE_MEMORY)
        load.cpu = load.manual_cpu if load.manual_cpu is not None else base_cpu
        load.memory = load.manual_memory if load.manual_memory is not None else base_mem
        if load.manual_cpu is not None or load.manual_memory is not None:
            load.source = "manual"
        else:
            load.source = "pods" if pods is not None else "idle"


class _ModelCollector(Collector):
    def __init__(self, model: LoadModel) -> None:
        self._model = model

    def collect(self) -> Iterable[Metric]:
        return self._model.collect()


def _fraction(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise web.HTTPBadRequest(text=f"{key} must be a number between 0 and 1, got {value!r}")
    return float(value)


MODEL_KEY = web.AppKey("model", LoadModel)


def create_app(model: LoadModel) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ModelCollector(model))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def get_load(_: web.Request) -> web.Response:
        return web.json_response(model.snapshot())

    def node_of(request: web.Request) -> str:
        node = request.match_info["node"]
        if node not in model.nodes:
            raise web.HTTPNotFound(text=f"unknown node {node!r}")
        return node

    async def put_load(request: web.Request) -> web.Response:
        node = node_of(request)
        try:
            body = await request.json()
        except ValueError as err:
            raise web.HTTPBadRequest(text=f"body must be JSON: {err}") from err
        if not isinstance(body, dict) or not {"cpu", "memory"} & body.keys():
            raise web.HTTPBadRequest(text='expected {"cpu": 0..1, "memory": 0..1}')
        model.set_manual(node, _fraction(body, "cpu"), _fraction(body, "memory"))
        return web.json_response(model.snapshot()[node])

    async def delete_load(request: web.Request) -> web.Response:
        node = node_of(request)
        model.clear_manual(node)
        return web.json_response(model.snapshot()[node])

    async def delete_all(_: web.Request) -> web.Response:
        model.clear_manual()
        return web.json_response(model.snapshot())

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app[MODEL_KEY] = model
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/load", get_load)
    app.router.add_delete("/load", delete_all)
    app.router.add_put("/load/{node}", put_load)
    app.router.add_delete("/load/{node}", delete_load)
    app.router.add_get("/healthz", healthz)
    return app


def pod_requests_by_node(pods: Iterable[Any]) -> dict[str, tuple[float, int]]:
    """Sum the CPU cores and memory bytes requested by running pods per node."""
    totals: dict[str, tuple[float, int]] = {}
    for pod in pods:
        node = pod.spec.node_name if pod.spec else None
        if not node or pod.metadata.deletion_timestamp is not None:
            continue
        cores, mem = totals.get(node, (0.0, 0))
        for container in pod.spec.containers or []:
            requests = (container.resources.requests if container.resources else None) or {}
            cores += float(parse_quantity(requests.get("cpu", "0")))
            mem += int(parse_quantity(requests.get("memory", "0")))
        totals[node] = (cores, mem)
    return totals


async def follow_pods(model: LoadModel, kubeconfig: Path) -> None:
    """Keep the model's pod-derived loads in step with the apiserver."""
    from kubernetes.aio import client, config

    api_client = await config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), persist_config=False
    )
    async with api_client:
        core = client.CoreV1Api(api_client)
        while True:
            try:
                pods = await core.list_pod_for_all_namespaces(
                    field_selector="status.phase!=Succeeded,status.phase!=Failed"
                )
                model.set_pod_requests(pod_requests_by_node(pods.items))
            except Exception as err:  # keep serving the last loads; the apiserver may restart
                log.warning("listing pods failed: %s", err)
            await asyncio.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster.loadsim", description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9105)
    parser.add_argument("--idle-load", type=float, default=0.05)
    parser.add_argument("--kubeconfig", type=Path, help="needed by --follow-pods")
    parser.add_argument("--follow-pods", action="store_true")
    args = parser.parse_args(argv)
    if args.follow_pods and args.kubeconfig is None:
        parser.error("--follow-pods needs --kubeconfig")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    model = LoadModel(load_topology(args.topology), idle_load=args.idle_load)
    app = create_app(model)

    if args.follow_pods:

        async def run_follower(_: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(follow_pods(model, args.kubeconfig))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(run_follower)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
