"""One evaluation path: every caller of the scorer gives the same verdicts.

One world (a state file), one policy, a mix of pods; each pod is asked through
every entry point: the webhook's /filter and /prioritize in NodeNames mode (the
Runtime's table cache and verdict cache in play) and in full-Node mode, /explain,
`cloud4iot simulate`, admission narrowing (`narrow.decide`) and the rebalancer's
planner (`rebalancer.plan.plan`). /explain is the reference; each other answer
is checked against it in the terms that entry point speaks (kept and refused
nodes with their reasons, scores, the feasible count and the best nodes, the
node a move is expected to land on).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient

from cloud4iot.policy.loader import load_policy
from cloud4iot.vocabulary import SCHEDULER_NAME
from extender.admission.narrow import Narrowed, Skipped, decide
from extender.app import create_app
from extender.scoring import PodFacts, TableCache
from extender.settings import Settings
from extender.simulate import simulate
from extender.state.statefile import load_state
from rebalancer.model import Kind, ManagedPod, Workload
from rebalancer.plan import Limit, Memory, plan

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "default.yaml"


def node(name: str, tier: str | None, arch: str = "arm64") -> dict[str, Any]:
    labels = {"kubernetes.io/arch": arch}
    if tier is not None:
        labels["cloud4iot.io/tier"] = tier
    return {"metadata": {"name": name, "labels": labels}}


def device(name: str, heard: dict[str, float], nearest: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "sightings": [{"node": n, "rssi": r, "lastSeen": NOW - 2} for n, r in heard.items()]
    }
    if nearest is not None:
        status["nearest"] = {"node": nearest}
    return {"metadata": {"name": name}, "spec": {"address": "AA:BB:CC:DD:EE:01"}, "status": status}


NOW = time.time()
STATE = {
    "now": NOW,
    "nodes": [
        node("gw-a", "gateway"),
        node("gw-b", "gateway"),
        node("gw-c", "gateway"),
        node("gw-d", "gateway"),
        node("gw-e", "gateway"),
        node("edge-1", "edge", "amd64"),
        node("edge-2", "edge", "amd64"),
        node("edge-hot", "edge", "amd64"),
        node("cloud-1", "cloud", "amd64"),
        node("cloud-2", "cloud", "amd64"),
        node("odd", "fog"),
        node("bare", None),
    ],
    "devices": [
        device("band", {"gw-a": -55, "gw-b": -70}, nearest="gw-a"),
        device("watch", {"gw-c": -99}),  # heard below every threshold
        device("strap", {}),
        # Its nearest gateway is busy: a gateway that hears it too scores within
        # minImprovement of it, and only the narrowing refuses that one.
        device("cuff", {"gw-d": -55, "gw-e": -51}, nearest="gw-d"),
    ],
    "load": {
        **{n: {"cpu": 0.3, "memory": 0.2, "age": "5s"} for n in ("gw-a", "gw-b", "edge-1")},
        "gw-c": {"cpu": 0.1, "age": "5s"},
        "gw-d": {"cpu": 0.84, "age": "5s"},
        "gw-e": {"cpu": 0.0, "age": "5s"},
        "edge-2": {"cpu": 0.6, "age": "5s"},
        "edge-hot": {"cpu": 0.97, "age": "5s"},
        "cloud-1": {"cpu": 0.2, "age": "1h"},  # stale
    },
}


def pod(
    i: int,
    function: str | None,
    device: str | None = None,
    mode: str | None = None,
    archs: str | None = None,
) -> dict[str, Any]:
    ann = {
        k: v
        for k, v in {
            "cloud4iot.io/function": function,
            "cloud4iot.io/device": device,
            "cloud4iot.io/mode": mode,
            "cloud4iot.io/archs": archs,
        }.items()
        if v is not None
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"uid-{i}", "annotations": ann},
        "spec": {"schedulerName": SCHEDULER_NAME, "containers": [{"name": "c", "image": "i"}]},
    }


PODS = [
    pod(0, "mhealth-consolidator", "band"),
    pod(1, "mhealth-consolidator", "watch"),
    pod(2, "mhealth-consolidator", "strap"),
    pod(3, "mhealth-consolidator", "ghost"),
    pod(4, "mhealth-consolidator", None),
    pod(5, "engine-diagnostic", "band", "intensive"),
    pod(6, "engine-diagnostic", "watch"),
    pod(7, "anonymiser", archs="amd64"),
    pod(8, "anonymiser", "band", archs="arm64,amd64"),
    pod(9, None),
    pod(10, None, archs="amd64"),
    pod(11, "bitcoin-miner"),
    pod(12, "mhealth-consolidator", "cuff"),
]
IDS = [
    f"{p['metadata']['annotations'].get('cloud4iot.io/function')}"
    f"-{p['metadata']['annotations'].get('cloud4iot.io/device')}-{i}"
    for i, p in enumerate(PODS)
]
NAMES = [n["metadata"]["name"] for n in STATE["nodes"]]  # type: ignore[index]


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("one-path") / "state.yaml"
    path.write_text(yaml.safe_dump(STATE))
    return path


@pytest.fixture
async def client(aiohttp_client: Any, state_file: Path) -> TestClient[Any, Any]:
    app = create_app(Settings(policy_path=POLICY, state_path=state_file), sources=[])
    return await aiohttp_client(app)  # type: ignore[no-any-return]


Answer = dict[str, tuple[bool, int, str]]  # node -> (feasible, score, reason)


async def post(client: TestClient[Any, Any], path: str, body: Any) -> Any:
    resp = await client.post(path, data=orjson.dumps(body))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def explained(client: TestClient[Any, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
    doc = await post(client, "/explain", p)
    return doc["nodes"]  # type: ignore[no-any-return]


def answer_of(nodes: list[dict[str, Any]]) -> Answer:
    """/filter gives no reason for a kept node: neither does this."""
    return {
        n["node"]: (n["feasible"], n["score"], "feasible" if n["feasible"] else n["reason"])
        for n in nodes
    }


async def filtered(client: TestClient[Any, Any], args: dict[str, Any]) -> Answer:
    """What /filter then /prioritize (as kube-scheduler asks them) say of each node."""
    result = await post(client, "/filter", args)
    assert not result.get("Error")
    if result["NodeNames"] is not None:
        kept = result["NodeNames"]
    else:
        kept = [n["metadata"]["name"] for n in result["Nodes"]["items"]]
    refused = {**(result["FailedNodes"] or {}), **(result["FailedAndUnresolvableNodes"] or {})}
    again = dict(args, NodeNames=kept) if args["NodeNames"] is not None else args
    if args["Nodes"] is not None:
        items = [n for n in args["Nodes"]["items"] if n["metadata"]["name"] in kept]
        again = dict(args, Nodes={"metadata": {}, "items": items})
    scores = {e["Host"]: e["Score"] for e in await post(client, "/prioritize", again)}
    out: Answer = {n: (True, scores[n], "feasible") for n in kept}
    out.update({n: (False, 0, why) for n, why in refused.items()})
    return out


@pytest.mark.parametrize("p", PODS, ids=IDS)
async def test_every_entry_point_gives_the_same_verdicts(
    client: TestClient[Any, Any], state_file: Path, tmp_path: Path, p: dict[str, Any]
) -> None:
    nodes = await explained(client, p)
    reference = answer_of(nodes)
    assert sorted(reference) == sorted(NAMES)

    # The webhook, NodeNames mode; twice, so the second answer comes from kept tables.
    names_args = {"Pod": p, "Nodes": None, "NodeNames": NAMES}
    for _ in range(2):
        assert await filtered(client, names_args) == reference
    # ... and full-Node mode: the facts come with the request.
    full_args = {"Pod": p, "Nodes": {"metadata": {}, "items": STATE["nodes"]}, "NodeNames": None}
    assert await filtered(client, full_args) == reference

    # cloud4iot simulate: the same document, score parts included.
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(p))
    assert simulate(POLICY, state_file, pod_file)["nodes"] == nodes

    snapshot, now = load_state(state_file)
    loaded = load_policy(POLICY)
    feasible = {n: score for n, (ok, score, _) in reference.items() if ok}

    # Admission narrowing: the feasible count, and the best nodes it pins to.
    facts = PodFacts.from_pod(p)
    outcome = decide(p, snapshot, loaded.policy, now, 3, random.Random(0), TableCache())
    if facts.function is None or facts.function not in loaded.policy.spec.classes:
        assert isinstance(outcome, Skipped)
    elif not feasible:
        assert outcome == Skipped("no node is feasible now: left to the scheduler's retries")
    else:
        assert isinstance(outcome, Narrowed)
        assert outcome.feasible == len(feasible)
        assert set(outcome.nodes) <= set(feasible)
        assert len(outcome.nodes) == min(3, len(feasible))
        left = [s for n, s in feasible.items() if n not in outcome.nodes]
        assert all(feasible[n] >= max(left, default=0) for n in outcome.nodes)

    # The rebalancer's planner, the pod running on each node in turn.
    if facts.function is None:
        return
    min_improvement = loaded.policy.spec.rebalance.min_improvement
    for here in NAMES:
        running = ManagedPod(
            f"uid-{here}",
            "p",
            "ns",
            here,
            facts,
            Workload(Kind.DEPLOYMENT, "ns", "w", True, 1, True),
        )
        result = plan([running], snapshot, loaded, Memory(), now, tables=TableCache())
        others = sorted(((-s, n) for n, s in feasible.items() if n != here))
        current_ok, current_score, _ = reference[here]
        wanted = bool(others) and (
            not current_ok or -others[0][0] >= current_score + min_improvement
        )
        targets = [m.to_node for m in result.moves] + [h.target for h in result.held if h.target]
        if not wanted:
            assert targets == [], here
            nothing = [h.limit for h in result.held] == [Limit.NO_FEASIBLE_NODE]
            assert nothing == (not current_ok), here
        else:
            assert targets == [others[0][1]], here
        for move in result.moves:
            assert (move.facts["scoreFrom"], move.facts["scoreTo"]) == (
                current_score,
                feasible[move.to_node or ""],
            )
