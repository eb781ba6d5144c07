"""server.py: /admit in-process (answers, errors, metrics) and the real HTTPS listener
that create_app starts when settings.admission_port is set."""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from admission_cases import POLICY_PATH, apply_patch, facts, pod, world
from aiohttp import web
from aiohttp.test_utils import TestClient

from cloud4iot.policy.store import PolicyStore
from cloud4iot.vocabulary import NARROWED_ANNOTATION, NARROWED_FROM_ANNOTATION
from devcluster.certs import make_ca, make_mtls_set
from devcluster.processes import free_port
from extender.admission import server
from extender.admission.server import _admission_app
from extender.app import create_app
from extender.runtime import RUNTIME
from extender.settings import Settings
from extender.state.store import StateStore
from tests.memory import memory_growth, zero_bomb

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def extender_app(**settings: Any) -> web.Application:
    nodes = [
        facts("gw1", "gateway"),
        facts("gw2", "gateway"),
        *(facts(f"e{i}") for i in range(6)),
        facts("c1", "cloud"),
    ]
    state = StateStore(snapshot=world(nodes, heard_by={"gw2": -60}))  # sighted just now
    return create_app(
        Settings(policy_path=POLICY_PATH, **settings),
        policy=PolicyStore.open(POLICY_PATH),
        state=state,
        sources=[],
    )


@pytest.fixture
def parent() -> web.Application:
    return extender_app(candidates=3)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, parent: web.Application) -> TestClient[Any, Any]:
    return await aiohttp_client(_admission_app(parent[RUNTIME]))


def review(obj: dict[str, Any] | None, operation: str = "CREATE", kind: str = "Pod") -> bytes:
    request: dict[str, Any] = {
        "uid": "uid-1",
        "operation": operation,
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
    }
    if obj is not None:
        request["object"] = obj
    return orjson.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


def admissions(app: web.Application, outcome: str) -> float:
    value = app[RUNTIME].metrics.registry.get_sample_value(
        "cloud4iot_extender_admissions_total", {"outcome": outcome}
    )
    return value or 0.0


async def admit(client: TestClient[Any, Any], body: bytes, **headers: str) -> tuple[int, Any]:
    resp = await client.post("/admit", data=body, headers=headers)
    return resp.status, await resp.json()


def patch_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    response = doc["response"]
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = orjson.loads(base64.b64decode(response["patch"]))
    return ops


async def test_a_classed_pod_is_admitted_with_a_pin(
    client: TestClient[Any, Any], parent: web.Application
) -> None:
    p = pod("anonymiser")
    status, doc = await admit(client, review(p))
    assert status == 200
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    assert (doc["response"]["uid"], doc["response"]["allowed"]) == ("uid-1", True)
    out = apply_patch(p, patch_of(doc))
    terms = out["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    names = [f["values"] for t in terms for f in t["matchFields"]]
    assert len(names) == 3  # settings.candidates
    assert {n for (n,) in names} <= {f"e{i}" for i in range(6)} | {"gw1", "gw2"}
    assert out["metadata"]["annotations"][NARROWED_ANNOTATION] == "3 of 8 feasible nodes"
    assert admissions(parent, "narrowed") == 1


async def test_a_confidential_pod_is_pinned_to_its_gateway(client: TestClient[Any, Any]) -> None:
    p = pod("mhealth-consolidator", "wearable")
    _, doc = await admit(client, review(p))
    out = apply_patch(p, patch_of(doc))
    assert out["spec"]["affinity"]["nodeAffinity"][REQUIRED] == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gw2"]}]}
        ]
    }
    # What it was chosen from, kept on the pod for `cloud4iot explain --history`.
    chosen = orjson.loads(out["metadata"]["annotations"][NARROWED_FROM_ANNOTATION])
    ((node, score),) = chosen["candidates"]
    assert node == "gw2"
    assert isinstance(score, int)
    assert score > 0
    assert chosen["device"] == "wearable"


async def test_the_pin_records_its_candidates_best_first(client: TestClient[Any, Any]) -> None:
    p = pod("anonymiser")
    _, doc = await admit(client, review(p))
    out = apply_patch(p, patch_of(doc))
    terms = out["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    pinned = [v for t in terms for f in t["matchFields"] for v in f["values"]]
    chosen = orjson.loads(out["metadata"]["annotations"][NARROWED_FROM_ANNOTATION])
    assert [n for n, _ in chosen["candidates"]] == pinned
    scores = [s for _, s in chosen["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert chosen["device"] is None


@pytest.mark.parametrize(
    "body",
    [
        review(pod(), operation="UPDATE"),
        review(None, operation="DELETE"),
        review({"metadata": {"name": "d"}, "spec": {}}, kind="Deployment"),
        review(pod(scheduler="default-scheduler")),
        review(pod(function=None)),
    ],
)
async def test_everything_else_is_allowed_unchanged(
    client: TestClient[Any, Any], parent: web.Application, body: bytes
) -> None:
    status, doc = await admit(client, body)
    assert status == 200
    assert doc["response"] == {"uid": "uid-1", "allowed": True}
    assert admissions(parent, "skipped") == 1
    assert admissions(parent, "narrowed") == 0


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (review(pod(scheduler="default-scheduler")), "other-scheduler"),
        (review(pod(function=None)), "no-class"),
        (review(pod(function="bitcoin-miner")), "unknown-class"),
    ],
)
async def test_each_skip_is_counted_by_why(
    client: TestClient[Any, Any], parent: web.Application, body: bytes, why: str
) -> None:
    status, _ = await admit(client, body)
    assert status == 200
    registry = parent[RUNTIME].metrics.registry
    name = "cloud4iot_extender_admissions_skipped_total"
    assert registry.get_sample_value(name, {"why": why}) == 1
    others = {"other-scheduler", "no-class", "unknown-class", "nothing-feasible"} - {why}
    assert all(not registry.get_sample_value(name, {"why": w}) for w in others)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps({"apiVersion": "v1", "kind": "Pod"}), "expected apiVersion"),
        (review(None), "request.object is missing"),
    ],
)
async def test_garbage_is_a_400_with_the_reason(
    client: TestClient[Any, Any], parent: web.Application, body: bytes, reason: str
) -> None:
    status, doc = await admit(client, body)
    assert status == 400
    assert reason in doc["error"]
    assert admissions(parent, "invalid") == 1


async def test_a_compressed_body_is_refused_unread(
    client: TestClient[Any, Any], parent: web.Application
) -> None:
    status, doc = await admit(client, gzip.compress(review(pod())), **{"Content-Encoding": "gzip"})
    assert status == 415
    assert "Content-Encoding gzip" in doc["error"]
    assert admissions(parent, "narrowed") + admissions(parent, "invalid") == 0


async def test_a_compressed_bomb_is_not_inflated(aiohttp_client: ClientFactory) -> None:
    # The admission app keeps the server from inflating bodies (auto_decompress off):
    # the 415 is answered without expanding 1 GiB within the 64 MiB body limit.
    parent = extender_app()
    assert parent[RUNTIME].settings.max_body_bytes == 64 * 1024 * 1024
    client = await aiohttp_client(_admission_app(parent[RUNTIME]))
    with memory_growth() as growth:
        status, doc = await admit(client, zero_bomb(1024), **{"Content-Encoding": "gzip"})
    assert status == 415
    assert "Content-Encoding gzip" in doc["error"]
    assert growth.peak_over_start < 100, f"peak RSS grew {growth.peak_over_start:.0f} MiB"
    status, _ = await admit(client, review(pod()))  # and the app still answers
    assert status == 200


async def test_counts_add_up_over_mixed_requests(
    client: TestClient[Any, Any], parent: web.Application
) -> None:
    for body in (review(pod()), review(pod()), review(pod(), "UPDATE"), b"{}"):
        await client.post("/admit", data=body)
    counts = {o: admissions(parent, o) for o in ("narrowed", "skipped", "invalid", "error")}
    assert counts == {"narrowed": 2, "skipped": 1, "invalid": 1, "error": 0}


async def test_a_bug_in_narrowing_admits_the_pod_unchanged(
    client: TestClient[Any, Any], parent: web.Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(server, "decide", broken)
    status, doc = await admit(client, review(pod()))
    assert (status, doc["response"]) == (200, {"uid": "uid-1", "allowed": True})
    assert admissions(parent, "error") == 1


async def test_the_admission_listener_serves_only_admit_over_https(tmp_path: Path) -> None:
    certs = make_mtls_set(tmp_path / "pki")
    stranger = make_ca(tmp_path / "other", "other-ca")
    port, main_port = free_port(), free_port()
    app = extender_app(
        host="127.0.0.1",
        admission_port=port,
        admission_cert=certs.server.cert,
        admission_key=certs.server.key,
        candidates=2,
    )
    runner = web.AppRunner(app)
    await runner.setup()  # the cleanup contexts run: admission_listener starts
    await web.TCPSite(runner, "127.0.0.1", main_port).start()  # the main port, plain here
    trusted = ssl.create_default_context(cafile=str(certs.ca.cert))
    untrusted = ssl.create_default_context(cafile=str(stranger.cert))
    admit_url = f"https://127.0.0.1:{port}/admit"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(admit_url, data=review(pod()), ssl=trusted) as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert len(patch_of(doc)) == 3  # the two annotations, the affinity
            async with session.post(
                f"https://localhost:{port}/filter", data=b"{}", ssl=trusted
            ) as resp:
                assert resp.status == 404  # the extender's verbs are not on this port
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.post(admit_url, data=review(pod()), ssl=untrusted)
            with pytest.raises(aiohttp.ServerDisconnectedError):  # no plain-HTTP answer
                await session.post(f"http://127.0.0.1:{port}/admit", data=review(pod()))
            async with session.post(
                f"http://127.0.0.1:{main_port}/admit", data=review(pod())
            ) as resp:
                assert resp.status == 404  # nor /admit on the extender's port
            async with session.get(f"http://127.0.0.1:{main_port}/healthz") as resp:
                assert resp.status == 200
        assert admissions(app, "narrowed") == 1  # the listener counts into the app's metrics
    finally:
        await runner.cleanup()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as closed:
            await session.post(admit_url, data=b"{}", ssl=trusted)
        assert not isinstance(closed.value, aiohttp.ClientSSLError)  # refused: closed on cleanup


async def test_admission_is_answered_while_the_extender_loop_is_busy(tmp_path: Path) -> None:
    """/admit has its own event loop: an admission does not wait for the extender's
    loop (here held by a blocking call, as a long /filter would hold it)."""
    certs = make_mtls_set(tmp_path / "pki")
    port = free_port()
    app = extender_app(
        host="127.0.0.1",
        admission_port=port,
        admission_cert=certs.server.cert,
        admission_key=certs.server.key,
        candidates=2,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    trusted = ssl.create_default_context(cafile=str(certs.ca.cert))
    answered: list[int] = []

    def post() -> None:
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/admit",
            data=review(pod()),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=trusted, timeout=20) as resp:
            answered.append(resp.status)

    client = threading.Thread(target=post)
    try:
        client.start()
        time.sleep(5.0)  # noqa: ASYNC251 - the point: this loop is blocked meanwhile
        assert answered == [200]  # answered before this loop ran again
    finally:
        client.join()
        await runner.cleanup()
    assert admissions(app, "narrowed") == 1


async def test_a_busy_admission_port_fails_start_up_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    certs = make_mtls_set(tmp_path / "pki")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        app = extender_app(
            host="127.0.0.1",
            admission_port=port,
            admission_cert=certs.server.cert,
            admission_key=certs.server.key,
        )
        runner = web.AppRunner(app)
        with pytest.raises(OSError, match="address already in use"):
            await runner.setup()
        await runner.cleanup()
    assert not [t for t in threading.enumerate() if t.name == "admission"]
