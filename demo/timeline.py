"""A timeline of the main demo: what each part saw, sampled while the demo runs.

`Recorder` samples the devcluster from a background thread (every `interval`
seconds, 0.5 by default) for as long as `recording()` is entered:

- per device: the RSSI each gateway reports (its GatewayReport) and the nearest
  decision (`status.nearest.node`);
- per node: the load as the extender sees it (the policy's Prometheus queries);
- per function: the nodes its Ready pods run on;
- the moves: the rebalancer's Events on the functions' Deployments (reason,
  time, from -> to, message).

`save` writes the `Timeline` as JSON, a PNG picture (stacked panels sharing the
time axis; `demo.timeline_plot`) and a self-contained HTML page next to it.
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL, VERSION, rfc3339
from devcluster import kube, prometheus
from devcluster.cluster import Devcluster
from devcluster.topology import load_topology

REBALANCER = "cloud4iot-rebalancer"
# "Roaming (rollout) health/omh-consolidator-42 pod p: gw-home -> gw-hospital; why; ..."
ROUTE = re.compile(r":\s+(\S+) -> (\S+)$")


@dataclass
class DeviceState:
    rssi: dict[str, int]  # gateway -> smoothed RSSI (dBm) it reports now
    nearest: str | None  # status.nearest.node


@dataclass
class Sample:
    t: float  # seconds since the recording started
    devices: dict[str, DeviceState] = field(default_factory=dict)
    load: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> cpu/memory 0..1
    functions: dict[str, list[str]] = field(default_factory=dict)  # function -> Ready pods' nodes


@dataclass
class Move:
    t: float  # the Event's time (second precision) since the recording started
    time: str  # the Event's lastTimestamp (RFC 3339)
    function: str
    workload: str  # namespace/deployment
    reason: str  # Roaming, Offloading, Onloading, DeviceAway, DeviceBack
    from_node: str | None
    to_node: str | None
    message: str


@dataclass
class Mark:
    t: float
    step: str  # the demo's step number
    label: str


@dataclass
class Timeline:
    started_at: float  # epoch seconds at t = 0
    interval: float
    devices: list[str]
    nodes: list[str]
    functions: list[str]
    # function class -> its load limits (fractions), from the policy
    limits: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["started"] = rfc3339(self.started_at)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Timeline:
        return cls(
            started_at=float(doc["started_at"]),
            interval=float(doc["interval"]),
            devices=list(doc["devices"]),
            nodes=list(doc["nodes"]),
            functions=list(doc["functions"]),
            limits={k: dict(v) for k, v in doc.get("limits", {}).items()},
            samples=[
                Sample(
                    t=float(s["t"]),
                    devices={d: DeviceState(**v) for d, v in s["devices"].items()},
                    load={n: dict(v) for n, v in s["load"].items()},
                    functions={f: list(v) for f, v in s["functions"].items()},
                )
                for s in doc["samples"]
            ],
            moves=[Move(**m) for m in doc["moves"]],
            marks=[Mark(**m) for m in doc["marks"]],
        )

    def placements(self, function: str) -> list[str]:
        """The nodes the function ran on, in order: each run of samples where exactly
        one Ready pod ran, consecutive repeats collapsed (a rollout's overlap, when
        the old and the new pod are both Ready, is left out)."""
        out: list[str] = []
        for sample in self.samples:
            nodes = sample.functions.get(function, [])
            if len(nodes) == 1 and (not out or out[-1] != nodes[0]):
                out.append(nodes[0])
        return out


def route(message: str) -> tuple[str | None, str | None]:
    """(from, to) of a rebalancer Event message; None for "-" or a message without one."""
    match = ROUTE.search(message.split("; ", 1)[0])
    if match is None:
        return None, None
    src, dst = match.groups()
    return (None if src == "-" else src), (None if dst == "-" else dst)


@dataclass(frozen=True)
class Function:
    namespace: str
    selector: str  # label selector of its pods
    workload: str | None = None  # its Deployment, when others share the namespace


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


class Recorder:
    """Samples a devcluster from a background thread while `recording()` is entered."""

    def __init__(
        self,
        cluster: Devcluster,
        devices: Sequence[str],
        functions: Mapping[str, Function],
        interval: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.devices = list(devices)
        self.functions = dict(functions)
        self.interval = interval
        self.errors = 0  # probes that failed (the sample then lacks that part)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timeline: Timeline | None = None
        self._queries: dict[str, str] = {}
        self._prometheus_url = ""
        self._events: dict[str, Move] = {}

    # --- the demo's side ----------------------------------------------------

    @contextmanager
    def recording(self, tail: float = 0.0) -> Iterator[Recorder]:
        """Sample while entered; after a normal exit, `tail` seconds more (the end state)."""
        self.start()
        try:
            yield self
            time.sleep(tail)
        finally:
            self.stop()

    def start(self) -> None:
        policy = yaml.safe_load(self.cluster.policy_file.read_text())["spec"]
        self._queries = dict(policy["prometheus"]["queries"])
        self._prometheus_url = self.cluster.prometheus_url
        limits = {
            name: {k: float(v) for k, v in (cls.get("loadLimits") or {}).items()}
            for name, cls in policy.get("classes", {}).items()
        }
        self._timeline = Timeline(
            started_at=time.time(),
            interval=self.interval,
            devices=self.devices,
            nodes=[n.name for n in load_topology(self.cluster.topology)],
            functions=list(self.functions),
            limits=limits,
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="demo-timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; one last sample is taken, so the end state is in. Once: a
        second call (the `recording()` exit after the demo stopped it) does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with kube.api_client(self.cluster.kubeconfig) as api:
            self._tick(api)

    def mark(self, step: str, label: str, t: float | None = None) -> None:
        """A demo step starts now, or at `t` seconds into the recording (shown on the
        picture's time axis)."""
        timeline = self._timeline
        if timeline is not None:
            with self._lock:
                timeline.marks.append(Mark(self._now() if t is None else t, step, label))
                timeline.marks.sort(key=lambda m: m.t)

    def elapsed(self) -> float:
        """Seconds since the recording started."""
        return self._now()

    def started_at(self) -> float:
        """When the recording started (epoch seconds)."""
        if self._timeline is None:
            raise RuntimeError("the recorder never started")
        return self._timeline.started_at

    def timeline(self) -> Timeline:
        if self._timeline is None:
            raise RuntimeError("the recorder never started")
        with self._lock:
            moves = sorted(self._events.values(), key=lambda m: (m.t, m.time))
            t = self._timeline
            return Timeline(
                started_at=t.started_at,
                interval=t.interval,
                devices=list(t.devices),
                nodes=list(t.nodes),
                functions=list(t.functions),
                limits=dict(t.limits),
                samples=list(t.samples),
                moves=moves,
                marks=list(t.marks),
            )

    # --- the sampling thread ----------------------------------------------

    def _now(self) -> float:
        assert self._timeline is not None
        return round(time.time() - self._timeline.started_at, 3)

    def _loop(self) -> None:
        with kube.api_client(self.cluster.kubeconfig) as api:
            while not self._stop.is_set():
                began = time.monotonic()
                self._tick(api)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _tick(self, api: client.ApiClient) -> None:
        sample = Sample(t=self._now())
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        heard: dict[str, dict[str, int]] = {}
        with self._probe():
            heard = self._reports(custom)
        for device in self.devices:
            with self._probe():
                sample.devices[device] = self._device(custom, device, heard.get(device, {}))
        with self._probe():
            sample.load = self._load()
        for name, fn in self.functions.items():
            with self._probe():
                pods = kube.pods_of(api, fn.namespace, fn.selector)
                sample.functions[name] = sorted(
                    kube.node_of(p)
                    for p in pods
                    if kube.is_bound(p) and not kube.is_deleted(p) and _is_ready(p)
                )
            with self._probe():
                self._collect_events(core, name, fn.namespace, fn.workload)
        assert self._timeline is not None
        with self._lock:
            self._timeline.samples.append(sample)

    @contextmanager
    def _probe(self) -> Iterator[None]:
        """One probe of a sample: a failure (a 404 before the demo created the object,
        a slow apiserver) leaves that part out and is counted, never raised."""
        try:
            yield
        except Exception:
            self.errors += 1

    def _reports(self, custom: client.CustomObjectsApi) -> dict[str, dict[str, int]]:
        """device -> {gateway: RSSI} from every gateway's GatewayReport."""
        out: dict[str, dict[str, int]] = {}
        listing: Any = custom.list_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL)
        for report in listing.get("items") or []:
            node = (report.get("metadata") or {}).get("name")
            for s in (report.get("status") or {}).get("sightings") or []:
                if isinstance(node, str) and isinstance(s, dict) and "device" in s and "rssi" in s:
                    out.setdefault(s["device"], {})[node] = int(s["rssi"])
        return out

    def _device(
        self, custom: client.CustomObjectsApi, name: str, rssi: dict[str, int]
    ) -> DeviceState:
        obj: Any = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        status = obj.get("status") or {}
        nearest = (status.get("nearest") or {}).get("node")
        return DeviceState(rssi=rssi, nearest=nearest if isinstance(nearest, str) else None)

    def _load(self) -> dict[str, dict[str, float]]:
        load: dict[str, dict[str, float]] = {}
        for resource, promql in self._queries.items():
            for node, value in prometheus.query(self._prometheus_url, promql, 2.0).items():
                load.setdefault(node, {})[resource] = round(value, 4)
        return load

    def _collect_events(
        self, core: client.CoreV1Api, function: str, namespace: str, workload: str | None
    ) -> None:
        selector = "involvedObject.kind=Deployment"
        if workload is not None:
            selector += f",involvedObject.name={workload}"
        events = core.list_namespaced_event(namespace, field_selector=selector).items
        assert self._timeline is not None
        for event in events:
            if event.source is None or event.source.component != REBALANCER:
                continue
            if event.last_timestamp is None or event.metadata is None:
                continue
            src, dst = route(event.message or "")
            stamp = event.last_timestamp.timestamp()
            move = Move(
                t=round(stamp - self._timeline.started_at, 3),
                time=rfc3339(stamp),
                function=function,
                workload=f"{namespace}/{event.involved_object.name}",
                reason=event.reason or "",
                from_node=src,
                to_node=dst,
                message=event.message or "",
            )
            with self._lock:
                self._events[event.metadata.uid or f"{namespace}/{event.metadata.name}"] = move


# --- files -------------------------------------------------------------------


def paths(png: Path) -> dict[str, Path]:
    """Where `save` writes: the PNG, the JSON data and the HTML page side by side."""
    return {"png": png, "json": png.with_suffix(".json"), "html": png.with_suffix(".html")}


def save(timeline: Timeline, png: Path, title: str = "make demo") -> dict[str, Path]:
    """Write the timeline's JSON, its picture and an HTML page; return their paths."""
    from demo.timeline_plot import render

    out = paths(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    out["json"].write_text(json.dumps(timeline.to_dict(), indent=1) + "\n")
    render(timeline, png, title=title)
    out["html"].write_text(page(timeline, png.read_bytes(), title))
    return out


def load(path: Path) -> Timeline:
    return Timeline.from_dict(json.loads(path.read_text()))


def page(timeline: Timeline, png: bytes, title: str) -> str:
    """A self-contained HTML page: the picture inlined, the moves and the placements."""
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{m.t:.0f}s</td><td>{esc(m.time)}</td><td>{esc(m.reason)}</td>"
        f"<td>{esc(m.function)}</td><td>{esc(m.from_node or '-')} &rarr; "
        f"{esc(m.to_node or '-')}</td><td><small>{esc(m.message)}</small></td></tr>"
        for m in timeline.moves
    )
    steps = "\n".join(
        f"<li>{m.t:.0f}s: step {esc(m.step)}, {esc(m.label)}</li>" for m in timeline.marks
    )
    placed = "\n".join(
        f"<li>{esc(f)}: {' &rarr; '.join(esc(n) for n in timeline.placements(f))}</li>"
        for f in timeline.functions
    )
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} timeline</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;
vertical-align:top}}img{{max-width:100%}}</style></head><body>
<h1>{esc(title)}: timeline</h1>
<p>Started {esc(rfc3339(timeline.started_at))}, sampled every {timeline.interval:g}s
({len(timeline.samples)} samples). Data: the JSON file next to this page.</p>
<img alt="timeline" src="data:image/png;base64,{image}">
<h2>Moves (the rebalancer's Events)</h2>
<table><tr><th>t</th><th>time</th><th>reason</th><th>function</th><th>from &rarr; to</th>
<th>message</th></tr>
{rows}
</table>
<h2>Where each function ran</h2><ul>
{placed}
</ul>
<h2>Demo steps</h2><ul>
{steps}
</ul></body></html>
"""
