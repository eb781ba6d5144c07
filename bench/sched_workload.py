"""The pure parts of the scheduler-throughput benchmark: the world, the pods, the numbers.

No I/O here: bench/scheduler_throughput.py creates what these functions describe
and feeds back what it measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SCHEDULER_NAME = "cloud4iot-scheduler"
# Every tenth node a gateway, three in ten edge, the rest cloud.
TIER_OF_DIGIT = ("gateway", "edge", "edge", "edge") + ("cloud",) * 6
# The load simulator exports one CPU-time series per CPU and mode, like
# node_exporter: 5,000 nodes with 32-core clouds are 337,000 lines per scrape
# (6.6 s to render). Pods here request nothing, so CPU counts do not change
# where they go: small ones keep the simulator and Prometheus within reach.
SHAPE = {
    "gateway": {"arch": "arm64", "cpu": "2", "memory": "2Gi", "pods": 32},
    "edge": {"arch": "amd64", "cpu": "4", "memory": "16Gi", "pods": 110},
    "cloud": {"arch": "amd64", "cpu": "4", "memory": "32Gi", "pods": 110},
}
# The pod mix, cycled in this order: (kind, function class, mode, names a device).
KINDS: tuple[tuple[str, str | None, str | None, bool], ...] = (
    ("confidential", "mhealth-consolidator", None, True),
    ("diagnostic-intensive", "engine-diagnostic", "intensive", True),
    ("anonymiser", "anonymiser", None, False),
    ("unmanaged", None, None, False),
)
NEAR_RSSI, FAR_RSSI = -60, -72  # both above every class's threshold; 12 dB apart


def node_name(tier: str, index: int) -> str:
    return f"{ {'gateway': 'gw', 'edge': 'edge', 'cloud': 'cloud'}[tier] }-{index:05d}"


def topology(nodes: int) -> list[dict[str, Any]]:
    """Entries of a devcluster topology file (devcluster/topology.yaml's format)."""
    entries = []
    for i in range(nodes):
        tier = TIER_OF_DIGIT[i % 10]
        entries.append({"name": node_name(tier, i), "tier": tier, **SHAPE[tier]})
    return entries


def gateways(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(e["name"]) for e in entries if e["tier"] == "gateway"]


@dataclass(frozen=True)
class DevicePlan:
    name: str
    address: str
    # (gateway, rssi): the one it is nearest to first, then a weaker neighbour.
    heard_by: tuple[tuple[str, int], ...]

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "cloud4iot.io/v1alpha1",
            "kind": "Device",
            "metadata": {"name": self.name},
            "spec": {"address": self.address},
        }

    def status(self, last_seen: str) -> dict[str, Any]:
        sightings = [{"node": n, "rssi": r, "lastSeen": last_seen} for n, r in self.heard_by]
        return {"status": {"sightings": sightings}}


def devices(count: int, gateway_names: Sequence[str]) -> list[DevicePlan]:
    """`count` Devices spread round-robin over the gateways, each heard by two."""
    if not gateway_names:
        raise ValueError("no gateways to hear the devices")
    g = len(gateway_names)
    plans = []
    for k in range(count):
        address = ":".join(
            f"{b:02X}" for b in (0xC0, 0xFE, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF, 1)
        )
        heard = [(gateway_names[k % g], NEAR_RSSI)]
        if g > 1:
            heard.append((gateway_names[(k + 1) % g], FAR_RSSI))
        plans.append(DevicePlan(f"bench-dev-{k:05d}", address, tuple(heard)))
    return plans


def device_pods(count: int) -> int:
    """How many of `count` pods of the mix name a device."""
    per_cycle = sum(1 for kind in KINDS if kind[3])
    full, rest = divmod(count, len(KINDS))
    return full * per_cycle + sum(1 for kind in KINDS[:rest] if kind[3])


def pods(count: int, device_names: Sequence[str]) -> list[dict[str, Any]]:
    """The mix, interleaved so every stretch of the creation has each kind."""
    needed = device_pods(count)
    if len(device_names) < needed:
        raise ValueError(f"{count} pods need {needed} devices, got {len(device_names)}")
    manifests, next_device = [], 0
    for i in range(count):
        kind, function, mode, with_device = KINDS[i % len(KINDS)]
        annotations = {}
        if function is not None:
            annotations["cloud4iot.io/function"] = function
        if mode is not None:
            annotations["cloud4iot.io/mode"] = mode
        if with_device:
            annotations["cloud4iot.io/device"] = device_names[next_device]
            next_device += 1
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p-{i:05d}",
                    "labels": {"app": "bench", "bench-kind": kind},
                    "annotations": annotations,
                },
                "spec": {
                    "schedulerName": SCHEDULER_NAME,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "f", "image": "registry.invalid/bench:1"}],
                },
            }
        )
    return manifests


def placement_check(
    manifests: Sequence[Mapping[str, Any]],
    plans: Sequence[DevicePlan],
    placed: Mapping[str, str],
) -> dict[str, tuple[int, int]]:
    """Per pod kind: (pods where the policy wants them, pods bound).

    A device pod (confidential: proximity required; diagnostic-intensive: gateway
    first, proximity preferred) belongs on its device's nearest gateway, an
    anonymiser on a gateway or an edge; an unmanaged pod anywhere.
    """
    nearest = {p.name: p.heard_by[0][0] for p in plans}
    prefixes = ("gw-", "edge-")
    out: dict[str, tuple[int, int]] = {}
    for m in manifests:
        meta = m["metadata"]
        node = placed.get(meta["name"])
        if node is None:
            continue
        kind = meta["labels"]["bench-kind"]
        device = meta["annotations"].get("cloud4iot.io/device")
        if device is not None:
            good = node == nearest[device]
        elif kind == "anonymiser":
            good = node.startswith(prefixes)
        else:
            good = True
        ok, bound = out.get(kind, (0, 0))
        out[kind] = (ok + good, bound + 1)
    return out


# --- metrics ------------------------------------------------------------------


def admission_note(
    ext_before: Samples, ext_after: Samples, api_before: Samples, api_after: Samples
) -> str:
    """What the narrowing webhook did during the run, from both ends: our outcomes,
    and the pods the apiserver admitted without an answer (failurePolicy Ignore)."""
    ours = "cloud4iot_extender_admissions_total"
    outcomes = {
        o: delta(ext_before, ext_after, ours, outcome=o)
        for o in label_values(ext_after, ours, "outcome")
    }
    # The apiserver declares it a counter without the _total suffix; the parser adds it.
    name = "apiserver_admission_webhook_fail_open_count"
    fail_open = delta(api_before, api_after, name) + delta(api_before, api_after, name + "_total")
    skipped = "cloud4iot_extender_admissions_skipped_total"
    whys = {
        why: delta(ext_before, ext_after, skipped, why=why)
        for why in label_values(ext_after, skipped, "why")
    }
    seen = ", ".join(f"{o} {n:.0f}" for o, n in sorted(outcomes.items()) if n) or "none"
    if any(whys.values()):
        seen += (
            " (skipped: " + ", ".join(f"{w} {n:.0f}" for w, n in sorted(whys.items()) if n) + ")"
        )
    return (
        f"admissions answered: {seen}; admitted by the apiserver without an answer: {fail_open:.0f}"
    )


Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse_samples(text: str) -> Samples:
    """Prometheus text exposition to {(sample name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def label_values(samples: Samples, name: str, label: str) -> list[str]:
    return sorted({dict(ls)[label] for (n, ls) in samples if n == name and label in dict(ls)})


@dataclass(frozen=True)
class Histo:
    """What a histogram gained during a run: seconds and observations."""

    seconds: float
    count: float

    def mean_ms(self) -> float | None:
        return 1000 * self.seconds / self.count if self.count else None

    def per_pod_ms(self, pods: int) -> float | None:
        return 1000 * self.seconds / pods if pods else None


def histo(before: Samples, after: Samples, name: str, **labels: str) -> Histo:
    return Histo(
        delta(before, after, f"{name}_sum", **labels),
        delta(before, after, f"{name}_count", **labels),
    )


# --- one run and the report ----------------------------------------------------


@dataclass
class Run:
    nodes: int
    pods: int
    extender: bool
    repeat: int
    create_s: float  # first create sent -> last create answered
    total_s: float  # first create sent -> last pod seen bound
    bound: int
    filter: Histo | None = None  # our handlers, from the extender's /metrics
    prioritize: Histo | None = None
    attempt: Histo | None = None  # kube-scheduler's own metrics, our profile
    algorithm: Histo | None = None
    extension_points: dict[str, Histo] = field(default_factory=dict)
    limiter: dict[str, Histo] = field(default_factory=dict)  # by verb
    attempts_by_result: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # by component, during the run
    cpu_wall_s: float = 0.0  # between the two CPU readings (a little longer than total_s)
    # The same processes over the quiet seconds just before the clock (--settle): what each
    # costs with no pod coming (heartbeats, scrapes, the load refresh, watches).
    rest_cpu_s: dict[str, float] = field(default_factory=dict)
    rest_wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "cloud4iot extender" if self.extender else "no extender"

    @property
    def pods_per_s(self) -> float:
        return self.bound / self.total_s if self.total_s > 0 else 0.0

    def handlers_ms_per_pod(self) -> float | None:
        if self.filter is None or self.prioritize is None or not self.bound:
            return None
        return 1000 * (self.filter.seconds + self.prioritize.seconds) / self.bound


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


IN_TREE = ("PreFilter", "Filter", "PreScore", "Score")
# cpu_s key of every process on the machine together (other tenants included).
MACHINE = "whole machine"


def in_tree_ms_per_pod(run: Run) -> float | None:
    """kube-scheduler's own filtering and scoring (every node it looks at), per pod."""
    points = [run.extension_points[p] for p in IN_TREE if p in run.extension_points]
    return 1000 * sum(p.seconds for p in points) / run.bound if points and run.bound else None


def algorithm_ms_per_pod(run: Run) -> float | None:
    """The scheduling algorithm (in-tree filter and score, extender calls), per pod:
    the part of a cycle that runs one pod at a time."""
    return run.algorithm.per_pod_ms(run.bound) if run.algorithm else None


def extender_calls_ms_per_pod(run: Run) -> float | None:
    """The algorithm's time outside in-tree plugins: the extender calls as the
    scheduler sees them (its JSON, HTTP, our handlers)."""
    algorithm, in_tree = algorithm_ms_per_pod(run), in_tree_ms_per_pod(run)
    return algorithm - in_tree if algorithm is not None and in_tree is not None else None


def summary_table(runs: Sequence[Run]) -> str:
    """Per node count: median pods/s with and without our extender, and the ratio."""
    lines = [
        "| nodes | pods | runs (with + without) | with our extender (pods/s) |"
        " no extender (pods/s) | ratio | our handlers (ms/pod) |"
        " scheduling algorithm with / without (ms/pod) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for nodes in sorted({r.nodes for r in runs}):
        ours = [r for r in runs if r.nodes == nodes and r.extender]
        base = [r for r in runs if r.nodes == nodes and not r.extender]
        ours_rate = _median([r.pods_per_s for r in ours])
        base_rate = _median([r.pods_per_s for r in base])
        ratio = ours_rate / base_rate if ours_rate is not None and base_rate else None
        handlers = _median([h for r in ours if (h := r.handlers_ms_per_pod()) is not None])
        alg_ours = _median([m for r in ours if (m := algorithm_ms_per_pod(r)) is not None])
        alg_base = _median([m for r in base if (m := algorithm_ms_per_pod(r)) is not None])
        pods = max((r.pods for r in ours + base), default=0)
        lines.append(
            f"| {nodes} | {pods} | {len(ours)} + {len(base)} | {_f(ours_rate)}"
            f" ({_range([r.pods_per_s for r in ours])}) | {_f(base_rate)}"
            f" ({_range([r.pods_per_s for r in base])}) | {_f(ratio, 2)} | {_f(handlers)} |"
            f" {_f(alg_ours)} / {_f(alg_base)} |"
        )
    return "\n".join(lines)


def runs_table(runs: Sequence[Run]) -> str:
    """Every run, in order: the throughput and what the scheduler says bounds it."""
    lines = [
        "| nodes | scheduler | # | pods bound | create s | all bound s | pods/s |"
        " algorithm ms/pod | in-tree filter+score ms/pod | extender calls ms/pod |"
        " our filter / prioritize ms/call | algorithm busy (% of wall) |"
        " client limiter wait, POST (mean ms / total s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        post = r.limiter.get("POST")
        busy = 100 * r.algorithm.seconds / r.total_s if r.algorithm and r.total_s else None
        ours = (
            f"{_f(r.filter.mean_ms())} / {_f(r.prioritize.mean_ms())}"
            if r.filter and r.prioritize
            else "-"
        )
        lines.append(
            f"| {r.nodes} | {r.mode} | {r.repeat} | {r.bound}/{r.pods} | {r.create_s:.1f} |"
            f" {r.total_s:.1f} | {r.pods_per_s:.1f} | {_f(algorithm_ms_per_pod(r))} |"
            f" {_f(in_tree_ms_per_pod(r))} | {_f(extender_calls_ms_per_pod(r))} | {ours} |"
            f" {_f(busy, 0)} |"
            f" {_f(post.mean_ms() if post else None, 3)} / {_f(post.seconds if post else None, 2)} |"
        )
    return "\n".join(lines)


def cpu_table(runs: Sequence[Run]) -> str:
    """CPU seconds each process used during each run, and as a share of the wall time."""
    components = sorted({c for r in runs for c in r.cpu_s if c != MACHINE})
    components += [MACHINE] if any(MACHINE in r.cpu_s for r in runs) else []
    head = (
        "| nodes | scheduler | # | CPU read over s | "
        + " | ".join(components)
        + " | the cluster's |"
    )
    lines = [head, "|---:|---|---:|---:|" + "---:|" * (len(components) + 1)]
    for r in runs:
        wall = r.cpu_wall_s or r.total_s
        cells = [
            f"{r.cpu_s[c]:.1f} ({100 * r.cpu_s[c] / wall:.0f}%)" if c in r.cpu_s else "-"
            for c in components
        ]
        busy = sum(v for c, v in r.cpu_s.items() if c != MACHINE)
        lines.append(
            f"| {r.nodes} | {r.mode} | {r.repeat} | {wall:.1f} | "
            + " | ".join(cells)
            + f" | {busy:.1f} ({100 * busy / wall:.0f}%) |"
        )
    return "\n".join(lines)


def per_pod_cpu(run: Run) -> dict[str, tuple[float, float]]:
    """By process: (its share of a core at rest, its CPU ms per pod beyond that rest rate
    over the timed window). The second is what the pods themselves cost each process."""
    wall = run.cpu_wall_s or run.total_s
    if not run.rest_wall_s or not run.bound or not wall:
        return {}
    out = {}
    for name, used in run.cpu_s.items():
        if name not in run.rest_cpu_s:
            continue
        rate = run.rest_cpu_s[name] / run.rest_wall_s
        out[name] = (rate, 1000 * (used - rate * wall) / run.bound)
    return out


def pod_cpu_table(runs: Sequence[Run]) -> str:
    """Each process at rest (% of a core, before the clock) and its CPU ms per pod net
    of that rest rate; "-" for runs recorded before the rest reading existed."""
    tables = [(r, per_pod_cpu(r)) for r in runs]
    components = sorted({c for _, t in tables for c in t if c != MACHINE})
    components += [MACHINE] if any(MACHINE in t for _, t in tables) else []
    head = "| nodes | scheduler | # | rest read over s | " + " | ".join(components) + " |"
    lines = [head, "|---:|---|---:|---:|" + "---:|" * len(components)]
    for r, t in tables:
        cells = [f"{100 * t[c][0]:.0f}% / {t[c][1]:.2f}" if c in t else "-" for c in components]
        lines.append(
            f"| {r.nodes} | {r.mode} | {r.repeat} | {_f(r.rest_wall_s or None)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _range(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "1 run" if values else "none"
    return f"{min(values):.1f}-{max(values):.1f}"


def machine_busy_ticks(proc_stat: str) -> int:
    """Busy clock ticks of all CPUs together from /proc/stat (not idle, not iowait)."""
    fields = [int(x) for x in proc_stat.splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from a /proc/<pid>/stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    # After the ")": state is field 3 of the line, utime 14, stime 15.
    return int(fields[11]) + int(fields[12])


def report(runs: Sequence[Run], header: str) -> str:
    """Everything the bench prints, in Markdown."""
    notes = [f"- {r.nodes} nodes, {r.mode}, run {r.repeat}: {'; '.join(r.notes)}" for r in runs]
    points = []
    for r in runs:
        shown = ", ".join(
            f"{name} {1000 * h.seconds / r.bound:.2f}"
            for name, h in sorted(r.extension_points.items())
            if h.count and r.bound
        )
        attempts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.attempts_by_result.items()))
        points.append(f"- {r.nodes} nodes, {r.mode}, run {r.repeat}: {shown}; attempts: {attempts}")
    return "\n".join(
        [
            header,
            "",
            summary_table(runs),
            "",
            "Every run (kube-scheduler's own metrics, our profile):",
            "",
            runs_table(runs),
            "",
            "CPU seconds each process used during each run (% of one core; 2 cores):",
            "",
            cpu_table(runs),
            "",
            "The same processes at rest (% of a core over the quiet seconds before the clock)"
            " / CPU ms per pod beyond that rate:",
            "",
            pod_cpu_table(runs),
            "",
            "Extension points, ms per pod (Bind and PreBind run beside the cycle):",
            "",
            *points,
            "",
            "Notes:",
            "",
            *notes,
        ]
    )


def runs_from_json(raw: list[dict[str, Any]]) -> list[Run]:
    """Runs written with `dataclasses.asdict` (the bench's --json) back."""

    def histo_or_none(value: dict[str, float] | None) -> Histo | None:
        return Histo(**value) if value is not None else None

    runs = []
    for item in raw:
        d = dict(item)
        for key in ("filter", "prioritize", "attempt", "algorithm"):
            d[key] = histo_or_none(d.get(key))
        for key in ("extension_points", "limiter"):
            d[key] = {k: Histo(**v) for k, v in (d.get(key) or {}).items()}
        runs.append(Run(**d))
    return runs
