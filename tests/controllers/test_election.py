"""LeaseElector / run_elected against an in-memory Lease API with resourceVersion conflicts.

Every test runs on virtual time (tests/replay/virtual_loop.py): the elector reads
the loop's clock, `now()` here, which jumps to the next timer whenever nothing is ready,
so the bounds below are the elector's own (renew deadline, lease duration, retry period)
to the float's rounding, whatever the machine's load. Durations: lease 1 s, renew
deadline 0.6 s, retry 0.05 s.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.aio.client import V1Lease
from kubernetes.aio.client.exceptions import ApiException

from extender.controllers.election import LeaseElector, run_elected
from tests.replay.virtual_loop import run_virtual

NS, NAME = "cloud4iot-system", "nearest-writer"
LEASE, DEADLINE, RETRY = 1, 0.6, 0.05
EPS = 1e-9  # float rounding of virtual instants, nothing else


def now() -> float:
    return asyncio.get_running_loop().time()


def virtual(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a virtual-time loop (a plain test to pytest)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        run_virtual(test(*args, **kwargs))

    return run


class Apiserver:
    """The one stored Lease, with the apiserver's create/replace conflict rules."""

    def __init__(self) -> None:
        self.lease: V1Lease | None = None
        self.version = 0

    def read(self) -> V1Lease:
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return self.lease.model_copy(deep=True)

    def create(self, body: V1Lease) -> V1Lease:
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace(self, body: V1Lease) -> V1Lease:
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        if body.metadata is None or body.metadata.resource_version != self._rv():
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def holder(self) -> str | None:
        return self.lease.spec.holder_identity if self.lease and self.lease.spec else None

    def put(self, holder: str, renew: datetime, duration: int = LEASE) -> None:
        """Another process (re)writes the record unconditionally."""
        lease = V1Lease.from_dict(
            {
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {
                    "holderIdentity": holder,
                    "renewTime": renew,
                    "acquireTime": renew,
                    "leaseDurationSeconds": duration,
                },
            }
        )
        assert lease is not None
        self._store(lease)

    def _rv(self) -> str:
        return str(self.version)

    def _store(self, body: V1Lease) -> V1Lease:
        self.version += 1
        stored = body.model_copy(deep=True)
        assert stored.metadata is not None
        stored.metadata.resource_version = self._rv()
        self.lease = stored
        return stored.model_copy(deep=True)


@dataclass
class FakeCoordination:
    """One replica's CoordinationV1Api: latency and failures are per client."""

    server: Apiserver
    latency: Callable[[], float] = lambda: 0.0
    # ok | fail (500) | hang (until the request timeout) | commit_then_hang (once, then hang)
    mode: str = "ok"
    calls: int = 0
    on_write_reply: Callable[[], Any] | None = None  # called once, just before a write's answer

    async def _call(self, op: Callable[[], V1Lease], limit: float | None, write: bool) -> V1Lease:
        self.calls += 1
        delay = self.latency()
        await asyncio.sleep(delay / 2)
        if self.mode == "fail":
            raise ApiException(status=500, reason="Internal Server Error")
        if self.mode == "hang":
            await asyncio.sleep(limit or 3600)
            raise TimeoutError
        result = op()
        if self.mode == "commit_then_hang" and write:
            self.mode = "hang"  # the write took effect, its answer never comes, nor later ones
            await asyncio.sleep(limit or 3600)
            raise TimeoutError
        await asyncio.sleep(delay / 2)
        if write and self.on_write_reply:
            hook, self.on_write_reply = self.on_write_reply, None
            hook()
        return result

    async def read_namespaced_lease(
        self, name: str, namespace: str, *, _request_timeout: float | None = None
    ) -> V1Lease:
        assert (name, namespace) == (NAME, NS)
        return await self._call(self.server.read, _request_timeout, write=False)

    async def create_namespaced_lease(
        self, namespace: str, body: V1Lease, *, _request_timeout: float | None = None
    ) -> V1Lease:
        assert isinstance(body, V1Lease)
        return await self._call(lambda: self.server.create(body), _request_timeout, write=True)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: V1Lease, *, _request_timeout: float | None = None
    ) -> V1Lease:
        assert isinstance(body, V1Lease)
        return await self._call(lambda: self.server.replace(body), _request_timeout, write=True)


@dataclass
class Candidate:
    identity: str
    api: FakeCoordination
    terms: list[list[float]] = field(default_factory=list)  # [start, end] of lead() running
    changes: list[bool] = field(default_factory=list)

    def elector(self) -> LeaseElector:
        return LeaseElector(
            self.api,
            NS,
            NAME,
            self.identity,
            lease_duration=LEASE,
            renew_deadline=DEADLINE,
            retry_period=RETRY,
        )

    async def lead(self) -> None:
        term = [now(), math.inf]
        self.terms.append(term)
        try:
            await asyncio.Event().wait()
        finally:
            term[1] = now()

    @property
    def leading(self) -> bool:
        return bool(self.terms) and self.terms[-1][1] == math.inf

    def first_start(self) -> float:
        return self.terms[0][0] if self.terms else math.inf


@asynccontextmanager
async def contending(
    *candidates: Candidate, lead: Callable[[Candidate], Any] | None = None
) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(
            run_elected(c.elector(), lead(c) if lead else c.lead, on_change=c.changes.append)
        )
        for c in candidates
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def a_leading_b_waiting() -> AsyncIterator[tuple[Apiserver, Candidate, Candidate]]:
    """One Lease; a leads it, and b has contended for 0.2 s without a term."""
    server = Apiserver()
    a, b = Candidate("a", FakeCoordination(server)), Candidate("b", FakeCoordination(server))
    async with contending(a):
        await until(lambda: a.leading, 1)
        async with contending(b):
            await asyncio.sleep(0.2)
            assert not b.terms
            yield server, a, b


async def until(condition: Callable[[], bool], within: float) -> None:
    deadline = now() + within
    while not condition():
        assert now() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def assert_never_together(*candidates: Candidate) -> None:
    terms = sorted((t[0], t[1], c.identity) for c in candidates for t in c.terms)
    for (_, end, who), (start, _, nxt) in itertools.pairwise(terms):
        assert end < start, f"{who} still led at {end:.3f} when {nxt} began at {start:.3f}"


@virtual
async def test_single_candidate_acquires_and_keeps_renewing() -> None:
    server = Apiserver()
    a = Candidate("a", FakeCoordination(server))
    async with contending(a):
        await until(lambda: a.leading, 1)
        assert server.holder() == "a"
        version = server.version
        await asyncio.sleep(3 * RETRY)
        assert server.version > version  # renewing
        assert a.leading
        assert a.changes == [True]
    assert a.changes == [True, False]
    assert not a.leading


def test_durations_must_leave_a_margin() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseElector(None, NS, NAME, "a", lease_duration=2, renew_deadline=2.0)
    LeaseElector(None, NS, NAME, "a")  # defaults 15 / 10 / 2 are valid


@virtual
async def test_candidates_never_lead_at_the_same_time() -> None:
    server = Apiserver()
    rng = random.Random(7)

    def jitter() -> float:
        return rng.uniform(0.0, 0.08)

    candidates = [Candidate(name, FakeCoordination(server, latency=jitter)) for name in "abc"]
    async with contending(*candidates):
        for _ in range(2):  # twice: the leader's API calls hang until someone else leads
            await until(lambda: any(c.leading for c in candidates), 2)
            leader = next(c for c in candidates if c.leading)
            others = [c for c in candidates if c is not leader]
            leader.api.mode = "hang"
            await until(lambda: any(c.leading for c in others), 3)  # noqa: B023 (awaited here)
            leader.api.mode = "ok"
        await asyncio.sleep(0.3)
    assert_never_together(*candidates)
    assert sum(len(c.terms) for c in candidates) >= 3


@pytest.mark.parametrize("mode", ["hang", "fail", "commit_then_hang"])
@virtual
async def test_leader_stops_before_its_lease_can_be_taken(mode: str) -> None:
    async with a_leading_b_waiting() as (_, a, b):
        a.api.mode = mode
        broke = now()  # a's last successful renewal started before this
        await until(lambda: b.leading, 3)
        stopped = a.terms[0][1]
        # At the renew deadline after its last successful renewal, so before LEASE.
        assert stopped - broke <= DEADLINE + EPS
        assert stopped < b.first_start()
        assert a.changes == [True, False]
        assert len(a.terms) == 1


@virtual
async def test_takeover_only_after_the_record_stood_still_for_lease_duration() -> None:
    server = Apiserver()
    server.put("ghost", datetime.now(UTC))
    b = Candidate("b", FakeCoordination(server))
    async with contending(b):
        for _ in range(5):  # the ghost keeps renewing, then vanishes
            await asyncio.sleep(0.1)
            server.put("ghost", datetime.now(UTC))
        vanished = now()
        await until(lambda: b.leading, 3)
        assert server.holder() == "b"
    took_over = b.first_start()
    assert took_over >= vanished + LEASE
    # One lease duration after it saw the last record (within a retry of its writing),
    # at its next attempt: not two leases, nor anything more.
    assert took_over <= vanished + LEASE + 2 * RETRY + EPS
    assert server.lease is not None
    assert server.lease.spec is not None
    assert server.lease.spec.lease_transitions == 1


@pytest.mark.parametrize("skew", [timedelta(days=1), -timedelta(days=1)])
@virtual
async def test_holder_clock_skew_does_not_matter(skew: timedelta) -> None:
    server = Apiserver()
    b = Candidate("b", FakeCoordination(server))
    server.put("skewed", datetime.now(UTC) + skew)
    async with contending(b):
        started = now()
        while now() < started + 1.5 * LEASE:  # a live holder: never taken over
            await asyncio.sleep(0.1)
            server.put("skewed", datetime.now(UTC) + skew)
            assert not b.terms
        vanished = now()
        await until(lambda: b.leading, 3)  # a dead holder: taken over
    assert vanished + LEASE <= b.first_start() <= vanished + LEASE + 2 * RETRY + EPS


@virtual
async def test_crashing_lead_task_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    server = Apiserver()
    a = Candidate("a", FakeCoordination(server))
    crashed: list[float] = []

    def lead(c: Candidate) -> Callable[[], Any]:
        async def run() -> None:
            if not crashed:
                crashed.append(now())
                raise RuntimeError("boom")
            await c.lead()

        return run

    with caplog.at_level(logging.ERROR, logger="extender.controllers.election"):
        async with contending(a, lead=lead):
            await until(lambda: a.leading, 2)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "crashed" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert a.first_start() - crashed[0] >= 2 * RETRY - EPS  # backed off before contending again
    assert a.changes == [True, False, True, False]


@virtual
async def test_cancelled_as_an_answer_arrives_stops_leading() -> None:
    server = Apiserver()
    a = Candidate("a", FakeCoordination(server))
    task = asyncio.create_task(run_elected(a.elector(), a.lead, on_change=a.changes.append))
    try:
        await until(lambda: a.leading, 1)
        a.api.on_write_reply = task.cancel  # shutdown lands as a renewal succeeds
        done, _ = await asyncio.wait({task}, timeout=1)
        assert task in done, "cancellation was swallowed; still contending"
        assert task.cancelled()
        assert not a.leading
        assert a.changes == [True, False]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@virtual
async def test_shutdown_hands_the_lease_back_so_a_successor_need_not_wait() -> None:
    server = Apiserver()
    a, b = Candidate("a", FakeCoordination(server)), Candidate("b", FakeCoordination(server))
    async with contending(a):
        await until(lambda: a.leading, 1)
    assert server.holder() is None  # released, not left to expire
    stopped = now()
    async with contending(b):
        await until(lambda: b.leading, LEASE)
        # At its first attempt, not the lease duration a crashed leader would leave behind.
        assert b.first_start() - stopped <= EPS
    assert not a.leading


@virtual
async def test_a_leader_that_reads_another_live_holder_steps_down_at_once() -> None:
    """The Lease deleted (`kubectl delete lease`) and recreated by another candidate:
    the old leader stops at its next renewal, one retry period, not at its renew
    deadline (it led on beside the new one for nearly the whole deadline)."""
    async with a_leading_b_waiting() as (server, a, b):
        server.lease = None
        await until(lambda: b.leading, 1)
        await until(lambda: not a.leading, DEADLINE)
        a_end, b_start = a.terms[0][1], b.terms[0][0]
        assert a_end - b_start <= RETRY + EPS  # one renewal later
        assert len(a.terms) == 1  # and a follows; b keeps the Lease
        assert server.holder() == "b"


@virtual
async def test_the_crash_backoff_survives_a_lead_task_that_always_crashes() -> None:
    """Over 1,024 quick crashes (18 h at the 60 s cap): 2**crashes overflowed a float
    and the election task itself died."""
    crashes = 0

    async def lead() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("forbidden: cannot list pods")

    server = Apiserver()
    elector = Candidate("a", FakeCoordination(server)).elector()
    task = asyncio.create_task(run_elected(elector, lead))
    await asyncio.sleep(1100 * 60.0)
    assert not task.done()
    assert crashes > 1024
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
