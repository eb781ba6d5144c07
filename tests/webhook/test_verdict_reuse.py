"""Prioritize reuses what filter decided for the same pod and snapshot, and only then."""

from __future__ import annotations

import time
from dataclasses import replace

import orjson
from webhook_cases import NODES, pod

from extender.runtime import RUNTIME
from extender.state.snapshot import LoadSample
from extender.verdict_cache import VerdictCache

NAMES = [n["metadata"]["name"] for n in NODES]


async def scores(client, body):
    resp = await client.post("/prioritize", data=orjson.dumps(body))
    assert resp.status == 200
    return {e["Host"]: e["Score"] for e in orjson.loads(await resp.read())}


async def test_prioritize_after_filter_reuses_the_filter_verdicts(client):
    cache = client.app[RUNTIME].verdicts
    body = {"Pod": pod("anonymiser"), "NodeNames": NAMES}
    resp = await client.post("/filter", data=orjson.dumps(body))
    kept = orjson.loads(await resp.read())["NodeNames"]
    before = (cache.hits, cache.misses)
    cached = await scores(client, {**body, "NodeNames": kept})
    assert (cache.hits, cache.misses) == (before[0] + 1, before[1])
    # The same answer as computing afresh (another pod UID is never in the cache).
    fresh_pod = pod("anonymiser")
    fresh_pod["metadata"]["uid"] = "u2"
    assert await scores(client, {"Pod": fresh_pod, "NodeNames": kept}) == cached


async def test_a_new_snapshot_between_filter_and_prioritize_is_not_served_stale(client, store):
    cache = client.app[RUNTIME].verdicts
    body = {"Pod": pod("anonymiser"), "NodeNames": ["edge1", "gw2"]}
    await client.post("/filter", data=orjson.dumps(body))
    first = await scores(client, body)
    # edge1 fills up: a cached answer would still rank it as before.
    load = dict(store.snapshot.load)
    load["edge1"] = LoadSample(cpu=0.84, memory=0.84, at=time.time())
    store.snapshot = replace(store.snapshot, load=load)
    misses = cache.misses
    second = await scores(client, body)
    assert cache.misses == misses + 1
    assert second["edge1"] < first["edge1"]


async def test_pods_without_uid_and_unknown_names_are_computed():
    cache = VerdictCache(maxsize=2, ttl=60)
    assert cache.get({"metadata": {}}, None, None, ["a"]) is None  # type: ignore[arg-type]
    cache.put({"metadata": {}}, None, None, [])  # type: ignore[arg-type]
    assert len(cache._cache) == 0
    for i in range(3):  # bounded: the oldest pod is dropped
        cache.put({"metadata": {"uid": f"u{i}"}}, None, None, [])  # type: ignore[arg-type]
    assert set(cache._cache) == {"u1", "u2"}
